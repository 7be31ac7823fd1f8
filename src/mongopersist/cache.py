"""The object cache: loaded objects (and their documents) across transactions.

A data manager keeps one ``ObjectCache``.  It is

* the **identity map**: one stored document, one Python object (held
  weakly, so objects nobody uses can go);
* a **strong cache**: every object used in the running transaction stays
  alive until it ends (a document is never read twice in one transaction
  because its object was dropped), and up to ``size`` recently used
  loaded objects stay alive across transactions, like ZODB's
  ``cache_size`` (ghosts are not counted, and not kept);
* the **documents** objects were loaded from (or last written as): what
  the commit compares changes with, and what lets a loaded object survive a
  transaction boundary.

At a transaction boundary the data manager cannot know whether somebody
else changed a document.  It asks: ``validate`` reads the ``_py_serial``
of every document it holds in a collection, one query per collection
(``_id: {$in: ...}``, in chunks of ``VALIDATION_CHUNK`` ids), and turns the
objects of changed or removed documents into ghosts, forgetting their
documents.  When is the data manager's ``CacheValidator``'s decision: a
collection at its first use in a transaction (or, with an explicit
transaction manager, the collections the last transaction used at
``begin()``): see ``docs/cache.rst``.  Documents without a serial cannot
be validated: their objects become ghosts.  Pushed invalidations
(``mongopersist.invalidation``) name the changed documents instead,
without a query.

What this costs grows with what is validated, not with everything held:
the cache keeps its objects by collection as they come in, so validating
a collection walks that collection's only, and turning objects into
ghosts at a boundary walks those loaded since the last time (and those
kept loaded), not every object held.  What it keeps of objects gone is
dropped when their collection is validated, or swept at a transaction's
end once more objects came in than it holds.

The cache is a mapping from ``DBRef`` (``metadata.OID``) to object:
``cache.get(ref)``, ``cache[ref] = obj``, ``ref in cache``, ``pop``,
``values()``.  Storing an object marks it used in this transaction.
"""
import collections
import logging
import weakref

from pymongo.errors import PyMongoError

from mongopersist import interfaces, limits, sharding
from mongopersist.metadata import OID
from mongopersist.serialize import PY_SERIAL

LOG = logging.getLogger('mongopersist')

#: Objects kept alive across transactions, by default (ZODB's default).
DEFAULT_SIZE = 400

#: Ids asked about per validation query (keeps each query far below
#: MongoDB's 16 MB message size and the server's ``$in`` comfort zone).
VALIDATION_CHUNK = 5000


def unreferenceable(obj, ref):
    """The ``UnstorableObjectError`` for ``obj`` (stored as ``ref``), of
    a class that cannot be weakly referenced: the identity map cannot hold
    it.  It names the class, the document, and what to use instead."""
    from mongopersist.metadata import get_dotted_name
    cls = type(obj)
    name = limits.excerpt(get_dotted_name(cls))
    if cls.__module__.split('.')[0] == 'BTrees':
        advice = (
            'A BTree keeps a large mapping in many ZODB records; in MongoDB '
            'a collection is that mapping: use a MongoContainer or a '
            'MongoCollectionMapping (one document per item, queryable), or '
            'query a collection (dm.find_objects); see docs/zodb.rst')
    else:
        advice = ('mongopersist stores the __dict__ of persistent objects: '
                  'define the class without __slots__')
    return interfaces.UnstorableObjectError(
        'Objects of class %s cannot be stored or loaded by mongopersist '
        '(%s.%s _id=%s): the class does not support weak references, which '
        'the object cache needs to hold one object per document.  %s' % (
            name, limits.excerpt(ref.database),
            limits.excerpt(ref.collection), limits.quote(ref.id), advice))


