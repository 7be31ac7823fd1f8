"""The serializer chain: persistent objects to MongoDB documents and back.

``ObjectWriter`` turns the state of a persistent object into a document;
``ObjectReader`` turns a document into the state of an object.  Both consult,
in this order:

1. the serializers given to the data manager (``serializers=``),
2. the process-wide ``SERIALIZERS`` list,
3. the built-in representations of ``mongopersist.serializers``,
4. the generic rules: BSON values as they are, persistent objects as
   ``DBRef`` (or, for sub-objects, inside the document), containers
   recursively, any other picklable object through ``__reduce_ex__``.

``docs/format.rst`` describes every stored representation.
"""
import copyreg
import datetime
import decimal
import uuid

import bson
import persistent
import persistent.list
import persistent.mapping
import zope.interface
from bson.dbref import DBRef
from bson.objectid import ObjectId

from mongopersist import (
    broken, factories, interfaces, legacy, limits, metadata, serializers)
from mongopersist.metadata import get_dotted_name  # noqa: F401 (public API)

# Process-wide user serializers, consulted before the built-in ones.
SERIALIZERS = []

PY_TYPE = '_py_type'
PY_PERSISTENT_TYPE = '_py_persistent_type'
PY_FACTORY = '_py_factory'
PY_FACTORY_ARGS = '_py_factory_args'
PY_STATE = '_py_state'
PY_NEW_ARGS = '_py_new_args'
PY_LIST_ITEMS = '_py_listitems'
PY_DICT_ITEMS = '_py_dictitems'
PY_SERIAL = '_py_serial'
# ``[serial, serial put back under]`` of a version an abort put back (see
# ``mongopersist.undo``); the next write of the document removes it.
PY_RESTORED = '_py_restored'
# The id of the commit's write that stored this version (with conflict
# detection): how a commit whose acknowledgement was lost recognises its
# own write when it reads the document back (see ``mongopersist.outcome``).
PY_WRITE = '_py_write'
DICT_TYPE = 'builtins.dict'
# The one-field shapes of the original mongopersist (mongopersist.legacy).
_LEGACY_DICT_DATA = legacy.DICT_DATA
_LEGACY_CONSTANT = legacy.PY_CONSTANT

# Fields of a top-level document that are not instance state.
DOCUMENT_META_FIELDS = frozenset(['_id', PY_PERSISTENT_TYPE, PY_SERIAL,
                                  PY_RESTORED, PY_WRITE])

INT64_MIN, INT64_MAX = -2 ** 63, 2 ** 63 - 1

# An object whose own instance sets how it is stored.
_INSTANCE_SETTING = (
    '%s is set on the instance; how an object is stored is a setting of '
    'its class (a subclass can set it)')

# Values BSON stores and PyMongo reads back unchanged.
NATIVE_TYPES = frozenset([
    type(None), bool, float, str, bytes, ObjectId, DBRef, metadata.OID,
    bson.Binary, bson.Code, bson.Decimal128, bson.Int64, bson.Regex,
    bson.Timestamp, bson.MinKey, bson.MaxKey,
])


@zope.interface.implementer(interfaces.IObjectSerializer)
class ObjectSerializer:
    """Base class of serializers that users add to the chain.

    Subclasses say which stored states and which objects they handle
    (``can_read``/``can_write``) and convert them (``read``/``write``).
    ``can_read`` must only claim states that ``read`` understands.  A
    serializer may handle one direction only: the base ``can_read`` and
    ``can_write`` claim nothing.  A subclass that defines ``read`` without
    ``can_read`` (or ``write`` without ``can_write``) would never be used
    that way, so it is refused when it is defined (``TypeError``).
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for convert, claim in (('read', 'can_read'), ('write', 'can_write')):
            if getattr(cls, convert) is not getattr(ObjectSerializer, convert) \
                    and getattr(cls, claim) is getattr(ObjectSerializer, claim):
                raise TypeError(
                    'The serializer %s defines %s() but not %s(): it would '
                    'never be asked to %s' % (cls.__name__, convert, claim,
                                              convert))

    def can_read(self, state):
        return False

    def read(self, state):
        raise NotImplementedError

    def can_write(self, obj):
        return False

    def write(self, obj):
        raise NotImplementedError


class PersistentDict(persistent.mapping.PersistentMapping):
    """A dict stored inside its owner's document that tracks changes.

    Dicts read from MongoDB become ``PersistentDict`` so that changing them
    gets the owning document written at commit.
    """
    _p_mongo_sub_object = True


class PersistentList(persistent.list.PersistentList):
    """A list stored inside its owner's document that tracks changes."""
    _p_mongo_sub_object = True


def is_safe_key(key):
    """Return true if ``key`` can be a field name of a stored dict."""
    return (type(key) is str and not key.startswith(('$', '_py_'))
            and '.' not in key and '\x00' not in key)


# Keys ``is_safe_key`` accepted, remembered (up to a bound) because the same
# attribute and dict key names come back in every document written.
_safe_keys = set()
_SAFE_KEYS_LIMIT = 10000


def _is_known_safe_key(key):
    """``is_safe_key``, answered from memory for names seen before."""
    if type(key) is str and key in _safe_keys:
        return True
    if not is_safe_key(key):
        return False
    if len(_safe_keys) < _SAFE_KEYS_LIMIT:
        _safe_keys.add(key)
    return True


def _all_safe_keys(keys):
    known = _safe_keys
    for key in keys:
        if not (type(key) is str and key in known or _is_known_safe_key(key)):
            return False
    return True


def _attribute_name_error(obj, name):
    """The error for the attribute ``name`` of the top-level ``obj``, a
    name no stored attribute may have."""
    cls_name = obj.__class__.__name__
    return interfaces.UnstorableObjectError(
        'Cannot store %s.%s: attribute names starting with "_py_" or "$", '
        'containing ".", or named "_id" are reserved' % (cls_name, name),
        obj, '%s.%s' % (cls_name, name))


