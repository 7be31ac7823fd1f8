"""Which classes store their instances in which collection.

A small collection in the root database (``persistence_type_map``) holds one
document per collection that mongopersist writes to::

    {'_id': 'mydb.address', 'database': 'mydb', 'collection': 'address',
     'types': ['myapp.Address', 'myapp.ExtendedAddress']}

With one type, a ``DBRef`` into that collection becomes a ghost of that
class without reading the document.  Once a second type joins, the
collection is *shared*: documents written from then on carry
``_py_persistent_type``; documents without it are of the first type.
"""
import pymongo

from mongopersist import interfaces, legacy, metadata

TYPE_MAP_COLLECTION = 'persistence_type_map'


class CollectionTypeMap:
    """The stored map of collections to the classes stored in them.

    One instance per data manager; it caches what it has read.  Stored class
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
        self._types = {}
        self._legacy = {}
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
        read once per collection), for databases not upgraded yet."""
        types = self._legacy.get(key)
        if types is None:
            types = self._legacy[key] = legacy.name_map_types(
                self._coll.database, *key)
        return list(types)

    def register(self, database, collection, cls):
        """Record that ``cls`` is stored in the collection; return all types."""
        name = metadata.get_dotted_name(cls)
        types = self.types_of(database, collection)
        if name in types:
            return types
        key = (database, collection)
        # A collection of the original package's name map: its classes
        # come first in the new entry.
        legacy_types = self._legacy.get(key)
        added = {'$each': legacy_types + [name]} if legacy_types else name
        doc = self._coll.find_one_and_update(
            {'_id': '%s.%s' % key},
            {'$addToSet': {'types': added},
             '$setOnInsert': {'database': database, 'collection': collection}},
            upsert=True, return_document=pymongo.ReturnDocument.AFTER)
        types = self._types[key] = self._checked_types(doc)
        return types

    def stores_type(self, database, collection, cls):
        """Return true if documents of ``cls`` must name their class.

        Records ``cls`` in the type map in any case (also for classes with
        ``_p_mongo_store_type``), so that queries of another class sharing
        the collection know to filter.
        """
        types = self.register(database, collection, cls)
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
                'No class is known to be stored in collection %r of '
                'database %r' % (collection, database))
        return cls
