"""The serializer chain: what is stored for each value, and how it loads back.

Every round trip goes through a real ``transaction.commit()`` and is read
back by a fresh data manager, so nothing is answered from memory.  Values
are written both in a new document (insert) and as a change to a stored
one (update); both must be stored identically.
"""
import collections
import datetime
import decimal
import enum
import fractions
import threading
import uuid
import zoneinfo

import bson
import persistent
import pytest
import transaction
import zope.interface.verify
from bson.dbref import DBRef

from mongopersist import interfaces, serialize
from mongopersist.serialize import PersistentDict, PersistentList
from mongopersist.typemap import TYPE_MAP_COLLECTION
from tests.model import Address, Car, Person, Phone, Simple

BERLIN = zoneinfo.ZoneInfo('Europe/Berlin')
NEW_YORK = zoneinfo.ZoneInfo('America/New_York')


# -- importable helper classes ---------------------------------------------
class Color(enum.Enum):
    RED = 'red'
    GREEN = 'green'


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Mood(str, enum.Enum):
    HAPPY = 'happy'
    SAD = 'sad'


class Perm(enum.IntFlag):
    R = 4
    W = 2
    X = 1


class Point:
    """A plain (non-persistent) value object."""

    def __init__(self, x, y):
        self.x = x
        self.y = y

    def __eq__(self, other):
        return type(other) is type(self) and vars(other) == vars(self)


def make_point(x, y):
    return FactoryPoint(x, y)


class FactoryPoint(Point):
    """Reduces to a module-level factory function."""

    def __reduce__(self):
        return (make_point, (self.x, self.y))


class Slotted:
    __slots__ = ('a', 'b')

    def __init__(self, a, b):
        self.a = a
        self.b = b

    def __eq__(self, other):
        return (type(other) is Slotted
                and (other.a, other.b) == (self.a, self.b))


class SlotsAndDict:
    __slots__ = ('a', '__dict__')

    def __init__(self, a, c):
        self.a = a
        self.c = c

    def __eq__(self, other):
        return (type(other) is SlotsAndDict
                and (other.a, other.c) == (self.a, self.c))


class TupleState:
    """Custom ``__getstate__`` returning a tuple."""

    def __init__(self, x, items):
        self.x = x
        self.items = items

    def __getstate__(self):
        return (self.x, self.items)

    def __setstate__(self, state):
        self.x, items = state
        self.items = list(items)

    def __eq__(self, other):
        return (type(other) is TupleState
                and (other.x, other.items) == (self.x, self.items))


class TaggedList(list):
    """A list subclass with attributes."""


class TaggedDict(dict):
    """A dict subclass with attributes."""


Pair = collections.namedtuple('Pair', 'first second')


class LambdaFactory:
    """Reduces to a factory that cannot be found again by name."""

    def __reduce__(self):
        return (lambda: LambdaFactory(), ())


def boom(*args):
    raise AssertionError('a user dict must never be read as a factory call')


class Top(persistent.Persistent):
    foo = None


class Foo:
    bar = None


class Bar:
    foo = None


class PFoo(persistent.Persistent):
    bar = None


class PBar(persistent.Persistent):
    foo = None


class DateSerializer(serialize.ObjectSerializer):
    """The seed's custom serializer: dates as their ordinal.

    Unlike the seed's, ``can_read`` also checks for ``ordinal``: the
    built-in date representation has the same ``_py_type``, and a
    serializer must only claim states that its ``read`` understands.
    """

    def can_read(self, state):
        return (isinstance(state, dict)
                and state.get('_py_type') == 'datetime.date'
                and 'ordinal' in state)

    def read(self, state):
        return datetime.date.fromordinal(state['ordinal'])

    def can_write(self, obj):
        return type(obj) is datetime.date

    def write(self, obj):
        return {'_py_type': 'datetime.date', 'ordinal': obj.toordinal()}


class DayNumberSerializer(serialize.ObjectSerializer):
    """A competing representation of dates, to test the order."""

    def can_read(self, state):
        return isinstance(state, dict) and state.get('_py_type') == 'daynum'

    def read(self, state):
        return datetime.date.fromordinal(state['n'])

    def can_write(self, obj):
        return type(obj) is datetime.date

    def write(self, obj):
        return {'_py_type': 'daynum', 'n': obj.toordinal()}


class Decimal128Serializer(serialize.ObjectSerializer):
    """Replaces the built-in Decimal text with BSON's Decimal128."""

    def can_read(self, state):
        return isinstance(state, bson.Decimal128)

    def read(self, state):
        return state.to_decimal()

    def can_write(self, obj):
        return isinstance(obj, decimal.Decimal)

    def write(self, obj):
        return bson.Decimal128(obj)


# -- helpers --------------------------------------------------------------
@pytest.fixture
def process_serializers():
    """Give a test the process-wide list and put it back afterwards."""
    saved = list(serialize.SERIALIZERS)
    yield serialize.SERIALIZERS
    serialize.SERIALIZERS[:] = saved


