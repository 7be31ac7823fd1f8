"""Per-class storage metadata and the turning of stored names into classes.

Everything mongopersist needs to know about a class lives here: which
database and collection store its instances, whether it is stored inside its
parent's document (a *sub-object*), and how a dotted name read from MongoDB
becomes a Python object again.  Keep new per-class settings (shard keys,
indexes, aliases, a loading allow-list) in this module.

Turning stored names into objects is *default-deny* (``docs/security.rst``):
a name resolves only through a ``TypeRegistry`` to

* a class this process stored or registered (``register_type``, aliases
  included), or a registered factory (``register_factory``);
* a class defined in the module of such a class, when that module is already
  imported;
* a class under a trusted module prefix (``trust_modules``, or
  ``MongoDataManager(trusted_modules=...)``): only these modules may be
  imported by loading;
* for ``_py_factory``, a small built-in set of safe standard library
  constructors (``SAFE_FACTORIES``).

Resolving never calls what it finds, never runs a module's ``__getattr__``
(it looks names up in ``__dict__``), and never returns anything but a class
(or, for factories, a registered callable).
"""
import enum
import importlib
import sys
import threading
from typing import Any, Callable, Optional, TypeVar

import persistent
from bson.dbref import DBRef

from mongopersist import factories, interfaces, limits

#: What register_type, register_factory and register_global return: what
#: they were given.
T = TypeVar('T')
F = TypeVar('F', bound=Callable[..., Any])

#: The kinds of names ``TypeRegistry.resolve`` knows.
KINDS = ('persistent', 'sub_object', 'value', 'enum', 'factory', 'class',
         'global')

# Dotted names of classes this process has stored or registered.  Classes
# that cannot be imported by name (defined in a doctest or inside a
# function) are still found by the process that defined them.  It is the
# type table of the process-wide ``REGISTRY``.
_known_types = {}
_lock = threading.RLock()


# Class or function -> dotted name, filled on first use.
_names = {}

# Bumped whenever what any registry allows changes: resolutions cached
# under an older generation are looked up again.
_generation = 0


def _allowed_changed():
    global _generation
    _generation += 1

#: Names of the standard library constructors ``_py_factory`` may name
#: without registration (``mongopersist.factories.BUILTIN``, where the
#: checks of their stored arguments are).
SAFE_FACTORIES = frozenset(factories.BUILTIN)


# Modules of Python 2 that the original mongopersist named in documents
# (``{'_py_factory': '__builtin__.set', ...}``), by their Python 3 name.
PYTHON2_MODULES = {'__builtin__': 'builtins', 'copy_reg': 'copyreg'}


def python3_name(name):
    """``name`` with a Python 2 module replaced by its Python 3 one
    (``'__builtin__.set'`` -> ``'builtins.set'``); others unchanged."""
    module, dot, rest = name.partition('.')
    new = PYTHON2_MODULES.get(module)
    return new + dot + rest if new is not None and dot else name


def _own_name(obj):
    return '%s.%s' % (obj.__module__, obj.__qualname__)


def get_dotted_name(obj):
    """Return the ``module.QualifiedName`` of a class or function.

    Classes named here are remembered (the process stores them), so that
    this process can turn the name back into the class even when it cannot
    be imported by name, and so that loading allows them.  A function named
    here is one the writer stores as a ``_py_factory``: it is remembered as
    a factory this process wrote (see ``factory_name``).
    """
    try:
        return _names[obj]
    except (KeyError, TypeError):
        pass
    broken_name = getattr(obj, '__Broken_name__', None)
    if isinstance(broken_name, str) and isinstance(obj, type):
        # A placeholder for an unknown stored class keeps its stored name.
        return broken_name
    name = _own_name(obj)
    if isinstance(obj, type):
        with _lock:
            _known_types[name] = obj
            _names[obj] = name
            REGISTRY._modules_changed()
    elif callable(obj) and _hashable(obj):
        return factory_name(obj)
    return name


