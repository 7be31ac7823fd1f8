"""Containers: persistent mappings whose items are MongoDB documents.

``MongoContainer``
    Its items are the documents of a collection that reference the
    container in one attribute (``parent`` by default) and hold their name
    in another (``key`` by default).  Adding an item sets both attributes and
    stores the item; deleting an item removes its document.  Items can be
    listed, counted and paged with queries (``find``) without loading the
    whole container.

``IdNamesMongoContainer``
    Like ``MongoContainer``, but an item's name is its ``ObjectId`` (as a
    string): ``add(obj)`` returns the new name.

``AllItemsMongoContainer``
    Every document of its collection that has a name (no parent filter):
    a view of a whole collection by name.

``SimpleMongoContainer``
    Keeps references to its items (persistent objects, each stored in its
    own collection) in its own document, by name.

``EmbeddedMongoContainer`` (also named ``SubDocumentMongoContainer``)
    Keeps its items inside its own document: one read loads it all.

Items know their location: an item handed out by a container has the
``__name__`` it is stored under and the container as ``__parent__``, so
that Pyramid's traversal and ``resource_url`` work (``MongoContained``,
and classes that declare ``__name__`` and ``__parent__`` as plain data, as
``zope.location`` does).  Adding, moving and removing items fire
``zope.lifecycleevent``'s events when installed (``mongopersist.events``);
every query a container sends goes through the spec processors
(``mongopersist.specs``).  See ``docs/containers.rst``.

Listing a ``MongoContainer`` (``keys``, ``values``, ``items``, iteration)
costs one query, whatever the number of items; so does ``len`` and looking
up a name (``[]``, ``in``, ``get``, and adding, which must know whether the
name is taken).  What was learned is kept for the rest of the transaction,
and the container's own ``[]=``, ``add`` and ``del`` keep it up to date, so
asking again costs nothing.  Items whose key or parent attribute is changed
directly (not through the container), or that are removed with
``dm.remove``, show up in their new place from the next transaction on.

What a stored container may say about itself is checked when it is loaded
(a writer of the database chooses it): where its items are comes from its
class (``_m_collection``, ``_m_database``, or a location the class lists
in ``_m_allowed_locations``), its attribute names must be plain field
names, and no stored field may hide a method of the class; anything else
raises ``interfaces.StoredDataError`` naming the field.
"""
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Optional

import persistent
import pymongo
import zope.interface
from bson.errors import InvalidId
from bson.objectid import ObjectId

from mongopersist import (events, interfaces, keys, limits, metadata, query,
                          references, serialize, sharding, specs)
from mongopersist.collection import MongoCollection

if TYPE_CHECKING:
    from mongopersist.datamanager import MongoDataManager

# Items asked for per round trip when a container lists all its items.
LISTING_BATCH_SIZE = 5000

# What the names of a ``MongoContainer``'s items are.
_NAME_TYPES = (str, int)

_MISSING = object()

# -- where a container finds its data manager --------------------------------
_provider = None


def set_data_manager_provider(provider: Any) -> None:
    """Use ``provider`` (an ``interfaces.IMongoDataManagerProvider``: its
    ``get()`` returns the ``MongoDataManager`` to use) for the containers
    stored elsewhere than in MongoDB (in ZODB, say); ``None`` removes it.

    Without one, a ``zope.component`` utility providing
    ``IMongoDataManagerProvider`` is used when ``zope.component`` is
    installed.
    """
    global _provider
    if provider is not None and not callable(getattr(provider, 'get', None)):
        raise TypeError('A data manager provider has a get() method '
                        'returning the data manager, not %s'
                        % limits.quote(provider))
    _provider = provider


def _provided_data_manager(container: Any) -> Any:
    provider = _provider
    if provider is None:
        try:
            import zope.component
        except ImportError:     # pragma: no cover (zope.component optional)
            pass
        else:
            provider = zope.component.queryUtility(
                interfaces.IMongoDataManagerProvider)
    if provider is None:
        raise interfaces.ConfigurationError(
            '%s is stored by %s, not by a MongoDataManager: say which data '
            'manager holds its items with '
            'container.set_data_manager_provider(provider) or a '
            'zope.component utility providing IMongoDataManagerProvider'
            % (type(container).__name__, type(container._p_jar).__name__))
    dm = provider.get()
    if not interfaces.IMongoDataManager.providedBy(dm):
        raise interfaces.ConfigurationError(
            'The data manager provider %s returned %s, not a '
            'MongoDataManager' % (limits.quote(provider), limits.quote(dm)))
    return dm


# -- the location of items ---------------------------------------------------
try:
    from zope.location.interfaces import ILocation
except ImportError:     # pragma: no cover (the extra is not installed)
    ILocation = None


def _class_setting(obj: Any, name: str) -> Any:
    """The class's ``name`` (never the instance's: stored data cannot
    change it)."""
    return metadata.declared_attribute(type(obj), name, None)