def raw(db, obj_or_ref):
    """The document stored for a persistent object (or DBRef)."""
    ref = getattr(obj_or_ref, '_p_oid', obj_or_ref)
    return db.client[ref.database][ref.collection].find_one({'_id': ref.id})


def snapshot(db):
    """Every stored document of the database except the type map.

    Empty collections (made by index creation) are left out.
    """
    docs = {name: sorted(repr(sorted(doc.items())) for doc in db[name].find())
            for name in db.list_collection_names()
            if name != TYPE_MAP_COLLECTION}
    return {name: found for name, found in docs.items() if found}


def roundtrip(make_dm, db, value, dm=None):
    """Commit ``value`` as a new document and as a change to a stored one.

    Returns what a fresh data manager loads and the stored representation,
    after checking both ways stored and loaded the same thing.
    """
    dm = dm or make_dm()
    obj = Simple(inserted=value, updated=None)
    dm.insert(obj)
    transaction.commit()
    obj.updated = value  # the next transaction updates the stored document
    transaction.commit()
    doc = raw(db, obj)
    assert doc['inserted'] == doc['updated']
    loaded = make_dm().load(obj._p_oid)
    assert type(loaded.updated) is type(loaded.inserted)
    if loaded.inserted == loaded.inserted:  # not NaN
        assert plain(loaded.updated) == plain(loaded.inserted)
    return loaded.inserted, doc['inserted']


def plain(value):
    """Loaded containers as plain dicts and lists, for comparisons."""
    if isinstance(value, (PersistentDict, dict)):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (PersistentList, list)):
        return [plain(v) for v in value]
    return value


def has_binary(stored):
    """True if the stored value contains opaque binary data anywhere."""
    if isinstance(stored, (bytes, bson.Binary)):
        return True
    if isinstance(stored, dict):
        return any(has_binary(v) for v in stored.values())
    if isinstance(stored, list):
        return any(has_binary(v) for v in stored)
    return False


def assert_same(loaded, value):
    assert type(loaded) is type(value)
    assert loaded == value


# -- the serializer chain -----------------------------------------------------
def test_object_serializer_base_class():
    base = serialize.ObjectSerializer()
    zope.interface.verify.verifyObject(interfaces.IObjectSerializer, base)
    assert not base.can_read({'_py_type': 'x'})
    assert not base.can_write(object())
    with pytest.raises(NotImplementedError):
        base.read({})
    with pytest.raises(NotImplementedError):
        base.write(object())


def test_process_wide_serializer_overrides_builtin_date(
        make_dm, db, process_serializers):
    # The seed: the birthday is stored as its ordinal.
    process_serializers.append(DateSerializer())
    loaded, stored = roundtrip(make_dm, db, datetime.date(1980, 1, 25))
    assert stored == {'_py_type': 'datetime.date', 'ordinal': 722839}
    assert_same(loaded, datetime.date(1980, 1, 25))


def test_process_wide_serializer_reaches_nested_values(
        make_dm, db, process_serializers):
    process_serializers.append(DayNumberSerializer())
    value = {'when': [datetime.date(2000, 1, 1)]}
    loaded, stored = roundtrip(make_dm, db, value)
    assert stored == {'when': [{'_py_type': 'daynum', 'n': 730120}]}
    assert_same(loaded['when'][0], datetime.date(2000, 1, 1))


def test_process_wide_serializers_are_taken_back_by_the_fixture():
    # The other tests' serializers do not leak into this one.
    assert not any(isinstance(s, (DateSerializer, DayNumberSerializer))
                   for s in serialize.SERIALIZERS)


def test_seed_walkthrough_date_serializer_on_existing_document(
        dm, db, make_dm, process_serializers):
    stephan = Person('Stephan')
    dm.root['stephan'] = stephan
    transaction.commit()
    dm.root['stephan'].birthday = datetime.date(1980, 1, 25)
    transaction.commit()
    assert raw(db, stephan)['birthday']['_py_type'] == 'datetime.date'
    process_serializers.append(DateSerializer())
    dm.root['stephan']._p_changed = True
    transaction.commit()
    assert raw(db, stephan)['birthday'] == {
        '_py_type': 'datetime.date', 'ordinal': 722839}
    assert make_dm().root['stephan'].birthday == datetime.date(1980, 1, 25)


def test_per_data_manager_serializers(make_dm, db):
    with_it = make_dm(serializers=[DateSerializer()])
    loaded, stored = roundtrip(
        lambda: make_dm(serializers=[DateSerializer()]), db,
        datetime.date(1980, 1, 25), dm=with_it)
    assert stored == {'_py_type': 'datetime.date', 'ordinal': 722839}
    assert_same(loaded, datetime.date(1980, 1, 25))
    # Another data manager does not use it.
    loaded, stored = roundtrip(make_dm, db, datetime.date(1980, 1, 25))
    assert 'ordinal' not in stored
    assert_same(loaded, datetime.date(1980, 1, 25))