class ObjectCache:
    """Objects of one data manager by reference; see the module docstring.

    :param size: how many recently used objects stay alive across
        transactions (besides those the application holds); ``0`` keeps
        none.
    """

    #: Objects put in the cache (at least; or as many as it holds) before
    #: the references of those gone are swept from every collection at a
    #: transaction's end: see ``end_transaction``.
    sweep_after = 1000

    def __init__(self, size=DEFAULT_SIZE):
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError('cache_size must be a non-negative integer, '
                             'not %r' % (size,))
        self.size = size
        # The identity map: ref -> weak reference to the object.  A plain
        # dict (a ``WeakValueDictionary`` costs Python calls on every
        # lookup and insert); references of objects gone are dropped by
        # ``_sweep``.  Nothing put in dies before its transaction ends:
        # ``_used`` holds it.
        self._objects = {}
        self._used = {}                         # ref -> object, this txn
        self._recent = collections.OrderedDict()  # ref -> object, LRU
        # (database, collection) -> {ref: weak reference to the object}:
        # the objects put in the identity map, by collection (those gone
        # are dropped when their collection is validated, or swept:
        # ``_sweep``).  A collection's validation walks its own only.
        self._held = {}
        # Objects put in and gone since the last sweep (counted by their
        # weak references: ``_gone``).
        self._dead = 0
        # ref -> None: objects loaded when a transaction ended and not
        # turned into ghosts since.  With those used in the running
        # transaction they are all the objects that may not be ghosts
        # (every way to load one records it: ``__setitem__``, ``used``).
        self._loaded = {}
        #: ref -> the document the object was loaded from or last written
        #: as (what is stored, as far as this data manager knows).
        self.docs = {}

    def __repr__(self):
        return '<ObjectCache %d objects, %d documents, size %d>' % (
            len(self), len(self.docs), self.size)

    # -- the mapping --------------------------------------------------------
    def get(self, ref, default=None):
        alive = self._objects.get(ref)
        if alive is not None:
            obj = alive()
            if obj is not None:
                return obj
        return default

    def __getitem__(self, ref):
        obj = self.get(ref)
        if obj is None:
            raise KeyError(ref)
        return obj

    def __setitem__(self, ref, obj):
        try:
            alive = weakref.ref(obj, self._gone)
        except TypeError:
            # Nothing is changed: the caller (``insert``, loading) has not
            # attached the object yet.
            raise unreferenceable(obj, ref) from None
        self._objects[ref] = alive
        self._used[ref] = obj
        key = (ref.database, ref.collection)
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = {}
        held[ref] = alive

    def _gone(self, alive):
        # An object put in is gone (its weak reference says so).
        self._dead += 1

    def __contains__(self, ref):
        return self.get(ref) is not None

    def __delitem__(self, ref):
        if self.pop(ref, _MISSING) is _MISSING:
            raise KeyError(ref)

    def pop(self, ref, default=None):
        """Forget the object of ``ref`` (and its document)."""
        self._used.pop(ref, None)
        self._recent.pop(ref, None)
        self.docs.pop(ref, None)
        alive = self._objects.pop(ref, None)
        obj = None if alive is None else alive()
        return default if obj is None else obj

    def __len__(self):
        return len(self.items())

    def __iter__(self):
        return iter(self.keys())

    def keys(self):
        return [ref for ref, _ in self.items()]

    def values(self):
        return [obj for _, obj in self.items()]

    def items(self):
        """The ``(ref, object)`` pairs of the objects alive."""
        pairs = []
        for ref, alive in list(self._objects.items()):
            obj = alive()
            if obj is not None:
                pairs.append((ref, obj))
        return pairs

    # -- the strong cache -------------------------------------------------
    def used(self, ref, obj):
        """Keep ``obj`` alive until this transaction ends."""
        self._used[ref] = obj

    def end_transaction(self):
        """Keep the ``size`` most recently used loaded objects alive; let
        the others (and ghosts) go unless something else holds them.

        Once more of the objects put in the cache are gone than are alive
        (and at least ``sweep_after``), the references and documents of
        those gone are dropped (``_sweep``): that costs at most what
        putting them in did, and keeps the identity map, and collections
        never validated again, from keeping them."""
        _note_used(self._used, self._recent, self._loaded, self.size)
        self._used = {}
        dead = self._dead
        if dead > max(len(self._objects) - dead, self.sweep_after):
            self._sweep()

    def _sweep(self):
        """Drop the references (and documents) of objects gone."""
        for key, held in list(self._held.items()):
            for ref in [ref for ref, alive in held.items()
                        if alive() is None]:
                del held[ref]
            if not held:
                del self._held[key]
        objects = self._objects
        for ref in [ref for ref, alive in objects.items()
                    if alive() is None]:
            del objects[ref]
        for refs in (self.docs, self._loaded):
            for ref in [ref for ref in refs if ref not in objects]:
                del refs[ref]
        self._dead = 0

    def _maybe_loaded(self):
        """The references of every object that may not be a ghost."""
        refs = list(self._loaded)
        refs.extend(self._used)
        return refs

    # -- what the cache holds is stale -------------------------------------
    def forget(self, ref):
        """Turn the object of ``ref`` into a ghost and forget its document:
        its state is no longer known to be stored (it reloads when used)."""
        self.docs.pop(ref, None)
        obj = self.get(ref)
        if obj is not None and obj._p_status != 'ghost':
            obj._p_invalidate()

    def forget_all(self):
        """Turn every object into a ghost; forget every document."""
        self.docs.clear()
        self.deactivate_all()

    def forget_documents(self, collections, skip=()):
        """Forget the documents stored in the ``(database, collection)``
        pairs of ``collections`` (but those of ``skip``): their objects
        reload from MongoDB (they must be ghosts)."""
        docs = self.docs
        for key in collections:
            for ref in self._held.get(key, ()):
                if ref not in skip:
                    docs.pop(ref, None)

    def deactivate_all(self, keep=()):
        """Turn every object into a ghost, keeping the documents: an object
        reloads from its document (without a read) once ``validate`` has
        found it current.  Objects stored in the ``(database,
        collection)`` pairs of ``keep`` stay as they are.

        Costs what the objects loaded since the last time cost (and those
        of ``keep``), not every object held."""
        self._loaded = _ghost_loaded(self, self._maybe_loaded(), keep)

    def to_validate(self, collections=None, skip=()):
        """The documents to validate: ``{(database, collection): {_id:
        (ref, serial)}}``, of every collection or of the ``(database,
        collection)`` pairs in ``collections``, except those of the
        references in ``skip`` (written since the cache was last found
        stale: current).  Documents of objects gone are dropped; those
        without a serial are forgotten (they cannot be validated).

        Walks the references held in those collections only."""
        all_held = self._held
        if collections is None:
            collections = list(all_held)
        groups = {}
        docs = self.docs
        for key in collections:
            held = all_held.get(key)
            if held is None:
                continue
            known = {}
            for ref, alive in list(held.items()):
                if alive() is None:
                    del held[ref]
                    docs.pop(ref, None)
                    continue
                if skip and ref in skip:
                    continue
                doc = docs.get(ref)
                if doc is None:
                    continue
                serial = doc.get(PY_SERIAL)
                if serial is None:
                    self.forget(ref)
                    continue
                known[ref.id] = (ref, serial)
            if not held:
                del all_held[key]
            if known:
                groups[key] = known
        return groups

    def validate(self, read_serials, collections=None, skip=()):
        """Forget (see ``forget``) every object whose document changed, of
        every collection or of the ``(database, collection)`` pairs in
        ``collections`` (``skip``: see ``to_validate``).

        ``read_serials(database, collection, ids)`` returns the stored
        ``_py_serial`` by ``_id`` of those of ``ids`` that exist (one
        query).  Returns the references forgotten.
        """
        stale = []
        for (database, collection), known in self.to_validate(
                collections, skip).items():
            held = list(known.items())
            for start in range(0, len(held), VALIDATION_CHUNK):
                chunk = held[start:start + VALIDATION_CHUNK]
                current = read_serials(database, collection,
                                       [doc_id for doc_id, _ in chunk])
                for doc_id, (ref, serial) in chunk:
                    if current.get(doc_id, _MISSING) != serial:
                        stale.append(ref)
        for ref in stale:
            self.forget(ref)
        return stale

    def invalidate(self, changes):
        """Apply pushed invalidations: ``changes`` are ``(ref, serial)``
        pairs (``serial`` ``None`` if unknown).  A change whose serial is
        the one held is this data manager's own write: kept.

        References are matched by database, collection and ``_id`` only
        (a change stream's ``documentKey`` may hold more, such as a shard
        key, or less than the references held).
        """
        forgotten = []
        docs = self.docs
        for change, serial in changes:
            # An ``OID`` equals every reference to the same document
            # (extra fields aside): one lookup, whatever is held.
            ref = change if type(change) is OID else OID.of(change)
            doc = docs.get(ref)
            if doc is None and self.get(ref) is None:
                continue        # not held
            if (doc is not None and serial is not None
                    and doc.get(PY_SERIAL) == serial):
                continue
            self.forget(ref)
            forgotten.append(ref)
        return forgotten


