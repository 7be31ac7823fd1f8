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

``EmbeddedMongoContainer``
    Keeps its items inside its own document: one read loads it all.

Listing a ``MongoContainer`` (``keys``, ``values``, ``items``, iteration)
costs one query, whatever the number of items; so does ``len`` and looking
up a name (``[]``, ``in``, ``get``, and adding, which must know whether the
name is taken).  What was learned is kept for the rest of the transaction,
and the container's own ``[]=``, ``add`` and ``del`` keep it up to date, so
asking again costs nothing.  Items whose key or parent attribute is changed
directly (not through the container), or that are removed with
``dm.remove``, show up in their new place from the next transaction on.
"""
import persistent
import pymongo
from bson.errors import InvalidId
from bson.objectid import ObjectId

from mongopersist import keys, limits, metadata, query, serialize, sharding

# Items asked for per round trip when a container lists all its items.
LISTING_BATCH_SIZE = 5000

# What the names of a ``MongoContainer``'s items are.
_NAME_TYPES = (str, int)


def _state_token(jar):
    # Changes at transaction boundaries and savepoint rollbacks: then what
    # a container learned is stale.
    return jar.state_generation


class _ItemCache:
    """What a container learned about its items in one transaction."""

    def __init__(self, txn, token):
        self.txn = txn
        self.token = token
        self.items = {}         # key -> item known to be in the container
        self.missing = set()    # keys known not to be in the container
        self.complete = False   # ``items`` holds every item
        self.count = None       # number of items, when known

    def lookup(self, key):
        """Return ``(known, item)``; ``item`` is None for a missing key."""
        if key in self.items:
            return True, self.items[key]
        if self.complete or key in self.missing:
            return True, None
        return False, None

    def found(self, key, item):
        if item is None:
            self.missing.add(key)
        else:
            self.items[key] = item

    def added(self, key, item, new):
        self.items[key] = item
        self.missing.discard(key)
        if new and self.count is not None:
            self.count += 1

    def removed(self, key):
        self.items.pop(key, None)
        self.missing.add(key)
        if self.count is not None:
            self.count -= 1

    def fill(self, items):
        self.items = items
        self.missing = set()
        self.complete = True
        self.count = len(items)


def _sorted_keys(keys):
    try:
        return sorted(keys)
    except TypeError:
        return list(keys)


class MongoContainer(persistent.Persistent):
    """A container whose items are documents that reference it.

    Which items, where: class attributes of a subclass, or keyword
    arguments of the constructor (then stored with the container):

    ``_m_collection`` / ``collection``
        name of the collection of the items;
    ``_m_database`` / ``database``
        its database (default: the data manager's default database);
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
        ``mongopersist.sharding``).

    Names are strings or integers.  A query for the items filters on the
    parent attribute (and the key attribute); an index on ``(parent, key)``
    in the item collection keeps it fast.  The container must be stored (have a data manager) before
    items are added to it; a container that is not stored is empty.
    """

    _m_collection = None
    _m_database = None
    _m_item_class = None
    _m_mapping_key = 'key'
    _m_parent_key = 'parent'
    _m_allow_global = False

    def __init__(self, collection=None, database=None, mapping_key=None,
                 parent_key=None, allow_global=None):
        settings = {'_m_collection': collection, '_m_database': database,
                    '_m_mapping_key': mapping_key,
                    '_m_parent_key': parent_key,
                    '_m_allow_global': allow_global}
        for name, value in settings.items():
            if value is not None:
                setattr(self, name, value)
        if not (self._m_collection or self._m_item_class):
            raise TypeError(
                '%s needs the collection of its items: set _m_collection or '
                '_m_item_class, or pass collection='
                % type(self).__name__)
        if self._m_item_class is not None:
            query.check_class(self._m_item_class)

    # -- where the items are --------------------------------------------------
    def _m_location(self, jar):
        """Return ``(database, collection)`` of the items."""
        cls = self._m_item_class
        if self._m_collection:
            database = (self._m_database
                        or (cls and metadata.database_name(cls, None))
                        or jar.default_database)
            return database, self._m_collection
        return jar._collection_name_of(cls)

    def _m_filter(self, jar, key=None, extra=None, allow_global=None):
        """The filter of this container's items (of the one named ``key``,
        and matching ``extra``), checked by the global-query guard."""
        parts = [extra, {self._m_parent_key: self._p_oid},
                 self._m_key_filter(key)]
        self._m_guard(jar, query.combine(*parts), allow_global)
        if self._m_item_class is not None:
            parts.append(query.type_filter(jar, self._m_item_class))
        return query.combine(*parts)

    def _m_guard(self, jar, filter, allow_global=None):
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

    def _m_key_filter(self, key):
        field = self._m_mapping_key
        if key is None:
            return {field: {'$ne': None}}
        return {field: key}

    def _m_key_of(self, item):
        return getattr(item, self._m_mapping_key)

    def _m_sort(self):
        return [(self._m_mapping_key, pymongo.ASCENDING)]

    def _m_valid_key(self, key):
        """Return true if an item could be stored under ``key``.

        Names are strings or (64-bit) integers: values, never queries
        (``mongopersist.keys``).  Another key is not found (``KeyError``,
        ``in`` is false) without a query, and cannot be set
        (``ValueError``).
        """
        return keys.is_key(key, _NAME_TYPES)

    # -- the per-transaction cache --------------------------------------------
    def _m_cache(self):
        """Return this transaction's cache (``None`` if not stored)."""
        jar = self._p_jar
        if jar is None or self._p_oid is None:
            return None
        txn = jar.transaction_manager.get()
        token = _state_token(jar)
        cache = getattr(self, '_v_m_cache', None)
        if cache is None or cache.txn is not txn or cache.token != token:
            cache = self._v_m_cache = _ItemCache(txn, token)
        return cache

    def _m_lookup(self, key):
        """Return the item named ``key`` or ``None`` (one query at most)."""
        cache = self._m_cache()
        if cache is None or not self._m_valid_key(key):
            return None
        known, item = cache.lookup(key)
        if not known:
            jar = self._p_jar
            database, collection = self._m_location(jar)
            # What the container itself changed is in the cache: no need to
            # write pending changes first (adding many items would write
            # them one by one).
            item = query.find_one_in_collection(
                jar, database, collection, self._m_filter(jar, key),
                flush=False)
            cache.found(key, item)
        return item

    def _m_all(self):
        """Return the dict of all items, by key (one query at most)."""
        cache = self._m_cache()
        if cache is None:
            return {}
        if not cache.complete:
            jar = self._p_jar
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
        return cache.items

    # -- reading --------------------------------------------------------------
    def __getitem__(self, key):
        item = self._m_lookup(key)
        if item is None:
            raise KeyError(key)
        return item

    def get(self, key, default=None):
        """Return the item named ``key``, or ``default``."""
        item = self._m_lookup(key)
        return default if item is None else item

    def __contains__(self, key):
        return self._m_lookup(key) is not None

    def keys(self):
        """Return the list of item names, sorted when they can be."""
        return _sorted_keys(self._m_all())

    def __iter__(self):
        return iter(self.keys())

    def values(self):
        """Return the list of items, in the order of ``keys()``."""
        items = self._m_all()
        return [items[key] for key in _sorted_keys(items)]

    def items(self):
        """Return the list of ``(name, item)`` pairs, sorted by name."""
        items = self._m_all()
        return [(key, items[key]) for key in _sorted_keys(items)]

    def __len__(self):
        cache = self._m_cache()
        if cache is None:
            return 0
        if cache.count is None:
            jar = self._p_jar
            database, collection = self._m_location(jar)
            cache.count = jar.get_collection(
                database, collection).count_documents(self._m_filter(jar))
        return cache.count

    def __bool__(self):
        # A container is an object, true even when empty (unlike a dict).
        return True

    def find(self, filter=None, sort=None, limit=0, skip=0,
             allow_global=None):
        """Iterate the items whose documents also match ``filter``.

        Pages through the items with one query, without loading the others:
        ``sort`` (default: by name), ``limit`` (0: no limit) and ``skip``
        as in PyMongo.  Pending changes of the item collection are written
        first, so items added or removed in this transaction are seen.
        ``allow_global`` overrides the container's ``_m_allow_global``.
        """
        filter = query.check_filter(filter)
        jar = self._p_jar
        if jar is None or self._p_oid is None:
            return iter(())
        database, collection = self._m_location(jar)
        return query.find_in_collection(
            jar, database, collection,
            self._m_filter(jar, extra=filter, allow_global=allow_global),
            sort=self._m_sort() if sort is None else sort,
            limit=limit, skip=skip)

    # -- writing --------------------------------------------------------------
    def _m_check_item(self, item):
        """Raise unless ``item`` can be an item of this container."""
        name = type(self).__name__
        jar = self._p_jar
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

    def _m_current_key(self, item):
        """The key ``item`` has in this container now, or ``None``."""
        if item._p_jar is None:
            return None
        if getattr(item, self._m_parent_key, None) is not self:
            return None
        return getattr(item, self._m_mapping_key, None)

    def __setitem__(self, key, item):
        """Store ``item`` in the container under the name ``key``.

        Sets the item's key and parent attributes; an item stored under
        ``key`` before is removed (its document is deleted at commit).
        """
        if not self._m_valid_key(key):
            raise ValueError('%s is not a valid name for an item of this %s'
                             % (limits.quote(key), type(self).__name__))
        self._m_check_item(item)
        cache = self._m_cache()
        previous = self._m_lookup(key)
        if previous is item:
            return
        old_key = self._m_current_key(item)
        if previous is not None:
            self._p_jar.remove(previous)
            cache.removed(key)
        if old_key is not None and old_key != key:
            # A rename: the item leaves its old name.
            cache.removed(old_key)
        setattr(item, self._m_mapping_key, key)
        setattr(item, self._m_parent_key, self)
        if item._p_jar is None:
            self._p_jar.insert(item)
        cache.added(key, item, new=True)

    def add(self, item):
        """Store ``item`` under the name it holds in its key attribute.

        Returns the name.
        """
        key = getattr(item, self._m_mapping_key, None)
        if key is None:
            raise ValueError(
                '%s has no %r to be stored under in this %s; set it or use '
                'container[name] = item' % (
                    limits.quote(item), self._m_mapping_key,
                    type(self).__name__))
        self[key] = item
        return key

    def __delitem__(self, key):
        """Remove the item named ``key``: its document is deleted."""
        item = self._m_lookup(key)
        if item is None:
            raise KeyError(key)
        self._p_jar.remove(item)
        self._m_cache().removed(key)

    def __repr__(self):
        oid = self._p_oid
        return '<%s %s>' % (type(self).__name__,
                            oid.id if oid is not None else '(not stored)')