def test_per_data_manager_serializers_come_before_process_wide(
        make_dm, db, process_serializers):
    process_serializers.append(DateSerializer())

    def factory():
        return make_dm(serializers=[DayNumberSerializer()])
    loaded, stored = roundtrip(factory, db, datetime.date(2000, 1, 1))
    assert stored == {'_py_type': 'daynum', 'n': 730120}
    assert_same(loaded, datetime.date(2000, 1, 1))


def test_serializer_for_a_non_document_state(make_dm, db, process_serializers):
    # can_read is also asked about states that are not sub-documents.
    process_serializers.append(Decimal128Serializer())
    loaded, stored = roundtrip(make_dm, db, decimal.Decimal('1.10'))
    assert isinstance(stored, bson.Decimal128)
    assert_same(loaded, decimal.Decimal('1.10'))
    assert str(loaded) == '1.10'


def test_serializer_that_declines_falls_through(make_dm, db,
                                                process_serializers):
    process_serializers.append(DateSerializer())
    # A datetime is not a date for DateSerializer.can_write.
    value = datetime.datetime(2020, 5, 17, 10, 30, 0, 123456)
    loaded, stored = roundtrip(make_dm, db, value)
    assert stored['_py_type'] == 'datetime.datetime'
    assert_same(loaded, value)


# -- the stored format of the seed -----------------------------------------
def test_person_document_as_in_the_seed(dm, db, dbname):
    stephan = Person('Stephan')
    dm.root['stephan'] = stephan
    transaction.commit()
    doc = raw(db, stephan)
    assert stephan._p_oid == DBRef('tests.model.Person', doc['_id'], dbname)
    del doc['_id']
    assert doc == {'address': None, 'birthday': None, 'friends': {},
                   'name': 'Stephan', 'phone': None, 'visited': []}


def test_persistent_reference_is_a_dbref_and_new_objects_are_inserted(
        dm, db, dbname):
    dm.root['stephan'] = stephan = Person('Stephan')
    transaction.commit()
    dm.root['stephan'].address = Address('Maynard', '01754')
    assert db['address'].count_documents({}) == 0
    transaction.commit()
    address = stephan.address
    assert raw(db, stephan)['address'] == DBRef(
        'address', address._p_oid.id, dbname)
    doc = raw(db, address)
    del doc['_id']
    assert doc == {'city': 'Maynard', 'zip': '01754'}


def test_non_persistent_object_as_py_type_subdocument(dm, db, make_dm):
    dm.root['stephan'] = stephan = Person('Stephan')
    transaction.commit()
    stephan.phone = Phone('+1', '978', '394-5124')
    transaction.commit()
    assert raw(db, stephan)['phone'] == {
        '_py_type': 'tests.model.Phone', 'area': '978', 'country': '+1',
        'number': '394-5124'}
    assert_same(make_dm().root['stephan'].phone,
                Phone('+1', '978', '394-5124'))


def test_sub_object_inside_the_parent_document(dm, db, make_dm):
    dm.root['stephan'] = stephan = Person('Stephan')
    stephan.car = Car('2005', 'Ford', 'Explorer')
    transaction.commit()
    assert raw(db, stephan)['car'] == {
        '_py_persistent_type': 'tests.model.Car', 'make': 'Ford',
        'model': 'Explorer', 'year': '2005'}
    assert db.list_collection_names().count('tests.model.Car') == 0
    car = make_dm().root['stephan'].car
    assert type(car) is Car
    assert (car.year, car.make, car.model) == ('2005', 'Ford', 'Explorer')


def test_tuples_are_stored_as_arrays(dm, db, make_dm):
    stephan = Person('Stephan', visited=('Germany', 'USA'))
    dm.root['stephan'] = stephan
    transaction.commit()
    assert raw(db, stephan)['visited'] == ['Germany', 'USA']
    visited = make_dm().root['stephan'].visited
    assert type(visited) is PersistentList
    assert visited == ['Germany', 'USA']


# -- round trips of values ----------------------------------------------------
@pytest.mark.parametrize('value', [
    datetime.date(1980, 1, 25),
    datetime.date(1, 1, 1),
    datetime.date(9999, 12, 31),
], ids=repr)
def test_date(make_dm, db, value):
    loaded, stored = roundtrip(make_dm, db, value)
    assert stored['_py_type'] == 'datetime.date'
    assert not has_binary(stored)
    assert_same(loaded, value)


@pytest.mark.parametrize('value', [
    datetime.time(13, 45),
    datetime.time(13, 45, 7, 123456),
    datetime.time(0, 0, 0, 1),
    datetime.time(23, 59, 59, 999999, tzinfo=datetime.timezone.utc),
    datetime.time(8, 30, tzinfo=datetime.timezone(
        datetime.timedelta(hours=-3, minutes=-30))),
    datetime.time(8, 30, 0, 5, tzinfo=BERLIN),
], ids=repr)
def test_time(make_dm, db, value):
    loaded, stored = roundtrip(make_dm, db, value)
    assert stored['_py_type'] == 'datetime.time'
    assert not has_binary(stored)
    assert_same(loaded, value)
    assert loaded.tzinfo == value.tzinfo
    assert loaded.tzname() == value.tzname()


