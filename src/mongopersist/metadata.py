"""Per-class storage metadata and the turning of stored names into classes.

Everything mongopersist needs to know about a class lives here: which
database and collection store its instances, whether it is stored inside its
parent's document (a *sub-object*), and how a dotted name read from MongoDB
becomes a Python object again.  Keep new per-class settings (shard keys,
indexes, aliases, a loading allow-list) in this module.
"""
import importlib
import threading

from bson.dbref import DBRef

from mongopersist import interfaces

# Dotted names of classes this process has stored or loaded.  Classes that
# cannot be imported by name (defined in a doctest or inside a function) are
# still found by the process that defined them.
_known_types = {}
_lock = threading.Lock()


# Class or function -> dotted name, filled on first use.
_names = {}


def get_dotted_name(obj):
    """Return the ``module.QualifiedName`` of a class or function.

    Classes named here are remembered, so that this process can turn the
    name back into the class even when it cannot be imported by name.
    """
    try:
        return _names[obj]
    except (KeyError, TypeError):
        pass
    name = '%s.%s' % (obj.__module__, obj.__qualname__)
    if isinstance(obj, type):
        with _lock:
            _known_types[name] = obj
            _names[obj] = name
    return name


def register_type(obj, name=None):
    """Make ``obj`` resolvable under ``name`` (default: its dotted name)."""
    with _lock:
        _known_types[name or '%s.%s' % (obj.__module__, obj.__qualname__)] = obj


def resolve(name):
    """Return the class or function stored under the dotted ``name``.

    Raises ``UnknownTypeError`` naming what could not be found.
    """
    try:
        return _known_types[name]
    except KeyError:
        pass
    parts = name.split('.')
    # Try the longest importable module prefix, then walk attributes.
    for split in range(len(parts) - 1, 0, -1):
        module_name = '.'.join(parts[:split])
        try:
            obj = importlib.import_module(module_name)
        except ImportError:
            continue
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        with _lock:
            _known_types[name] = obj
        return obj
    raise interfaces.UnknownTypeError(
        'Cannot find the Python type %r named in a stored document' % name)


def is_importable(obj):
    """Return true if ``obj`` can be found again by its dotted name."""
    try:
        module = importlib.import_module(obj.__module__)
        found = module
        for attr in obj.__qualname__.split('.'):
            found = getattr(found, attr)
    except (ImportError, AttributeError, TypeError):
        return False
    return found is obj


def is_sub_object(cls):
    """Return true if instances of ``cls`` live inside their parent."""
    return bool(getattr(cls, '_p_mongo_sub_object', False))


def collection_name(cls):
    """Return the name of the collection that stores instances of ``cls``."""
    return getattr(cls, '_p_mongo_collection', None) or get_dotted_name(cls)


def database_name(cls, default):
    """Return the database that stores ``cls`` (``default`` if unset)."""
    return getattr(cls, '_p_mongo_database', None) or default


def always_stores_type(cls):
    """Return true if documents of ``cls`` always name their class."""
    return bool(getattr(cls, '_p_mongo_store_type', False))


class OID(DBRef):
    """The ``_p_oid`` of a stored object: a ``DBRef`` that keeps its hash.

    Oids are dict keys all over the data manager (identity map, pending
    writes, loaded documents); ``DBRef`` computes its hash anew each time.
    An ``OID`` equals, hashes like and is stored as the plain ``DBRef``.
    """

    __slots__ = ('_hash',)

    def __init__(self, collection, id, database=None):
        super().__init__(collection, id, database)
        self._hash = DBRef.__hash__(self)

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        return DBRef.__eq__(self, other)

    def __reduce__(self):
        # Copies and pickles are plain DBRefs, as MongoDB gives them back.
        return DBRef, (self.collection, self.id, self.database)

    def __deepcopy__(self, memo):
        return DBRef(self.collection, self.id, self.database)


def document_filter(oid):
    """Return the filter that addresses exactly the document of ``oid``."""
    return {'_id': oid.id}
