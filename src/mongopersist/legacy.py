"""Documents written by the original mongopersist (0.7 to 0.9).

The original package stored a few values in shapes this library does not
write (see ``docs/operations.rst``, "Upgrading from the original
package"):

``{'dict_data': [[key, value], ...]}``
    a dict with keys that are not all strings (this library writes
    ``{'_py_type': 'builtins.dict', 'items': [...]}``);
``{'_py_constant': 'module.NAME'}``
    a module-level object whose ``__reduce__`` returns its name (this
    library writes ``{'_py_type': 'constant', 'path': 'module.NAME'}``);
``{'_py_factory': '__builtin__.set', ...}``
    factories of Python 2's modules (``__builtin__``, ``copy_reg``): they
    load as the safe standard library factories of their Python 3 name
    (``metadata.python3_name``), and are rewritten to it;
``{'_py_factory': 'datetime.date', '_py_factory_args': [b'...']}``
    dates, datetimes and times as Python 2 pickled them: their bytes (a
    ``Binary``, or a string when the bytes happened to be valid UTF-8).

Classes stored as values (``{'_py_type': 'type', 'path': ...}``) are in the
current format too (``mongopersist.serializers``).

``read_single`` reads the first two for the ``ObjectReader`` (dates load
through the safe factories of ``metadata.SAFE_FACTORIES``), only through
the data manager's ``TypeRegistry``: nothing is imported or called that the
application did not allow.

The original package's *name map* (``persistence_name_map``: one document
``{database, collection, path}`` per class and collection) stands in for
the type map of collections that have no type-map entry
(``name_map_types``).

``Upgrade`` rewrites a stored document's legacy shapes into the current
format, without loading any class; ``mongopersist upgrade-format`` runs it
over a database.
"""
import datetime

from mongopersist import broken, interfaces, metadata, serializers

DICT_DATA = 'dict_data'
PY_CONSTANT = '_py_constant'
PY_FACTORY = '_py_factory'
PY_FACTORY_ARGS = '_py_factory_args'
PY_TYPE = '_py_type'

#: Returned by ``read_single`` for a stored dict that is not a legacy shape.
NOT_LEGACY = object()

#: The collection the original package kept its class names in, one
#: document ``{database, collection, path}`` per class and collection.
NAME_MAP_COLLECTION = 'persistence_name_map'


def name_map_types(database, collection_database, collection):
    """The class names the original package's name map records for a
    collection, first stored first (``[]`` if none).

    ``database`` is the (PyMongo) database holding the name map.  Entries
    that are not ``{database, collection, path}`` strings are skipped.
    """
    names = []
    cursor = database[NAME_MAP_COLLECTION].find(
        {'database': collection_database, 'collection': collection}
    ).sort('_id')
    for entry in cursor:
        path = entry.get('path')
        if isinstance(path, str) and path not in names:
            names.append(path)
    return names


def is_dict_data(state):
    """True if the stored dict ``state`` is a legacy non-string-key dict.

    The writer never stores a plain dict whose only key is ``dict_data``
    (it stores such a dict as ``builtins.dict`` items), so the shape is
    not ambiguous.
    """
    return (len(state) == 1 and type(state.get(DICT_DATA)) is list)


def read_single(reader, state, obj):
    """Read a one-field stored dict if it is a legacy shape.

    ``reader`` is the ``serialize.ObjectReader``; returns ``NOT_LEGACY``
    for anything else.  Malformed values raise ``StoredDataError``; a
    constant the registry does not allow ``UnknownTypeError``.
    """
    if is_dict_data(state):
        return reader.read_legacy_items(state[DICT_DATA], obj, DICT_DATA)
    name = state.get(PY_CONSTANT, NOT_LEGACY)
    if name is NOT_LEGACY or len(state) != 1:
        return NOT_LEGACY
    if type(name) is not str:
        raise interfaces.StoredDataError(
            'A stored %s must be a dotted name' % PY_CONSTANT).at(PY_CONSTANT)
    try:
        return reader.resolve(name, 'global')
    except interfaces.UnknownTypeError:
        if getattr(getattr(reader, '_jar', None), 'broken_objects', False):
            return broken.Broken(name, state)
        raise