def test_naive_millisecond_datetime_is_a_native_bson_date(make_dm, db):
    value = datetime.datetime(2011, 10, 1, 9, 45, 12, 345000)
    loaded, stored = roundtrip(make_dm, db, value)
    assert type(stored) is datetime.datetime
    assert stored == value
    assert_same(loaded, value)


@pytest.mark.parametrize('value', [
    datetime.datetime(2011, 10, 1, 9, 45, 12, 345678),
    datetime.datetime(2011, 10, 1, 9, 45, 12, 1),
    datetime.datetime.max,
    datetime.datetime(2011, 10, 1, 9, 45, tzinfo=datetime.timezone.utc),
    datetime.datetime(2011, 10, 1, 9, 45, 0, 999999, tzinfo=datetime.timezone(
        datetime.timedelta(hours=5, minutes=45))),
    datetime.datetime(2011, 10, 1, 9, 45, tzinfo=datetime.timezone(
        datetime.timedelta(hours=-2), 'Somewhere')),
    datetime.datetime(2011, 7, 1, 9, 45, 0, 120, tzinfo=BERLIN),
    datetime.datetime(2011, 12, 1, 9, 45, tzinfo=NEW_YORK),
    # The hour that happens twice when summer time ends: both of them.
    datetime.datetime(2021, 10, 31, 2, 30, fold=0, tzinfo=BERLIN),
    datetime.datetime(2021, 10, 31, 2, 30, fold=1, tzinfo=BERLIN),
], ids=repr)
def test_datetime_keeps_microseconds_and_tzinfo(make_dm, db, value):
    loaded, stored = roundtrip(make_dm, db, value)
    assert stored['_py_type'] == 'datetime.datetime'
    assert not has_binary(stored)
    assert_same(loaded, value)
    # Same instant, same wall clock, same zone.
    assert loaded.tzinfo == value.tzinfo
    assert loaded.utcoffset() == value.utcoffset()
    assert loaded.tzname() == value.tzname()
    assert loaded.replace(tzinfo=None) == value.replace(tzinfo=None)
    assert loaded.fold == value.fold


def test_datetime_zoneinfo_is_the_same_zone(make_dm, db):
    value = datetime.datetime(2011, 7, 1, 9, 45, tzinfo=BERLIN)
    loaded, stored = roundtrip(make_dm, db, value)
    assert isinstance(loaded.tzinfo, zoneinfo.ZoneInfo)
    assert loaded.tzinfo.key == 'Europe/Berlin'
    # Arithmetic crossing a DST change follows the zone's rules.
    assert (loaded + datetime.timedelta(days=150)).utcoffset() == \
        datetime.timedelta(hours=1)


@pytest.mark.parametrize('value', [
    datetime.timedelta(0),
    datetime.timedelta(days=-3, seconds=5, microseconds=7),
    datetime.timedelta(microseconds=1),
    datetime.timedelta.max,
    datetime.timedelta.min,
], ids=repr)
def test_timedelta(make_dm, db, value):
    loaded, stored = roundtrip(make_dm, db, value)
    assert stored['_py_type'] == 'datetime.timedelta'
    assert not has_binary(stored)
    assert_same(loaded, value)


@pytest.mark.parametrize('text', [
    '1.10',
    '1234567890123456789012345678901234567890',
    '-0.0000000000000000000000000000000000000001234567890123',
    '-0',
    '1E+3',
    '0E-7',
    'Infinity',
], ids=str)
def test_decimal_is_exact(make_dm, db, text):
    value = decimal.Decimal(text)
    loaded, stored = roundtrip(make_dm, db, value)
    assert stored['_py_type'] == 'decimal.Decimal'
    assert not has_binary(stored)
    assert_same(loaded, value)
    # Exact: every digit and the exponent.
    assert str(loaded) == str(value)
    assert loaded.as_tuple() == value.as_tuple()


def test_decimal_nan(make_dm, db):
    loaded, stored = roundtrip(make_dm, db, decimal.Decimal('NaN'))
    assert type(loaded) is decimal.Decimal
    assert loaded.is_nan()


@pytest.mark.parametrize('value', [
    {3, 1, 2},
    set(),
    frozenset({'b', 'a'}),
    frozenset(),
    {(1, 2), (3, 4)},
    {1, 'a', None, 2.5},
    frozenset({frozenset({1, 2}), frozenset()}),
    {Color.RED, Color.GREEN},
    {datetime.date(2000, 1, 1), datetime.date(1999, 1, 1)},
], ids=repr)
def test_sets(make_dm, db, value):
    loaded, stored = roundtrip(make_dm, db, value)
    assert stored['_py_type'] in ('builtins.set', 'builtins.frozenset')
    assert_same(loaded, value)


