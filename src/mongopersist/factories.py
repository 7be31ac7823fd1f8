"""The constructors a stored value may name without registration, and the
checks their stored arguments pass before anything is called.

A stored ``{'_py_factory': name, '_py_factory_args': [...]}`` calls a
constructor with arguments read from the document (``docs/format.rst``).
``BUILTIN`` holds the standard library constructors that need no
registration (``metadata.SAFE_FACTORIES`` are their names): the ones
``__reduce_ex__(2)`` gives common values (``collections.OrderedDict``,
``deque``, ``Counter``, ``fractions.Fraction``, the ``ipaddress`` types,
...), and those of documents written by the original mongopersist (the
``datetime`` types, ``builtins.set``, ...).  They are looked up in this
table, never imported while reading.

``call(factory, args)`` checks the arguments of these constructors, and of
any class derived from one (``new_args`` does the same for a class's
``__new__``), by their types, before calling, so that

* nothing is looked up on an argument: a constructor gets only plain
  built-in values (``str``, ``int``, ``bytes``, ``list``, ``dict``, ...),
  never a stored instance whose fields could stand in for the methods the
  constructor calls (``uuid.UUID`` calls ``.replace`` on its argument,
  ``dict`` calls ``.keys``);
* what it builds is bounded by what was stored: a size is never taken as a
  count to allocate (``bytes(2**50)``), a lazy sequence is never consumed
  (``tuple(range(2**62))``), a number is never expanded from an exponent
  (``Fraction('1e999999999')``), a text encoding is one of a few built-in
  codecs (naming another would import ``encodings.<name>``).

Arguments that fail a check raise ``interfaces.StoredDataError``, naming
the constructor and never the stored content.  Factories the application
registered (``metadata.register_factory``) are called with the stored
arguments as they are: they are the application's own code.
"""
import collections
import datetime
import decimal
import fractions
import ipaddress
import pathlib
import re
import sys
import uuid

import persistent.list
import persistent.mapping

from mongopersist import interfaces

#: The text encodings stored arguments may name (``bytes(text, encoding)``,
#: ``str(data, encoding)``): the codecs CPython implements without looking
#: them up, so naming one never imports a module.
ENCODINGS = frozenset(['utf-8', 'utf8', 'latin-1', 'latin1', 'iso-8859-1',
                       'ascii'])

#: Digits of the longest integer read from text when Python's own limit
#: (``sys.get_int_max_str_digits``) is switched off: converting text to an
#: integer takes time that grows faster than the text.
DEFAULT_MAX_INT_DIGITS = 4300


class _Refused(Exception):
    """Internal: the stored arguments fail a check (the reason)."""


def _refuse(reason):
    raise _Refused(reason)


# -- the stored values a constructor may get ---------------------------------
def _sequence(value):
    """A stored array (a list, a tuple, or the ``PersistentList`` the
    reader makes of an array) as a plain list or tuple."""
    kind = type(value)
    if kind is list or kind is tuple:
        return value
    if isinstance(value, persistent.list.PersistentList):
        data = value.__dict__.get('data')
        if type(data) is list:
            return data
    _refuse('an array was expected, not %s' % kind.__name__)


def _mapping(value):
    """A stored dict (a dict, or the reader's ``PersistentDict``) as a
    plain dict, or ``None`` if ``value`` is not one."""
    if type(value) is dict:
        return value
    if isinstance(value, persistent.mapping.PersistentMapping):
        data = value.__dict__.get('data')
        if type(data) is dict:
            return data
    return None


def _pairs(value):
    """A stored dict, or an array of ``[key, value]`` pairs, as a plain
    dict or list of pairs."""
    mapping = _mapping(value)
    if mapping is not None:
        return mapping
    pairs = []
    for pair in _sequence(value):
        pair = _sequence(pair)
        if len(pair) != 2:
            _refuse('an array of [key, value] pairs was expected')
        pairs.append((pair[0], pair[1]))
    return pairs


def _integer(value):
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    _refuse('an integer was expected, not %s' % type(value).__name__)


def _optional_integer(value):
    return None if value is None else _integer(value)