def _check_writable_state(state, obj):
    """Raise ``UnstorableObjectError`` for a field name of ``state``, the
    state of the top-level ``obj`` being written, that reading would
    refuse (``_unreadable_name``)."""
    refused = _unreadable_name(state, obj)
    if refused is not None:
        name, reason = refused
        cls_name = obj.__class__.__name__
        raise interfaces.UnstorableObjectError(
            'Cannot store %s.%s: %s' % (cls_name, name, reason),
            obj, '%s.%s' % (cls_name, name))


class _Unstorable(Exception):
    """Internal: carries the attribute path up to the top-level object."""

    def __init__(self, error):
        self.error = error
        self.path = []


# Values whose built-in writer stores no other value (it needs no ``write``
# callback and cannot nest or refer back).
_LEAF_VALUES = frozenset([
    datetime.date, datetime.time, datetime.timedelta, bytearray,
    decimal.Decimal, uuid.UUID, complex])


@zope.interface.implementer(interfaces.IObjectWriter)
class ObjectWriter:
    """Turns persistent objects into MongoDB documents.

    ``jar`` is the data manager; persistent objects referenced by the object
    being written are handed to ``jar.dump`` and stored as ``DBRef``.
    """

    def __init__(self, jar, serializers=()):
        self._jar = jar
        self._serializers = list(serializers)
        #: How many objects deep the last ``get_document`` went (containers
        #: and values entered, the object itself being 1); each stores as
        #: at most ``limits.LEVELS_PER_VALUE`` levels of BSON nesting.
        self.deepest = 1
        #: True if the last ``get_document`` stored a mutable value that
        #: does not tell its owner about changes (a plain ``dict``,
        #: ``list``, ``set``, ``bytearray`` or other non-persistent object).
        self.untracked = False

    def _custom_serializers(self):
        return self._serializers + SERIALIZERS

    def get_document(self, obj, store_type=False):
        """Return the document that stores the top-level persistent ``obj``.

        Raises ``UnstorableObjectError`` or ``CircularReferenceError``
        naming the class and the attribute path at fault.
        """
        if isinstance(obj, broken.PersistentBroken):
            raise interfaces.UnstorableObjectError(
                'Cannot store %r: a read-only placeholder for a stored object '
                'of an unknown class' % (obj,), obj)
        state = type(obj).__getstate__(obj)
        cls_name = obj.__class__.__name__
        if not metadata.CLASS_SETTINGS.isdisjoint(
                getattr(obj, '__dict__', None) or ()):
            raise interfaces.UnstorableObjectError(
                'Cannot store the %s: %s' % (
                    cls_name, _INSTANCE_SETTING % metadata.instance_setting(
                        obj)), obj, cls_name)
        if not isinstance(state, dict):
            raise interfaces.UnstorableObjectError(
                'Cannot store %s: only objects whose state is a dict of '
                'attributes can be stored (got %s)' % (
                    cls_name, type(state).__name__), obj, cls_name)
        doc = {'_id': obj._p_oid.id}
        if store_type:
            doc[PY_PERSISTENT_TYPE] = metadata.get_dotted_name(type(obj))
        custom = self._serializers + SERIALIZERS
        stack = {id(obj)}
        self.deepest = 1
        self.untracked = False
        known = _safe_keys
        for name, value in state.items():
            if not (name in known and type(name) is str
                    or _is_known_safe_key(name)) \
                    or name in DOCUMENT_META_FIELDS:
                raise _attribute_name_error(obj, name)
            kind = type(value)
            if kind in NATIVE_TYPES or (
                    kind is int and INT64_MIN <= value <= INT64_MAX):
                doc[name] = value
                continue
            try:
                doc[name] = self._write(value, obj, stack, custom)
            except _Unstorable as failure:
                raise self._located(failure, cls_name, name)
            except interfaces.CircularReferenceError as error:
                error.path = '.'.join([cls_name, name] + (error.path or []))
                raise
        if not _FIELD_NAMES.get(type(obj), _NO_NAMES).issuperset(state):
            _check_writable_state(state, obj)
        return doc

    def _located(self, failure, cls_name, name):
        path = limits.short_path(
            [cls_name, name] + list(reversed(failure.path)))
        error = failure.error
        if isinstance(error, interfaces.DocumentLimitError):
            return type(error)('Cannot store %s at %s: %s' % (
                cls_name, path, error), error.obj, path)
        return type(error)(
            'Cannot store %r at %s: %s' % (error.obj, path, error),
            error.obj, path)

    def get_state(self, obj, pobj=None):
        """Return the BSON value that stores ``obj``.

        ``pobj`` is the top-level persistent object whose document the
        value becomes part of; sub-objects are attached to it so that their
        changes get it written.
        """
        try:
            return self._write(obj, pobj, set(), self._custom_serializers())
        except _Unstorable as failure:
            raise interfaces.UnstorableObjectError(
                str(failure.error), failure.error.obj,
                '.'.join(reversed(failure.path)))

    def _write(self, obj, pobj, stack, custom):
        kind = type(obj)
        if kind in NATIVE_TYPES:
            return obj
        if kind is int:
            if INT64_MIN <= obj <= INT64_MAX:
                return obj
            return serializers.write_big_int(obj, None)
        if kind is datetime.datetime:
            # A BSON type, like str or int: custom serializers never see it
            # (as in the original mongopersist, where a date serializer's
            # isinstance check must not catch datetimes).
            if serializers.is_native_datetime(obj):
                return obj
            return serializers.write_datetime(obj, None)
        if kind is broken.Broken:
            # Written back exactly as it was read.
            return obj.__mongopersist_state__()
        for serializer in custom:
            if serializer.can_write(obj):
                # Its value may nest to any depth: have commit measure it.
                self.deepest = limits.MAX_NESTING
                self.untracked = True
                return serializer.write(obj)
        if kind in _LEAF_VALUES:
            # Holds no other value: nothing to enter, but it is a level of
            # the document.  (Not persistent, not a plain class: no other
            # writer would take it.)
            if kind is bytearray:
                self.untracked = True
            if len(stack) >= self.deepest:
                self._enter(obj, stack)
                stack.discard(id(obj))
            return serializers.WRITERS[kind](obj, None)
        name = _plain_classes.get(kind)
        if name is not None:
            # A plain class seen before: no built-in writer takes it.
            self.untracked = True
            return self._write_plain(obj, name, pobj, stack, custom)
        if kind is dict:
            self.untracked = True
            return self._write_dict(obj, pobj, stack, custom)
        if kind is list or kind is tuple:
            if kind is list:
                self.untracked = True
            return self._write_list(obj, pobj, stack, custom)
        if kind is PersistentList or kind is PersistentDict:
            # How stored arrays and dicts are read back: the common case.
            return self._write_sub_object(obj, pobj, stack, custom)
        if isinstance(obj, persistent.Persistent):
            # Before the built-in writers, which know no persistent class.
            # (Another stored object is referenced; it is written, and its
            # settings checked, on its own: ``get_document``.)
            if not metadata.is_sub_object(kind):
                return self._jar.dump(obj)
            flag = metadata.instance_setting(obj)
            if flag is not None:
                raise self._unstorable(obj, _INSTANCE_SETTING % flag)
            return self._write_sub_object(obj, pobj, stack, custom)
        builtin = serializers.writer_for(obj)
        if builtin is not None:
            if kind is set:
                self.untracked = True
            self._enter(obj, stack)
            try:
                return builtin(obj, lambda value: self._write(
                    value, pobj, stack, custom))
            except serializers.NotStorableByName as error:
                raise self._unstorable(obj, str(error))
            finally:
                stack.discard(id(obj))
        self.untracked = True
        return self._write_reduced(obj, pobj, stack, custom)

    def _enter(self, obj, stack):
        if id(obj) in stack:
            raise interfaces.CircularReferenceError(obj)
        depth = len(stack)
        if depth >= self.deepest:
            if depth >= limits.MAX_NESTING:
                # Each container entered is at least one level of the
                # document: stop before Python's recursion limit.
                raise _Unstorable(interfaces.DocumentLimitError(
                    'it is nested deeper than MongoDB\'s %d levels'
                    % limits.MAX_NESTING, obj))
            self.deepest = depth + 1
        stack.add(id(obj))

    def _write_dict(self, obj, pobj, stack, custom):
        self._enter(obj, stack)
        try:
            if _all_safe_keys(obj) and (_LEGACY_DICT_DATA not in obj
                                        or not legacy.is_dict_data(obj)):
                result = {}
                for key, value in obj.items():
                    kind = type(value)
                    # Stored unchanged (BSON scalars): tested inline here
                    # and in the loops below, the writer's hot path.
                    if kind in NATIVE_TYPES or (
                            kind is int and INT64_MIN <= value <= INT64_MAX):
                        result[key] = value
                    else:
                        result[key] = self._write_item(
                            value, key, pobj, stack, custom)
                return result
            return {PY_TYPE: DICT_TYPE, 'items': self._write_items(
                obj, pobj, stack, custom)}
        finally:
            stack.discard(id(obj))

    def _write_items(self, obj, pobj, stack, custom):
        return [[self._write_item(key, repr(key), pobj, stack, custom),
                 self._write_item(value, key, pobj, stack, custom)]
                for key, value in obj.items()]

    def _write_list(self, obj, pobj, stack, custom):
        self._enter(obj, stack)
        try:
            return [value if type(value) in NATIVE_TYPES or (
                        type(value) is int and INT64_MIN <= value <= INT64_MAX)
                    else self._write_item(value, index, pobj, stack, custom)
                    for index, value in enumerate(obj)]
        finally:
            stack.discard(id(obj))

    def _write_item(self, value, where, pobj, stack, custom):
        try:
            return self._write(value, pobj, stack, custom)
        except _Unstorable as failure:
            failure.path.append(str(where))
            raise
        except interfaces.CircularReferenceError as error:
            error.path = [str(where)] + (error.path or [])
            raise

    def _write_sub_object(self, obj, pobj, stack, custom):
        # Attach the sub-object to its owner so its changes register there.
        if pobj is not None and obj._p_jar is not self._jar:
            obj._p_jar = self._jar
        if pobj is not None:
            obj._p_mongo_doc_object = pobj
        kind = type(obj)
        if kind is PersistentDict:
            return self._write_dict(obj.data, pobj, stack, custom)
        if kind is PersistentList:
            return self._write_list(obj.data, pobj, stack, custom)
        self._enter(obj, stack)
        try:
            state = kind.__getstate__(obj)
            doc = {PY_PERSISTENT_TYPE: metadata.get_dotted_name(kind)}
            self._add_state(doc, state, obj, pobj, stack, custom)
            return doc
        finally:
            stack.discard(id(obj))

    def _add_state(self, doc, state, obj, pobj, stack, custom):
        """Add ``state``, the state of ``obj``, to its stored ``doc``:
        its fields, or ``_py_state``.  A field name that reading would
        refuse (``_check_names``) is refused now."""
        refused = None if type(state) is dict and _FIELD_NAMES.get(
            type(obj), _NO_NAMES).issuperset(state) else _unreadable_name(
                state, obj)
        if refused is not None:
            name, reason = refused
            failure = self._unstorable(obj, 'its attribute %s: %s' % (
                name, reason))
            failure.path.append(name)
            raise failure
        if isinstance(state, dict) and _all_safe_keys(state):
            for key, value in state.items():
                kind = type(value)
                if kind in NATIVE_TYPES or (
                        kind is int and INT64_MIN <= value <= INT64_MAX):
                    doc[key] = value
                else:
                    doc[key] = self._write_item(
                        value, key, pobj, stack, custom)
        elif state is not None:
            doc[PY_STATE] = self._write(state, pobj, stack, custom)

    def _write_plain(self, obj, name, pobj, stack, custom):
        """An instance of a plain class (``_plain_class_name`` is ``name``):
        what ``__reduce_ex__(2)`` gives it, without building it: the class,
        and the instance dict as state."""
        self._enter(obj, stack)
        try:
            doc = {PY_TYPE: name}
            self._add_state(doc, obj.__dict__ or None, obj, pobj, stack,
                            custom)
            return doc
        finally:
            stack.discard(id(obj))

    def _write_reduced(self, obj, pobj, stack, custom):
        kind = type(obj)
        name = _plain_class_name(kind, obj)
        if name is not None:
            return self._write_plain(obj, name, pobj, stack, custom)
        self._enter(obj, stack)
        try:
            reduce_fn = copyreg.dispatch_table.get(kind)
            try:
                if reduce_fn is not None:
                    reduced = reduce_fn(obj)
                else:
                    reduced = kind.__reduce_ex__(obj, 2)
            except Exception as error:
                raise self._unstorable(obj, 'it cannot be reduced (%s)' % error)
            if isinstance(reduced, str):
                # A module-level object pickled by name: stored by name.
                doc = serializers.write_constant(obj, reduced)
                if doc is None:
                    raise self._unstorable(
                        obj, 'it reduces to the global name %r, which does '
                        'not find it again' % reduced)
                return doc
            if len(reduced) < 2:
                raise self._unstorable(
                    obj, 'it reduces to %r, which is not supported'
                    % (reduced,))
            reduced = tuple(reduced) + (None,) * (5 - len(reduced))
            factory, args, state, list_items, dict_items = reduced[:5]
            if (getattr(factory, '__name__', None) == '__newobj__'
                    and args and isinstance(args[0], type)):
                doc = {PY_TYPE: metadata.get_dotted_name(args[0])}
                if len(args) > 1:
                    doc[PY_NEW_ARGS] = self._write_list(
                        list(args[1:]), pobj, stack, custom)
            else:
                if not metadata.is_importable(factory):
                    raise self._unstorable(
                        obj, 'its factory %r cannot be found again by name'
                        % (factory,))
                doc = {PY_FACTORY: metadata.factory_name(factory),
                       PY_FACTORY_ARGS: self._write_list(
                           list(args or ()), pobj, stack, custom)}
            self._add_state(doc, state, obj, pobj, stack, custom)
            if list_items is not None:
                doc[PY_LIST_ITEMS] = self._write_list(
                    list(list_items), pobj, stack, custom)
            if dict_items is not None:
                doc[PY_DICT_ITEMS] = self._write_items(
                    dict(dict_items), pobj, stack, custom)
            return doc
        finally:
            stack.discard(id(obj))

    def _unstorable(self, obj, reason):
        error = interfaces.UnstorableObjectError(
            '%s object cannot be stored: %s' % (type(obj).__name__, reason), obj)
        return _Unstorable(error)