def test_equal_sets_are_stored_identically(make_dm, db):
    words = ['pear', 'apple', 'fig', 'kiwi', 'banana', 'cherry', 'date']
    mixed = [3, 'x', None, 1.5, (1, 'a'), 'b', 0]
    dm = make_dm()
    obj = Simple(a=set(words), b=set(reversed(words)),
                 c=frozenset(words[3:] + words[:3]),
                 d=set(mixed), e=set(reversed(mixed)))
    dm.insert(obj)
    transaction.commit()
    doc = raw(db, obj)
    assert doc['a'] == doc['b']
    assert doc['a']['items'] == doc['c']['items']
    assert doc['d'] == doc['e']


@pytest.mark.parametrize('value', [b'', b'\x00\xff binary', bytes(range(256))],
                         ids=repr)
def test_bytes(make_dm, db, value):
    loaded, stored = roundtrip(make_dm, db, value)
    assert stored == value
    assert_same(loaded, value)


def test_bytearray(make_dm, db):
    value = bytearray(b'\x00\x01abc')
    loaded, stored = roundtrip(make_dm, db, value)
    assert stored['_py_type'] == 'builtins.bytearray'
    assert_same(loaded, value)


@pytest.mark.parametrize('value', [
    uuid.UUID('12345678-1234-5678-1234-567812345678'), uuid.uuid4(),
    uuid.UUID(int=0)], ids=repr)
def test_uuid(make_dm, db, value):
    loaded, stored = roundtrip(make_dm, db, value)
    assert stored['_py_type'] == 'uuid.UUID'
    assert not has_binary(stored)
    assert_same(loaded, value)


@pytest.mark.parametrize('value', [
    Color.RED, Level.HIGH, Mood.HAPPY, Perm.R, Perm.R | Perm.W, Perm(0),
], ids=repr)
def test_enum_members(make_dm, db, value):
    loaded, stored = roundtrip(make_dm, db, value)
    assert isinstance(stored, dict)
    assert not has_binary(stored)
    assert_same(loaded, value)
    assert loaded is value or loaded.value == value.value


def test_enum_member_is_the_member_itself(make_dm, db):
    loaded, stored = roundtrip(make_dm, db, [Color.RED, Level.LOW, Mood.SAD])
    assert loaded[0] is Color.RED
    assert loaded[1] is Level.LOW
    assert loaded[2] is Mood.SAD


@pytest.mark.parametrize('value', [
    0, -1, 2 ** 31, 2 ** 63 - 1, -2 ** 63], ids=repr)
def test_int64_range_is_native(make_dm, db, value):
    loaded, stored = roundtrip(make_dm, db, value)
    # PyMongo may read 64-bit integers as bson.Int64, a subclass of int.
    assert isinstance(stored, int) and stored == value
    assert isinstance(loaded, int) and not isinstance(loaded, bool)
    assert loaded == value


@pytest.mark.parametrize('value', [
    2 ** 63, -2 ** 63 - 1, 10 ** 40, -(10 ** 100)], ids=repr)
def test_ints_beyond_int64(make_dm, db, value):
    loaded, stored = roundtrip(make_dm, db, value)
    assert isinstance(stored, dict)
    assert_same(loaded, value)


@pytest.mark.parametrize(
    'value', [True, False, None, 1.5, -0.0, 'Grüße ✓'], ids=repr)
def test_simple_bson_values(make_dm, db, value):
    loaded, stored = roundtrip(make_dm, db, value)
    assert_same(stored, value)
    assert_same(loaded, value)


@pytest.mark.parametrize('value', [complex(1.5, -2), 1j, complex(0, 0)],
                         ids=repr)
def test_complex(make_dm, db, value):
    loaded, stored = roundtrip(make_dm, db, value)
    assert stored['_py_type'] == 'builtins.complex'
    assert_same(loaded, value)


def test_tuple_value_is_an_array(make_dm, db):
    loaded, stored = roundtrip(make_dm, db, (1, 'a', (2, (3,))))
    assert stored == [1, 'a', [2, [3]]]
    assert type(loaded) is PersistentList
    assert plain(loaded) == [1, 'a', [2, [3]]]


def test_nested_containers(make_dm, db):
    value = {
        'list': [1, {'set': {2, 3}, 'when': datetime.date(2000, 1, 1)},
                 [decimal.Decimal('0.1'), [uuid.UUID(int=7)]]],
        'dict': {'inner': {'deeper': {'deepest': b'bytes'}}},
        'empty': {'list': [], 'dict': {}},
    }
    loaded, stored = roundtrip(make_dm, db, value)
    assert type(loaded) is PersistentDict
    assert type(loaded['list']) is PersistentList
    assert type(loaded['list'][1]) is PersistentDict
    assert type(loaded['dict']['inner']['deeper']) is PersistentDict
    assert_same(loaded['list'][1]['set'], {2, 3})
    assert_same(loaded['list'][1]['when'], datetime.date(2000, 1, 1))
    assert_same(loaded['list'][2][0], decimal.Decimal('0.1'))
    assert_same(loaded['list'][2][1][0], uuid.UUID(int=7))
    assert plain(loaded) == value
    # Plain string keys stay plain sub-documents.
    assert stored['dict'] == {'inner': {'deeper': {'deepest': b'bytes'}}}
    assert stored['empty'] == {'list': [], 'dict': {}}


