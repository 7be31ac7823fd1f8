"""Which classes store their instances in which collection.

A small collection in the root database (``persistence_type_map``) holds one
document per collection that mongopersist writes to::

    {'_id': 'mydb.address', 'database': 'mydb', 'collection': 'address',
     'types': ['myapp.Address', 'myapp.ExtendedAddress']}

With one type, a ``DBRef`` into that collection becomes a ghost of that
class without reading the document.  Once a second type joins, the
collection is *shared*: documents written from then on carry
``_py_persistent_type``; documents without it are of the first type.

What is read is kept for the process (per client and type-map collection),
not per data manager: a new data manager (one per request, say) reads no
type map for collections the process knows.  Entries only grow (types are
added with ``$addToSet``, the first stays first), so a kept entry is at
worst short of types another process added since; it is read again on a
miss:

* a collection the process has no entry for;
* a class this process writes that the entry does not list (the
  ``findAndModify`` that adds it returns the whole entry);
* a query result naming a class the entry does not list (``refresh``):
  the query drops what is not an instance of the queried class.

Loading stays right with a short entry: a document of a shared collection
names its class, and loading follows that name.
"""
import threading
import weakref

import pymongo

from mongopersist import interfaces, legacy, limits, metadata

TYPE_MAP_COLLECTION = 'persistence_type_map'
# Key prefix of the original package's name map in the process cache.
_NAME_MAP = ('name map',)


# id(client) -> (weak reference to the client, {(database, collection of
# the type map): {(database, collection): [type names]}})
_shared = {}
# Reentrant: a client's weakref callback (``forget``) takes it, and runs
# wherever the client is collected, also inside a section holding it.
_shared_lock = threading.RLock()


def _process_cache(client, database, collection):
    """The entries of one type map read by this process, for ``client``."""
    key = id(client)
    with _shared_lock:
        found = _shared.get(key)
        if found is None or found[0]() is not client:
            def forget(ref, key=key):
                with _shared_lock:
                    if key in _shared and _shared[key][0] is ref:
                        del _shared[key]
            found = _shared[key] = (weakref.ref(client, forget), {})
        return found[1].setdefault((database, collection), {})


def forget_process_cache():
    """Forget every type map entry the process has read (tests use it to
    act as a new process)."""
    with _shared_lock:
        _shared.clear()


class CollectionTypeMap:
    """The stored map of collections to the classes stored in them.

    One instance per data manager; what it reads is kept for the process
    (see the module docstring).  Stored class
    names resolve through ``registry`` (a ``metadata.TypeRegistry``, default
    ``metadata.REGISTRY``) as top-level persistent classes (kind
    ``'persistent'``).  A malformed entry raises
    ``interfaces.StoredDataError`` naming the type-map document.
    """

    def __init__(self, client, database, collection=TYPE_MAP_COLLECTION,
                 registry=None):
        self._coll = client[database][collection]
        self._database = database
        self._collection = collection
        self._types = _process_cache(client, database, collection)
        # Collections this data manager recorded its classes in itself.
        self._recorded = set()
        self.registry = registry if registry is not None else metadata.REGISTRY

    def _resolve(self, name):
        return self.registry.resolve(name, 'persistent')

    def _checked_types(self, doc):
        """Return the ``types`` of the type-map document ``doc``."""
        types = doc.get('types') if isinstance(doc, dict) else None
        if not isinstance(types, list) or not all(
                isinstance(name, str) for name in types):
            raise interfaces.StoredDataError(
                'A type map entry needs "types", an array of class names',
                database=self._database, collection=self._collection,
                id=doc.get('_id') if isinstance(doc, dict) else None,
                path='types')
        return list(types)

    def types_of(self, database, collection):
        """Return the dotted names of the classes stored in a collection."""
        key = (database, collection)
        types = self._types.get(key)
        if types is None:
            doc = self._coll.find_one({'_id': '%s.%s' % key})
            types = self._checked_types(doc) if doc is not None else []
            if not types:
                types = self._legacy_types(key)
            if types:
                self._types[key] = types
        return types

    def _legacy_types(self, key):
        """The class names the original package recorded (its name map,
        read once per collection and process, kept beside the entries),
        for databases not upgraded yet."""
        types = self._types.get(_NAME_MAP + key)
        if types is None:
            types = self._types[_NAME_MAP + key] = legacy.name_map_types(
                self._coll.database, *key)
        return list(types)

    def refresh(self, database, collection):
        """Read the entry of a collection again (a miss); return its types."""
        self._types.pop((database, collection), None)
        return self.types_of(database, collection)

    def register(self, database, collection, cls, inserting=False):
        """Record that ``cls`` is stored in the collection; return all types.

        With ``inserting``, the entry is written once per data manager and
        collection even if the process knows it: new documents are about
        to be stored, and the entry may have gone with a dropped database
        or type map (an idempotent ``$addToSet``, which also brings back
        the whole entry).
        """
        name = metadata.get_dotted_name(cls)
        key = (database, collection)
        if not inserting or key in self._recorded:
            types = self.types_of(database, collection)
            if name in types:
                return types
        # A collection of the original package's name map: its classes
        # come first in the new entry.
        legacy_types = self._types.get(_NAME_MAP + key)
        added = {'$each': legacy_types + [name]} if legacy_types else name
        doc = self._coll.find_one_and_update(
            {'_id': '%s.%s' % key},
            {'$addToSet': {'types': added},
             '$setOnInsert': {'database': database, 'collection': collection}},
            upsert=True, return_document=pymongo.ReturnDocument.AFTER)
        types = self._types[key] = self._checked_types(doc)
        self._recorded.add(key)
        return types

    def stores_type(self, database, collection, cls, inserting=False):
        """Return true if documents of ``cls`` must name their class.

        Records ``cls`` in the type map in any case (also for classes with
        ``_p_mongo_store_type``), so that queries of another class sharing
        the collection know to filter.
        """
        types = self.register(database, collection, cls, inserting)
        return metadata.always_stores_type(cls) or len(types) > 1

    def class_for(self, database, collection):
        """Return the only class stored in a collection.

        Returns ``None`` when the collection is shared or unknown: the
        document must be read to know the class.
        """
        types = self.types_of(database, collection)
        if len(types) == 1:
            return self._resolve(types[0])
        if types:
            return None
        # Nothing registered: the default collection name is the class's
        # dotted name.
        try:
            return self._resolve(collection)
        except interfaces.StoredDataError:
            return None

    def default_class(self, database, collection):
        """Return the class of documents that do not name their class."""
        types = self.types_of(database, collection)
        if types:
            return self._resolve(types[0])
        cls = self.class_for(database, collection)
        if cls is None:
            raise interfaces.UnknownTypeError(
                'No class is known to be stored in collection %s of '
                'database %s' % (limits.quote(collection),
                                 limits.quote(database)))
        return cls