def class_name(cls):
    """Return the dotted name of the class ``cls``, stored as a value (a
    class stored by name), and allow this process to load it again."""
    name = get_dotted_name(cls)
    if _known_types.get(name) is not cls and not hasattr(
            cls, '__Broken_name__'):
        # Named before as a factory (the writer names factories apart).
        with _lock:
            _known_types[name] = cls
            REGISTRY._modules_changed()
    return name


def factory_name(factory):
    """Return the dotted name of ``factory``, which the writer stores as a
    ``_py_factory``, and allow this process to load it again.

    A process may always load the factories it writes itself (its own
    objects reduce to them).  Another process must ``register_factory``
    them, unless they are in ``SAFE_FACTORIES``.
    """
    hashable = _hashable(factory)
    name = _names.get(factory) if hashable else None
    if name is None:
        name = _own_name(factory)
    with _lock:
        REGISTRY._factories[name] = factory
        if hashable:
            _names[factory] = name
    return name


def _hashable(obj):
    try:
        hash(obj)
    except TypeError:
        return False
    return True


def _module_allowed(module, prefixes):
    for prefix in prefixes:
        if module == prefix or module.startswith(prefix + '.'):
            return True
    return False


def _is_application_module(module):
    """True if knowing one class of ``module`` allows its other classes.

    Standard library modules never are: their classes must be known one by
    one (stored, registered) or their module trusted.
    """
    if not isinstance(module, str):
        return False
    top = module.partition('.')[0]
    return top not in _STDLIB


_STDLIB = frozenset(getattr(sys, 'stdlib_module_names', ())) | frozenset(
    sys.builtin_module_names) | {'builtins', 'persistent', 'bson', 'pymongo'}


def _unknown(message, name):
    return interfaces.UnknownTypeError(message, name=name)