# Classes whose instances reduce the default way, by class: their dotted
# name, or None (see ``_plain_class_name``).  A bounded memo.
_plain_classes = {}
_PLAIN_CLASSES_LIMIT = 1000
_DEFAULT_HOOKS = (('__reduce_ex__', object.__reduce_ex__),
                  ('__reduce__', object.__reduce__),
                  ('__getstate__', getattr(object, '__getstate__', None)),
                  ('__getnewargs_ex__', None), ('__getnewargs__', None),
                  ('__slots__', None))


def _plain_class_name(kind, obj):
    """The dotted name of ``kind`` if ``obj.__reduce_ex__(2)`` of its
    instances is ``(copyreg.__newobj__, (kind,), obj.__dict__ or None)``
    (a plain Python class: no reduce, state or new-args hooks, no slots,
    no list or dict items, no ``copyreg`` entry), else ``None``.

    Decided once per class, from the class and the reduction of its first
    instance ``obj``."""
    try:
        return _plain_classes[kind]
    except KeyError:
        pass
    plain = (kind.__dictoffset__ != 0 and kind not in copyreg.dispatch_table
             and all(base.__flags__ & _HEAPTYPE
                     and '__slots__' not in vars(base)
                     for base in kind.__mro__[:-1])
             and all(getattr(kind, hook, None) is default
                     for hook, default in _DEFAULT_HOOKS))
    if plain:
        try:
            reduced = kind.__reduce_ex__(obj, 2)
        except Exception:
            plain = False
        else:
            plain = (len(reduced) == 5 and reduced[1] == (kind,)
                     and getattr(reduced[0], '__name__', None) == '__newobj__'
                     and reduced[2] == (obj.__dict__ or None)
                     and reduced[3] is None and reduced[4] is None)
    name = metadata.get_dotted_name(kind) if plain else None
    if len(_plain_classes) < _PLAIN_CLASSES_LIMIT:
        _plain_classes[kind] = name
    return name


