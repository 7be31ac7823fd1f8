"""Built-in representations of standard library value types.

Each representation is a small, readable sub-document whose ``_py_type``
names the Python type, for example ``{'_py_type': 'decimal.Decimal',
'value': '3.10'}``.  ``docs/format.rst`` lists them all.

Writers take the object and a ``write`` callback (to store nested values) and
return the stored value; readers take the stored sub-document and a ``read``
callback and return the object.  User serializers registered through
``mongopersist.serialize`` are consulted before these.

Readers may raise ``KeyError``, ``ValueError`` or ``TypeError`` on a
malformed stored value: ``ObjectReader`` turns them into
``interfaces.StoredDataError`` naming the field.  Readers resolve stored
class names only through ``read.resolve(name, kind)`` (the data manager's
``TypeRegistry``), never by importing.
"""
import datetime
import decimal
import enum
import os
import re
import sys
import types
import uuid
import zoneinfo

from mongopersist import factories, metadata

TYPE = '_py_type'


def _tz_fields(value, state):
    """Add what the ISO text loses of the tzinfo so it can be restored.

    That is the zone name of a ``zoneinfo`` tzinfo, or the name given to a
    fixed-offset ``datetime.timezone`` (the offset itself is in the text).
    """
    tzinfo = value.tzinfo
    key = getattr(tzinfo, 'key', None)
    if key is not None:
        state['tz'] = key
    elif isinstance(tzinfo, datetime.timezone):
        offset = tzinfo.utcoffset(None)
        name = tzinfo.tzname(None)
        if name != datetime.timezone(offset).tzname(None):
            state['tzname'] = name
    return state


#: What a stored zone name may look like (``Europe/Zurich``, ``UTC``,
#: ``Etc/GMT+5``): a relative path of the zone database, nothing more.
_ZONE_NAME = re.compile(r'[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+){0,3}\Z')


def zone(key):
    """The ``zoneinfo.ZoneInfo`` of the stored zone name ``key``.

    Only names of the system's zone database (``zoneinfo.TZPATH``) are
    looked up, unless the ``tzdata`` package is already imported: a zone
    that is not found there makes ``zoneinfo`` import modules of
    ``tzdata`` named after the stored text.
    """
    if key not in _zones_found:
        if type(key) is not str or len(key) > 64 or not _ZONE_NAME.match(
                key):
            raise ValueError('not a time zone name')
        if 'tzdata' not in sys.modules and not any(
                os.path.isfile(os.path.join(path, key))
                for path in zoneinfo.TZPATH):
            raise ValueError('not a time zone of the system\'s zone '
                             'database')
        if len(_zones_found) < 1000:
            _zones_found.add(key)
    return zoneinfo.ZoneInfo(key)


# Stored zone names found before (a bounded memo: a zone is looked for in
# the zone database once).
_zones_found = set()


def _with_zone(value, state):
    key = state.get('tz')
    if key is None:
        if 'tzname' in state:
            return value.replace(tzinfo=datetime.timezone(
                value.tzinfo.utcoffset(None), _text(state['tzname'])))
        return value
    zone_info = zone(key)
    if isinstance(value, datetime.datetime):
        return value.astimezone(zone_info)
    return value.replace(tzinfo=zone_info)


def _text(value):
    """``value``, a stored field that must be a string."""
    if type(value) is not str:
        raise TypeError('a string was expected')
    return value


def is_native_datetime(value):
    """Return true if BSON stores ``value`` without losing anything.

    BSON datetimes are UTC with millisecond precision, and PyMongo reads
    them back as naive datetimes.
    """
    return value.tzinfo is None and value.microsecond % 1000 == 0


