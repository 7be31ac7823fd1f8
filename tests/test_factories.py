"""The constructors stored values may name, and the checks of their
arguments (mongopersist.factories).

Every value whose ``__reduce_ex__(2)`` names one of these constructors
still loads; arguments that would make a constructor look a method up on a
stored instance, allocate by a stored size, consume a lazy sequence,
expand an exponent or import a codec are refused with ``StoredDataError``
before anything is called.
"""
import collections
import datetime
import decimal
import fractions
import ipaddress
import pathlib
import sys
import uuid

import pytest
import transaction

from mongopersist import factories, interfaces, metadata, serialize
from tests.model import Person

ROUND_TRIPS = [
    collections.OrderedDict([('b', 1), ('a', 2)]),
    collections.deque([1, 2, 3]),
    collections.deque([1, 2], maxlen=5),
    collections.Counter('abracadabra'),
    fractions.Fraction(1, 3),
    fractions.Fraction(-7, 2),
    range(2, 20, 3),
    slice(1, None, 2),
    ipaddress.IPv4Address('10.1.2.3'),
    ipaddress.IPv6Address('::1'),
    ipaddress.IPv4Network('10.0.0.0/8'),
    ipaddress.IPv6Network('2001:db8::/32'),
    ipaddress.IPv4Interface('10.0.0.1/8'),
    ipaddress.IPv6Interface('2001:db8::1/64'),
    pathlib.PurePosixPath('/var/data/x.txt'),
    pathlib.PureWindowsPath('c:/Users/x'),
    datetime.timezone(datetime.timedelta(hours=2), 'CEST'),
]


@pytest.mark.parametrize('value', ROUND_TRIPS, ids=repr)
def test_values_that_reduce_to_a_safe_constructor_load(dm, make_dm, value):
    person = dm.root['p'] = Person('p')
    person.value = value
    transaction.commit()
    loaded = make_dm().root['p'].value
    assert type(loaded) is type(value)
    assert loaded == value


LEGACY_AND_PLAIN = [
    ('builtins.set', [['a', 'b']], {'a', 'b'}),
    ('builtins.frozenset', [[1, 2]], frozenset([1, 2])),
    ('builtins.tuple', [[1, 2]], (1, 2)),
    ('builtins.list', [], []),
    ('builtins.dict', [[['a', 1]]], {'a': 1}),
    ('builtins.dict', [{'a': 1}], {'a': 1}),
    ('builtins.bytes', [b'ab'], b'ab'),
    ('builtins.bytes', ['ab', 'latin-1'], b'ab'),
    ('builtins.bytes', [[104, 105]], b'hi'),
    ('builtins.bytearray', ['ab', 'latin-1'], bytearray(b'ab')),
    ('builtins.str', ['x'], 'x'),
    ('builtins.str', [b'\xc3\xa9', 'utf-8'], '\xe9'),
    ('builtins.int', ['123'], 123),
    ('builtins.int', ['ff', 16], 255),
    ('builtins.float', ['1.5'], 1.5),
    ('builtins.complex', [1.0, 2.0], complex(1, 2)),
    ('builtins.bool', [1], True),
    ('decimal.Decimal', ['1.10'], decimal.Decimal('1.10')),
    ('decimal.Decimal', ['1e999999999'], decimal.Decimal('1e999999999')),
    ('fractions.Fraction', ['3/4'], fractions.Fraction(3, 4)),
    ('uuid.UUID', ['12345678123456781234567812345678'],
     uuid.UUID('12345678123456781234567812345678')),
    ('datetime.date', [2020, 2, 29], datetime.date(2020, 2, 29)),
    ('datetime.date', [b'\x07\xd0\x01\x01'], datetime.date(2000, 1, 1)),
    ('datetime.datetime', [2020, 2, 29, 10, 30],
     datetime.datetime(2020, 2, 29, 10, 30)),
    ('datetime.timedelta', [1, 2, 3], datetime.timedelta(1, 2, 3)),
    ('collections.deque', [[1, 2], None], collections.deque([1, 2])),
]


@pytest.mark.parametrize('name, args, expected', LEGACY_AND_PLAIN,
                         ids=lambda value: repr(value)[:40])
def test_plain_arguments_are_taken(name, args, expected):
    factory = metadata.REGISTRY.resolve(name, 'factory')
    assert factories.call(factory, args) == expected