_HEAPTYPE = 1 << 9          # a class defined in Python (Py_TPFLAGS_HEAPTYPE)


class _ReadCallback:
    """The ``read`` callback handed to built-in readers."""

    def __init__(self, reader, pobj):
        self._reader = reader
        self._pobj = pobj

    def __call__(self, state):
        return self._reader.get_object(state, self._pobj)

    def key(self, state):
        return self._reader.get_key(state, self._pobj)

    def resolve(self, name, kind):
        """Resolve a stored class name (see ``metadata.TypeRegistry``)."""
        return self._reader.resolve(name, kind)


def _setstate_of(cls):
    """The ``__setstate__`` of instances of ``cls`` (``None``: pickle's
    default), looked up once per class (a memo bounded like
    ``_plain_classes``)."""
    try:
        return _SETSTATES[cls]
    except KeyError:
        pass
    except TypeError:               # unhashable class
        return getattr(cls, '__setstate__', None)
    found = getattr(cls, '__setstate__', None)
    if len(_SETSTATES) < _PLAIN_CLASSES_LIMIT:
        _SETSTATES[cls] = found
    return found


_SETSTATES = {}     # class -> its __setstate__ or None


# -- which stored field names may become attributes --------------------------
#
# Stored state becomes instance attributes, and an instance attribute hides
# what its class defines under that name.  Python looks special methods up
# on the instance before the class in many places (``copy``, ``pickle``:
# the data manager pickles states for savepoints), mongopersist reads its
# settings from persistent objects, and the application calls its methods:
# a stored field may therefore never stand in for any of them.