def _number(value):
    if isinstance(value, float):
        return float(value)
    return _integer(value)


def _text(value):
    if isinstance(value, str):
        return str(value)
    _refuse('a string was expected, not %s' % type(value).__name__)


def _data(value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    _refuse('bytes were expected, not %s' % type(value).__name__)


def _encoding(value):
    if not isinstance(value, str) or value.lower() not in ENCODINGS:
        _refuse('the encoding must be one of %s' % ', '.join(sorted(
            ENCODINGS)))
    return value.lower()


def _errors(value):
    if value != 'strict':
        _refuse("only the 'strict' error handler is allowed")
    return value


def max_int_digits():
    """The most digits an integer read from text may have."""
    limit = getattr(sys, 'get_int_max_str_digits', lambda: 0)()
    return limit or DEFAULT_MAX_INT_DIGITS


def integer_text(value):
    """``value``, a stored integer's text, if it is short enough to convert
    in time proportional to its length (``max_int_digits``)."""
    text = _text(value)
    if len(text.strip().lstrip('+-')) > max_int_digits():
        _refuse('the integer has more than %d digits' % max_int_digits())
    return text


def _arity(args, least, most):
    if not least <= len(args) <= most:
        _refuse('%s arguments were expected, not %d' % (
            least if least == most else '%d to %d' % (least, most), len(args)))


# -- the checks, by constructor ----------------------------------------------
def _no_args_or_array(args):
    _arity(args, 0, 1)
    return tuple(_sequence(arg) for arg in args)


def _no_args_or_pairs(args):
    _arity(args, 0, 1)
    return tuple(_pairs(arg) for arg in args)


def _counter(args):
    _arity(args, 0, 1)
    if not args:
        return ()
    mapping = _mapping(args[0])
    return (mapping if mapping is not None else _sequence(args[0]),)


def _deque(args):
    _arity(args, 0, 2)
    if len(args) == 2:
        maxlen = _optional_integer(args[1])
        if maxlen is not None and maxlen < 0:
            _refuse('maxlen must not be negative')
        return (_sequence(args[0]), maxlen)
    return _no_args_or_array(args)


def _bytes(args):
    """``bytes``/``bytearray``: from bytes, from text in one of
    ``ENCODINGS``, or from an array of byte values; never from a size."""
    _arity(args, 0, 3)
    if not args:
        return ()
    if len(args) == 1:
        if isinstance(args[0], (bytes, bytearray)):
            return (_data(args[0]),)
        if isinstance(args[0], (int, float)):
            _refuse('a stored number is never taken as a size')
        return ([_integer(item) for item in _sequence(args[0])],)
    return (_text(args[0]), _encoding(args[1])) + tuple(
        _errors(arg) for arg in args[2:])


def _str(args):
    """``str``: from text, or from bytes in one of ``ENCODINGS``."""
    _arity(args, 0, 3)
    if len(args) <= 1:
        return tuple(_text(arg) for arg in args)
    return (_data(args[0]), _encoding(args[1])) + tuple(
        _errors(arg) for arg in args[2:])


def _int(args):
    _arity(args, 0, 2)
    if not args:
        return ()
    if len(args) == 2 or isinstance(args[0], str):
        return (integer_text(args[0]),) + tuple(
            _integer(arg) for arg in args[1:])
    value = args[0]
    if isinstance(value, (bool, float)):
        return (value,)
    return (_integer(value),)


def _float(args):
    _arity(args, 0, 1)
    if args and isinstance(args[0], str):
        return (_text(args[0]),)
    return tuple(_number(arg) for arg in args)


def _scalar(args):
    _arity(args, 0, 1)
    if args and not isinstance(args[0], (type(None), bool, int, float, str)):
        _refuse('a number, string, boolean or null was expected')
    return tuple(args)


def _complex(args):
    _arity(args, 0, 2)
    if len(args) == 1 and isinstance(args[0], str):
        return (_text(args[0]),)
    return tuple(_number(arg) for arg in args)


def _range(args):
    _arity(args, 1, 3)
    return tuple(_integer(arg) for arg in args)


def _slice(args):
    _arity(args, 1, 3)
    return tuple(_optional_integer(arg) for arg in args)


#: What ``Fraction`` reads from text without expanding an exponent.
_FRACTION_TEXT = re.compile(r'\s*[+-]?\d+(\.\d*)?(/\d+)?\s*\Z')


def _fraction(args):
    _arity(args, 1, 2)
    if len(args) == 1 and isinstance(args[0], str):
        text = _text(args[0])
        if not _FRACTION_TEXT.match(text):
            _refuse('a fraction is stored as "numerator/denominator"')
        if len(text) > 2 * max_int_digits():
            _refuse('the fraction has too many digits')
        return (text,)
    if len(args) == 1 and isinstance(args[0], float):
        return (float(args[0]),)
    return tuple(_integer(arg) for arg in args)


def _decimal(args):
    _arity(args, 1, 1)
    if isinstance(args[0], (str, float)):
        return (args[0],)
    return (_integer(args[0]),)


def _date_parts(args, length, ints, tz_allowed):
    """A ``datetime`` type's arguments: up to ``ints`` integers, or the
    ``length`` bytes of its pickled state (as bytes, or as text when the
    bytes were valid UTF-8 in Python 2), then maybe a tzinfo."""
    if args and isinstance(args[0], (bytes, str)):
        if len(args[0]) != length:
            _refuse('pickled date bytes of the wrong length')
        first = _data(args[0]) if isinstance(args[0], bytes) else _text(
            args[0])
        rest = args[1:]
        _arity(rest, 0, 1 if tz_allowed else 0)
        return (first,) + tuple(_tzinfo(arg) for arg in rest)
    parts = list(args)
    tzinfo = ()
    if tz_allowed and parts and isinstance(parts[-1], (datetime.tzinfo,
                                                       type(None))):
        tzinfo = (_tzinfo(parts.pop()),)
    _arity(parts, 0, ints)
    return tuple(_integer(part) for part in parts) + tzinfo


def _tzinfo(value):
    if value is None or isinstance(value, datetime.tzinfo):
        return value
    _refuse('a tzinfo was expected, not %s' % type(value).__name__)


def _date(args):
    return _date_parts(args, 4, 3, False)


def _datetime(args):
    return _date_parts(args, 10, 7, True)


def _time(args):
    return _date_parts(args, 6, 4, True)


def _timedelta(args):
    _arity(args, 0, 7)
    return tuple(_number(arg) for arg in args)


def _timezone(args):
    _arity(args, 1, 2)
    if not isinstance(args[0], datetime.timedelta):
        _refuse('a timedelta was expected')
    return (args[0],) + tuple(_text(arg) for arg in args[1:])


def _uuid(args):
    _arity(args, 1, 1)
    return (_text(args[0]),)


def _address(args):
    _arity(args, 1, 1)
    value = args[0]
    if isinstance(value, (bytes, str)):
        return (_data(value) if isinstance(value, bytes) else _text(value),)
    return (_integer(value),)


def _network(args):
    _arity(args, 1, 2)
    value = args[0]
    first = _text(value) if isinstance(value, str) else _integer(value)
    if len(args) == 2 and not isinstance(args[1], bool):
        _refuse('strict must be true or false')
    return (first,) + tuple(args[1:])


def _interface(args):
    _arity(args, 1, 1)
    return _network(args)


def _path(args):
    return tuple(_text(arg) for arg in args)


#: The constructors ``_py_factory`` may name without registration, by
#: stored name.
BUILTIN = {
    'collections.OrderedDict': collections.OrderedDict,
    'collections.deque': collections.deque,
    'collections.Counter': collections.Counter,
    'fractions.Fraction': fractions.Fraction,
    'decimal.Decimal': decimal.Decimal,
    'datetime.date': datetime.date,
    'datetime.datetime': datetime.datetime,
    'datetime.time': datetime.time,
    'datetime.timedelta': datetime.timedelta,
    'datetime.timezone': datetime.timezone,
    'builtins.range': range,
    'builtins.slice': slice,
    'builtins.complex': complex,
    'builtins.set': set,
    'builtins.frozenset': frozenset,
    'builtins.bytearray': bytearray,
    'builtins.bytes': bytes,
    'builtins.str': str,
    'builtins.int': int,
    'builtins.float': float,
    'builtins.bool': bool,
    'builtins.tuple': tuple,
    'builtins.list': list,
    'builtins.dict': dict,
    'uuid.UUID': uuid.UUID,
    'ipaddress.IPv4Address': ipaddress.IPv4Address,
    'ipaddress.IPv6Address': ipaddress.IPv6Address,
    'ipaddress.IPv4Network': ipaddress.IPv4Network,
    'ipaddress.IPv6Network': ipaddress.IPv6Network,
    'ipaddress.IPv4Interface': ipaddress.IPv4Interface,
    'ipaddress.IPv6Interface': ipaddress.IPv6Interface,
    'pathlib.PurePath': pathlib.PurePath,
    'pathlib.PurePosixPath': pathlib.PurePosixPath,
    'pathlib.PureWindowsPath': pathlib.PureWindowsPath,
}

#: The check of each constructor's arguments (and of the ``__new__`` of
#: the classes derived from it), by constructor.
CHECKS = {
    collections.OrderedDict: _no_args_or_pairs,
    dict: _no_args_or_pairs,
    collections.deque: _deque,
    collections.Counter: _counter,
    fractions.Fraction: _fraction,
    decimal.Decimal: _decimal,
    datetime.datetime: _datetime,
    datetime.date: _date,
    datetime.time: _time,
    datetime.timedelta: _timedelta,
    datetime.timezone: _timezone,
    range: _range,
    slice: _slice,
    complex: _complex,
    set: _no_args_or_array,
    frozenset: _no_args_or_array,
    list: _no_args_or_array,
    tuple: _no_args_or_array,
    bytearray: _bytes,
    bytes: _bytes,
    str: _str,
    int: _int,
    bool: _scalar,
    float: _float,
    uuid.UUID: _uuid,
    ipaddress.IPv4Address: _address,
    ipaddress.IPv6Address: _address,
    ipaddress.IPv4Network: _network,
    ipaddress.IPv6Network: _network,
    ipaddress.IPv4Interface: _interface,
    ipaddress.IPv6Interface: _interface,
    pathlib.PurePath: _path,
}


def _check_of(factory, methods=('__new__', '__init__')):
    """The check for ``factory``: its own, or for a class, that of the
    constructor whose ``methods`` (those that take the arguments) it
    inherits; ``None`` if its own code takes them (a class of the
    application that defines ``__new__`` or ``__init__``, such as a
    ``namedtuple``), or for any other callable."""
    try:
        check = CHECKS.get(factory)
    except TypeError:               # an unhashable registered callable
        return None
    if check is None and isinstance(factory, type):
        for base in factory.__mro__:
            check = CHECKS.get(base)
            if check is not None:
                break
            namespace = vars(base)
            if any(method in namespace for method in methods):
                return None
    return check


def _name(factory):
    return getattr(factory, '__qualname__', None) or type(factory).__name__


def checked_args(factory, args, what='factory',
                 methods=('__new__', '__init__')):
    """``args`` (read from the stored document) as ``factory`` may take
    them, or ``StoredDataError`` naming ``factory``."""
    check = _check_of(factory, methods)
    if check is None:
        return args
    try:
        return check(args)
    except _Refused as reason:
        raise interfaces.StoredDataError(
            'The stored arguments of %s %s are refused: %s'
            % (what, _name(factory), reason)) from None


def call(factory, args):
    """``factory(*args)``, for a stored ``_py_factory``, once its
    arguments passed its check."""
    return factory(*checked_args(factory, args))


def new_args(cls, args):
    """The stored ``_py_new_args`` of an instance of ``cls``, checked as
    the arguments of the constructor whose ``__new__`` ``cls`` inherits
    (a subclass of ``bytes`` takes what ``bytes`` takes)."""
    return checked_args(cls, args, 'the class', ('__new__',))
