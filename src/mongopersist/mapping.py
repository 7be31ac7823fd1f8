"""A mapping over a whole collection, keyed by an attribute of its objects.

Subclass ``MongoCollectionMapping`` and name the collection and the key::

    class People(MongoCollectionMapping):
        __mongo_collection__ = 'people'
        __mongo_mapping_key__ = 'short_name'

    People(dm)['stephan'] = stephan    # sets stephan.short_name
    People(dm).keys()                  # ['stephan']

Every object stored in the collection whose key attribute is set (and not
``None``) is in the mapping, however the attribute got its value.  The
mapping itself stores nothing: each operation queries the collection (after
flushing the transaction's pending changes of it, so changes made in this
transaction are seen).

Keys are values, never queries (``mongopersist.keys``): a lookup, setting
or deletion with a key that is not of the mapping's key type
(``__mongo_key_type__``, ``str`` by default) is refused before any query.
Listing shows the stored keys as they are, of whatever type another writer
stored; those of another type cannot be looked up.
"""
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any, Optional

import persistent

from mongopersist import keys, limits, metadata, query, sharding, specs
from mongopersist.collection import MongoCollection

if TYPE_CHECKING:
    from mongopersist.datamanager import MongoDataManager


class MongoCollectionMapping(MutableMapping[Any, Any]):
    """The objects of a collection, keyed by one of their attributes.

    Class attributes to set in subclasses:

    ``__mongo_collection__``
        name of the collection (required);
    ``__mongo_database__``
        its database (default: the data manager's default database);
    ``__mongo_mapping_key__``
        the attribute (and document field) holding the key (default
        ``'key'``);
    ``__mongo_key_type__``
        the type of the keys, or a tuple of types (default ``str``), among
        ``mongopersist.keys.KEY_TYPES``: a key is a value the stored key
        is compared with, never a query.  A key of another type (a dict
        such as ``{'$ne': 'x'}``, ``None``, ...) raises
        ``interfaces.InvalidKeyError`` (a ``KeyError`` and a
        ``TypeError``) before any query is sent; ``key in mapping`` is
        ``False``;
    ``__mongo_filter__``
        optional: a filter dict, or a method returning one, that documents
        must also match to be part of the mapping.

    :param jar: the ``MongoDataManager`` to work with.
    :param allow_global: for a collection with a shard key (declared by a
        class stored there), allow queries that do not pin it; otherwise
        they raise ``interfaces.GlobalQueryError`` (``mongopersist.sharding``).
    """

    # Required: every subclass names its collection (checked when made).
    __mongo_collection__: str = None  # type: ignore[assignment]
    __mongo_database__: Optional[str] = None
    __mongo_mapping_key__: str = 'key'
    __mongo_key_type__: Any = str
    __mongo_filter__: Any = None

    def __init__(self, jar: 'MongoDataManager',
                 allow_global: bool = False) -> None:
        if not self.__mongo_collection__:
            raise TypeError('%s must name its collection in '
                            '__mongo_collection__' % type(self).__name__)
        self._m_key_types = keys.key_types(self.__mongo_key_type__,
                                           type(self).__name__)
        self._m_jar = jar
        self._m_allow_global = allow_global

    # -- where the objects are ------------------------------------------------
    @property
    def _m_database(self) -> str:
        return self.__mongo_database__ or self._m_jar.default_database

    @property
    def _m_collection(self) -> MongoCollection:
        """The collection (flushing before queries) behind the mapping."""
        return self._m_jar.get_collection(self._m_database,
                                          self.__mongo_collection__)

    def _m_filter(self, key: Any = None) -> dict[str, Any]:
        """Return the filter of the mapping's documents (under ``key``),
        rewritten by the spec processors (``mongopersist.specs``)."""
        extra = self.__mongo_filter__
        if callable(extra):
            extra = extra()
        field = self.__mongo_mapping_key__
        own = {field: {'$ne': None}} if key is None else {field: key}
        result = query.combine(query.check_filter(extra), own)
        sharding.check_collection_query(
            self._m_jar, self._m_database, self.__mongo_collection__, result,
            self._m_allow_global)
        if specs.active():
            result = specs.process(self._m_jar._raw_collection(
                self._m_database, self.__mongo_collection__), result)
        return result

    def _m_find(self, filter: query.Filter,
                sort: query.Sort = None) -> query.Results:
        return query.find_in_collection(
            self._m_jar, self._m_database, self.__mongo_collection__, filter,
            sort=sort)

    def _m_sort(self) -> list[tuple[str, int]]:
        return [(self.__mongo_mapping_key__, 1)]

    def _m_check_key(self, key: object) -> None:
        keys.check_key(key, self._m_key_types, type(self).__name__)

    # -- reading --------------------------------------------------------------
    def __getitem__(self, key: Any) -> Any:
        self._m_check_key(key)
        obj = query.find_one_in_collection(
            self._m_jar, self._m_database, self.__mongo_collection__,
            self._m_filter(key))
        if obj is None:
            raise KeyError(key)
        return obj

    def __contains__(self, key: object) -> bool:
        if not keys.is_key(key, self._m_key_types):
            return False
        return self._m_collection.count_documents(
            self._m_filter(key), limit=1) > 0

    def __iter__(self) -> Iterator[Any]:
        field = self.__mongo_mapping_key__
        cursor = self._m_collection.find(
            self._m_filter(), {field: 1}, sort=self._m_sort())
        for doc in cursor:
            yield doc[field]

    def __len__(self) -> int:
        return self._m_collection.count_documents(self._m_filter())

    def keys(self) -> list[Any]:  # type: ignore[override]
        """Return the list of keys, sorted (one query)."""
        return list(self)

    def values(self) -> list[Any]:  # type: ignore[override]
        """Return the list of objects, sorted by key (one query)."""
        return list(self._m_find(self._m_filter(), sort=self._m_sort()))

    def items(self) -> list[tuple[Any, Any]]:  # type: ignore[override]
        """Return the list of ``(key, object)`` pairs, sorted (one query)."""
        field = self.__mongo_mapping_key__
        return [(getattr(obj, field), obj) for obj in self.values()]

    # -- writing --------------------------------------------------------------
    def _m_check_value(self, obj: object) -> None:
        name = type(self).__name__
        if not isinstance(obj, persistent.Persistent):
            raise TypeError('%s can only hold persistent objects, not %s'
                            % (name, limits.quote(obj)))
        oid = getattr(obj, '_p_oid', None)
        if oid is not None:
            where = (oid.database, oid.collection)
        else:
            cls = type(obj)
            where = (metadata.database_name(cls, self._m_jar.default_database),
                     metadata.collection_name(cls))
        wanted = (self._m_database, self.__mongo_collection__)
        if where != wanted:
            raise ValueError(
                '%s cannot be put into %s: it is stored in %s.%s, the mapping '
                'shows collection %s.%s' % ((limits.quote(obj), name) + where
                                            + wanted))
        if obj._p_jar is not None and obj._p_jar is not self._m_jar:
            raise ValueError('%s belongs to another data manager (%r)'
                             % (limits.quote(obj), obj._p_jar))

    def __setitem__(self, key: Any, obj: Any) -> None:
        """Put ``obj`` under ``key``: sets its key attribute and stores it.

        An object previously under ``key`` loses its key (it stays stored).
        """
        self._m_check_key(key)
        self._m_check_value(obj)
        field = self.__mongo_mapping_key__
        try:
            previous = self[key]
        except KeyError:
            previous = None
        if previous is not None and previous is not obj:
            self._m_clear_key(previous)
        setattr(obj, field, key)
        if obj._p_jar is None:
            self._m_jar.insert(obj)

    def __delitem__(self, key: Any) -> None:
        """Take the object out of the mapping; it stays stored."""
        self._m_check_key(key)
        self._m_clear_key(self[key])

    def _m_clear_key(self, obj: Any) -> None:
        field = self.__mongo_mapping_key__
        obj._p_activate()
        if field in obj.__dict__:
            delattr(obj, field)
        else:
            # A class attribute supplies the key: hide it.
            setattr(obj, field, None)

    def __repr__(self) -> str:
        return '<%s %s.%s by %r>' % (
            type(self).__name__, self._m_database, self.__mongo_collection__,
            self.__mongo_mapping_key__)