class TypeRegistry:
    """What stored names may resolve to, for loading.

    ``trusted_modules`` are module name prefixes (``'myapp'`` trusts
    ``myapp`` and ``myapp.*``) whose classes may be loaded, importing the
    module if needed.  ``parent`` is consulted too: whatever the parent
    allows, this registry allows (a data manager's registry has the
    process-wide ``REGISTRY`` as parent).

    Resolution never imports a module outside the trusted prefixes, never
    calls anything, and only ever returns classes (or registered factories).
    """

    def __init__(self, trusted_modules=(), parent=None):
        if isinstance(trusted_modules, str):
            trusted_modules = (trusted_modules,)
        self.parent = parent
        self._trusted = tuple(self._checked_prefix(p) for p in trusted_modules)
        self._types = {}
        self._factories = {}
        self._globals = {}        # functions and constants stored by name
        self._modules = None      # modules of allowed classes, computed
        self._resolved = {}       # (name, kind) -> (generation, class)

    # -- configuration ------------------------------------------------------
    @staticmethod
    def _checked_prefix(prefix):
        if not isinstance(prefix, str) or not prefix or not all(
                part.isidentifier() for part in prefix.split('.')):
            raise ValueError('Not a module name prefix: %r' % (prefix,))
        return prefix

    def register_type(self, cls: type[T], name: Optional[str] = None
                      ) -> type[T]:
        """Allow loading ``cls``; with ``name``, the stored ``name`` (an
        alias, for example the class's name before a rename) loads as
        ``cls``.  Documents written later use ``cls``'s own name."""
        if not isinstance(cls, type):
            raise TypeError('register_type() takes a class, not %r' % (cls,))
        with _lock:
            self._types[name or _own_name(cls)] = cls
            self._types.setdefault(_own_name(cls), cls)
            self._modules_changed()
        return cls

    def register_factory(self, func: F, name: Optional[str] = None) -> F:
        """Allow ``_py_factory`` to name ``func`` (under ``name``, default
        its dotted name).  It will be called with stored arguments."""
        if not callable(func):
            raise TypeError('register_factory() takes a callable, not %r'
                            % (func,))
        with _lock:
            self._factories[name or _own_name(func)] = func
        return func

    def register_global(self, obj: T, name: Optional[str] = None) -> T:
        """Allow a stored value to name the function or module-level
        object ``obj`` (under ``name``, default its dotted name).

        Loading returns ``obj`` itself and never calls it; but application
        code may call a function it loads, so register only what is safe
        to find in any stored value."""
        if isinstance(obj, type):
            raise TypeError('register_global() takes a function or other '
                            'object; allow classes with register_type()')
        if name is None:
            if not isinstance(getattr(obj, '__qualname__', None), str):
                raise TypeError('register_global() needs the dotted name '
                                'of %r' % (obj,))
            name = _own_name(obj)
        with _lock:
            self._globals[name] = obj
        return obj

    def trust_modules(self, *prefixes: str) -> None:
        """Allow every class under the module name ``prefixes`` (the module
        and its submodules), importing such modules when a stored name
        needs them."""
        checked = tuple(self._checked_prefix(p) for p in prefixes)
        with _lock:
            self._trusted = self._trusted + tuple(
                p for p in checked if p not in self._trusted)

    @property
    def trusted_modules(self):
        """The trusted module prefixes of this registry and its parents."""
        found = []
        registry = self
        while registry is not None:
            found.extend(p for p in registry._trusted if p not in found)
            registry = registry.parent
        return tuple(found)

    def _modules_changed(self):
        self._modules = None
        _allowed_changed()

    def _allowed_modules(self):
        modules = self._modules
        if modules is None:
            with _lock:
                modules = {cls.__module__ for cls in self._types.values()
                           if _is_application_module(
                               getattr(cls, '__module__', None))}
                self._modules = modules
        return modules

    # -- lookups --------------------------------------------------------------
    def _chain(self):
        registry = self
        while registry is not None:
            yield registry
            registry = registry.parent

    def _exact_type(self, name):
        for registry in self._chain():
            found = registry._types.get(name)
            if found is not None:
                return found
        return None

    def _module_is_allowed(self, module):
        for registry in self._chain():
            if module in registry._allowed_modules():
                return True
        return _module_allowed(module, self.trusted_modules)

    def resolve(self, name, kind=None):
        """Return the class (or factory) the stored ``name`` may load as.

        ``kind`` says what the name is used for:

        ``'persistent'``
            a top-level persistent class (a ``persistent.Persistent``
            subclass that is not a sub-object class);
        ``'sub_object'``
            a persistent class stored inside its owner
            (``_p_mongo_sub_object``);
        ``'value'``
            any other allowed class, to be created with ``__new__`` and
            filled with the stored state;
        ``'enum'``
            an ``enum.Enum`` subclass;
        ``'factory'``
            a registered factory, one this process wrote, or one of
            ``SAFE_FACTORIES``;
        ``'class'``
            any allowed class, as a value in its own right (a class stored
            as an attribute value): it is returned, not instantiated;
        ``'global'``
            a function or module-level object stored by name: only one
            registered with ``register_global`` (or as a factory), or one
            this process stored.

        Without ``kind``, any allowed class (not a factory) is returned:
        that is for code that only asks which class a name means, not for
        loading.

        Raises ``interfaces.UnknownTypeError`` (with ``name``) for a name
        that is unknown or not allowed, or names something of another kind.
        Nothing named is called; only trusted modules are imported.
        """
        if type(name) is str and kind != 'factory':
            # Documents name the same few classes over and over.
            hit = self._resolved.get((name, kind))
            if hit is not None and hit[0] == _generation:
                return hit[1]
        if kind is not None and kind not in KINDS:
            raise ValueError('Unknown kind of stored name: %r' % (kind,))
        if not isinstance(name, str):
            raise interfaces.StoredDataError(
                'A stored type name must be a string, not %s'
                % type(name).__name__)
        if kind == 'factory':
            return self._resolve_factory(name)
        if kind == 'global':
            return self._resolve_global(name)
        generation = _generation
        found = self._exact_type(name)
        if found is None:
            found = self._find(name)
        found = _check_kind(found, name, kind)
        self._resolved[(name, kind)] = (generation, found)
        return found

    def _resolve_factory(self, name):
        for registry in self._chain():
            found = registry._factories.get(name)
            if found is not None:
                return found
        found = factories.BUILTIN.get(python3_name(name))
        if found is not None:
            return found
        raise _unknown(
            'Stored data names the factory %s, which is not registered; '
            'loading calls only registered factories (see '
            'mongopersist.metadata.register_factory)' % limits.quote(name),
            name)

    def _resolve_global(self, name):
        for registry in self._chain():
            for table in (registry._globals, registry._factories):
                found = table.get(name)
                if found is not None:
                    return found
        raise _unknown(
            'Stored data names %s, which is not a function or object this '
            'application allows loading (see '
            'mongopersist.metadata.register_global)' % limits.quote(name),
            name)

    def _find(self, name):
        """Find a class in an allowed module by walking ``__dict__``s."""
        parts = name.split('.')
        if len(parts) < 2 or not all(
                part.isidentifier() and not part.startswith('__')
                for part in parts):
            raise _unknown('Stored data names %s, which is not a known '
                           'class' % limits.quote(name), name)
        trusted = self.trusted_modules
        for split in range(len(parts) - 1, 0, -1):
            module_name = '.'.join(parts[:split])
            module = sys.modules.get(module_name)
            if module is None:
                if not _module_allowed(module_name, trusted):
                    continue
                try:
                    module = importlib.import_module(module_name)
                except ModuleNotFoundError as error:
                    if error.name and module_name.startswith(error.name):
                        continue
                    raise
            if not self._module_is_allowed(module_name):
                break
            found = module
            for attr in parts[split:]:
                namespace = getattr(found, '__dict__', None)
                found = namespace.get(attr) if namespace is not None else None
                if not isinstance(found, type):
                    found = None
                    break
            if found is None:
                break
            if not self._module_is_allowed(getattr(found, '__module__', '')):
                break
            return found
        raise _unknown(
            'Stored data names %s, which is not a class this application '
            'allows loading (register it with '
            'mongopersist.metadata.register_type, or trust its module)'
            % limits.quote(name), name)

    def __repr__(self):
        return '<TypeRegistry trusted=%r>' % (self.trusted_modules,)