class MongoContained:
    """Mixin of items that know their location (``__name__``,
    ``__parent__``) without storing it.

    The container that hands an item out tells it its name and itself as
    parent (kept in the volatile ``_v_name`` and ``_v_parent``, never
    written).  An item loaded otherwise (a query, a reference) finds them
    through what its class declares:

    ``_m_name_attr`` / ``_m_parent_attr``
        the attribute holding the name / the parent (proxy attributes:
        assigning ``__name__`` does not change them);
    ``_m_name_getter`` / ``_m_parent_getter``
        functions of the item returning them;
    ``_m_name_setter`` / ``_m_parent_setter``
        functions ``(item, value)`` called when ``__name__`` /
        ``__parent__`` is assigned.

    These are read from the class, never from the instance.  ``__name__``
    and ``__parent__`` are properties: a document cannot set them (a
    stored field of that name is refused).
    """

    # Volatile: where the container that handed the item out put it.
    _v_name: Any
    _v_parent: Any

    _m_name_attr = None
    _m_name_getter = None
    _m_name_setter = None
    _m_parent_attr = None
    _m_parent_getter = None
    _m_parent_setter = None

    def _m_place(self, which: str) -> Any:
        known = getattr(self, '_v_' + which, None)
        if known is not None:
            return known
        attr = _class_setting(self, '_m_%s_attr' % which)
        if attr is not None:
            return getattr(self, attr, None)
        getter = _class_setting(self, '_m_%s_getter' % which)
        if getter is not None:
            return getter(self)
        return None

    def _m_set_place(self, which: str, value: Any) -> None:
        setter = _class_setting(self, '_m_%s_setter' % which)
        if setter is not None:
            setter(self, value)
        setattr(self, '_v_' + which, value)

    @property
    def __name__(self) -> Any:
        return self._m_place('name')

    @__name__.setter
    def __name__(self, value: Any) -> None:
        self._m_set_place('name', value)

    @property
    def __parent__(self) -> Any:
        return self._m_place('parent')

    @__parent__.setter
    def __parent__(self, value: Any) -> None:
        self._m_set_place('parent', value)


if ILocation is not None:
    zope.interface.classImplements(MongoContained, ILocation)


def _declares_location(cls: type) -> bool:
    """Whether instances of ``cls`` keep ``__name__`` and ``__parent__`` as
    stored data attributes (declared as plain data on the class, as
    ``zope.location``'s ``Location`` and ``zope.container``'s
    ``Contained`` do)."""
    return (metadata.declares_data(cls, '__name__')
            and metadata.declares_data(cls, '__parent__'))


def located(item: Any, name: Any, parent: Any) -> Any:
    """Tell ``item``, handed out by ``parent`` under ``name``, its location
    (a ``MongoContained`` item; others are left as they are)."""
    if isinstance(item, MongoContained):
        item._v_name = name
        item._v_parent = parent
    return item


def _place(item: Any, name: Any, parent: Any,
           stored_parent: bool = True) -> None:
    """Give ``item``, added to ``parent`` under ``name``, its location:
    ``MongoContained`` through its setters, a class declaring them as data
    by setting the (stored) attributes when they differ."""
    if isinstance(item, MongoContained):
        item.__name__ = name
        item.__parent__ = parent
    elif _declares_location(type(item)):
        if item.__name__ != name:
            item.__name__ = name
        if stored_parent and item.__parent__ is not parent:
            item.__parent__ = parent


def _unplace(item: Any, parent: Any) -> None:
    """Forget the location of ``item``, taken out of ``parent``."""
    if isinstance(item, MongoContained):
        item._v_name = item._v_parent = None
    elif _declares_location(type(item)) and item.__parent__ is parent:
        item.__parent__ = None
        item.__name__ = None


def _old_location(item: Any) -> tuple[Any, Any]:
    """``(parent, name)`` of ``item`` before it is added somewhere."""
    try:
        return item.__parent__, item.__name__
    except AttributeError:
        return None, None


# -- what a stored container may say about itself -----------------------------
def _field_name_problem(name: Any) -> Optional[str]:
    """Why ``name`` cannot be an item attribute a container queries and
    sets (``None`` if it can)."""
    if type(name) is not str:
        return 'must be a string, not %s' % type(name).__name__
    if not name or len(name) > 200:
        return 'must have 1 to 200 characters'
    if name[0] == '$' or '.' in name or '\x00' in name:
        return 'must not hold "$" first, "." or NUL'
    if name == '_id' or name.startswith(('_py_', '_p_', '_v_', '_m_')) or (
            len(name) > 4 and name[:2] == '__' and name[-2:] == '__'):
        return 'is reserved (_id, _py_*, _p_*, _v_*, _m_* or __*__)'
    return None


def _database_problem(name: Any) -> Optional[str]:
    if name is None:
        return None
    if type(name) is not str:
        return 'must be a string, not %s' % type(name).__name__
    if not name or len(name) > 63 or any(c in name for c in '/\\. "$\x00'):
        return 'is not a database name'
    return None


def _collection_problem(database: Any, name: Any) -> Optional[str]:
    if type(name) is not str:
        return 'must be a string, not %s' % type(name).__name__
    problem: Optional[str] = references.collection_problem(database, name)
    if problem is None and name.startswith('system.'):
        problem = 'is a system collection'
    return problem


def _location_allowed(cls: type, database: Any, collection: Any) -> bool:
    """Whether the class ``cls`` allows its instances to keep their items
    in ``collection`` of ``database`` (``None``: the default one)."""
    own_database = metadata.declared_attribute(cls, '_m_database', None)
    if collection == metadata.declared_attribute(cls, '_m_collection', None) \
            and database in (None, own_database):
        return True
    for allowed in metadata.declared_attribute(
            cls, '_m_allowed_locations', ()) or ():
        if isinstance(allowed, str):
            if allowed == collection and database in (None, own_database):
                return True
        elif tuple(allowed) == (database, collection):
            return True
    return False