# -- rewriting stored documents -------------------------------------------
def _pickled_bytes(arg):
    if isinstance(arg, bytes):
        return bytes(arg)
    if isinstance(arg, str):
        # Python 2 stored the bytes as a string when they were valid UTF-8.
        return arg.encode('latin-1')
    raise ValueError('not the pickled bytes of a date')


def _decode_time(data):
    """Hour, minute, second, microsecond of pickled time bytes."""
    return (data[0], data[1], data[2],
            (data[3] << 16) | (data[4] << 8) | data[5])


def decode_pickled_date(name, args):
    """Return the ``datetime`` value of a legacy ``_py_factory`` date.

    Decodes the bytes by hand (the layout of CPython's pickles); raises
    ``ValueError`` for anything but naive values of the right length.
    """
    if not isinstance(args, list) or len(args) not in (1, 2) or (
            len(args) == 2 and args[1] is not None):
        raise ValueError('only naive dates, datetimes and times are decoded')
    data = _pickled_bytes(args[0])
    if name == 'datetime.date' and len(data) == 4:
        return datetime.date((data[0] << 8) | data[1], data[2], data[3])
    if name == 'datetime.datetime' and len(data) == 10:
        return datetime.datetime((data[0] << 8) | data[1], data[2], data[3],
                                 *_decode_time(data[4:]))
    if name == 'datetime.time' and len(data) == 6:
        return datetime.time(*_decode_time(data))
    raise ValueError('not the pickled bytes of a %s' % name)


_DATE_FACTORIES = frozenset(
    ['datetime.date', 'datetime.datetime', 'datetime.time'])


class Upgrade:
    """Rewrites the legacy shapes of stored documents (``rewrite``).

    Counts what it rewrote by shape (``counts``) and lists what it could
    not (``problems``: ``(path, reason)``, relative to the document).
    Nothing is loaded: only stored values are looked at.
    """

    def __init__(self):
        self.counts = {}
        self.problems = []
        self._counting = True

    def _count(self, shape):
        if self._counting:
            self.counts[shape] = self.counts.get(shape, 0) + 1

    def rewrite(self, doc, count=True):
        """Return ``(new_doc, changed)`` for the top-level document
        (``count``: add what it rewrites to ``counts``)."""
        self.problems = []
        self._counting = count
        new = {}
        changed = False
        for key, value in doc.items():
            new[key], did = self._value(value, key)
            changed = changed or did
        return new, changed

    def _value(self, value, path):
        kind = type(value)
        if kind is list:
            changed = False
            items = []
            for index, item in enumerate(value):
                item, did = self._value(item, '%s.%d' % (path, index))
                items.append(item)
                changed = changed or did
            return items, changed
        if kind is not dict:
            return value, False
        if is_dict_data(value):
            items, _ = self._value(value[DICT_DATA], path + '.' + DICT_DATA)
            self._count(DICT_DATA)
            return {PY_TYPE: 'builtins.dict', 'items': items}, True
        if len(value) == 1 and PY_CONSTANT in value:
            name = value[PY_CONSTANT]
            if type(name) is not str:
                self.problems.append((path, 'malformed %s' % PY_CONSTANT))
                return value, False
            self._count(PY_CONSTANT)
            return {PY_TYPE: 'constant', 'path': name}, True
        factory = value.get(PY_FACTORY)
        if isinstance(factory, str) and metadata.python3_name(
                factory) != factory:
            value = dict(value, **{PY_FACTORY: metadata.python3_name(
                factory)})
            self._count('Python 2 factory name')
            new, _ = self._value(value, path)
            return new, True
        if factory in _DATE_FACTORIES and set(value) == {
                PY_FACTORY, PY_FACTORY_ARGS}:
            try:
                decoded = decode_pickled_date(factory, value[PY_FACTORY_ARGS])
            except (ValueError, TypeError, IndexError) as error:
                self.problems.append((path, 'pickled %s not rewritten: %s' % (
                    factory, error)))
                return value, False
            self._count('pickled ' + factory)
            if type(decoded) is datetime.datetime:
                if serializers.is_native_datetime(decoded):
                    return decoded, True
                return serializers.write_datetime(decoded, None), True
            if type(decoded) is datetime.date:
                return serializers.write_date(decoded, None), True
            return serializers.write_time(decoded, None), True
        changed = False
        new = {}
        for key, item in value.items():
            new[key], did = self._value(item, '%s.%s' % (path, key))
            changed = changed or did
        return new, changed
