"""Object queries: find persistent objects by querying their collection.

The data manager's ``find_objects``, ``find_one_object`` and ``count``
delegate here.  A query

* flushes the transaction's pending changes of the queried collection first
  (it goes through ``mongopersist.collection.MongoCollection``), so it sees
  what the transaction changed;
* costs one query for any number of results: each returned document fills
  its object directly (no read per object);
* keeps the identity map: an object already loaded in the data manager is
  returned as it is (its state is not replaced by the document);
* streams: objects are made a page at a time while the cursor is iterated
  (the references read from one page load together, see
  ``mongopersist.batching``);
* in a collection shared by several classes, returns only instances of the
  queried class and its subclasses.  Documents name their class in
  ``_py_persistent_type`` once a collection is shared; documents without it
  belong to the first class stored there (see ``mongopersist.typemap``).
"""
import collections
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Optional, TypeVar

import persistent
import pymongo
from pymongo.cursor import Cursor

from mongopersist import batching, interfaces, limits, metadata, sharding
from mongopersist.serialize import PY_PERSISTENT_TYPE

if TYPE_CHECKING:
    from mongopersist.datamanager import MongoDataManager

#: A persistent class queried, and its instances found.
T = TypeVar('T')
#: A query filter: a MongoDB query document (``None``: everything).
Filter = Optional[Mapping[str, Any]]
#: A sort: a key name, a dict, or a list of key names and ``(key,
#: direction)`` pairs (``None``: the server's order).
Sort = Any
#: PyMongo's sort: ``(key, direction)`` pairs.
SortPairs = list[tuple[str, Any]]


def check_class(cls: object) -> None:
    """Raise ``TypeError`` unless ``cls`` stores documents of its own."""
    if not (isinstance(cls, type) and issubclass(cls, persistent.Persistent)):
        raise TypeError('Objects can only be queried by a persistent class '
                        '(a persistent.Persistent subclass), not %s'
                        % limits.quote(cls))
    if metadata.is_sub_object(cls):
        raise TypeError(
            '%s is stored inside its parent\'s document '
            '(_p_mongo_sub_object) and cannot be queried on its own'
            % cls.__name__)


def subclasses(cls: type) -> list[type]:
    """Return ``cls`` and all its subclasses known to this process."""
    found = [cls]
    index = 0
    sub: type
    while index < len(found):
        for sub in found[index].__subclasses__():
            if sub not in found:
                found.append(sub)
        index += 1
    return found


def _is_subclass(dm: 'MongoDataManager', name: str, cls: type) -> bool:
    try:
        found = dm.type_registry.resolve(name, 'persistent')
    except interfaces.StoredDataError:
        return False
    return issubclass(found, cls)


def type_filter(dm: 'MongoDataManager', cls: type) -> dict[str, Any]:
    """Return the filter keeping only instances of ``cls`` (or subclasses).

    Returns ``{}`` when every class stored in the collection qualifies (the
    usual case of a collection with one class).
    """
    database, collection = dm._collection_name_of(cls)
    types = dm._types.types_of(database, collection)
    matching = [name for name in types if _is_subclass(dm, name, cls)]
    if len(matching) == len(types):
        return {}
    # Classes of this process are named too: another process may have
    # started storing a subclass since the type map was read.
    names = set(matching)
    names.update(metadata.get_dotted_name(sub) for sub in subclasses(cls))
    values = sorted(names)
    if types[0] in matching:
        # Documents that name no class are of the first class stored.
        values.append(None)
    return {PY_PERSISTENT_TYPE: {'$in': values}}


def check_filter(filter: object) -> dict[str, Any]:
    """Return ``filter`` as a dict; raise ``TypeError`` if it is not one."""
    if filter is None:
        return {}
    if not isinstance(filter, Mapping):
        raise TypeError('A query filter must be a dict, not %s'
                        % limits.quote(filter))
    return dict(filter)


def combine(*filters: Filter) -> dict[str, Any]:
    """Return a filter matching what every one of ``filters`` matches."""
    parts = [f for f in filters if f]
    if not parts:
        return {}
    if len(parts) == 1:
        return dict(parts[0])
    return {'$and': parts}


def normalize_sort(sort: Sort) -> Optional[SortPairs]:
    """Return ``sort`` as PyMongo's list of ``(key, direction)`` pairs.

    Accepts ``None``, a key name (ascending), a dict, or a list of key
    names and ``(key, direction)`` pairs.
    """
    if sort is None:
        return None
    if isinstance(sort, str):
        return [(sort, pymongo.ASCENDING)]
    if isinstance(sort, Mapping):
        return list(sort.items())
    result = []
    for item in sort:
        if isinstance(item, str):
            result.append((item, pymongo.ASCENDING))
        else:
            key, direction = item
            result.append((key, direction))
    return result


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError('%s must be an integer, not %s'
                        % (name, limits.quote(value)))
    if value < 0:
        raise ValueError('%s must not be negative (got %s)'
                         % (name, limits.quote(value)))


def find_in_collection(dm: 'MongoDataManager', database: str,
                       collection: str, filter: Filter = None,
                       sort: Sort = None, limit: int = 0, skip: int = 0,
                       batch_size: int = 0,
                       instances_of: Optional[type] = None) -> 'Results':
    """Iterate the objects stored as documents matching ``filter``.

    The query starts at once (pending changes of the collection are
    flushed now); objects are made while the result is iterated.  With
    ``instances_of`` (a class), other objects are left out: a type map
    entry kept by the process may be short of a class another process
    added since (``mongopersist.typemap``).
    """
    filter = check_filter(filter)
    _check_count('limit', limit)
    _check_count('skip', skip)
    _check_count('batch_size', batch_size)
    kwargs = {'limit': limit, 'skip': skip}
    if batch_size:
        kwargs['batch_size'] = batch_size
    sort = normalize_sort(sort)
    if sort:
        kwargs['sort'] = sort
    cursor = dm.get_collection(database, collection).find(filter, **kwargs)
    return Results(dm, database, collection, cursor, instances_of)