def _setting_problem(cls: type, name: str, value: Any,
                     state: Any) -> Optional[str]:
    """Why the setting ``name`` of a container of class ``cls`` cannot be
    ``value`` (``state`` holds the other settings); ``None`` if it can."""
    if value is None:
        # A stored null would hide the class's value.
        return 'must not be null'
    if name == '_m_allow_global':
        return None if type(value) is bool else 'must be true or false'
    if name in ('_m_mapping_key', '_m_parent_key'):
        if metadata.declared_attribute(cls, name, None) is None:
            return 'cannot be set: %s has none' % cls.__name__
        return _field_name_problem(value)
    if name in ('_m_collection', '_m_database'):
        database = state.get('_m_database', None)
        collection = state.get('_m_collection', None)
        if collection is None:
            collection = metadata.declared_attribute(cls, '_m_collection',
                                                     None)
        problem = _database_problem(database)
        if problem is not None:
            return problem if name == '_m_database' else None
        if collection is None:
            return 'needs a collection'
        problem = _collection_problem(database, collection)
        if problem is not None:
            return problem if name == '_m_collection' else None
        if not _location_allowed(cls, database, collection):
            return ('names %s, which the class %s does not allow: it '
                    'keeps its items where its class says (_m_collection, '
                    '_m_database, _m_allowed_locations)' % (
                        limits.quote('%s.%s' % (database or '(default)',
                                                collection)),
                        cls.__name__))
        return None
    return 'is not a setting of %s' % cls.__name__


def _stored_field_problem(cls: type, name: str, value: Any,
                          state: Any) -> Optional[str]:
    """Why a container of class ``cls`` cannot have the stored field
    ``name`` (``None`` if it can)."""
    if type(name) is not str:
        return None
    if name.startswith('_m_'):
        if name not in metadata.declared_attribute(cls, '_m_settings', ()):
            return 'is not a setting %s may store' % cls.__name__
        return _setting_problem(cls, name, value, state)
    # A field hiding a method of the class is refused by the reader for
    # every class (``serialize._check_names``).
    return None


class _Container:
    """What every container has: its data manager, its checked stored
    state and the mapping methods built on ``[]``, ``[]=`` and ``del``."""

    #: Remove an item's document when the item is taken out (``del``);
    #: false: only take it out (its name and parent are unset).
    _m_remove_documents: bool = True

    #: The settings stored with a container (given to its constructor).
    _m_settings: tuple[str, ...] = ()

    #: Its items are in its stored field ``data`` (a document).
    _m_has_data = False

    if TYPE_CHECKING:
        # What the concrete containers provide (to type checkers).
        _p_jar: Any
        _p_oid: Any
        def keys(self) -> list[Any]: ...
        def get(self, key: Any, default: Any = None) -> Any: ...
        def __setitem__(self, key: Any, item: Any) -> None: ...
        def __delitem__(self, key: Any) -> None: ...

    def _m_dm(self) -> Any:
        """The ``MongoDataManager`` of the items (``None`` if the container
        is not stored)."""
        jar = self._p_jar
        if jar is None:
            return None
        if interfaces.IMongoDataManager.providedBy(jar):
            return jar
        return _provided_data_manager(self)

    def _m_hosted_elsewhere(self) -> bool:
        jar = self._p_jar
        return jar is not None and \
            not interfaces.IMongoDataManager.providedBy(jar)

    def _m_check_stored(self, state: Any) -> None:
        """Raise ``StoredDataError`` for a stored field of ``state`` that a
        container of this class cannot have."""
        if not isinstance(state, dict):
            return
        cls = type(self)
        for name, value in state.items():
            problem = _stored_field_problem(cls, name, value, state)
            if problem is not None:
                raise interfaces.StoredDataError(
                    'Cannot load the %s: its stored field %s %s' % (
                        cls.__name__, limits.quote(name), problem)).at(name)
        data = state.get('data', _MISSING)
        if data is not _MISSING and not isinstance(data, Mapping) and \
                self._m_has_data:
            raise interfaces.StoredDataError(
                'Cannot load the %s: its items (data) must be a document, '
                'not %s' % (cls.__name__, type(data).__name__)).at('data')

    def __setstate__(self, state: Any) -> None:
        self._m_check_stored(state)
        super().__setstate__(state)  # type: ignore[misc]

    def __getstate__(self) -> Any:
        state = super().__getstate__()  # type: ignore[misc]
        # What would be refused when loaded is refused when written.
        if isinstance(state, dict):
            cls = type(self)
            for name, value in state.items():
                problem = _stored_field_problem(cls, name, value, state)
                if problem is not None:
                    raise interfaces.UnstorableObjectError(
                        'Cannot store the %s: its attribute %s %s' % (
                            cls.__name__, limits.quote(name), problem))
        return state

    # -- mapping methods --------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        return iter(self.keys())

    def __bool__(self) -> bool:
        # A container is an object, true even when empty (unlike a dict).
        return True

    def pop(self, key: Any, *default: Any) -> Any:
        """Remove the item named ``key`` and return it (``default``, if
        given, when there is none; else ``KeyError``)."""
        item = self.get(key, _MISSING)
        if item is _MISSING:
            if default:
                return default[0]
            raise KeyError(key)
        del self[key]
        return item

    def setdefault(self, key: Any, item: Any) -> Any:
        """Return the item named ``key``; add ``item`` under it first if
        there is none."""
        found = self.get(key, _MISSING)
        if found is _MISSING:
            self[key] = item
            return item
        return found

    def update(self, other: Any = (), **more: Any) -> None:
        """Add the items of ``other`` (a mapping or pairs) and ``more``."""
        pairs = other.items() if isinstance(other, Mapping) else other
        for key, item in pairs:
            self[key] = item
        for key, item in more.items():
            self[key] = item

    def clear(self) -> None:
        """Take every item out (firing the events of each)."""
        for key in list(self.keys()):
            del self[key]


def _state_token(jar: Any) -> Any:
    # Changes at transaction boundaries and savepoint rollbacks: then what
    # a container learned is stale.
    return jar.state_generation


