"""An ``_id`` lookup for mongomock while the benchmarks run.

mongomock keeps no indexes: every read, update or delete of one document by
``_id`` scans the whole collection, so N such operations cost O(N²) and
per-document round trips look far worse than on a server, which finds a
document through its ``_id`` index.  Likewise an ``{'_id': {'$in': ids}}``
query compares every document with every id.  ``id_lookup()`` makes
mongomock find documents by a plain ``_id`` equality directly, and check
``$in`` ids against a set (every other filter keeps the scan).  For the
``ObjectId``, ``str`` and ``int`` ids it handles it returns what the scan
returns (what a server returns), only faster, and it speeds up every
system alike.  It does nothing on a real server.
"""
import contextlib
import functools

from bson.objectid import ObjectId

# Types whose Python equality and hashing agree with MongoDB's matching.
_LOOKUP_TYPES = (ObjectId, str, int)


def _wanted_ids(filter):
    """The ids an ``_id`` equality or ``$in`` filter asks for, or None."""
    key = filter.get('_id') if type(filter) is dict else None
    if type(key) in _LOOKUP_TYPES:
        return [key]
    if type(key) is dict and list(key) == ['$in'] and \
            type(key['$in']) in (list, tuple) and \
            all(type(value) in _LOOKUP_TYPES for value in key['$in']):
        return key['$in']
    return None


def _with_lookup(scan):
    from mongomock.filtering import filter_applies

    @functools.wraps(scan)
    def iter_documents(self, filter):
        ids = _wanted_ids(filter)
        if ids is None:
            return scan(self, filter)
        store = self._store
        if len(ids) == 1:
            found = [store[ids[0]]] if ids[0] in store else []
        else:
            wanted = set(ids)
            # In the store's (natural) order, as the scan returns them.
            found = [doc for doc in list(store.documents)
                     if type(doc['_id']) in _LOOKUP_TYPES
                     and doc['_id'] in wanted]
        # The documents found match the _id condition; check the rest.
        rest = {key: value for key, value in filter.items() if key != '_id'}
        if rest:
            found = [doc for doc in found if filter_applies(rest, doc)]
        return iter(found)
    return iter_documents


@contextlib.contextmanager
def id_lookup(real_server):
    """Give mongomock an ``_id`` lookup while the block runs."""
    if real_server:
        yield
        return
    from mongomock.collection import Collection
    scan = Collection.__dict__['_iter_documents']
    Collection._iter_documents = _with_lookup(scan)
    try:
        yield
    finally:
        Collection._iter_documents = scan