# -- dict keys ----------------------------------------------------------
@pytest.mark.parametrize('value', [
    {1: 'one', 2: 'two'},
    {(1, 2): 'tuple', (3, (4, 5)): 'nested tuple'},
    {None: 'none'},
    {1.5: 'float', True: 'bool'},
    {'a.b': 1, 'c': 2},
    {'$set': 1},
    {'$ref': 'address', '$id': 1},
    {'a\x00b': 'nul'},
    {'_py_type': 'datetime.date', 'iso': '2000-01-01'},
    {'_py_type': 'builtins.dict', 'items': [[1, 2]]},
    {'_py_persistent_type': 'tests.model.Car', 'year': '2005'},
    {'_py_factory': 'tests.test_serialize.boom', '_py_factory_args': []},
    {'_py_serial': 3, '_id': 7},
    {frozenset({1}): 'frozenset', Color.RED: 'enum',
     datetime.date(2000, 1, 1): 'date', decimal.Decimal('1.10'): 'decimal'},
    {'str': 1, 2: 'mixed'},
], ids=repr)
def test_dict_keys_round_trip_unchanged(make_dm, db, value):
    loaded, stored = roundtrip(make_dm, db, value)
    assert type(loaded) is PersistentDict
    assert loaded == value
    assert ({(type(k), k) for k in loaded.keys()}
            == {(type(k), k) for k in value.keys()})
    assert list(loaded.keys()) == list(value.keys())  # order kept


def test_user_dicts_that_look_like_the_format_nested(make_dm, db):
    value = {'outer': [{'_py_type': 'tests.model.Phone', 'area': '978'},
                       {'_py_persistent_type': 'tests.model.Car'}],
             'deeper': {1: {'$ref': 'x', '$id': 2}}}
    loaded, stored = roundtrip(make_dm, db, value)
    assert type(loaded['outer'][0]) is PersistentDict
    assert type(loaded['outer'][1]) is PersistentDict
    assert plain(loaded) == value


def test_key_decimal_keeps_its_exponent(make_dm, db):
    loaded, stored = roundtrip(make_dm, db, {decimal.Decimal('1.10'): 1})
    assert str(list(loaded)[0]) == '1.10'


# -- non-persistent objects ---------------------------------------------------
def test_plain_object_with_nested_objects_and_references(dm, db, make_dm,
                                                         dbname):
    address = Address('Maynard', '01754')
    dm.root['owner'] = Simple(point=Point(Point(1, 2), [address]),
                              home=address)
    transaction.commit()
    stored = raw(db, dm.root['owner'])['point']
    assert stored == {
        '_py_type': 'tests.test_serialize.Point',
        'x': {'_py_type': 'tests.test_serialize.Point', 'x': 1, 'y': 2},
        'y': [DBRef('address', address._p_oid.id, dbname)]}
    owner = make_dm().root['owner']
    assert type(owner.point) is Point
    assert owner.point.x == Point(1, 2)
    # The reference inside the plain object is the same persistent object.
    assert owner.point.y[0] is owner.home


@pytest.mark.parametrize('value', [
    Slotted(1, [2, 3]), SlotsAndDict('slot', {'in': 'dict'}),
], ids=lambda v: type(v).__name__)
def test_objects_with_slots(make_dm, db, value):
    loaded, stored = roundtrip(make_dm, db, value)
    assert stored['_py_type'] == (
        'tests.test_serialize.%s' % type(value).__name__)
    assert type(loaded) is type(value)
    assert plain(loaded.a) == plain(value.a)
    if isinstance(value, Slotted):
        assert plain(loaded.b) == [2, 3]
    else:
        assert plain(loaded.c) == {'in': 'dict'}


def test_object_with_tuple_state(make_dm, db):
    loaded, stored = roundtrip(make_dm, db, TupleState('x', [1, [2]]))
    assert type(loaded) is TupleState
    assert loaded.x == 'x'
    assert plain(loaded.items) == [1, [2]]


def test_reducible_object_via_factory(make_dm, db):
    loaded, stored = roundtrip(make_dm, db, FactoryPoint(1, 'b'))
    assert stored['_py_factory'] == 'tests.test_serialize.make_point'
    assert stored['_py_factory_args'] == [1, 'b']
    assert_same(loaded, FactoryPoint(1, 'b'))


def test_standard_library_reducible_objects(make_dm, db):
    value = [fractions.Fraction(1, 3),
             collections.OrderedDict([('b', 1), ('a', 2)]),
             collections.deque([1, 2], maxlen=5),
             Pair(1, 'two')]
    loaded, stored = roundtrip(make_dm, db, value)
    assert stored[0]['_py_factory'] == 'fractions.Fraction'
    assert_same(loaded[0], fractions.Fraction(1, 3))
    assert type(loaded[1]) is collections.OrderedDict
    assert list(loaded[1].items()) == [('b', 1), ('a', 2)]
    assert type(loaded[2]) is collections.deque
    assert list(loaded[2]) == [1, 2] and loaded[2].maxlen == 5
    assert_same(loaded[3], Pair(1, 'two'))