class _ItemCache:
    """What a container learned about its items in one transaction."""

    items: dict[Any, Any]
    missing: set[Any]
    count: Optional[int]

    def __init__(self, txn: Any, token: Any) -> None:
        self.txn = txn
        self.token = token
        self.items = {}         # key -> item known to be in the container
        self.missing = set()    # keys known not to be in the container
        self.complete = False   # ``items`` holds every item
        self.count = None       # number of items, when known

    def lookup(self, key: Any) -> Any:
        """Return ``(known, item)``; ``item`` is None for a missing key."""
        if key in self.items:
            return True, self.items[key]
        if self.complete or key in self.missing:
            return True, None
        return False, None

    def found(self, key: Any, item: Any) -> None:
        if item is None:
            self.missing.add(key)
        else:
            self.items[key] = item

    def added(self, key: Any, item: Any, new: bool) -> None:
        self.items[key] = item
        self.missing.discard(key)
        if new and self.count is not None:
            self.count += 1

    def removed(self, key: Any) -> None:
        self.items.pop(key, None)
        self.missing.add(key)
        if self.count is not None:
            self.count -= 1

    def fill(self, items: Any) -> None:
        self.items = items
        self.missing = set()
        self.complete = True
        self.count = len(items)


def _sorted_keys(keys: Any) -> list[Any]:
    try:
        return sorted(keys)
    except TypeError:
        return list(keys)


class _LocatedResults:
    """The items of a query, located in their container as they come (an
    iterator; a refused document raises in its place and the next call
    carries on, as ``query.Results`` does)."""

    def __init__(self, results: Any, container: 'MongoContainer') -> None:
        self._results = results
        self._container = container

    def __iter__(self) -> '_LocatedResults':
        return self

    def __next__(self) -> Any:
        item = next(self._results)
        return located(item, self._container._m_key_of(item),
                       self._container)

    def close(self) -> None:
        """Stop: close the cursor."""
        close = getattr(self._results, 'close', None)
        if close is not None:
            close()


