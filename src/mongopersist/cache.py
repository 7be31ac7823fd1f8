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
documents.  The data manager validates a collection at its first use in a
transaction (or, with an explicit transaction manager, the collections the
last transaction used at ``begin()``): see ``docs/cache.rst``.  Documents
without a serial cannot be validated: their objects become ghosts.  Pushed
invalidations (``mongopersist.invalidation``) name the changed documents
instead, without a query.

The cache is a mapping from ``DBRef`` (``metadata.OID``) to object:
``cache.get(ref)``, ``cache[ref] = obj``, ``ref in cache``, ``pop``,
``values()``.  Storing an object marks it used in this transaction.
"""
import collections
import weakref

from mongopersist.serialize import PY_SERIAL

#: Objects kept alive across transactions, by default (ZODB's default).
DEFAULT_SIZE = 400

#: Ids asked about per validation query (keeps each query far below
#: MongoDB's 16 MB message size and the server's ``$in`` comfort zone).
VALIDATION_CHUNK = 5000


class ObjectCache:
    """Objects of one data manager by reference; see the module docstring.

    :param size: how many recently used objects stay alive across
        transactions (besides those the application holds); ``0`` keeps
        none.
    """

    def __init__(self, size=DEFAULT_SIZE):
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError('cache_size must be a non-negative integer, '
                             'not %r' % (size,))
        self.size = size
        self._objects = weakref.WeakValueDictionary()
        self._used = {}                         # ref -> object, this txn
        self._recent = collections.OrderedDict()  # ref -> object, LRU
        #: ref -> the document the object was loaded from or last written
        #: as (what is stored, as far as this data manager knows).
        self.docs = {}

    def __repr__(self):
        return '<ObjectCache %d objects, %d documents, size %d>' % (
            len(self._objects), len(self.docs), self.size)

    # -- the mapping --------------------------------------------------------
    def get(self, ref, default=None):
        return self._objects.get(ref, default)

    def __getitem__(self, ref):
        return self._objects[ref]

    def __setitem__(self, ref, obj):
        self._objects[ref] = obj
        self._used[ref] = obj

    def __contains__(self, ref):
        return ref in self._objects

    def __delitem__(self, ref):
        if self.pop(ref, _MISSING) is _MISSING:
            raise KeyError(ref)

    def pop(self, ref, default=None):
        """Forget the object of ``ref`` (and its document)."""
        self._used.pop(ref, None)
        self._recent.pop(ref, None)
        self.docs.pop(ref, None)
        return self._objects.pop(ref, default)

    def __len__(self):
        return len(self._objects)

    def __iter__(self):
        return iter(list(self._objects.keys()))

    def keys(self):
        return list(self._objects.keys())

    def values(self):
        return list(self._objects.values())

    def items(self):
        return list(self._objects.items())

    # -- the strong cache -------------------------------------------------
    def used(self, ref, obj):
        """Keep ``obj`` alive until this transaction ends."""
        self._used[ref] = obj

    def end_transaction(self):
        """Keep the ``size`` most recently used loaded objects alive; let
        the others (and ghosts) go unless something else holds them."""
        recent = self._recent
        for ref, obj in self._used.items():
            if obj._p_status != 'ghost':
                recent[ref] = obj
                recent.move_to_end(ref)
        self._used = {}
        while len(recent) > self.size:
            recent.popitem(last=False)

    # -- what the cache holds is stale -------------------------------------
    def forget(self, ref):
        """Turn the object of ``ref`` into a ghost and forget its document:
        its state is no longer known to be stored (it reloads when used)."""
        self.docs.pop(ref, None)
        obj = self._objects.get(ref)
        if obj is not None and obj._p_status != 'ghost':
            obj._p_invalidate()

    def forget_all(self):
        """Turn every object into a ghost; forget every document."""
        self.docs.clear()
        for obj in self.values():
            if obj._p_status != 'ghost':
                obj._p_invalidate()

    def forget_documents(self, collections, skip=()):
        """Forget the documents stored in the ``(database, collection)``
        pairs of ``collections`` (but those of ``skip``): their objects
        reload from MongoDB (they must be ghosts)."""
        for ref in list(self.docs):
            if (ref.database, ref.collection) in collections and (
                    ref not in skip):
                del self.docs[ref]

    def deactivate_all(self, keep=()):
        """Turn every object into a ghost, keeping the documents: an object
        reloads from its document (without a read) once ``validate`` has
        found it current.  Objects stored in the ``(database,
        collection)`` pairs of ``keep`` stay as they are."""
        for ref, obj in self.items():
            if obj._p_status != 'ghost' and (
                    ref.database, ref.collection) not in keep:
                obj._p_invalidate()

    def to_validate(self, collections=None, skip=()):
        """The documents to validate: ``{(database, collection): {_id:
        (ref, serial)}}``, of every collection or of the ``(database,
        collection)`` pairs in ``collections``, except those of the
        references in ``skip`` (written since the cache was last found
        stale: current).  Documents of objects gone are dropped; those
        without a serial are forgotten (they cannot be validated)."""
        groups = {}
        objects = self._objects
        for ref, doc in list(self.docs.items()):
            if ref not in objects:
                del self.docs[ref]
                continue
            if collections is not None and (
                    ref.database, ref.collection) not in collections:
                continue
            if ref in skip:
                continue
            serial = doc.get(PY_SERIAL)
            if serial is None:
                self.forget(ref)
                continue
            groups.setdefault((ref.database, ref.collection), {})[
                ref.id] = (ref, serial)
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
            ids = list(known)
            for start in range(0, len(ids), VALIDATION_CHUNK):
                chunk = ids[start:start + VALIDATION_CHUNK]
                current = read_serials(database, collection, chunk)
                for doc_id in chunk:
                    ref, serial = known[doc_id]
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
        if not changes:
            return []
        held = {}
        for ref in list(self.docs) + self.keys():
            held.setdefault(_document_key(ref), set()).add(ref)
        forgotten = []
        for change, serial in changes:
            for ref in held.get(_document_key(change), ()):
                doc = self.docs.get(ref)
                if (doc is not None and serial is not None
                        and doc.get(PY_SERIAL) == serial):
                    continue
                self.forget(ref)
                forgotten.append(ref)
        return forgotten


_MISSING = object()


def _document_key(ref):
    return ref.database, ref.collection, ref.id
