"""Batched loading: a ghost's siblings are read with it, in one query.

Walking an object graph activates ghosts one by one, and each activation
would read its document alone: a list of 100 references costs 100 round
trips.  ``Batches`` groups the ghosts that were found together:

* the references read from one document (attributes, lists, dicts, at any
  depth inside it);
* the references read from the documents of one page of query results
  (``PAGE_SIZES``).

When a ghost of a group is activated, the documents of every ghost of the
group that is not loaded yet are read with it, one ``{'_id': {'$in':
[...]}}`` query per collection (at most ``MAX_BATCH`` ids each).  The
documents read for the others wait, unused, until their objects are used;
``MongoDataManager.prefetch`` reads the documents of objects the caller
names the same way.

Documents read ahead are never served stale: they are dropped at every
transaction boundary and whenever the data manager's state may have gone
stale (``state_generation``: a savepoint rollback), and a document is
served once (activation pops it).  Within one transaction, a document
read ahead is as current as one read at the first activation of the group;
conflict detection checks its serial at commit like any other.

Loading a reference checks it first (``_check_reference``, while its
document is read, so a refused one names that document) and makes its
ghost; only ghosts made that way join a group, so a batch reads only what
loading one reference at a time would have read.
"""
from collections.abc import Iterable
from typing import Any

import persistent
from bson.dbref import DBRef

from mongopersist import limits, sharding
from mongopersist.metadata import is_sub_object
#: The most ids one batched query asks for.
MAX_BATCH = 1000

#: How many query results form a page, page after page: the first page is
#: small (the first result comes quickly), the later ones grow.
PAGE_SIZES = (100, 400, 1600)

_GHOST = persistent.GHOST


def batch_filter(oids):
    """The filter of one batched read: the documents of ``oids`` (the
    ``metadata.OID`` oids of one collection).

    The one place a read of several documents by reference builds its
    query (batched loading, ``prefetch``): ids are grouped by the
    shard-key values their references carry (``sharding.refs_filter``),
    so that ``mongos`` reads each group from its shard only.
    """
    return sharding.refs_filter(oids)


def pages(iterable):
    """Yield lists of the items of ``iterable``, sized by ``PAGE_SIZES``."""
    iterator = iter(iterable)
    index = 0
    while True:
        size = PAGE_SIZES[min(index, len(PAGE_SIZES) - 1)]
        index += 1
        page = []
        for item in iterator:
            page.append(item)
            if len(page) >= size:
                break
        if page:
            yield page
        if len(page) < size:
            return


class Batches:
    """The sibling groups and the documents read ahead of one data manager.

    The data manager calls ``start``/``stop`` around reading documents (one
    document, or a page of query results), ``found`` for every ghost
    loaded while reading, ``document`` when a ghost activates, and
    ``clear`` when what it knows may have gone stale.
    """

    def __init__(self, jar):
        self._jar = jar
        self._collecting = None     # oids found since ``start``
        self.clear()

    def clear(self):
        """Forget the groups and the documents read ahead."""
        self._group_of = {}         # oid -> list of the oids of its group
        self._documents = {}        # oid -> document read ahead
        self._generation = self._jar.state_generation

    # -- grouping ----------------------------------------------------------
    def start(self):
        """Start a group, unless one is being collected; return whether
        this call started it (then the caller calls ``stop``)."""
        if self._collecting is not None:
            return False
        self._collecting = []
        return True

    def found(self, oid):
        """A ghost was loaded while reading: it joins the current group."""
        collecting = self._collecting
        if collecting is not None:
            collecting.append(oid)

    def stop(self):
        """Close the group being collected."""
        group, self._collecting = self._collecting, None
        if group and len(group) > 1:
            group_of = self._group_of
            for oid in group:
                group_of[oid] = group

    # -- reading -------------------------------------------------------------
    def document(self, oid):
        """The document of the ghost ``oid``, read with its siblings.

        Raises ``DocumentNotFoundError`` if it is not stored.
        """
        self._check_generation()
        doc = self._documents.pop(oid, None)
        if doc is not None:
            return doc
        group = self._group_of.pop(oid, None)
        if group is None:
            return self._jar._find_document(oid)
        # The ghost being activated is no longer a ghost: ask for it too.
        self._read(self._unloaded(group, first=oid))
        doc = self._documents.pop(oid, None)
        if doc is None:
            return self._jar._find_document(oid)     # raises: not found
        return doc

    def prefetch(self, items: Iterable[Any]) -> list[Any]:
        """Read the documents of the ghosts among ``items`` (objects of
        this data manager, or references) in one query per collection.

        Returns the objects, in the order given.
        """
        jar = self._jar
        if isinstance(items, (DBRef, str, bytes)) or isinstance(
                items, persistent.Persistent) and not is_sub_object(
                    type(items)):
            raise TypeError('prefetch takes an iterable of objects or '
                            'references, not %s' % limits.quote(items))
        self._check_generation()
        objects = []
        for item in items:
            if isinstance(item, DBRef):
                obj = jar.load(item)
            elif isinstance(item, persistent.Persistent):
                obj = item
                if obj._p_jar is not jar or obj._p_oid is None:
                    raise ValueError('%s is not stored by %r'
                                     % (limits.quote(obj), jar))
            else:
                raise TypeError('prefetch takes persistent objects of the '
                                'data manager or references (DBRef), not %s'
                                % limits.quote(item))
            objects.append(obj)
        self._read(self._unloaded([obj._p_oid for obj in objects]))
        return objects

    def _check_generation(self):
        if self._generation != self._jar.state_generation:
            self.clear()

    def _unloaded(self, oids, first=None):
        """The oids of ghosts in the identity map without a document (read
        ahead, or held by the cache), at most ``MAX_BATCH`` of them, grouped
        by collection.

        ``first`` (the oid of the object being activated) comes first.
        """
        cache = self._jar._cache
        documents = self._documents
        handed = self._jar._prefetched
        # Ghosts whose document the cache holds (validated) need no read.
        known = self._jar._loaded_docs
        by_collection = {}
        seen = set()
        if first is not None:
            seen.add(first)
            by_collection[(first.database, first.collection)] = [first]
        for oid in oids:
            if (oid in seen or oid in documents or oid in handed
                    or oid in known):
                continue
            seen.add(oid)
            obj = cache.get(oid)
            if obj is None or obj._p_state != _GHOST:
                continue
            by_collection.setdefault(
                (oid.database, oid.collection), []).append(oid)
            if len(seen) >= MAX_BATCH:
                break
        return by_collection

    def _read(self, by_collection):
        """One query per collection; keep the documents found."""
        jar = self._jar
        documents = self._documents
        group_of = self._group_of
        for (database, collection), oids in by_collection.items():
            if len(oids) == 1:
                continue    # read when activated, as without batching
            wanted = {oid.id: oid for oid in oids}
            coll = jar._raw_collection(database, collection)
            # All in the first batch (up to MongoDB's 16 MB of a reply):
            # its default of 101 documents would cost a getMore more, and
            # so would a batch exactly full (the cursor stays open).
            for doc in coll.find(batch_filter(oids),
                                 batch_size=len(oids) + 1,
                                 session=jar._session):
                oid = wanted.get(doc.get('_id'))
                if oid is not None:
                    documents[oid] = doc
            for oid in oids:
                group_of.pop(oid, None)