def test_container_subclasses_keep_items_and_attributes(make_dm, db):
    tagged_list = TaggedList([1, 2])
    tagged_list.tag = 'l'
    tagged_dict = TaggedDict({1: 'a', 'b': 2})
    tagged_dict.tag = 'd'
    loaded, stored = roundtrip(make_dm, db, [tagged_list, tagged_dict])
    assert type(loaded[0]) is TaggedList
    assert list(loaded[0]) == [1, 2] and loaded[0].tag == 'l'
    assert type(loaded[1]) is TaggedDict
    assert dict(loaded[1]) == {1: 'a', 'b': 2} and loaded[1].tag == 'd'


def test_same_object_reached_twice_is_stored_as_two_copies(dm, db, make_dm):
    phone = Phone('+1', '978', '394-5124')
    obj = Simple(home=phone, work=phone, all=[phone, phone])
    dm.insert(obj)
    transaction.commit()
    doc = raw(db, obj)
    expected = {'_py_type': 'tests.model.Phone', 'area': '978',
                'country': '+1', 'number': '394-5124'}
    assert doc['home'] == doc['work'] == expected
    assert doc['all'] == [expected, expected]
    loaded = make_dm().load(obj._p_oid)
    assert loaded.home == loaded.work == phone
    assert loaded.home is not loaded.work
    assert loaded.all[0] is not loaded.all[1]


# -- cycles -------------------------------------------------------------------
def test_non_persistent_cycle_through_root(dm, db):
    before = snapshot(db)
    top, foo, bar = Top(), Foo(), Bar()
    top.foo = foo
    foo.bar = bar
    bar.foo = foo
    with pytest.raises(interfaces.CircularReferenceError) as info:
        dm.root['top'] = top
    assert info.value.obj is foo
    message = str(info.value)
    assert 'Foo' in message
    assert 'Top.foo.bar.foo' in message
    assert 'top' not in dm.root
    assert top._p_oid is None and top._p_jar is None
    transaction.abort()
    assert snapshot(db) == before


@pytest.mark.parametrize('kind', ['list', 'dict'])
def test_non_persistent_cycle_at_commit(dm, db, kind):
    dm.root['stored'] = stored = Simple(value=1)
    transaction.commit()
    before = snapshot(db)
    if kind == 'list':
        loop = []
        loop.append(loop)
    else:
        loop = {}
        loop['self'] = loop
    stored.value = 2
    dm.insert(Simple(loop=['ok', loop]))
    with pytest.raises(interfaces.CircularReferenceError) as info:
        transaction.commit()
    assert info.value.obj is loop
    assert 'Simple.loop.1' in str(info.value)
    transaction.abort()
    assert snapshot(db) == before


def test_persistent_cycles_work(dm, make_dm):
    top, foo, bar = Top(), PFoo(), PBar()
    top.foo = foo
    foo.bar = bar
    bar.foo = foo
    top.me = top
    dm.root['ptop'] = top
    transaction.commit()
    loaded = make_dm().root['ptop']
    assert type(loaded.foo) is PFoo and type(loaded.foo.bar) is PBar
    assert loaded.foo.bar.foo is loaded.foo
    assert loaded.me is loaded


def test_persistent_object_reached_from_plain_object_is_a_reference(
        dm, make_dm):
    person = Person('Stephan')
    person.phone = Point(person, 1)
    dm.root['p'] = person
    transaction.commit()
    loaded = make_dm().root['p']
    assert loaded.phone.x is loaded


# -- objects that cannot be stored --------------------------------------------
def test_unstorable_object_names_class_and_attribute_path(dm, db):
    dm.root['stephan'] = Person('Stephan')
    transaction.commit()
    before = snapshot(db)
    dm.root['stephan'].phone = Phone('+1', threading.Lock(), '394-5124')
    with pytest.raises(TypeError) as info:
        transaction.commit()
    error = info.value
    assert isinstance(error, interfaces.UnstorableObjectError)
    assert error.path == 'Person.phone.area'
    assert 'Person.phone.area' in str(error)
    assert 'lock' in str(error)
    transaction.abort()
    assert snapshot(db) == before


@pytest.mark.parametrize('value, path, words', [
    ((x for x in ()), 'Simple.value', ['generator']),
    ([1, LambdaFactory()], 'Simple.value.1', ['LambdaFactory', 'factory']),
    ({'key': {'deep': threading.Lock()}}, 'Simple.value.key.deep', ['lock']),
    (Point(1, Point(2, threading.Lock())), 'Simple.value.y.y', ['lock']),
    (Car('2005', 'Ford', threading.Lock()), 'Simple.value.model', ['lock']),
], ids=['generator', 'lambda-factory', 'in-dict', 'in-object',
        'in-sub-object'])