class IdNamesMongoContainer(MongoContainer):
    """A ``MongoContainer`` naming its items by their ``ObjectId``.

    The name of an item is ``str(item._p_oid.id)``; items need no key
    attribute.  Add items with ``add(item)``, which returns the name.
    """

    _m_mapping_key = None

    def _m_key_filter(self, key):
        if key is None:
            return {}
        return {'_id': ObjectId(key)}

    def _m_key_of(self, item):
        return str(item._p_oid.id)

    def _m_sort(self):
        return [('_id', pymongo.ASCENDING)]

    def _m_valid_key(self, key):
        if not isinstance(key, str):
            return False
        try:
            ObjectId(key)
        except InvalidId:
            return False
        return True

    def _m_current_key(self, item):
        if item._p_jar is None:
            return None
        if getattr(item, self._m_parent_key, None) is not self:
            return None
        return str(item._p_oid.id)

    def __setitem__(self, key, item):
        raise TypeError('%s names its items itself: use add(item), which '
                        'returns the name' % type(self).__name__)

    def add(self, item):
        """Store ``item`` in the container; return its new name."""
        self._m_check_item(item)
        cache = self._m_cache()
        new = self._m_current_key(item) is None
        setattr(item, self._m_parent_key, self)
        if item._p_jar is None:
            self._p_jar.insert(item)
        key = str(item._p_oid.id)
        cache.added(key, item, new=new)
        return key