class _Refused:
    """In place of the object of a document that could not be loaded."""

    __slots__ = ('error',)

    def __init__(self, error: interfaces.StoredDataError) -> None:
        self.error = error


class Results:
    """The objects of a query's result documents, an iterator.

    Objects are made a page at a time while it is iterated: the references
    read from one page are loaded together (``batching``).  A document
    that cannot be loaded (malformed or refused stored data) raises its
    ``StoredDataError`` from ``next()`` in the place of its object;
    calling ``next()`` again carries on with the next document, so code
    that lists objects can report one and go on.  With ``instances_of``
    (a class), objects of other classes are left out.
    """

    def __init__(self, dm: 'MongoDataManager', database: str,
                 collection: str, cursor: 'Cursor[Any]',
                 instances_of: Optional[type] = None) -> None:
        self._dm = dm
        self._database = database
        self._collection = collection
        self._cursor = cursor
        self._pages = batching.pages(cursor)
        self._ready: collections.deque[Any] = collections.deque()
        self._instances_of = instances_of
        self._refreshed = False

    def __iter__(self) -> 'Results':
        return self

    def __next__(self) -> Any:
        while True:
            while not self._ready:
                self._read_page()
            obj = self._ready.popleft()
            if type(obj) is _Refused:
                raise obj.error
            cls = self._instances_of
            if cls is None or isinstance(obj, cls):
                return obj
            if not self._refreshed:
                # The type map entry was short: the next query filters.
                self._dm._types.refresh(self._database, self._collection)
                self._refreshed = True

    def _read_page(self) -> None:
        try:
            page = next(self._pages)
        except BaseException:
            # The end (``StopIteration``), or the cursor failed.
            self.close()
            raise
        dm = self._dm
        batches = dm._batches
        grouping = batches.start()
        try:
            for doc in page:
                try:
                    obj = dm._object_from_document(
                        self._database, self._collection, doc)
                except interfaces.StoredDataError as error:
                    obj = _Refused(error)
                self._ready.append(obj)
        except BaseException:
            self.close()
            raise
        finally:
            if grouping:
                batches.stop()

    def close(self) -> None:
        """Stop: close the cursor (iterating on ends at once)."""
        self._ready.clear()
        self._pages = iter(())
        self._cursor.close()


def find_one_in_collection(dm: 'MongoDataManager', database: str,
                           collection: str, filter: Filter = None,
                           sort: Sort = None, flush: bool = True) -> Any:
    """Return the object of the first document matching, or ``None``.

    With ``flush=False`` the transaction's pending changes are not written
    first: the query sees only what is stored.
    """
    kwargs = {}
    sort = normalize_sort(sort)
    if sort:
        kwargs['sort'] = sort
    coll: Any
    if flush:
        coll = dm.get_collection(database, collection)
    else:
        coll = dm._raw_collection(database, collection)
        kwargs['session'] = dm._session
    doc = coll.find_one(check_filter(filter), **kwargs)
    if doc is None:
        return None
    return dm._object_from_document(database, collection, doc)


def find_objects(dm: 'MongoDataManager', cls: type[T], filter: Filter = None,
                 sort: Sort = None, limit: int = 0, skip: int = 0,
                 batch_size: int = 0,
                 allow_global: bool = False) -> Iterator[T]:
    """Iterate the instances of ``cls`` whose documents match ``filter``.

    ``sort`` is a key name or a list of ``(key, direction)`` pairs;
    ``limit`` (0: no limit) and ``skip`` page through the result.  For a
    class with a shard key the filter must pin it unless ``allow_global``
    (``mongopersist.sharding.check_query``).
    """
    database, collection, query = _class_query(dm, cls, filter, allow_global)
    return find_in_collection(dm, database, collection, query, sort=sort,
                              limit=limit, skip=skip, batch_size=batch_size,
                              instances_of=cls)


def find_one_object(dm: 'MongoDataManager', cls: type[T],
                    filter: Filter = None, sort: Sort = None,
                    allow_global: bool = False) -> Optional[T]:
    """Return an instance of ``cls`` whose document matches, or ``None``."""
    database, collection, query = _class_query(dm, cls, filter, allow_global)
    obj = find_one_in_collection(dm, database, collection, query, sort=sort)
    if obj is None or isinstance(obj, cls):
        return obj
    # The type map entry was short (``mongopersist.typemap``): ask again.
    dm._types.refresh(database, collection)
    query = combine(check_filter(filter), type_filter(dm, cls))
    obj = find_one_in_collection(dm, database, collection, query, sort=sort)
    return obj if isinstance(obj, cls) else None


def count(dm: 'MongoDataManager', cls: type, filter: Filter = None,
          allow_global: bool = False) -> int:
    """Return how many instances of ``cls`` have a document matching."""
    database, collection, query = _class_query(dm, cls, filter, allow_global)
    return dm.get_collection(database, collection).count_documents(query)


def _class_query(dm: 'MongoDataManager', cls: type, filter: Filter,
                 allow_global: bool) -> tuple[str, str, dict[str, Any]]:
    """Where instances of ``cls`` are, and the filter that finds them."""
    check_class(cls)
    filter = check_filter(filter)
    sharding.check_class_query(dm, cls, filter, allow_global)
    database, collection = dm._collection_name_of(cls)
    return database, collection, combine(filter, type_filter(dm, cls))