def write_datetime(value, write):
    state = {TYPE: 'datetime.datetime', 'iso': value.isoformat()}
    # A BSON date beside the exact text keeps the value sortable and
    # queryable with MongoDB's date operators.
    if value.tzinfo is None:
        state['utc'] = value.replace(microsecond=value.microsecond // 1000 * 1000)
    else:
        utc = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        state['utc'] = utc.replace(microsecond=utc.microsecond // 1000 * 1000)
    return _tz_fields(value, state)


def read_datetime(state, read):
    return _with_zone(datetime.datetime.fromisoformat(_text(state['iso'])),
                      state)


def write_date(value, write):
    return {TYPE: 'datetime.date', 'iso': value.isoformat()}


def read_date(state, read):
    if 'ordinal' in state:
        return datetime.date.fromordinal(state['ordinal'])
    return datetime.date.fromisoformat(_text(state['iso']))


def write_time(value, write):
    return _tz_fields(value, {TYPE: 'datetime.time', 'iso': value.isoformat()})


def read_time(state, read):
    return _with_zone(datetime.time.fromisoformat(_text(state['iso'])), state)


def write_timedelta(value, write):
    return {TYPE: 'datetime.timedelta', 'days': value.days,
            'seconds': value.seconds, 'microseconds': value.microseconds}


def read_timedelta(state, read):
    return datetime.timedelta(days=state['days'], seconds=state['seconds'],
                              microseconds=state['microseconds'])


def write_decimal(value, write):
    # Text keeps every digit and the exponent; Decimal128 would round
    # numbers with more than 34 digits.
    return {TYPE: 'decimal.Decimal', 'value': str(value)}


def read_decimal(state, read):
    return decimal.Decimal(_text(state['value']))


def _sort_key(value):
    return (type(value).__name__, repr(value))


def _sorted(items):
    """Sort set members so equal sets are always stored the same way."""
    try:
        return sorted(items)
    except TypeError:
        return sorted(items, key=_sort_key)


def write_set(value, write):
    name = 'builtins.%s' % type(value).__name__
    return {TYPE: name, 'items': [write(item) for item in _sorted(value)]}


def read_set(state, read):
    stored = state['items']
    if not isinstance(stored, list):
        raise TypeError('set items must be an array')
    items = [read.key(item) for item in stored]
    if state[TYPE] == 'builtins.frozenset':
        return frozenset(items)
    return set(items)


def write_bytearray(value, write):
    return {TYPE: 'builtins.bytearray', 'data': bytes(value)}


def read_bytearray(state, read):
    # Bytes only: a number would be a size to allocate.
    data = state['data']
    if not isinstance(data, bytes):
        raise TypeError('bytes were expected')
    return bytearray(data)


def write_uuid(value, write):
    return {TYPE: 'uuid.UUID', 'value': str(value)}


def read_uuid(state, read):
    return uuid.UUID(_text(state['value']))


def write_big_int(value, write):
    return {TYPE: 'builtins.int', 'value': str(value)}


def read_big_int(state, read):
    # Its digits are bounded: converting text to an integer takes time
    # that grows faster than the text.
    text = _text(state['value'])
    if len(text) > factories.max_int_digits() + 1:
        raise ValueError('too many digits')
    return int(text)


def write_complex(value, write):
    return {TYPE: 'builtins.complex', 'real': value.real, 'imag': value.imag}


def read_complex(state, read):
    return complex(state['real'], state['imag'])


def write_enum(value, write):
    state = {TYPE: 'enum.Enum', 'class': metadata.get_dotted_name(type(value)),
             'name': value.name}
    if isinstance(value, enum.Flag):
        # Combined flags (and the empty flag) have no member name of their
        # own; their value rebuilds them.
        state['value'] = write(value.value)
    return state


def read_enum(state, read):
    """Return the enum member stored as ``{class, name[, value]}``.

    ``class`` must resolve to an ``enum.Enum`` subclass (kind ``'enum'``);
    the member is looked up by value (flags) or by name, never called.
    """
    name = state.get('class')
    if not isinstance(name, str):
        raise ValueError('an enum entry needs the name of its class')
    resolve = getattr(read, 'resolve', None) or metadata.REGISTRY.resolve
    cls = resolve(name, 'enum')
    if 'value' in state:
        return cls(read(state['value']))
    member = state.get('name')
    if not isinstance(member, str):
        raise ValueError('an enum entry needs a member name or value')
    return cls[member]


# Classes, functions and other module-level objects are stored by name, as
# the original mongopersist stored classes: {'_py_type': 'type', 'path':
# 'myapp.models.Person'}.  Loading looks the name up through the registry
# (a class: any class the application allows; a function or constant: only
# one registered with ``metadata.register_global`` or stored by this
# process) and never calls what it finds.
BY_NAME = {'type': 'class', 'function': 'global', 'constant': 'global'}


class NotStorableByName(ValueError):
    """A class or function whose name does not find it again."""


def write_class(value, write):
    name = metadata.class_name(value)
    if '<locals>' in name:
        raise NotStorableByName(
            'the class %s cannot be found again by name' % name)
    return {TYPE: 'type', 'path': name}


def write_function(value, write):
    name = metadata.global_name(value)
    if name is None:
        raise NotStorableByName(
            'the function %r cannot be found again by name' % (value,))
    return {TYPE: 'function', 'path': name}


def write_constant(value, name):
    """Store ``value``, an object that pickles as the global ``name`` of
    its module (its ``__reduce__`` returns ``name``), by name; ``None`` if
    that name does not find ``value``."""
    dotted = metadata.global_name(value, name)
    if dotted is None:
        return None
    return {TYPE: 'constant', 'path': dotted}


def read_by_name(state, read):
    name = state['path']
    resolve = getattr(read, 'resolve', None) or metadata.REGISTRY.resolve
    return resolve(name, BY_NAME[state[TYPE]])


WRITERS = {
    datetime.datetime: write_datetime,
    datetime.date: write_date,
    datetime.time: write_time,
    datetime.timedelta: write_timedelta,
    decimal.Decimal: write_decimal,
    set: write_set,
    frozenset: write_set,
    bytearray: write_bytearray,
    uuid.UUID: write_uuid,
    complex: write_complex,
    type: write_class,
    types.FunctionType: write_function,
    types.BuiltinFunctionType: write_function,
}

READERS = {
    'datetime.datetime': read_datetime,
    'datetime.date': read_date,
    'datetime.time': read_time,
    'datetime.timedelta': read_timedelta,
    'decimal.Decimal': read_decimal,
    'builtins.set': read_set,
    'builtins.frozenset': read_set,
    'builtins.bytearray': read_bytearray,
    'uuid.UUID': read_uuid,
    'builtins.int': read_big_int,
    'builtins.complex': read_complex,
    'enum.Enum': read_enum,
    'type': read_by_name,
    'function': read_by_name,
    'constant': read_by_name,
}

#: The names in ``READERS`` whose reader never uses its ``read`` callback
#: (the value holds nothing but its own fields): the reader's hot path
#: calls them without one.
STANDALONE_READERS = frozenset([
    'datetime.datetime', 'datetime.date', 'datetime.time',
    'datetime.timedelta', 'decimal.Decimal', 'builtins.bytearray',
    'uuid.UUID', 'builtins.int', 'builtins.complex'])


def writer_for(value):
    """Return the built-in writer for ``value``, or ``None``."""
    writer = WRITERS.get(type(value))
    if writer is None:
        if isinstance(value, enum.Enum):
            return write_enum
        if isinstance(value, type):
            return write_class
    return writer