def _check_kind(found, name, kind):
    if kind is None or kind == 'class':
        if isinstance(found, type):
            return found
        what = 'a class'
    elif kind == 'value':
        if isinstance(found, type) and not issubclass(
                found, (persistent.Persistent, enum.Enum)):
            return found
        what = 'a value class'
    elif kind == 'enum':
        if isinstance(found, type) and issubclass(found, enum.Enum):
            return found
        what = 'an enum.Enum subclass'
    elif kind == 'sub_object':
        if (isinstance(found, type)
                and issubclass(found, persistent.Persistent)
                and is_sub_object(found)):
            return found
        what = 'a persistent sub-object class (_p_mongo_sub_object)'
    else:
        if (isinstance(found, type)
                and issubclass(found, persistent.Persistent)
                and not is_sub_object(found)):
            return found
        what = 'a persistent class stored in a document of its own'
    raise _unknown('Stored data names %s where %s is expected'
                   % (limits.quote(name), what), name)


#: The process-wide registry; data managers' registries have it as parent.
REGISTRY = TypeRegistry()
REGISTRY._types = _known_types


def register_type(cls: type[T], name: Optional[str] = None) -> type[T]:
    """Allow loading ``cls`` in this process (see ``TypeRegistry``).

    With ``name``, an alias: documents that name ``name`` (for example
    ``'old.module.OldName'`` after a rename, or ``'__main__.Thing'`` for a
    class first stored by a script) load as ``cls``; documents written from
    then on use ``cls``'s own name.
    """
    return REGISTRY.register_type(cls, name)