@zope.interface.implementer(interfaces.IMongoContainer)
class MongoContainer(_Container, persistent.Persistent):
    """A container whose items are documents that reference it.

    Which items, where: class attributes of a subclass, or keyword
    arguments of the constructor (then stored with the container):

    ``_m_collection`` / ``collection``
        name of the collection of the items;
    ``_m_database`` / ``database``
        its database (default: the data manager's default database);
    ``_m_allowed_locations`` (class attribute only)
        other collection names, or ``(database, collection)`` pairs, that
        ``collection=`` and ``database=`` may name (a stored container's
        location is checked against the class when it is loaded);
    ``_m_item_class`` (class attribute only)
        the class of the items; names the collection when ``_m_collection``
        is not set, and limits the items to that class (and subclasses) in a
        shared collection;
    ``_m_mapping_key`` / ``mapping_key``
        the item attribute holding the item's name (default ``'key'``);
    ``_m_parent_key`` / ``parent_key``
        the item attribute referencing the container (default
        ``'parent'``);
    ``_m_allow_global`` / ``allow_global``
        for items of a class with a shard key: allow queries that do not
        pin it (default false: ``interfaces.GlobalQueryError``, see
        ``mongopersist.sharding``);
    ``_m_remove_documents`` (class attribute only)
        ``del container[name]`` removes the item's document (default);
        false: it only unsets the item's name and parent.

    Names are strings or integers.  A query for the items filters on the
    parent attribute (and the key attribute); an index on ``(parent, key)``
    in the item collection keeps it fast.  The container must be stored
    (have a data manager) before items are added to it; a container that
    is not stored is empty.  A container stored elsewhere (in ZODB) finds
    its data manager through ``set_data_manager_provider`` and its items
    reference it by ``'zodb-<oid in hex>'``.
    """

    _m_collection: Optional[str] = None
    _m_database: Optional[str] = None
    _m_allowed_locations: tuple[Any, ...] = ()
    _m_item_class: Optional[type] = None
    _m_mapping_key: Optional[str] = 'key'
    _m_parent_key: Optional[str] = 'parent'
    _m_allow_global: bool = False
    _m_settings = ('_m_collection', '_m_database', '_m_mapping_key',
                   '_m_parent_key', '_m_allow_global')

    def __init__(self, collection: Optional[str] = None,
                 database: Optional[str] = None,
                 mapping_key: Optional[str] = None,
                 parent_key: Optional[str] = None,
                 allow_global: Optional[bool] = None) -> None:
        settings = {'_m_collection': collection, '_m_database': database,
                    '_m_mapping_key': mapping_key,
                    '_m_parent_key': parent_key,
                    '_m_allow_global': allow_global}
        given = {name: value for name, value in settings.items()
                 if value is not None}
        cls = type(self)
        for name, value in given.items():
            problem = _setting_problem(cls, name, value, given)
            if problem is not None:
                raise ValueError('%s: %s %s' % (
                    cls.__name__, name[3:], problem))
        for name, value in given.items():
            setattr(self, name, value)
        if not (self._m_collection or self._m_item_class):
            raise TypeError(
                '%s needs the collection of its items: set _m_collection or '
                '_m_item_class, or pass collection='
                % type(self).__name__)
        if self._m_item_class is not None:
            query.check_class(self._m_item_class)

    # -- where the items are --------------------------------------------------
    def _m_location(self, jar: 'MongoDataManager') -> tuple[str, str]:
        """Return ``(database, collection)`` of the items."""
        cls = self._m_item_class
        if self._m_collection:
            database = (self._m_database
                        or (cls and metadata.database_name(cls, None))
                        or jar.default_database)
            return database, self._m_collection
        return jar._collection_name_of(cls)

    def get_collection(self) -> Optional[MongoCollection]:
        """The collection of the items (a ``MongoCollection``: its queries
        see this transaction's changes), for queries of your own; ``None``
        if the container is not stored."""
        jar = self._m_dm()
        if jar is None:
            return None
        collection: MongoCollection = jar.get_collection(
            *self._m_location(jar))
        return collection

    def _m_parent_value(self, jar: Any) -> Any:
        """What an item's parent attribute holds: the container itself
        (stored as a reference), or for a container stored elsewhere its
        stable key ``'zodb-<oid in hex>'``."""
        if self._p_jar is jar:
            return self
        oid = self._p_oid
        if not isinstance(oid, bytes):
            raise ValueError(
                'The %s stored by %s has no oid its items can reference '
                '(an oid of bytes, as ZODB gives): commit it first'
                % (type(self).__name__, type(self._p_jar).__name__))
        return 'zodb-' + oid.hex()

    def _m_parent_filter(self, jar: Any) -> dict[str, Any]:
        field = self._m_parent_key
        if field is None:
            return {}
        if self._p_jar is jar:
            return {field: self._p_oid}
        return {field: self._m_parent_value(jar)}

    def _m_filter(self, jar: Any, key: Any = None, extra: Any = None,
                  allow_global: Optional[bool] = None) -> dict[str, Any]:
        """The filter of this container's items (of the one named ``key``,
        and matching ``extra``), checked by the global-query guard and
        rewritten by the spec processors (``mongopersist.specs``)."""
        parts = [extra, self._m_parent_filter(jar), self._m_key_filter(key)]
        self._m_guard(jar, query.combine(*parts), allow_global)
        if self._m_item_class is not None:
            parts.append(query.type_filter(jar, self._m_item_class))
        result = query.combine(*parts)
        if specs.active():
            database, collection = self._m_location(jar)
            result = specs.process(jar._raw_collection(database, collection),
                                   result)
        return result

    def _m_guard(self, jar: Any, filter: dict[str, Any],
                 allow_global: Optional[bool] = None) -> None:
        if allow_global is None:
            allow_global = self._m_allow_global
        if allow_global:
            return
        cls = self._m_item_class
        if cls is not None:
            sharding.check_class_query(jar, cls, filter, False)
        else:
            database, collection = self._m_location(jar)
            sharding.check_collection_query(jar, database, collection,
                                            filter, False)

    def _m_key_filter(self, key: Any) -> dict[str, Any]:
        field: str = self._m_mapping_key  # type: ignore[assignment]
        if key is None:
            return {field: {'$ne': None}}
        return {field: key}

    def _m_key_of(self, item: Any) -> Any:
        return getattr(item, self._m_mapping_key,  # type: ignore[arg-type]
                       None)

    def _m_sort(self) -> Any:
        return [(self._m_mapping_key, pymongo.ASCENDING)]

    def _m_valid_key(self, key: Any) -> Any:
        """Return true if an item could be stored under ``key``.

        Names are strings or (64-bit) integers: values, never queries
        (``mongopersist.keys``).  Another key is not found (``KeyError``,
        ``in`` is false) without a query, and cannot be set
        (``ValueError``).
        """
        return keys.is_key(key, _NAME_TYPES)

    # -- the per-transaction cache --------------------------------------------
    def _m_cache(self, jar: Any = None) -> Any:
        """Return this transaction's cache (``None`` if not stored)."""
        if jar is None:
            jar = self._m_dm()
        if jar is None or self._p_oid is None:
            return None
        txn = jar.transaction_manager.get()
        token = _state_token(jar)
        cache = getattr(self, '_v_m_cache', None)
        if cache is None or cache.txn is not txn or cache.token != token:
            cache = self._v_m_cache = _ItemCache(txn, token)
        return cache

    def _m_lookup(self, key: Any) -> Any:
        """Return the item named ``key`` or ``None`` (one query at most)."""
        jar = self._m_dm()
        cache = self._m_cache(jar)
        if cache is None or not self._m_valid_key(key):
            return None
        known, item = cache.lookup(key)
        if not known:
            database, collection = self._m_location(jar)
            # What the container itself changed is in the cache: no need to
            # write pending changes first (adding many items would write
            # them one by one).
            item = query.find_one_in_collection(
                jar, database, collection, self._m_filter(jar, key),
                flush=False)
            cache.found(key, item)
        if item is not None:
            located(item, key, self)
        return item

    def _m_all(self) -> Any:
        """Return the dict of all items, by key (one query at most)."""
        jar = self._m_dm()
        cache = self._m_cache(jar)
        if cache is None:
            return {}
        if not cache.complete:
            database, collection = self._m_location(jar)
            objects = query.find_in_collection(
                jar, database, collection, self._m_filter(jar),
                batch_size=LISTING_BATCH_SIZE)
            found = {}
            for item in objects:
                key = self._m_key_of(item)
                if self._m_valid_key(key):
                    found[key] = item
            cache.fill(found)
        for key, item in cache.items.items():
            located(item, key, self)
        return cache.items

    def _m_forget(self, key: Any) -> None:
        """``key`` left this container (moved elsewhere)."""
        cache = getattr(self, '_v_m_cache', None)
        if cache is not None:
            cache.removed(key)

    # -- reading --------------------------------------------------------------
    def __getitem__(self, key: Any) -> Any:
        item = self._m_lookup(key)
        if item is None:
            raise KeyError(key)
        return item

    def get(self, key: Any, default: Any = None) -> Any:
        """Return the item named ``key``, or ``default``."""
        item = self._m_lookup(key)
        return default if item is None else item

    def __contains__(self, key: object) -> bool:
        return self._m_lookup(key) is not None

    def keys(self) -> list[Any]:
        """Return the list of item names, sorted when they can be."""
        return _sorted_keys(self._m_all())

    def values(self) -> list[Any]:
        """Return the list of items, in the order of ``keys()``."""
        items = self._m_all()
        return [items[key] for key in _sorted_keys(items)]

    def items(self) -> list[tuple[Any, Any]]:
        """Return the list of ``(name, item)`` pairs, sorted by name."""
        items = self._m_all()
        return [(key, items[key]) for key in _sorted_keys(items)]

    def __len__(self) -> int:
        jar = self._m_dm()
        cache = self._m_cache(jar)
        if cache is None:
            return 0
        if cache.count is None:
            database, collection = self._m_location(jar)
            cache.count = jar.get_collection(
                database, collection).count_documents(self._m_filter(jar))
        count: int = cache.count
        return count

    def find(self, filter: query.Filter = None, sort: query.Sort = None,
             limit: int = 0, skip: int = 0,
             allow_global: Optional[bool] = None) -> Iterator[Any]:
        """Iterate the items whose documents also match ``filter``.

        Pages through the items with one query, without loading the others:
        ``sort`` (default: by name), ``limit`` (0: no limit) and ``skip``
        as in PyMongo.  Pending changes of the item collection are written
        first, so items added or removed in this transaction are seen.
        ``allow_global`` overrides the container's ``_m_allow_global``.
        A document that cannot be loaded raises its ``StoredDataError`` in
        the place of its item; iterating on carries on.
        """
        filter = query.check_filter(filter)
        jar = self._m_dm()
        if jar is None or self._p_oid is None:
            return iter(())
        database, collection = self._m_location(jar)
        return _LocatedResults(query.find_in_collection(
            jar, database, collection,
            self._m_filter(jar, extra=filter, allow_global=allow_global),
            sort=self._m_sort() if sort is None else sort,
            limit=limit, skip=skip), self)

    def find_one(self, filter_or_id: Any = None, sort: query.Sort = None,
                 allow_global: Optional[bool] = None) -> Any:
        """Return the first item whose document also matches
        ``filter_or_id`` (a filter, or the ``_id`` of the item), or
        ``None``."""
        jar = self._m_dm()
        if jar is None or self._p_oid is None:
            return None
        database, collection = self._m_location(jar)
        item = query.find_one_in_collection(
            jar, database, collection, self._m_filter(
                jar, extra=self._m_id_filter(filter_or_id),
                allow_global=allow_global),
            sort=self._m_sort() if sort is None else sort)
        if item is None:
            return None
        return located(item, self._m_key_of(item), self)

    def _m_id_filter(self, filter_or_id: Any) -> dict[str, Any]:
        if filter_or_id is None or isinstance(filter_or_id, Mapping):
            return query.check_filter(filter_or_id)
        if not references.is_id(filter_or_id):
            raise TypeError('%s is neither a filter nor an _id'
                            % limits.quote(filter_or_id))
        return {'_id': filter_or_id}

    def raw_find(self, filter: query.Filter = None, projection: Any = None,
                 sort: query.Sort = None, limit: int = 0, skip: int = 0,
                 allow_global: Optional[bool] = None) -> Any:
        """Return a PyMongo cursor of the documents of the items that also
        match ``filter`` (plain documents, for reading; pending changes
        are written first).  Empty if the container is not stored."""
        jar = self._m_dm()
        if jar is None or self._p_oid is None:
            return iter(())
        kwargs = {'limit': limit, 'skip': skip}
        sort = query.normalize_sort(sort)
        if sort:
            kwargs['sort'] = sort
        return self.get_collection().find(  # type: ignore[union-attr]
            self._m_filter(jar, extra=query.check_filter(filter),
                           allow_global=allow_global), projection, **kwargs)

    def raw_find_one(self, filter_or_id: Any = None, projection: Any = None,
                     sort: query.Sort = None,
                     allow_global: Optional[bool] = None
                     ) -> Optional[dict[str, Any]]:
        """Return the document of the first item that also matches
        ``filter_or_id`` (a filter or an ``_id``), or ``None``."""
        jar = self._m_dm()
        if jar is None or self._p_oid is None:
            return None
        kwargs = {}
        sort = query.normalize_sort(sort)
        if sort:
            kwargs['sort'] = sort
        return self.get_collection().find_one(  # type: ignore[union-attr]
            self._m_filter(jar, extra=self._m_id_filter(filter_or_id),
                           allow_global=allow_global), projection, **kwargs)

    # -- writing --------------------------------------------------------------
    def _m_check_item(self, item: Any) -> Any:
        """Raise unless ``item`` can be an item of this container."""
        name = type(self).__name__
        jar = self._m_dm()
        if jar is None or self._p_oid is None:
            raise ValueError(
                'Store the %s before adding items to it (for example '
                'dm.root[name] = container, or dm.insert(container))' % name)
        if not isinstance(item, persistent.Persistent) or \
                metadata.is_sub_object(type(item)):
            raise TypeError(
                '%s items must be persistent objects stored in a collection '
                'of their own, not %s' % (name, limits.quote(item)))
        cls = self._m_item_class
        if cls is not None and not isinstance(item, cls):
            raise TypeError('%s items must be %s objects, not %s'
                            % (name, cls.__name__, limits.quote(item)))
        if item._p_jar is not None and item._p_jar is not jar:
            raise ValueError('%s belongs to another data manager (%r)'
                             % (limits.quote(item), item._p_jar))
        oid = item._p_oid
        where = ((oid.database, oid.collection) if oid is not None else
                 jar._collection_name_of(type(item)))
        wanted = self._m_location(jar)
        if where != wanted:
            raise ValueError(
                '%s cannot be an item of this %s: it is stored in %s.%s, the '
                'items in %s.%s' % ((limits.quote(item), name) + where
                                    + wanted))
        return jar

    def _m_is_parent_of(self, item: Any, jar: Any) -> bool:
        field = self._m_parent_key
        if field is None:
            return True
        value = getattr(item, field, None)
        if self._p_jar is jar:
            return value is self
        same: bool = value == self._m_parent_value(jar)
        return same

    def _m_current_key(self, item: Any, jar: Any = None) -> Any:
        """The key ``item`` has in this container now, or ``None``."""
        if item._p_jar is None:
            return None
        if not self._m_is_parent_of(item, jar or self._m_dm()):
            return None
        return self._m_key_of(item)

    def _m_old_location(self, item: Any, jar: Any) -> tuple[Any, Any]:
        """``(parent, name)`` of ``item`` before it is put here."""
        key = self._m_current_key(item, jar)
        if key is not None:
            return self, key
        parent, name = _old_location(item)
        if parent is None and item._p_jar is not None:
            parent = getattr(item, self._m_parent_key or '_m_none', None)
            if isinstance(parent, MongoContainer):
                name = parent._m_key_of(item)
            else:
                parent = None
        return parent, name

    def __setitem__(self, key: Any, item: Any) -> None:
        """Store ``item`` in the container under the name ``key``.

        Sets the item's key and parent attributes; an item stored under
        ``key`` before is removed (its document is deleted at commit).
        Fires ``ObjectAddedEvent`` (``ObjectMovedEvent`` for an item that
        was elsewhere) and ``ContainerModifiedEvent``.
        """
        if not self._m_valid_key(key):
            raise ValueError('%s is not a valid name for an item of this %s'
                             % (limits.quote(key), type(self).__name__))
        jar = self._m_check_item(item)
        cache = self._m_cache(jar)
        previous = self._m_lookup(key)
        if previous is item:
            return
        old_parent, old_key = self._m_old_location(item, jar)
        if previous is not None:
            self._m_take_out(jar, key, previous)
        if old_parent is self and old_key is not None and old_key != key:
            # A rename: the item leaves its old name.
            cache.removed(old_key)
        elif isinstance(old_parent, MongoContainer) and \
                old_parent is not self and old_key is not None:
            old_parent._m_forget(old_key)
        if self._m_mapping_key is not None:
            setattr(item, self._m_mapping_key, key)
        if self._m_parent_key is not None:
            setattr(item, self._m_parent_key, self._m_parent_value(jar))
        if item._p_jar is None:
            jar.insert(item)
        cache.added(key, item, new=True)
        _place(item, key, self, stored_parent=not self._m_hosted_elsewhere())
        events.added(item, self, key, old_parent, old_key)
        events.container_modified(self)

    def add(self, item: Any, key: Any = None) -> Any:
        """Store ``item`` under ``key``; without one, under the name it
        holds in its key attribute, else under its ``ObjectId`` (as a
        string).  Returns the name."""
        if key is None:
            key = self._m_key_of(item)
        if key is None:
            jar = self._m_check_item(item)
            if item._p_jar is None:
                jar.insert(item)
            key = str(item._p_oid.id)
        self[key] = item
        return key

    def _m_take_out(self, jar: Any, key: Any, item: Any) -> None:
        """Take ``item``, named ``key``, out of the container: remove its
        document (or unset its name and parent), fire the events."""
        if self._m_remove_documents:
            jar.remove(item)
        else:
            item._p_activate()
            for field in (self._m_mapping_key, self._m_parent_key):
                if field is not None and field in item.__dict__:
                    delattr(item, field)
        self._m_cache(jar).removed(key)
        events.removed(item, self, key)
        _unplace(item, self)

    def __delitem__(self, key: Any) -> None:
        """Remove the item named ``key``: its document is deleted (unless
        ``_m_remove_documents`` is false).  Fires ``ObjectRemovedEvent``
        and ``ContainerModifiedEvent``."""
        item = self._m_lookup(key)
        if item is None:
            raise KeyError(key)
        self._m_take_out(self._m_dm(), key, item)
        events.container_modified(self)

    def __repr__(self) -> str:
        oid = self._p_oid
        if oid is None:
            return '<%s (not stored)>' % type(self).__name__
        return '<%s %s>' % (type(self).__name__, getattr(oid, 'id', oid))


