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

from mongopersist import interfaces, metadata

TYPE_MAP_COLLECTION = 'persistence_type_map'


class CollectionTypeMap:
    """The stored map of collections to the classes stored in them.

    One instance per data manager; it caches what it has read.
    """

    def __init__(self, client, database, collection=TYPE_MAP_COLLECTION):
        self._coll = client[database][collection]
        self._types = {}

    def types_of(self, database, collection):
        """Return the dotted names of the classes stored in a collection."""
        key = (database, collection)
        types = self._types.get(key)
        if types is None:
            doc = self._coll.find_one({'_id': '%s.%s' % key})
            types = list(doc['types']) if doc else []
            if types:
                self._types[key] = types
        return types

    def register(self, database, collection, cls):
        """Record that ``cls`` is stored in the collection; return all types."""
        name = metadata.get_dotted_name(cls)
        types = self.types_of(database, collection)
        if name in types:
            return types
        key = (database, collection)
        doc = self._coll.find_one_and_update(
            {'_id': '%s.%s' % key},
            {'$addToSet': {'types': name},
             '$setOnInsert': {'database': database, 'collection': collection}},
            upsert=True, return_document=pymongo.ReturnDocument.AFTER)
        types = self._types[key] = list(doc['types'])
        return types

    def stores_type(self, database, collection, cls):
        """Return true if documents of ``cls`` must name their class."""
        return (metadata.always_stores_type(cls)
                or len(self.register(database, collection, cls)) > 1)

    def class_for(self, database, collection):
        """Return the only class stored in a collection.

        Returns ``None`` when the collection is shared or unknown: the
        document must be read to know the class.
        """
        types = self.types_of(database, collection)
        if len(types) == 1:
            return metadata.resolve(types[0])
        if types:
            return None
        # Nothing registered: the default collection name is the class's
        # dotted name.
        try:
            return metadata.resolve(collection)
        except interfaces.UnknownTypeError:
            return None

    def default_class(self, database, collection):
        """Return the class of documents that do not name their class."""
        types = self.types_of(database, collection)
        if types:
            return metadata.resolve(types[0])
        cls = self.class_for(database, collection)
        if cls is None:
            raise interfaces.UnknownTypeError(
                'No class is known to be stored in collection %r of '
                'database %r' % (collection, database))
        return cls