def register_factory(func: F, name: Optional[str] = None) -> F:
    """Allow ``_py_factory`` to name ``func`` in this process."""
    return REGISTRY.register_factory(func, name)


def register_global(obj: T, name: Optional[str] = None) -> T:
    """Allow stored values to name the function or object ``obj`` in this
    process (see ``TypeRegistry.register_global``)."""
    return REGISTRY.register_global(obj, name)


def global_name(obj, name=None):
    """Return the dotted name under which the writer stores the function
    or module-level object ``obj``, or ``None`` if that name does not find
    ``obj`` again (a lambda, a function defined inside another one).

    ``name`` is the name of ``obj`` inside its module, when it is not
    ``obj.__qualname__`` (an object whose ``__reduce__`` returns its name).
    The process may load what it stored: the name is allowed in
    ``REGISTRY``.
    """
    module = getattr(obj, '__module__', None)
    qualname = name or getattr(obj, '__qualname__', None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    dotted = '%s.%s' % (module, qualname)
    if REGISTRY._globals.get(dotted) is obj:
        return dotted
    found = sys.modules.get(module)
    for attr in qualname.split('.'):
        namespace = getattr(found, '__dict__', None)
        found = namespace.get(attr) if namespace is not None else None
    if found is not obj:
        return None
    with _lock:
        REGISTRY._globals[dotted] = obj
    return dotted


def trust_modules(*prefixes: str) -> None:
    """Allow loading every class under the module ``prefixes`` (and
    importing those modules when needed), in this process."""
    REGISTRY.trust_modules(*prefixes)


def resolve(name, kind=None):
    """Resolve ``name`` through the process-wide ``REGISTRY``.

    Kept for callers of the old API; loading code passes a ``kind`` (see
    ``TypeRegistry.resolve``) and uses the data manager's registry.
    """
    return REGISTRY.resolve(name, kind)


def known_classes():
    """Return the classes this process stored or registered."""
    with _lock:
        return list(_known_types.values())


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


def declared_attribute(cls, name, default=None):
    """What the namespace of ``cls`` or of one of its bases holds under
    ``name`` (``default`` if none), as ``inspect.getattr_static`` finds
    it: the declaration itself; no descriptor, metaclass or instance is
    consulted."""
    for klass in cls.__mro__:
        namespace = vars(klass)
        if name in namespace:
            return namespace[name]
    return default


def declares_data(cls: type, name: str) -> bool:
    """Whether ``cls`` (or a base) declares ``name`` as plain data: a
    value that is neither callable nor a descriptor (``__name__ = None``
    as ``zope.location`` declares it), which an instance may set."""
    declared = declared_attribute(cls, name, _UNDECLARED)
    return not (declared is _UNDECLARED or callable(declared)
                or hasattr(type(declared), '__get__'))


_UNDECLARED = object()


def is_sub_object(cls):
    """Return true if instances of ``cls`` live inside their parent."""
    return bool(getattr(cls, '_p_mongo_sub_object', False))


def collection_name(cls):
    """Return the name of the collection that stores instances of ``cls``."""
    return getattr(cls, '_p_mongo_collection', None) or get_dotted_name(cls)


def database_name(cls, default):
    """Return the database that stores ``cls`` (``default`` if unset)."""
    return getattr(cls, '_p_mongo_database', None) or default


#: How objects of a class are stored: settings of the class, never of one
#: instance (the reader, which knows classes only, must find each document
#: where and as the class says).
CLASS_SETTINGS = frozenset(['_p_mongo_sub_object', '_p_mongo_store_type',
                            '_p_mongo_collection', '_p_mongo_database'])


def instance_setting(obj):
    """The first of ``CLASS_SETTINGS`` set on ``obj`` itself rather than
    on its class (``None`` if there is none)."""
    found = getattr(obj, '__dict__', None)
    if not found or CLASS_SETTINGS.isdisjoint(found):
        return None
    return min(CLASS_SETTINGS.intersection(found))


def always_stores_type(cls):
    """Return true if documents of ``cls`` always name their class."""
    return bool(getattr(cls, '_p_mongo_store_type', False))


# The slots ``DBRef.__init__`` fills (PyMongo 4); ``OID`` fills them itself
# where they are these.
_DBREF_SLOTS = set(getattr(DBRef, '__slots__', ())) == {
    '__collection', '__id', '__database', '__kwargs'}


# The extra fields of every oid: none.  One dict shared by all of them
# (``DBRef`` keeps one per reference, and never changes it).
_NO_EXTRA_FIELDS = {}


class OID(DBRef):
    """The ``_p_oid`` of a stored object: a ``DBRef`` that keeps its hash.

    Oids are dict keys all over the data manager (identity map, pending
    writes, loaded documents); ``DBRef`` computes its hash anew each time.
    An ``OID`` equals, hashes like and is stored as the plain ``DBRef``.
    It also keeps the document BSON encodes it as (``as_doc``): every
    write of a document referencing it encodes it, and commit encodes
    each document twice (``limits`` measures it first).

    ``routing`` holds the shard-key values of the document as last loaded,
    written or named by a reference (``None``: unknown, or the collection
    is not sharded): loading the document queries with them
    (``mongopersist.sharding``).  It is not part of the oid's identity.
    """

    __slots__ = ('_hash', '_doc', 'routing')

    def __init__(self, collection, id, database=None):
        if _DBREF_SLOTS and type(collection) is str and (
                database is None or type(database) is str):
            # What ``DBRef.__init__`` does for a reference without extra
            # fields, without its call: an oid is made for every document
            # read.
            self._DBRef__collection = collection
            self._DBRef__id = id
            self._DBRef__database = database
            self._DBRef__kwargs = _NO_EXTRA_FIELDS
        else:
            super().__init__(collection, id, database)
        # What ``DBRef.__hash__`` computes for a reference without extra
        # fields, without its call and sort in Python.
        self._hash = hash((collection, id, database, ()))
        self._doc = None
        self.routing = None

    def __hash__(self):
        return self._hash

    def as_doc(self):
        """The ``{'$ref', '$id', '$db'}`` document, made once.

        A plain dict: BSON encodes it (in C) to the same bytes as the
        ``SON`` that ``DBRef.as_doc`` builds (in Python).
        """
        doc = self._doc
        if doc is None:
            doc = {'$ref': self.collection, '$id': self.id}
            if self.database is not None:
                doc['$db'] = self.database
            self._doc = doc
        return doc

    def __eq__(self, other):
        if type(other) is OID:
            # Oids are compared on every identity-map hit: the fields,
            # without building ``DBRef.__eq__``'s tuples.
            return (self._hash == other._hash
                    and self._DBRef__id == other._DBRef__id
                    and self._DBRef__collection == other._DBRef__collection
                    and self._DBRef__database == other._DBRef__database)
        return DBRef.__eq__(self, other)

    @classmethod
    def of(cls, dbref, database=None):
        """The oid of the plain ``DBRef`` ``dbref`` (its database, or
        ``database`` if it names none), ignoring any extra fields."""
        if _DBREF_SLOTS and type(dbref) is DBRef:
            return cls(dbref._DBRef__collection, dbref._DBRef__id,
                       dbref._DBRef__database or database)
        return cls(dbref.collection, dbref.id, dbref.database or database)

    def __reduce__(self):
        # Copies and pickles are plain DBRefs, as MongoDB gives them back.
        return DBRef, (self.collection, self.id, self.database)

    def __deepcopy__(self, memo):
        return DBRef(self.collection, self.id, self.database)


def document_filter(oid):
    """Return the filter that addresses exactly the document of ``oid``."""
    return {'_id': oid.id}


# -- scale-out declarations (see mongopersist.sharding, .indexes) ----------

#: How a field of a shard key is sharded: by range or hashed.
RANGE, HASHED = 1, 'hashed'


class ShardKey:
    """The shard key a class declares in ``_p_mongo_shard_key``.

    ``fields`` are the document fields in order (dotted paths allowed);
    ``hashed`` the ones sharded by hash (at most one).  ``spec`` is the
    key as MongoDB's ``shardCollection`` takes it.
    """

    __slots__ = ('fields', 'hashed', 'spec')

    def __init__(self, declared, owner='a class'):
        if isinstance(declared, (str, bytes)) or not isinstance(
                declared, (tuple, list)) or not declared:
            raise TypeError(
                '_p_mongo_shard_key of %s must be a non-empty tuple of field '
                'names, e.g. (\'author\', \'title\') or ((\'author\', '
                '\'hashed\'),), not %r' % (owner, declared))
        spec = []
        for item in declared:
            name, how = (item, RANGE) if isinstance(item, str) else (
                tuple(item) if isinstance(item, (tuple, list))
                and len(item) == 2 else (None, None))
            if not (isinstance(name, str) and name and not name.startswith(
                    '$') and '\x00' not in name) or how not in (RANGE, HASHED):
                raise TypeError(
                    'Not a shard key field of %s: %r (a field name, or '
                    '(name, \'hashed\') or (name, 1))' % (owner, item))
            spec.append((name, how))
        names = [name for name, _ in spec]
        if len(set(names)) != len(names):
            raise TypeError('_p_mongo_shard_key of %s names a field twice: %r'
                            % (owner, declared))
        hashed = frozenset(name for name, how in spec if how == HASHED)
        if len(hashed) > 1:
            raise TypeError('_p_mongo_shard_key of %s: MongoDB allows one '
                            'hashed field in a shard key' % owner)
        self.fields = tuple(names)
        self.hashed = hashed
        self.spec = spec

    def values(self, doc):
        """The shard-key values of the stored document ``doc``, by field
        (a field the document lacks is ``None``, as MongoDB routes it)."""
        return {name: _field_value(doc, name) for name in self.fields}

    def __eq__(self, other):
        return isinstance(other, ShardKey) and self.spec == other.spec

    def __hash__(self):
        return hash(tuple(self.spec))

    def __repr__(self):
        return '<ShardKey %s>' % ', '.join(
            name if how == RANGE else '%s (hashed)' % name
            for name, how in self.spec)


#: A field absent from a document (``_field_value(doc, name, MISSING)``).
MISSING = object()


def _field_value(doc, path, default=None):
    value = doc
    for part in path.split('.'):
        if not isinstance(value, dict) or part not in value:
            return default
        value = value[part]
    return value


_shard_keys = {}    # class -> ShardKey or None


def shard_key(cls):
    """Return the ``ShardKey`` ``cls`` declares (``_p_mongo_shard_key``),
    or ``None`` if its collection is not sharded.

    Classes sharing a collection share its shard key: declare it on the
    base class.  A malformed declaration raises ``TypeError``.
    """
    try:
        return _shard_keys[cls]
    except (KeyError, TypeError):
        pass
    declared = getattr(cls, '_p_mongo_shard_key', None)
    key = None if declared is None else ShardKey(
        declared, getattr(cls, '__name__', repr(cls)))
    try:
        _shard_keys[cls] = key
    except TypeError:
        pass
    return key


def declared_indexes(cls):
    """Return the ``pymongo.IndexModel``s ``cls`` declares in
    ``_p_mongo_indexes`` (a list; empty if none)."""
    from pymongo.operations import IndexModel
    declared = getattr(cls, '_p_mongo_indexes', None) or ()
    if isinstance(declared, IndexModel) or not isinstance(
            declared, (list, tuple)):
        raise TypeError('_p_mongo_indexes of %s must be a list of '
                        'pymongo.IndexModel, not %r'
                        % (cls.__name__, declared))
    for index in declared:
        if not isinstance(index, IndexModel):
            raise TypeError(
                '_p_mongo_indexes of %s must hold pymongo.IndexModel '
                'instances (the driver\'s own type), not %r'
                % (cls.__name__, index))
    return list(declared)