# Class -> the field names checked for its instances (``_check_names``):
# a memo, bounded in classes and in names per class (beyond, names are
# checked each time).
_FIELD_NAMES = {}
_FIELD_NAMES_CLASSES = 1000
_FIELD_NAMES_PER_CLASS = 2000
_NO_NAMES = frozenset()
_MISSING = object()


def _field_names(cls):
    """The memo of field names found fine for instances of ``cls``."""
    try:
        return _FIELD_NAMES[cls]
    except KeyError:
        names = set()
        if len(_FIELD_NAMES) < _FIELD_NAMES_CLASSES:
            _FIELD_NAMES[cls] = names
        return names
    except TypeError:               # an unhashable class
        return set()


def _is_method(declared):
    """True for what an instance attribute of the same name would hide:
    a function, a class or static method, a method of a built-in type
    (a descriptor without ``__set__``)."""
    kind = type(declared)
    return hasattr(kind, '__get__') and not hasattr(kind, '__set__')


def _refused_name(name, cls):
    """Why the stored field ``name`` may not become an attribute of an
    instance of ``cls`` (``None``: it may)."""
    if not limits.is_text(name):
        # What a client decoding with 'surrogateescape' makes of a name
        # that is not UTF-8: it could never be written back.
        return 'it is not text (it holds a lone surrogate)'
    if name.startswith('_py_'):
        return 'names starting with "_py_" are reserved for mongopersist'
    if name.startswith(('_p_', '_v_')):
        if issubclass(cls, persistent.Persistent):
            return ('the "_p_" and "_v_" attributes of a persistent object '
                    'come from its class and its data manager, never from '
                    'stored data')
        return None
    if len(name) > 4 and name[:2] == '__' and name[-2:] == '__':
        if not metadata.declares_data(cls, name):
            return ('a special name may only set a plain data attribute '
                    'that the class %s declares (such as a __name__ or '
                    '__parent__ it defines), never a method or one it does '
                    'not have' % cls.__name__)
        return None
    declared = metadata.declared_attribute(cls, name, _MISSING)
    if declared is not _MISSING and _is_method(declared):
        return ('it would hide the method %s of the class %s'
                % (name, cls.__name__))
    return None


def _first_refused(names, cls):
    """``(name, reason)`` of the first of ``names`` (field names of a
    state for an instance of ``cls``) that ``_refused_name`` refuses, or
    ``None``; the others are remembered as fine for ``cls``."""
    known = _field_names(cls)
    if known.issuperset(names):
        return None
    for name in names:
        if type(name) is str and name not in known:
            reason = _refused_name(name, cls)
            if reason is not None:
                return name, reason
            if len(known) < _FIELD_NAMES_PER_CLASS:
                known.add(name)
    return None


def _check_names(names, cls):
    """Refuse, with ``StoredDataError`` naming the field, a stored field of
    ``names`` (the state about to be given to an instance of ``cls``) that
    is reserved (``_py_*``), persistent (``_p_*``, ``_v_*``, for a
    persistent object), special (``__*__``, but for a plain data
    attribute the class declares) or the name of a method of ``cls``."""
    if _FIELD_NAMES.get(cls, _NO_NAMES).issuperset(names):
        return
    refused = _first_refused(names, cls)
    if refused is not None:
        name, reason = refused
        raise _malformed('Cannot load the stored field %s: %s'
                         % (limits.quote(name), reason)).at(name)


def _unreadable_name(state, obj):
    """``(name, reason)`` of the first field name of ``state``, the state
    of ``obj`` about to be written (a dict, or a tuple of dicts and other
    values), that reading would refuse (``_check_names``); ``None`` if
    there is none.  The writer refuses what the reader would, so that
    nothing is stored that cannot be loaded again."""
    parts = (state,) if type(state) is dict else (
        state if type(state) is tuple else ())
    for part in parts:
        if type(part) is dict:
            refused = _first_refused(part, type(obj))
            if refused is not None:
                return refused
    return None


def _apply_state(value, data):
    """Give ``value``, made with ``__new__``, its stored state ``data`` as
    pickle does: its class's ``__setstate__``, else the instance dict (and
    slots), once the field names passed ``_check_names``."""
    cls = type(value)
    if type(data) is dict:
        _check_names(data, cls)
    elif type(data) is tuple:
        for part in data:
            if type(part) is dict:
                _check_names(part, cls)
    setstate = _setstate_of(cls)
    if setstate is not None:
        setstate(value, data)
    elif type(data) is dict:
        value.__dict__.update(data)
    else:
        _set_default_state(value, data)


def _set_default_state(value, data):
    """Apply a state the way pickle does without ``__setstate__``.

    The state is an attribute dict or ``(dict or None, slots dict)``.
    """
    slots = None
    if isinstance(data, tuple) and len(data) == 2:
        data, slots = data
    if data:
        value.__dict__.update(data)
    for name, item in (slots or {}).items():
        setattr(value, name, item)