class AllItemsMongoContainer(MongoContainer):
    """A ``MongoContainer`` of every document of its collection that has a
    name: no parent filter.  Adding sets the item's name only."""

    _m_parent_key = None

    def _m_old_location(self, item: Any, jar: Any) -> tuple[Any, Any]:
        key = self._m_current_key(item, jar)
        if key is not None:
            return self, key
        return _old_location(item)


class IdNamesMongoContainer(MongoContainer):
    """A ``MongoContainer`` naming its items by their ``ObjectId``.

    The name of an item is ``str(item._p_oid.id)``; items need no key
    attribute.  Add items with ``add(item)``, which returns the name.
    """

    _m_mapping_key = None

    def _m_key_filter(self, key: Any) -> dict[str, Any]:
        if key is None:
            return {}
        return {'_id': ObjectId(key)}

    def _m_key_of(self, item: Any) -> Any:
        oid = item._p_oid
        return None if oid is None else str(oid.id)

    def _m_sort(self) -> Any:
        return [('_id', pymongo.ASCENDING)]

    def _m_valid_key(self, key: Any) -> Any:
        if not isinstance(key, str):
            return False
        try:
            ObjectId(key)
        except InvalidId:
            return False
        return True

    def __setitem__(self, key: Any, item: Any) -> None:
        raise TypeError('%s names its items itself: use add(item), which '
                        'returns the name' % type(self).__name__)

    def add(self, item: Any, key: Any = None) -> Any:
        """Store ``item`` in the container; return its new name (its
        ``ObjectId`` as a string; ``key``, if given, must be it)."""
        jar = self._m_check_item(item)
        cache = self._m_cache(jar)
        old_parent, old_key = self._m_old_location(item, jar)
        if item._p_jar is None:
            jar.insert(item)
        name = str(item._p_oid.id)
        if key is not None and key != name:
            raise ValueError('%s names its items by their ObjectId: %s is '
                             'not %s' % (type(self).__name__,
                                         limits.quote(key), name))
        if old_parent is self:
            return name
        if isinstance(old_parent, MongoContainer) and old_key is not None:
            old_parent._m_forget(old_key)
        setattr(item, self._m_parent_key,  # type: ignore[arg-type]
                self._m_parent_value(jar))
        cache.added(name, item, new=True)
        _place(item, name, self, stored_parent=not self._m_hosted_elsewhere())
        events.added(item, self, name, old_parent, old_key)
        events.container_modified(self)
        return name


