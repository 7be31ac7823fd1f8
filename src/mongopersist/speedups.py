"""The compiled accelerator, or pure Python.

``mongopersist._speedups`` is a C extension that a source install builds
where a C compiler is available.  It runs the hot paths of the library:
the writer (``ObjectWriter.get_document``), the reader
(``ObjectReader.get_state`` and the values it reads), the data manager's
per-object bookkeeping of loading (``load``, ``_object_from_document``,
``setstate``), and the hash and equality of oids (``metadata.OID``).

The Python code stays the reference.  Each compiled method mirrors the
Python one and replaces it on its class (``COMPILED`` lists them); the
Python method stays on the class as ``_python_<name>``, and the compiled
one hands it every call it does not handle.  It handles the common shapes
itself and calls the Python code for everything else (custom
serializers, unusual stored shapes, every error), so both implementations
store, load and refuse the same documents with the same errors.  Methods
of the library's objects that the compiled code inlines are inlined only
while the object's class has the library's own: a subclass overriding one
gets it called.

The compiled module is used when it imports, unless the environment
variable ``MONGOPERSIST_PURE_PYTHON`` is set to anything but ``0`` (as
``PURE_PYTHON`` does for ``persistent``): then everything runs in Python.
``enabled()`` says which is running.
"""
import os

#: What a compiled function returns, having changed nothing, when the
#: Python code must do the work.
NOT_HANDLED = type('NotHandled', (), {'__repr__': lambda self: 'NOT_HANDLED',
                                      '__slots__': ()})()


def pure_python_forced():
    """Whether ``MONGOPERSIST_PURE_PYTHON`` asks for pure Python."""
    return os.environ.get('MONGOPERSIST_PURE_PYTHON', '') not in ('', '0')


def _import_compiled():
    if pure_python_forced():
        return None
    try:
        from mongopersist import _speedups
    except ImportError:
        return None
    return _speedups


#: The compiled module, or ``None`` (not built, or pure Python forced).
compiled = _import_compiled()
_bound = False
_active = False
#: 'Class.name' -> the compiled method (made once).
_methods: dict[str, object] = {}

#: The methods the compiled module replaces, by class.
COMPILED = {
    'mongopersist.serialize.ObjectWriter': ('get_document',),
    'mongopersist.serialize.ObjectReader': (
        'get_state', '_read_fields', '_read_value'),
    'mongopersist.datamanager.MongoDataManager': (
        'load', '_object_from_document', 'setstate', 'register'),
}

#: The functions the compiled module replaces, by module.
FUNCTIONS = {
    'mongopersist.commit': ('same_value', 'changed_fields'),
    'mongopersist.limits': ('bson_size',),
    'mongopersist.cache': ('_note_used', '_ghost_loaded'),
}


def enabled():
    """Whether the compiled hot paths run."""
    return _active


def activate():
    """Switch the hot paths to the compiled module, if there is one and
    pure Python is not forced (called when ``mongopersist.datamanager``
    is imported).  Returns ``enabled()``."""
    if compiled is None:
        return False
    if not _bound:
        _bind()
    use_compiled(True)
    return True


def use_compiled(flag):
    """Run the compiled methods (``True``) or their Python versions
    (``False``); returns whether the compiled ones ran before.  For tests
    and benchmarks that compare the two in one process."""
    global _active
    before = _active
    if compiled is None or not _bound:
        if flag:
            raise RuntimeError('mongopersist._speedups is not available')
        return before
    _install(flag)
    for path, names in FUNCTIONS.items():
        module = _resolve(path)
        for name in names:
            setattr(module, name, getattr(compiled, name) if flag
                    else getattr(module, '_python_' + name))
    compiled.accelerate_oid(flag)
    _active = flag
    return before


def _install(flag):
    """The compiled methods on their classes, or the Python ones."""
    for path, names in COMPILED.items():
        cls = _resolve(path)
        for name in names:
            setattr(cls, name, _methods['%s.%s' % (cls.__name__, name)]
                    if flag else vars(cls)['_python_' + name])


def _resolve(path):
    """The module of a dotted ``path``, or the class it names in one."""
    import importlib
    if path in FUNCTIONS:
        return importlib.import_module(path)
    module, _, name = path.rpartition('.')
    return getattr(importlib.import_module(module), name)