def _extend(value, items):
    """Add the stored ``_py_listitems`` ``items`` to ``value`` as pickle
    does (``extend``, else ``append`` for each), with the methods of its
    class: never ones a stored field put on the instance."""
    cls = type(value)
    extend = getattr(cls, 'extend', None)
    if extend is not None:
        extend(value, items)
        return
    append = getattr(cls, 'append', None)
    if append is None:
        raise _malformed('%s has no append method for its stored %s' % (
            cls.__name__, PY_LIST_ITEMS)).at(PY_LIST_ITEMS)
    for item in items:
        append(value, item)


# The fields of a stored value that are not its state, by representation.
_ITEMS = (PY_LIST_ITEMS, PY_DICT_ITEMS)
_SUB_OBJECT_META = frozenset((PY_PERSISTENT_TYPE,) + _ITEMS)
_FACTORY_META = frozenset((PY_FACTORY, PY_FACTORY_ARGS) + _ITEMS)
_TYPED_META = frozenset((PY_TYPE, PY_NEW_ARGS) + _ITEMS)

# Stored values the reader turns into something else; without custom
# serializers, every other stored value is read as it is.  References
# written in this transaction are ``metadata.OID``s (a ``DBRef`` subclass).
_CONVERTED_STATES = frozenset([dict, list, DBRef, metadata.OID])
_REFERENCE_TYPES = frozenset([DBRef, metadata.OID])
_NOT_PLAIN = object()

#: What a malformed stored value makes readers and constructors raise; the
#: reader (and the data manager, around a whole document) turns these into
#: ``StoredDataError``.
MALFORMED = (KeyError, ValueError, TypeError, AttributeError, IndexError,
             ArithmeticError)


def _malformed(message):
    return interfaces.StoredDataError(message)


def _malformed_value(field, name, error):
    """The ``StoredDataError`` of a value naming its type in ``field``
    whose reading raised ``error`` (one of ``MALFORMED``)."""
    return _malformed('Malformed stored value of %s %s: %s' % (
        field, limits.quote(name) if isinstance(name, str)
        else type(name).__name__, _describe(error)))


def _describe(error):
    """A short reason for a malformed value, without the stored content."""
    if isinstance(error, KeyError) and error.args and isinstance(
            error.args[0], str) and len(error.args[0]) <= 64:
        return 'missing field %r' % error.args[0]
    return type(error).__name__


def _locate(error, container, items):
    """``error``, raised reading one of the ``(key or index, value)`` pairs
    ``items`` of the stored ``container``, with the key of the failing
    value added to its field path.

    That value is known by identity: the reader marks an error with the
    stored value it was raised for on the way out of reading it
    (``StoredDataError.stored_value``), so no value is read again to find
    it, and an error at the bottom of a deep document costs no more than
    reading the document.  Marks it with ``container`` in turn.
    """
    source = error.stored_value
    if source is not None and source is not container:
        for key, value in items:
            if value is source:
                error.at(key)
                break
        error.stored_value = container
    return error


def _hashable(value):
    # Stored arrays are read as PersistentList; as keys they were tuples.
    if isinstance(value, (list, PersistentList)):
        return tuple(_hashable(item) for item in value)
    return value