class EmbeddedMongoContainer(persistent.Persistent):
    """A container that keeps its items inside its own document.

    Items are values stored as part of the container's document: plain
    storable values or persistent classes marked ``_p_mongo_sub_object``.
    Names are strings.  Loading the container loads every item (one read);
    suited to containers of modest size.
    """

    def __init__(self):
        self.data = serialize.PersistentDict()

    def _m_check(self, key, item):
        name = type(self).__name__
        if not isinstance(key, str):
            raise TypeError('%s names must be strings, not %s'
                            % (name, limits.quote(key)))
        if isinstance(item, persistent.Persistent) and \
                not metadata.is_sub_object(type(item)):
            raise TypeError(
                '%s would be stored as a reference, not inside the %s: use a '
                'class with _p_mongo_sub_object = True, or a MongoContainer'
                % (limits.quote(item), name))

    def __getitem__(self, key):
        return self.data[key]

    def get(self, key, default=None):
        """Return the item named ``key``, or ``default``."""
        return self.data.get(key, default)

    def __contains__(self, key):
        return key in self.data

    def __setitem__(self, key, item):
        """Store ``item`` under ``key`` inside the container's document."""
        self._m_check(key, item)
        self.data[key] = item
        self._p_changed = True

    def __delitem__(self, key):
        """Remove the item named ``key``."""
        del self.data[key]
        self._p_changed = True

    def keys(self):
        """Return the list of item names, sorted."""
        return sorted(self.data)

    def __iter__(self):
        return iter(self.keys())

    def values(self):
        """Return the list of items, in the order of ``keys()``."""
        return [self.data[key] for key in self.keys()]

    def items(self):
        """Return the list of ``(name, item)`` pairs, sorted by name."""
        return [(key, self.data[key]) for key in self.keys()]

    def __len__(self):
        return len(self.data)

    def __bool__(self):
        return True

    def __repr__(self):
        return '<%s with %d items>' % (type(self).__name__, len(self.data))