class _InDocumentContainer(_Container):
    """A container whose items are kept, by name, in its own document
    (the field ``data``)."""

    _m_has_data = True

    def __init__(self) -> None:
        self.data = serialize.PersistentDict()

    def _m_check(self, key: Any, item: Any) -> None:
        """Raise unless ``item`` can be stored under ``key``."""
        if not keys.is_key(key):
            raise TypeError('%s names must be strings, not %s'
                            % (type(self).__name__, limits.quote(key)))

    def _m_new_name(self, item: Any) -> Any:
        return str(ObjectId())

    def __getitem__(self, key: Any) -> Any:
        if not keys.is_key(key):
            raise KeyError(key)
        return located(self.data[key], key, self)

    def get(self, key: Any, default: Any = None) -> Any:
        """Return the item named ``key``, or ``default``."""
        if not keys.is_key(key) or key not in self.data:
            return default
        return located(self.data[key], key, self)

    def __contains__(self, key: object) -> bool:
        return keys.is_key(key) and key in self.data

    def keys(self) -> list[Any]:
        """Return the list of item names, sorted."""
        return _sorted_keys(self.data)

    def values(self) -> list[Any]:
        """Return the list of items, in the order of ``keys()``."""
        return [self[key] for key in self.keys()]

    def items(self) -> list[tuple[Any, Any]]:
        """Return the list of ``(name, item)`` pairs, sorted by name."""
        return [(key, self[key]) for key in self.keys()]

    def __len__(self) -> int:
        return len(self.data)

    def __setitem__(self, key: Any, item: Any) -> None:
        """Store ``item`` under ``key`` (replacing the item stored under
        it).  Fires ``ObjectAddedEvent`` (``ObjectMovedEvent``) and
        ``ContainerModifiedEvent``."""
        self._m_check(key, item)
        previous = self.data.get(key, _MISSING)
        if previous is item:
            return
        old_parent, old_name = _old_location(item)
        if previous is not _MISSING:
            self._m_take_out(key, previous)
        self.data[key] = item
        self._p_changed = True
        _place(item, key, self)
        events.added(item, self, key, old_parent, old_name)
        events.container_modified(self)

    def add(self, item: Any, key: Any = None) -> Any:
        """Store ``item`` under ``key``, or a new name (an ``ObjectId`` as
        a string) when none is given; return the name."""
        if key is None:
            key = self._m_new_name(item)
        self[key] = item
        return key

    def _m_take_out(self, key: Any, item: Any) -> None:
        del self.data[key]
        self._p_changed = True
        events.removed(item, self, key)
        _unplace(item, self)

    def __delitem__(self, key: Any) -> None:
        """Take out the item named ``key``.  Fires ``ObjectRemovedEvent``
        and ``ContainerModifiedEvent``."""
        if not keys.is_key(key):
            raise KeyError(key)
        self._m_take_out(key, self.data[key])
        events.container_modified(self)

    def __repr__(self) -> str:
        return '<%s with %d items>' % (type(self).__name__, len(self.data))