def _bind():
    """Hand the compiled module the library's objects it uses, keep the
    Python methods and functions it replaces as ``_python_<name>``."""
    global _bound
    import bson.dbref
    import bson.int64
    import bson.objectid
    import persistent

    from mongopersist import (
        batching, broken, cache, commit, conflict, datamanager, interfaces,
        legacy, limits, metadata, references, serialize, serializers,
        sharding, typemap)

    for path, names in COMPILED.items():
        cls = _resolve(path)
        for name in names:
            setattr(cls, '_python_' + name, vars(cls)[name])
    for path, names in FUNCTIONS.items():
        module = _resolve(path)
        for name in names:
            setattr(module, '_python_' + name, getattr(module, name))
    _methods.update(compiled.methods())
    # The compiled methods installed first: ``bind`` takes a class's
    # methods as they are now for those the compiled code may inline.
    _install(True)
    writer, reader = serialize.ObjectWriter, serialize.ObjectReader
    jar = datamanager.MongoDataManager
    names = {name: getattr(serialize, name) for name in (
        'NATIVE_TYPES', '_safe_keys', '_is_known_safe_key',
        'DOCUMENT_META_FIELDS', '_FIELD_NAMES', '_plain_classes',
        '_SETSTATES', '_setstate_of', '_check_names', '_locate',
        '_attribute_name_error', '_check_writable_state',
        '_malformed_value', 'MALFORMED', '_NOT_PLAIN', 'PersistentDict',
        'PersistentList', '_Unstorable')}
    names.update(
        LEGACY_DICT_DATA=legacy.DICT_DATA, LEGACY_CONSTANT=legacy.PY_CONSTANT,
        WRITERS=serializers.WRITERS, write_date=serializers.write_date,
        READERS=serializers.READERS, read_date=serializers.read_date,
        STANDALONE_READERS=serializers.STANDALONE_READERS,
        MAX_NESTING=limits.MAX_NESTING, NOT_HANDLED=NOT_HANDLED,
        StoredDataError=interfaces.StoredDataError,
        CircularReferenceError=interfaces.CircularReferenceError,
        MongoPersistError=interfaces.MongoPersistError,
        Persistent=persistent.Persistent,
        PersistentBroken=broken.PersistentBroken,
        persistent_getstate=vars(persistent.Persistent)['__getstate__'],
        persistent_setstate=vars(persistent.Persistent)['__setstate__'],
        object_new=vars(object)['__new__'],
        persistent_new=vars(persistent.Persistent).get(
            '__new__', vars(object)['__new__']),
        CLASS_SETTINGS=metadata.CLASS_SETTINGS,
        _shard_keys=metadata._shard_keys, metadata_dict=vars(metadata),
        TypeRegistry=metadata.TypeRegistry, OID=metadata.OID,
        DBRef=bson.dbref.DBRef, EMPTY_KWARGS=metadata._NO_EXTRA_FIELDS,
        ObjectId=bson.objectid.ObjectId, Int64=bson.int64.Int64,
        stored_serial=conflict.stored_serial,
        _raise_located=datamanager._raise_located,
        sharding_remember=sharding.remember,
        get_dotted_name=metadata.get_dotted_name,
        refuse_id=references.refuse_id, serialize_dict=vars(serialize),
        unreferenceable=cache.unreferenceable, _STAMPS=commit._STAMPS,
        PY_RESTORED=serialize.PY_RESTORED,
        changed_fields=commit._python_changed_fields,
        bson_size=limits._python_bson_size,
        _stale_change=datamanager._stale_change,
        _stale_owner=datamanager._stale_owner,
        # What the compiled code inlines of each class: only while an
        # object's class has these very methods (the compiled ones where
        # they replace the Python ones).
        inlined_writer=(writer, (
            'get_document', '_write', '_write_dict', '_write_list',
            '_write_item', '_write_sub_object', '_write_plain',
            '_add_state', '_enter')),
        inlined_reader=(reader, (
            'get_state', '_read_fields', '_read_value', '_read_typed_value',
            'registry', 'set_ghost_state')),
        inlined_jar=(jar, (
            'load', 'dump', '_check_thread', '_use', '_use_document',
            '_object_from_document', '_activate', 'setstate',
            '_class_of_document', '_or_broken', 'register', '_join_txn')),
        inlined_cache=(cache.ObjectCache, ('get', 'used', '__setitem__')),
        inlined_validator=(cache.CacheValidator, ('use', 'use_document')),
        inlined_batches=(batching.Batches, ('start', 'stop', 'found')),
        inlined_typemap=(typemap.CollectionTypeMap, (
            'default_class', 'types_of', '_resolve')),
        inlined_objectid=(bson.objectid.ObjectId, ('__hash__', '__eq__')),
    )
    compiled.bind(names)
    _bound = True