def _note_used(used, recent, loaded, size):
    """The objects ``used`` ({ref: object}) in a transaction that are
    loaded become the most recent of ``recent`` (an ``OrderedDict``, kept
    to its ``size`` most recent) and are noted in ``loaded`` ({ref:
    None}).  (A loop over every object used: ``mongopersist._speedups``
    has it compiled.)"""
    for ref, obj in used.items():
        if obj._p_status != 'ghost':
            recent[ref] = obj
            recent.move_to_end(ref)
            loaded[ref] = None
    while len(recent) > size:
        recent.popitem(last=False)


def _ghost_loaded(cache, refs, keep):
    """Turn the loaded objects of ``refs`` in ``cache`` into ghosts, but
    those stored in the ``(database, collection)`` pairs of ``keep``;
    return those kept, as ``{ref: None}``.  (A loop over every object
    loaded: ``mongopersist._speedups`` has it compiled.)"""
    get = cache.get
    kept = {}
    for ref in refs:
        obj = get(ref)
        if obj is None or obj._p_status == 'ghost':
            continue
        if keep and (ref.database, ref.collection) in keep:
            kept[ref] = None
        else:
            obj._p_invalidate()
    return kept


class CacheValidator:
    """When the objects a data manager's ``ObjectCache`` holds are
    validated, and which of them are known current in the running
    transaction (see ``docs/cache.rst``).

    The data manager (``jar``) tells it what happens: the first use of a
    held object's collection (``use``), a query result (``use_document``),
    the end of a transaction (``boundary``) and ``begin()`` of an explicit
    transaction manager (``validate_at_begin``).  Held objects of a
    collection not validated yet in a transaction are ghosts, so nothing
    held is used unvalidated; collections a transaction never uses cost no
    read.
    """

    def __init__(self, jar):
        self._jar = jar
        #: What the cache holds must be validated before it is used: each
        #: collection at its first use (``use``) in a transaction.
        self.needs_validation = False
        # (database, collection) pairs used since the last boundary (their
        # held objects validated if needed), those the transaction before
        # used, and those ``begin()`` of an explicit manager validated
        # (``validate_at_begin``).
        self._validated = set()
        self._last_used = set()
        self._validated_at_begin = None
        #: Oids of query results of collections not validated yet: their
        #: documents were read in this transaction (current).
        self.fresh = set()

    def use(self, ref):
        """Validate the held objects of the collection of ``ref`` at the
        first use of that collection in a transaction.

        Every way to a held object of a collection (a reference or root
        entry: ``load``; activating a ghost: ``setstate``; changing it:
        ``register``) calls this first.  Query results are current:
        ``use_document``.
        """
        key = (ref.database, ref.collection)
        if key not in self._validated:
            self._validated.add(key)
            at_begin = self._validated_at_begin
            if self.needs_validation and (at_begin is None
                                          or key not in at_begin):
                self.validate((key,))

    def use_document(self, ref):
        """A query read the document of ``ref`` now: its object needs no
        validation (it is filled from this document unless it was loaded
        since its collection was validated, or written by this
        transaction); the other held objects of the collection are
        validated when first used.  Validating it later leaves ``ref``
        alone (``fresh``): it is current, and may be in use.  (Nor does
        a query count as a use of the collection for ``begin()``.)"""
        key = (ref.database, ref.collection)
        at_begin = self._validated_at_begin
        if (self.needs_validation and key not in self._validated
                and (at_begin is None or key not in at_begin)):
            self.fresh.add(ref)

    def boundary(self, explicit):
        """A transaction ended: from now on, what the cache holds may be
        stale until validated.  ``explicit``: the transaction manager is
        explicit (the next transaction starts with ``begin()``)."""
        if self._validated or self._validated_at_begin is not None:
            # A transaction ran (not a second boundary after the first,
            # such as ``close()`` after the commit): the collections it
            # used through the data manager (objects kept loaded and used
            # by attribute only are not seen: their collection is then
            # validated lazily next time, and their objects reload).
            self._last_used = self._validated
        self._validated = set()
        self._validated_at_begin = None
        self.fresh = set()
        jar = self._jar
        cache = jar._cache
        cache.end_transaction()
        if not jar.detect_conflicts:
            # No serials to validate with: every object reloads.
            cache.forget_all()
            return
        self.needs_validation = True
        if jar._watcher is not None:
            # Apply the invalidations received so far, as ZODB does.
            self.validate()
            self.needs_validation = True
        elif not explicit:
            # The next transaction may start without ``begin()``, and read
            # held objects before anything tells the data manager: they
            # become ghosts, which reload from their documents once their
            # collection is validated (at its first use: ``use``).
            cache.deactivate_all()

    def validate_at_begin(self):
        """``begin()`` of an explicit manager: validate the collections the
        last transaction used now (their objects stay loaded), and turn
        the held objects of the others into ghosts, validated at their
        collection's first use (``use``)."""
        if self._jar._watcher is not None:
            self.validate()
            return
        if self._validated_at_begin is not None:
            return
        used = self._validated_at_begin = frozenset(self._last_used)
        self._jar._cache.deactivate_all(keep=used)
        self.validate(used, at_begin=True)

    def validate(self, collections=None, at_begin=False):
        """Bring the cache up to date: apply pushed invalidations, or read
        the serials of what it holds (one query per collection), of every
        collection or of ``collections``.  Documents this transaction
        wrote are current (objects of a collection not validated yet that
        are not ghosts are those: every other way to an object of the
        collection validates it first).  If the serials cannot be read,
        the objects concerned reload (all of them ``at_begin``, when
        nothing uses them yet)."""
        jar = self._jar
        cache = jar._cache
        watcher = jar._watcher
        if watcher is not None:
            self.needs_validation = False
            changes = watcher.changes()
            if changes is not None:
                cache.invalidate(changes)
                return
            # The watcher lost track (and started again): read serials.
            collections = None
        if collections is None:
            self.needs_validation = False
        written = self.fresh
        if jar._written_oids:
            written = set(jar._written_oids)
            written.update(self.fresh)
        try:
            cache.validate(self.read_serials, collections, written)
        except PyMongoError as error:
            LOG.warning('Could not validate the object cache (%s: %s); '
                        'the objects reload', type(error).__name__, error)
            if collections is None or at_begin:
                cache.forget_all()
            else:
                cache.forget_documents(collections, written)

    def read_serials(self, database, collection, ids):
        """The stored ``_py_serial`` of the documents ``ids``, by ``_id``
        (one query, in the data manager's server transaction if any)."""
        jar = self._jar
        coll = jar._raw_collection(database, collection)
        # Grouped by shard key: read from the shards holding them only.
        query = sharding.held_filter(jar, database, collection, ids)
        return {doc['_id']: doc.get(PY_SERIAL)
                for doc in coll.find(query, {PY_SERIAL: 1},
                                     session=jar._session)}


_MISSING = object()