@zope.interface.implementer(interfaces.IMongoContainer)
class SimpleMongoContainer(_InDocumentContainer, persistent.Persistent):
    """A container keeping references to its items in its own document.

    Items are persistent objects, each stored in the collection of its
    class; the container's document maps names to references
    (``{'data': {'name': DBRef(...)}}``).  Loading the container reads the
    references; the items are loaded in batches as they are used
    (``mongopersist.batching``).  Names are strings.  Taking an item out
    removes its document (unless ``_m_remove_documents`` is false).
    """

    def _m_check(self, key: Any, item: Any) -> None:
        super()._m_check(key, item)
        if not isinstance(item, persistent.Persistent) or \
                metadata.is_sub_object(type(item)):
            raise TypeError(
                '%s items must be persistent objects stored in a collection '
                'of their own, not %s' % (type(self).__name__,
                                          limits.quote(item)))
        jar = self._p_jar
        if item._p_jar is not None and jar is not None and \
                item._p_jar is not jar:
            raise ValueError('%s belongs to another data manager (%r)'
                             % (limits.quote(item), item._p_jar))

    def _m_take_out(self, key: Any, item: Any) -> None:
        super()._m_take_out(key, item)
        if self._m_remove_documents and isinstance(
                item, persistent.Persistent) and item._p_jar is not None \
                and item._p_jar is self._p_jar:
            item._p_jar.remove(item)


@zope.interface.implementer(interfaces.IMongoContainer)
class EmbeddedMongoContainer(_InDocumentContainer, persistent.Persistent):
    """A container that keeps its items inside its own document.

    Items are values stored as part of the container's document: plain
    storable values or persistent classes marked ``_p_mongo_sub_object``.
    Names are strings.  Loading the container loads every item (one read);
    suited to containers of modest size.  Also named
    ``SubDocumentMongoContainer`` (see ``docs/containers.rst``).
    """

    def _m_check(self, key: Any, item: Any) -> None:
        super()._m_check(key, item)
        if isinstance(item, persistent.Persistent) and \
                not metadata.is_sub_object(type(item)):
            raise TypeError(
                '%s would be stored as a reference, not inside the %s: use a '
                'class with _p_mongo_sub_object = True, or a MongoContainer'
                % (limits.quote(item), type(self).__name__))


#: The original package's name of the container whose items are stored
#: inside its document.
SubDocumentMongoContainer = EmbeddedMongoContainer