REFUSED = [
    # A size, never a count to allocate.
    ('builtins.bytes', [2 ** 50]),
    ('builtins.bytes', [64 * 2 ** 20]),
    ('builtins.bytearray', [2 ** 40]),
    # A lazy sequence, never consumed.
    ('builtins.tuple', [range(2 ** 62)]),
    ('builtins.list', [range(2 ** 62)]),
    ('builtins.frozenset', [range(2 ** 62)]),
    ('collections.deque', [range(2 ** 62), 1]),
    ('collections.Counter', [range(2 ** 62)]),
    ('builtins.dict', [range(2 ** 62)]),
    # An exponent, never expanded.
    ('fractions.Fraction', ['1e999999999']),
    ('fractions.Fraction', [decimal.Decimal('1e999999999')]),
    # A codec, never looked up.
    ('builtins.str', [b'x', 'no-such-encoding']),
    ('builtins.bytes', ['x', 'rot13']),
    ('builtins.str', [b'x', 'utf-8', 'surrogateescape']),
    # Text to integers, bounded.
    ('builtins.int', ['9' * (factories.max_int_digits() + 10)]),
    # Wrong shapes.
    ('uuid.UUID', [1]),
    ('builtins.range', ['1']),
    ('builtins.range', []),
    ('collections.deque', [[1], -1]),
    ('datetime.date', [b'\x07\xd0\x01']),
    ('datetime.timezone', ['+01:00']),
    ('ipaddress.IPv4Network', ['10.0.0.0/8', 'no']),
    ('pathlib.PurePosixPath', [1]),
]


@pytest.mark.parametrize('name, args', REFUSED,
                         ids=lambda value: repr(value)[:40])
def test_arguments_that_amplify_or_import_are_refused(name, args):
    factory = metadata.REGISTRY.resolve(name, 'factory')
    with pytest.raises(interfaces.StoredDataError) as info:
        factories.call(factory, args)
    assert factory.__qualname__ in str(info.value)
    assert 'encodings.no_such_encoding' not in sys.modules


class Spoof:
    """A stored instance whose fields have the names of the methods a
    constructor calls on its argument."""

    def __init__(self):
        self.replace = self.keys = self.items = self.__iter__ = fire


FIRED = []


def fire(*args):
    FIRED.append(args)
    return []


@pytest.mark.parametrize('constructor', [
    uuid.UUID, dict, collections.OrderedDict, collections.Counter, tuple,
    collections.deque, bytes, str, int, fractions.Fraction, decimal.Decimal,
    ipaddress.IPv4Address, pathlib.PurePath])
def test_no_method_is_looked_up_on_a_stored_instance(constructor):
    del FIRED[:]
    with pytest.raises(interfaces.StoredDataError):
        factories.call(constructor, [Spoof()])
    assert FIRED == []


def test_stored_persistent_containers_give_their_plain_data():
    items = serialize.PersistentList.__new__(serialize.PersistentList)
    items.data = [['a', 1]]
    assert factories.call(dict, [items]) == {'a': 1}
    mapping = serialize.PersistentDict.__new__(serialize.PersistentDict)
    mapping.data = {'a': 1}
    assert factories.call(collections.Counter, [mapping]) == {'a': 1}
    # Data that is not the reader's plain list is refused.
    items.data = range(2 ** 62)
    with pytest.raises(interfaces.StoredDataError):
        factories.call(tuple, [items])


class Blob(bytes):
    pass


class Point(collections.namedtuple('Point', 'x y')):
    pass


class Settings(dict):
    def __init__(self, a, b):
        super().__init__(a=a, b=b)


def test_classes_derived_from_a_constructor_take_its_checks():
    # Inherited __new__: bytes' checks.
    with pytest.raises(interfaces.StoredDataError):
        factories.new_args(Blob, [2 ** 50])
    assert factories.new_args(Blob, [b'ab']) == (b'ab',)
    with pytest.raises(interfaces.StoredDataError):
        factories.call(Blob, [2 ** 50])
    # Their own __new__ or __init__ takes the arguments: the
    # application's code, called as registered.
    assert factories.new_args(Point, [1, 2]) == [1, 2]
    assert factories.call(Settings, [1, 2]) == {'a': 1, 'b': 2}


def test_a_bytes_subclass_stored_with_a_size_is_refused(dm, make_dm, db):
    metadata.get_dotted_name(Blob)
    person = dm.root['p'] = Person('p')
    person.value = Blob(b'ab')
    transaction.commit()
    stored = db['tests.model.Person'].find_one({'_id': person._p_oid.id})
    assert stored['value']['_py_new_args'] == [b'ab']
    assert make_dm().root['p'].value == Blob(b'ab')
    db['tests.model.Person'].update_one(
        {'_id': person._p_oid.id},
        {'$set': {'value._py_new_args': [2 ** 24]}})
    with pytest.raises(interfaces.StoredDataError) as info:
        make_dm().root['p'].value
    assert info.value.path == 'value._py_new_args'


def test_safe_factories_are_not_imported_when_read():
    assert set(metadata.SAFE_FACTORIES) == set(factories.BUILTIN)
    for name in metadata.SAFE_FACTORIES:
        assert metadata.REGISTRY.resolve(name, 'factory') is (
            factories.BUILTIN[name])