@zope.interface.implementer(interfaces.IObjectReader)
class ObjectReader:
    """Turns stored documents into the state of objects.

    ``jar`` is the data manager; ``DBRef`` values are handed to
    ``jar.load`` and come back as (possibly ghost) persistent objects.

    Stored names (``_py_type``, ``_py_persistent_type``, ``_py_factory``,
    an enum's ``class``) resolve only through the data manager's
    ``type_registry`` (default: ``metadata.REGISTRY``), each checked for
    its kind; see ``docs/security.rst``.  A malformed stored value raises
    ``interfaces.StoredDataError`` with the field path, a refused name
    ``interfaces.UnknownTypeError``, unless the data manager has
    ``broken_objects`` set: then the value loads as a read-only
    ``mongopersist.broken.Broken`` placeholder.

    Reading calls nothing a stored value names or carries: classes are
    made with ``__new__`` and given their state as pickle does, with the
    methods of their class (``_apply_state``, ``_extend``); stored fields
    never set reserved, persistent or special attributes
    (``_check_names``); factories get only arguments their check allows
    (``mongopersist.factories``).  Every stored value is read once, errors
    included (``_locate``): reading costs work in proportion to the
    document.
    """

    def __init__(self, jar, serializers=()):
        self._jar = jar
        self._serializers = list(serializers)
        # The ``read`` callback of built-in readers, made once (its owner is
        # set for each call).
        self._callback = _ReadCallback(self, None)

    @property
    def registry(self):
        """The ``metadata.TypeRegistry`` stored names resolve through."""
        registry = getattr(self._jar, 'type_registry', None)
        return registry if registry is not None else metadata.REGISTRY

    def resolve(self, name, kind='value'):
        """Return the class (or factory) the stored ``name`` may load as."""
        return self.registry.resolve(name, kind)

    def get_state(self, doc, obj):
        """Return the instance state stored in the top-level ``doc``.

        Its fields are checked as the state of ``obj`` (or of any
        persistent object, for ``obj`` ``None``): see ``_check_names``.
        """
        if isinstance(obj, broken.PersistentBroken):
            # Kept as stored: nothing named in it is loaded.
            return {key: value for key, value in doc.items()
                    if key not in DOCUMENT_META_FIELDS}
        state = self._read_fields(doc, obj, DOCUMENT_META_FIELDS)
        _check_names(state, persistent.Persistent if obj is None
                     else type(obj))
        return state

    def _read_fields(self, stored, obj, skip=()):
        """Read the fields of the stored dict ``stored`` but ``skip``."""
        try:
            if not (self._serializers or SERIALIZERS):
                read = self._read_value
                return {key: value if type(value) not in _CONVERTED_STATES
                        else read(value, obj)
                        for key, value in stored.items() if key not in skip}
            get = self.get_object
            return {key: get(value, obj)
                    for key, value in stored.items() if key not in skip}
        except interfaces.StoredDataError as error:
            raise _locate(error, stored, stored.items())

    def set_ghost_state(self, obj, doc):
        """Fill the ghost ``obj`` from its document ``doc``."""
        type(obj).__setstate__(obj, self.get_state(doc, obj))

    def get_key(self, state, pobj):
        """Return a stored dict key or set member as a hashable value."""
        return _hashable(self.get_object(state, pobj))

    def get_object(self, state, obj):
        """Return the Python value for ``state``, part of ``obj``'s document."""
        if not (self._serializers or SERIALIZERS):
            if type(state) in _CONVERTED_STATES:
                return self._read_value(state, obj)
            return state
        try:
            if type(state) is dict:
                return self._read_dict(state, obj)
            if type(state) is list:
                return self._new_sub_object(
                    PersistentList, self._read_list(state, obj), obj)
            if type(state) in _REFERENCE_TYPES:
                return self._jar.load(state)
            for serializer in self._serializers + SERIALIZERS:
                if serializer.can_read(state):
                    return serializer.read(state)
            return state
        except interfaces.StoredDataError as error:
            error.stored_value = state
            raise

    def _read_value(self, state, obj):
        """``get_object`` of a stored dict, array or reference, without
        custom serializers: the hot path of reading, with the common
        shapes (plain dicts and arrays) read here without further calls."""
        try:
            kind = type(state)
            if kind is dict:
                if PY_TYPE in state:
                    value = self._read_typed_value(state, obj)
                    if value is not _NOT_PLAIN:
                        return value
                    return self._read_dict(state, obj)
                if (PY_PERSISTENT_TYPE in state or PY_FACTORY in state
                        or _LEGACY_DICT_DATA in state
                        or _LEGACY_CONSTANT in state):
                    return self._read_dict(state, obj)
                read = self._read_value
                try:
                    data = {key: value if type(value) not in _CONVERTED_STATES
                            else read(value, obj)
                            for key, value in state.items()}
                except interfaces.StoredDataError as error:
                    raise _locate(error, state, state.items())
                value = PersistentDict.__new__(PersistentDict)
            elif kind is list:
                read = self._read_value
                try:
                    data = [item if type(item) not in _CONVERTED_STATES
                            else read(item, obj) for item in state]
                except interfaces.StoredDataError as error:
                    raise _locate(error, state, enumerate(state))
                value = PersistentList.__new__(PersistentList)
            else:
                return self._jar.load(state)
        except interfaces.StoredDataError as error:
            # The parent's ``_locate`` finds this value by it.
            error.stored_value = state
            raise
        value.data = data
        if obj is not None:
            # ``_attach``, inline (filled before it has a jar: it is not
            # marked changed).
            value._p_jar = self._jar
            value._p_mongo_doc_object = obj
        return value

    def _read_typed_value(self, state, obj):
        """The common ``_py_type`` values, read in one call: a built-in
        type whose reader needs no callback, or a value class stored as
        its attributes.

        ``_NOT_PLAIN`` for any other shape, and when the name or the
        type's own reader fails before anything nested was read: then
        ``_read_special`` reads it again (a few scalar fields) and raises
        the error that names the problem, or loads it broken.  The fields
        of a value class are read once: an error in them is final.
        """
        name = state[PY_TYPE]
        if type(name) is not str:
            return _NOT_PLAIN
        if name in serializers.STANDALONE_READERS:
            try:
                return serializers.READERS[name](state, None)
            except Exception:
                return _NOT_PLAIN
        if (name in serializers.READERS or name == DICT_TYPE
                or PY_STATE in state or PY_NEW_ARGS in state
                or PY_LIST_ITEMS in state or PY_DICT_ITEMS in state):
            return _NOT_PLAIN
        try:
            cls = self.registry.resolve(name, 'value')
        except interfaces.StoredDataError:
            return _NOT_PLAIN
        read = self._read_value
        try:
            data = {key: item if type(item) not in _CONVERTED_STATES
                    else read(item, obj)
                    for key, item in state.items() if key != PY_TYPE}
        except interfaces.StoredDataError as error:
            raise _locate(error, state, state.items())
        try:
            value = cls.__new__(cls)
            if data:
                # ``_apply_state`` for a value class (never persistent).
                _check_names(data, cls)
                setstate = _setstate_of(cls)
                if setstate is None:
                    value.__dict__.update(data)
                else:
                    setstate(value, data)
            return value
        except interfaces.MongoPersistError:
            raise
        except MALFORMED as error:
            raise _malformed_value(PY_TYPE, name, error) from error

    def _read_list(self, state, obj):
        try:
            if not (self._serializers or SERIALIZERS):
                read = self._read_value
                return [value if type(value) not in _CONVERTED_STATES
                        else read(value, obj) for value in state]
            get = self.get_object
            return [get(value, obj) for value in state]
        except interfaces.StoredDataError as error:
            raise _locate(error, state, enumerate(state))

    def _read_dict(self, state, obj):
        if self._serializers or SERIALIZERS:
            for serializer in self._serializers + SERIALIZERS:
                if serializer.can_read(state):
                    return serializer.read(state)
        if PY_TYPE in state:
            return self._read_special(state, obj, PY_TYPE)
        if PY_PERSISTENT_TYPE in state:
            return self._read_special(state, obj, PY_PERSISTENT_TYPE)
        if PY_FACTORY in state:
            return self._read_special(state, obj, PY_FACTORY)
        if _LEGACY_DICT_DATA in state or _LEGACY_CONSTANT in state:
            # Shapes of the original mongopersist: see mongopersist.legacy.
            value = legacy.read_single(self, state, obj)
            if value is not legacy.NOT_LEGACY:
                return value
        return self._new_sub_object(
            PersistentDict, self._read_fields(state, obj), obj)

    def _read_special(self, state, obj, field):
        """Read a value that names its type in ``field``.

        Malformed values raise ``StoredDataError``; with broken objects on,
        a refused name loads as a ``Broken`` placeholder.
        """
        name = state[field]
        try:
            if field == PY_TYPE:
                return self._read_typed(state, obj, name)
            if field == PY_PERSISTENT_TYPE:
                cls = self.resolve(name, 'sub_object')
                value = cls.__new__(cls)
                self._fill(value, state, obj, _SUB_OBJECT_META)
                return self._attach(value, obj)
            factory = self.resolve(name, 'factory')
            if PY_FACTORY_ARGS not in state:
                raise _malformed('The stored value of factory %s has no %s'
                                 % (limits.quote(name), PY_FACTORY_ARGS))
            args = self._read_array(state, PY_FACTORY_ARGS, obj)
            try:
                value = factories.call(factory, args)
            except interfaces.StoredDataError as error:
                raise error.at(PY_FACTORY_ARGS)
            return self._fill(value, state, obj, _FACTORY_META)
        except interfaces.UnknownTypeError as error:
            if (error.path is None and getattr(self._jar, 'broken_objects',
                                               False)
                    and error.name in (name, state.get('class'),
                                       state.get('path'))):
                return broken.Broken(error.name, state)
            raise
        except interfaces.MongoPersistError:
            raise
        except MALFORMED as error:
            raise _malformed_value(field, name, error) from error

    def _read_typed(self, state, obj, type_name):
        if type_name == DICT_TYPE:
            if 'items' not in state:
                raise _malformed('A stored %s has no items' % DICT_TYPE)
            return self._new_sub_object(
                PersistentDict, self._read_items(state['items'], obj), obj)
        builtin = serializers.READERS.get(type_name)
        if builtin is not None:
            callback = self._callback
            owner, callback._pobj = callback._pobj, obj
            try:
                return builtin(state, callback)
            finally:
                # A read nested in this one (a value's own ``__setstate__``
                # using another object) gets the owner back.
                callback._pobj = owner
        cls = self.resolve(type_name, 'value')
        if PY_NEW_ARGS in state:
            args = self._read_array(state, PY_NEW_ARGS, obj)
            try:
                args = factories.new_args(cls, args)
            except interfaces.StoredDataError as error:
                raise error.at(PY_NEW_ARGS)
            value = cls.__new__(cls, *args)
        else:
            # Most values (those written from their ``__dict__``) have none.
            value = cls.__new__(cls)
        return self._fill(value, state, obj, _TYPED_META)

    def _read_array(self, state, field, obj):
        """Read the stored array ``field`` (absent: empty) as a list."""
        stored = state.get(field, ())
        if type(stored) is not list and stored != ():
            raise _malformed('%s must be an array' % field).at(field)
        try:
            return self._read_list(stored, obj)
        except interfaces.StoredDataError as error:
            raise error.at(field)

    def _read_items(self, items, obj, field='items'):
        if type(items) is not list:
            raise _malformed('%s must be an array of [key, value] pairs'
                             % field).at(field)
        result = {}
        for index, pair in enumerate(items):
            if type(pair) is not list or len(pair) != 2:
                raise _malformed('%s must be an array of [key, value] pairs'
                                 % field).at(field, index)
            try:
                key = self.get_key(pair[0], obj)
            except interfaces.StoredDataError as error:
                raise error.at(field, index, 0)
            try:
                result[key] = self.get_object(pair[1], obj)
            except interfaces.StoredDataError as error:
                raise error.at(field, index, 1)
        return result

    def read_legacy_items(self, items, obj, field):
        """A dict stored as ``[key, value]`` pairs in ``field``."""
        return self._new_sub_object(
            PersistentDict, self._read_items(items, obj, field), obj)

    def _fill(self, value, state, obj, meta):
        """Give ``value`` the state stored in ``state`` (all fields but
        ``meta``, or ``_py_state``), then its list and dict items."""
        if PY_STATE in state:
            try:
                data = self._plain(self.get_object(state[PY_STATE], obj))
            except interfaces.StoredDataError as error:
                raise error.at(PY_STATE)
        else:
            data = self._read_fields(state, obj, meta)
        if data:
            _apply_state(value, data)
        if PY_LIST_ITEMS in state:
            _extend(value, self._read_array(state, PY_LIST_ITEMS, obj))
        if PY_DICT_ITEMS in state:
            items = self._read_items(state[PY_DICT_ITEMS], obj, PY_DICT_ITEMS)
            for key, item in items.items():
                value[key] = item
        return value

    def _plain(self, value, outer=True):
        """Turn the read container of a pickle state back into plain types.

        Only the outer structure is converted (a dict, or a tuple such as
        ``(dict, slots)``); the values inside stay as read.
        """
        if isinstance(value, PersistentList) and outer:
            data = value.__dict__.get('data')
            if type(data) is list:
                return tuple(self._plain(v, False) for v in data)
        if isinstance(value, PersistentDict):
            data = value.__dict__.get('data')
            if type(data) is dict:
                return dict(data)
        return value

    def _new_sub_object(self, cls, data, obj):
        value = cls.__new__(cls)
        value.data = data
        return self._attach(value, obj)

    def _attach(self, value, obj):
        if obj is not None:
            value._p_jar = self._jar
            value._p_mongo_doc_object = obj
            # Filling it may have marked it changed; it is as stored.
            value._p_changed = False
        return value