def test_unstorable_values(dm, db, value, path, words):
    before = snapshot(db)
    dm.insert(Simple(value=value))
    with pytest.raises(TypeError) as info:
        transaction.commit()
    assert isinstance(info.value, interfaces.UnstorableObjectError)
    message = str(info.value)
    assert path in message
    for word in words:
        assert word in message
    transaction.abort()
    assert snapshot(db) == before


def test_unstorable_object_through_root_writes_nothing(dm, db):
    before = snapshot(db)
    obj = Simple(lock=threading.Lock())
    with pytest.raises(interfaces.UnstorableObjectError) as info:
        dm.root['bad'] = obj
    assert 'Simple.lock' in str(info.value)
    assert 'bad' not in dm.root
    assert obj._p_jar is None and obj._p_oid is None
    transaction.abort()
    assert snapshot(db) == before


def test_reserved_attribute_names_are_refused(dm, db):
    before = snapshot(db)
    dm.insert(Simple(**{'a.b': 1}))
    with pytest.raises(interfaces.UnstorableObjectError) as info:
        transaction.commit()
    assert 'Simple.a.b' in str(info.value)
    transaction.abort()
    assert snapshot(db) == before


def test_failed_commit_writes_nothing_of_the_transaction(dm, db, make_dm):
    """Changed, inserted and root-set objects of a failing commit."""
    dm.root['stephan'] = Person('Stephan')
    dm.root['counter'] = Simple(value=1)
    transaction.commit()
    before = snapshot(db)

    dm.root['stephan'].name = 'Stephan Richter'       # a changed object
    dm.root['counter'].value = 2
    dm.insert(Simple(value='new'))                     # an inserted one
    dm.root['extra'] = Simple(value='written at once')  # a root entry
    # A new referenced object, whose own state cannot be stored.
    dm.root['stephan'].address = Address('Maynard', threading.Lock())
    with pytest.raises(interfaces.UnstorableObjectError) as info:
        transaction.commit()
    assert 'Address.zip' in str(info.value)
    transaction.abort()
    assert snapshot(db) == before

    # The next transaction is clean: it writes only its own change.
    fresh = make_dm()
    assert fresh.root['stephan'].name == 'Stephan'
    assert fresh.root['stephan'].address is None
    assert 'extra' not in fresh.root
    dm.root['counter'].value = 3
    transaction.commit()
    assert make_dm().root['counter'].value == 3
    assert make_dm().root['stephan'].name == 'Stephan'


def test_failed_commit_records_no_collection_type(dm, db):
    dm.insert(Address('Maynard', threading.Lock()))
    with pytest.raises(interfaces.UnstorableObjectError):
        transaction.commit()
    transaction.abort()
    assert list(db[TYPE_MAP_COLLECTION].find()) == []


class _Slotted:
    __slots__ = ('a',)

    def __init__(self, a):
        self.a = a


class _WithState:
    def __init__(self, a):
        self.a = a

    def __getstate__(self):
        return {'b': self.a}

    def __setstate__(self, state):
        self.a = state['b']


class _Empty:
    pass


class _Point(collections.namedtuple('_Point', 'x y')):
    pass


@pytest.mark.parametrize('value', [
    Phone('+1', '555', '1234'), _Empty(), _Slotted(1), _WithState(2),
    _Point(1, 2), collections.OrderedDict(a=1), fractions.Fraction(1, 3),
    collections.Counter('aab'), threading.Lock()],
    ids=lambda value: type(value).__name__)
def test_the_plain_class_plan_writes_what_reduce_writes(dm, value):
    """Value objects of plain classes skip ``__reduce_ex__``; the document
    is the one the reduction gives, and other classes keep it."""
    holder = Simple(value=value)
    dm.insert(holder)
    writer = dm._writer
    try:
        fast = writer.get_document(holder)
    except interfaces.UnstorableObjectError as error:
        fast = error
    planned = serialize._plain_class_name(type(value), value)
    original = serialize._plain_class_name
    try:
        serialize._plain_class_name = lambda kind, obj: None
        try:
            slow = writer.get_document(holder)
        except interfaces.UnstorableObjectError as error:
            slow = error
    finally:
        serialize._plain_class_name = original
    if isinstance(slow, Exception):
        assert type(fast) is type(slow) and str(fast) == str(slow)
    else:
        assert fast == slow
    assert (planned is not None) == (type(value) in (Phone, _Empty))


@pytest.mark.parametrize('defined', ['read', 'write'])
def test_a_serializer_that_forgets_its_claim_is_refused(defined):
    # Before: such a serializer was silently never used (the base claim
    # says False).  One direction only is fine.
    with pytest.raises(TypeError, match='defines %s\\(\\) but not can_%s'
                       % (defined, defined)):
        type('Forgetful', (serialize.ObjectSerializer,),
             {defined: lambda self, value: value})
    claims = type('OneWay', (serialize.ObjectSerializer,), {
        defined: lambda self, value: value,
        'can_' + defined: lambda self, value: True})()
    assert not (claims.can_write(1) if defined == 'read'
                else claims.can_read({}))
