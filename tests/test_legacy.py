"""Databases written by the original mongopersist (0.7 to 0.9).

The documents here are written by hand in the shapes the original package
documented (its walk-through, ``/work/shared/seeds/003_...``: the person
with an address reference, a ``_py_type`` phone, a ``_py_persistent_type``
car, a ``_py_factory`` birthday of pickled bytes, ``_py_serial``) and the
shapes its serializer wrote besides (``dict_data`` for dicts with
non-string keys, ``_py_constant`` for objects pickled by name,
``{'_py_type': 'type', 'path': ...}`` for classes, the
``persistence_name_map`` of custom collections).  They load as the right
objects through the safe loader, ``mongopersist upgrade-format`` rewrites
them into the current format, and they load the same afterwards.

Values stored by name in the current format (classes, functions, objects
pickled by name) are tested here too.
"""
import datetime
import io
import json
import os.path
import threading

import bson
import pytest
import transaction
from bson.dbref import DBRef
from hypothesis import given, settings
from hypothesis import strategies as st
from bson.objectid import ObjectId

from mongopersist import cli, interfaces, legacy, metadata
from mongopersist.serialize import PersistentDict
from tests.model import Address, Car, ExtendedAddress, Person, Phone
from tests.operations_model import DEFAULT, Marker, Shape, slugify

PERSON = 'tests.model.Person'
STEPHAN, ROY = ObjectId(), ObjectId()
MAYNARD, TETTAU = ObjectId(), ObjectId()
TODAY = datetime.datetime(2011, 10, 1, 9, 45)

# Python 2 pickled dates and datetimes as their bytes.
BIRTHDAY = bson.Binary(b'\x07\xbc\x01\x19', 0)             # 1980-01-25
# Bytes that happened to be valid UTF-8 were stored as a string.
OLD_DATE = '\x07l\x01\x01'                                  # 1900-01-01
MEETING = bson.Binary(b'\x07\xdb\n\x01\t-\x00\x01\xe2@', 0)  # ..., 123456us
LUNCH = bson.Binary(b'\x0c\x1e\x00\x00\x00\x00', 0)          # 12:30


def original_database(db, dbname):
    """Write what the original package wrote for the walk-through."""
    db[PERSON].insert_many([{
        '_id': STEPHAN,
        '_py_serial': 3,
        'name': 'Stephan Richter',
        'address': DBRef('address', MAYNARD, dbname),
        'address2': DBRef('address', TETTAU, dbname),
        'birthday': {'_py_factory': 'datetime.date',
                     '_py_factory_args': [BIRTHDAY]},
        'friends': {'roy': DBRef(PERSON, ROY, dbname)},
        'phone': {'_py_type': 'tests.model.Phone', 'area': '978',
                  'country': '+1', 'number': '394-5124'},
        'car': {'_py_persistent_type': 'tests.model.Car', 'make': 'Ford',
                'model': 'Explorer', 'year': '2005'},
        'today': TODAY,
        'visited': ['Germany', 'USA'],
        'scores': {'dict_data': [[1, 'one'], [[2, 3], 'pair']]},
        'default': {'_py_constant': 'tests.operations_model.DEFAULT'},
        'kind': {'_py_type': 'type', 'path': 'tests.model.Phone'},
        'tags': {'_py_factory': '__builtin__.set',
                 '_py_factory_args': [['a', 'b']]},
        'dates': [{'_py_factory': 'datetime.date',
                   '_py_factory_args': [OLD_DATE]},
                  {'_py_factory': 'datetime.datetime',
                   '_py_factory_args': [MEETING]},
                  {'_py_factory': 'datetime.time',
                   '_py_factory_args': [LUNCH]}],
    }, {
        '_id': ROY, 'name': 'Roy Mathew', 'address': None,
        'friends': {}, 'visited': [], 'phone': None, 'birthday': None,
        'today': TODAY,
    }])
    db['address'].insert_many([
        {'_id': MAYNARD, 'city': 'Maynard', 'zip': '01754'},
        {'_id': TETTAU, '_py_persistent_type': 'tests.model.ExtendedAddress',
         'city': 'Tettau', 'zip': '01945', 'country': 'Germany'}])
    db['persistence_root'].insert_one(
        {'name': 'stephan', 'ref': DBRef(PERSON, STEPHAN, dbname)})
    db[legacy.NAME_MAP_COLLECTION].insert_many([
        {'collection': 'address', 'database': dbname,
         'path': 'tests.model.Address', 'doc_has_type': False},
        {'collection': 'address', 'database': dbname,
         'path': 'tests.model.ExtendedAddress', 'doc_has_type': True}])


@pytest.fixture
def allowed():
    """What an application of the original package would allow now."""
    metadata.register_type(Person)
    metadata.register_type(Phone)
    metadata.register_global(DEFAULT, 'tests.operations_model.DEFAULT')
    yield


def check_stephan(stephan):
    assert type(stephan) is Person
    assert stephan.name == 'Stephan Richter'
    assert type(stephan.address) is Address
    assert stephan.address.city == 'Maynard'
    assert type(stephan.address2) is ExtendedAddress
    assert stephan.address2.country == 'Germany'
    assert stephan.birthday == datetime.date(1980, 1, 25)
    assert stephan.friends['roy'].name == 'Roy Mathew'
    assert stephan.phone == Phone('+1', '978', '394-5124')
    assert type(stephan.car) is Car and stephan.car.year == '2005'
    assert stephan.today == TODAY
    assert stephan.visited == ['Germany', 'USA']
    assert type(stephan.scores) is PersistentDict
    assert dict(stephan.scores) == {1: 'one', (2, 3): 'pair'}
    assert stephan.default is DEFAULT
    assert stephan.kind is Phone
    assert stephan.tags == {'a', 'b'}
    assert list(stephan.dates) == [
        datetime.date(1900, 1, 1),
        datetime.datetime(2011, 10, 1, 9, 45, 0, 123456),
        datetime.time(12, 30)]


def test_original_documents_load_as_the_right_objects(db, dbname, make_dm,
                                                      allowed):
    original_database(db, dbname)
    stephan = make_dm().root['stephan']
    check_stephan(stephan)
    assert stephan._p_serial == (3).to_bytes(8, 'big')


def test_upgrade_format_rewrites_into_the_current_format(db, dbname, make_dm,
                                                         client, allowed):
    original_database(db, dbname)

    def upgrade(*argv):
        out = io.StringIO()
        code = cli.main(['upgrade-format', '-d', dbname] + list(argv),
                        client=client, out=out, err=io.StringIO())
        return code, out.getvalue()

    before = list(db[PERSON].find())
    code, out = upgrade('--dry-run', '--json')
    assert code == 0
    data = json.loads(out)
    assert data['documents'] == 1 and data['type_map_added'] == 2
    assert data['values'] == {
        'dict_data': 1, '_py_constant': 1, 'pickled datetime.date': 2,
        'pickled datetime.datetime': 1, 'pickled datetime.time': 1,
        'Python 2 factory name': 1}
    assert list(db[PERSON].find()) == before
    assert 'persistence_type_map' not in db.list_collection_names()

    code, out = upgrade()
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ['collection', 'documents']
    assert lines[2].split() == ['%s.%s' % (dbname, PERSON), '1']
    assert lines[3:] == [
        'Rewrote 1 documents',
        'Values: Python 2 factory name 1, _py_constant 1, dict_data 1, '
        'pickled datetime.date 2, pickled datetime.datetime 1, '
        'pickled datetime.time 1',
        'Type map: 2 class names taken from persistence_name_map']
    doc = db[PERSON].find_one({'_id': STEPHAN})
    assert doc['_py_serial'] == 4
    assert doc['birthday'] == {'_py_type': 'datetime.date',
                               'iso': '1980-01-25'}
    assert doc['scores'] == {'_py_type': 'builtins.dict',
                             'items': [[1, 'one'], [[2, 3], 'pair']]}
    assert doc['default'] == {'_py_type': 'constant',
                              'path': 'tests.operations_model.DEFAULT'}
    assert doc['kind'] == {'_py_type': 'type', 'path': 'tests.model.Phone'}
    assert doc['dates'][0] == {'_py_type': 'datetime.date',
                               'iso': '1900-01-01'}
    assert doc['dates'][1]['_py_type'] == 'datetime.datetime'
    assert doc['dates'][1]['iso'] == '2011-10-01T09:45:00.123456'
    assert doc['dates'][2] == {'_py_type': 'datetime.time', 'iso': '12:30:00'}
    assert doc['tags'] == {'_py_factory': 'builtins.set',
                           '_py_factory_args': [['a', 'b']]}
    assert doc['phone'] == before[0]['phone']      # already current
    assert db['persistence_type_map'].find_one(
        {'_id': '%s.address' % dbname})['types'] == [
        'tests.model.Address', 'tests.model.ExtendedAddress']
    check_stephan(make_dm().root['stephan'])

    # Nothing left: a second run changes nothing.
    code, out = upgrade('--json')
    assert code == 0 and json.loads(out)['documents'] == 0


def test_naive_millisecond_datetime_becomes_a_bson_date(db, dbname, client):
    db['things'].insert_one({'_id': 1, 'when': {
        '_py_factory': 'datetime.datetime', '_py_factory_args': [
            bson.Binary(b'\x07\xdb\n\x01\t-\x00\x00\x00\x00', 0)]}})
    assert cli.main(['upgrade-format', '-d', dbname], client=client,
                    out=io.StringIO(), err=io.StringIO()) == 0
    assert db['things'].find_one()['when'] == datetime.datetime(
        2011, 10, 1, 9, 45)


def test_upgrade_leaves_what_it_cannot_decode_and_says_so(db, dbname,
                                                          client):
    # Plain bytes: what PyMongo reads back for Binary subtype 0.
    aware = {'_py_factory': 'datetime.datetime', '_py_factory_args': [
        b'\x07\xdb\n\x01\t-\x00\x00\x00\x00',
        {'_py_factory': 'pytz._UTC', '_py_factory_args': []}]}
    db['things'].insert_one({'_id': 1, 'when': aware,
                             'bad': {'_py_constant': 5}})
    out = io.StringIO()
    code = cli.main(['upgrade-format', '-d', dbname, '--json'],
                    client=client, out=out, err=io.StringIO())
    assert code == 1
    problems = json.loads(out.getvalue())['problems']
    assert [(p['id'], p['path']) for p in problems] == [
        (1, 'when'), (1, 'bad')]
    assert 'only naive' in problems[0]['problem']
    assert db['things'].find_one() == {'_id': 1, 'when': aware,
                                       'bad': {'_py_constant': 5}}


@pytest.mark.parametrize('args, expected', [
    ([b'\x07\xbc\x01\x19'], datetime.date(1980, 1, 25)),
    (['\x07l\x01\x01'], datetime.date(1900, 1, 1)),
])
def test_decode_pickled_date(args, expected):
    assert legacy.decode_pickled_date('datetime.date', args) == expected


@pytest.mark.parametrize('name, args', [
    ('datetime.date', [b'\x07\xbc\x0d\x19']),           # month 13
    ('datetime.date', [b'\x07\xbc\x01']),               # too short
    ('datetime.datetime', [b'\x07\xbc\x01\x19']),       # a date's bytes
    ('datetime.time', [b'\x0c\x1e\x00\x00\x00\x00', 'tz']),
    ('datetime.date', ['\u20ac\x00\x01\x01']),          # not latin-1
    ('datetime.date', [1980]),
])
def test_decode_pickled_date_refuses(name, args):
    with pytest.raises((ValueError, UnicodeError)):
        legacy.decode_pickled_date(name, args)


def test_a_plain_dict_keyed_dict_data_is_not_taken_for_the_legacy_shape(
        dm, db, make_dm):
    person = Person('keys')
    person.friends = {'dict_data': [[1, 2]]}
    person.other = {'dict_data': 'text'}
    dm.root['keys'] = person
    transaction.commit()
    doc = db[PERSON].find_one()
    assert doc['friends'] == {'_py_type': 'builtins.dict',
                              'items': [['dict_data', [[1, 2]]]]}
    assert doc['other'] == {'dict_data': 'text'}
    loaded = make_dm().root['keys']
    assert dict(loaded.friends) == {'dict_data': [[1, 2]]}
    assert dict(loaded.other) == {'dict_data': 'text'}


# -- values stored by name ---------------------------------------------------
@pytest.mark.parametrize('value, stored', [
    (Phone, {'_py_type': 'type', 'path': 'tests.model.Phone'}),
    (Shape, {'_py_type': 'type', 'path': 'tests.operations_model.Shape'}),
    (Person, {'_py_type': 'type', 'path': 'tests.model.Person'}),
    (slugify, {'_py_type': 'function',
               'path': 'tests.operations_model.slugify'}),
    (len, {'_py_type': 'function', 'path': 'builtins.len'}),
    (os.path.join, {'_py_type': 'function', 'path': 'posixpath.join'}),
    (DEFAULT, {'_py_type': 'constant',
               'path': 'tests.operations_model.DEFAULT'}),
], ids=repr)
def test_classes_functions_and_constants_are_stored_by_name(
        dm, db, make_dm, value, stored):
    person = Person('holder')
    person.value = value
    person.nested = {'list': [value]}
    dm.root['holder'] = person
    transaction.commit()
    doc = db[PERSON].find_one()
    assert doc['value'] == stored
    assert doc['nested'] == {'list': [stored]}
    loaded = make_dm().root['holder']
    assert loaded.value is value
    assert loaded.nested['list'][0] is value


@pytest.mark.parametrize('value', [
    lambda: 0, threading.Lock(), Marker('NOT_A_MODULE_NAME')], ids=repr)
def test_what_cannot_be_found_by_name_again_is_refused(dm, db, value):
    person = Person('holder')
    person.value = value
    with pytest.raises(interfaces.UnstorableObjectError) as info:
        dm.root['holder'] = person
    transaction.abort()
    assert 'Person.value' in str(info.value)
    assert db[PERSON].count_documents({}) == 0


def test_local_class_is_refused(dm, db):
    class Local:
        pass
    person = Person('holder')
    person.value = Local
    with pytest.raises(interfaces.UnstorableObjectError,
                       match='cannot be found again by name'):
        dm.root['holder'] = person
    transaction.abort()
    assert db[PERSON].count_documents({}) == 0


def test_functions_load_only_when_registered_or_stored_here(db, dbname,
                                                            make_dm, allowed):
    """Another process (here: names this process never stored) must
    register the function; the error names the document."""
    db[PERSON].insert_one({'_id': 1, 'name': 'x', 'f': {
        '_py_type': 'function', 'path': 'tests.operations_model.unknown'}})
    with pytest.raises(interfaces.UnknownTypeError) as info:
        make_dm().load(DBRef(PERSON, 1, dbname)).f
    assert info.value.name == 'tests.operations_model.unknown'
    assert (info.value.collection, info.value.id, info.value.path) == (
        PERSON, 1, 'f')
    dm = make_dm()
    dm.type_registry.register_global(slugify,
                                     'tests.operations_model.unknown')
    assert dm.load(DBRef(PERSON, 1, dbname)).f is slugify


def test_class_first_stored_as_a_factory_loads_as_a_value(dm, db, make_dm):
    """Naming a class as a factory first did not allow loading it as a
    class value: the process refused what it had stored itself."""
    from tests.operations_model import Token
    person = Person('holder')
    person.token = Token('t')
    person.kind = Token
    dm.root['holder'] = person
    transaction.commit()
    doc = db[PERSON].find_one()
    assert doc['token'] == {'_py_factory': 'tests.operations_model.Token',
                            '_py_factory_args': ['t']}
    assert doc['kind'] == {'_py_type': 'type',
                           'path': 'tests.operations_model.Token'}
    loaded = make_dm().root['holder']
    assert loaded.kind is Token and loaded.token.text == 't'


@pytest.mark.parametrize('stored', [
    {'_py_constant': 'gone.module.CONSTANT'},
    {'_py_type': 'function', 'path': 'gone.module.function'},
    {'_py_type': 'type', 'path': 'gone.module.Class'},
], ids=repr)
def test_broken_objects_keep_unknown_names_stored_by_name(db, dbname,
                                                          make_dm, stored,
                                                          allowed):
    from mongopersist import broken
    db[PERSON].insert_one({'_id': 1, 'name': 'x', 'value': stored})
    with pytest.raises(interfaces.UnknownTypeError):
        make_dm().load(DBRef(PERSON, 1, dbname)).value
    dm = make_dm(broken_objects=True)
    person = dm.load(DBRef(PERSON, 1, dbname))
    assert broken.is_broken(person.value)
    assert broken.stored_state(person.value) == stored
    person.name = 'changed'
    transaction.commit()
    assert db[PERSON].find_one() == {'_id': 1, 'name': 'changed',
                                     'value': stored}


# -- properties ----------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.one_of(st.dates(), st.datetimes(), st.times()),
       st.booleans())
def test_decoding_agrees_with_the_pickled_bytes(value, as_text):
    """The bytes CPython pickles a date, datetime or time as (Python 2
    used the same layout) decode to the same value, also when they were
    stored as a latin-1 string."""
    data = value.__reduce__()[1][0]
    stored = data.decode('latin-1') if as_text else bson.Binary(data, 0)
    name = 'datetime.%s' % type(value).__name__
    assert legacy.decode_pickled_date(name, [stored]) == value


names = st.sampled_from(['a.Old', 'a.New', 'a.Other'])
stored_values = st.recursive(
    st.one_of(st.integers(), st.text(max_size=5), names),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(['x', 'path', 'class']), inner,
                        max_size=3),
        st.fixed_dictionaries({'_py_type': names}, optional={'x': inner}),
        st.fixed_dictionaries({'_py_type': st.just('type'), 'path': names}),
        st.fixed_dictionaries({'_py_type': st.just('enum.Enum'),
                               'class': names, 'name': st.just('A')}),
        st.fixed_dictionaries({'_py_persistent_type': names},
                              optional={'x': inner})),
    max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(['f', 'g', '_py_persistent_type']),
                       stored_values, max_size=3))
def test_rename_replaces_exactly_the_class_names(doc):
    from mongopersist.cli.rename import Renamer
    doc = dict(doc, _id=1)
    renamed = Renamer('a.Old', 'a.New').document(doc)
    if renamed is None:
        assert "'a.Old'" not in repr(_names(doc))
        return
    assert "'a.Old'" not in repr(_names(renamed))
    # Renaming back gives the original wherever NEW was not there before.
    if "'a.New'" not in repr(_names(doc)):
        assert Renamer('a.New', 'a.Old').document(renamed) == doc
    # Values that are not class names are untouched.
    assert _without_names(renamed) == _without_names(doc)


def _names(value):
    """The class names a stored value holds, where rename-class looks."""
    found = []
    if isinstance(value, list):
        for item in value:
            found.extend(_names(item))
    elif isinstance(value, dict):
        kind = value.get('_py_type')
        for key, item in value.items():
            if _is_name(key, item, kind):
                found.append(item)
            else:
                found.extend(_names(item))
    return found


def _is_name(key, item, kind):
    return isinstance(item, str) and (
        key in ('_py_type', '_py_persistent_type', '_py_factory')
        or (key == 'class' and kind == 'enum.Enum')
        or (key == 'path' and kind == 'type'))


def _without_names(value):
    if isinstance(value, list):
        return [_without_names(item) for item in value]
    if isinstance(value, dict):
        kind = value.get('_py_type')
        return {key: None if _is_name(key, item, kind)
                else _without_names(item) for key, item in value.items()}
    return value


@settings(max_examples=100, deadline=None)
@given(stored_values)
def test_upgrade_is_idempotent(value):
    upgrade = legacy.Upgrade()
    once, _ = upgrade.rewrite({'_id': 1, 'v': value})
    twice, changed = upgrade.rewrite(once)
    assert not changed and twice == once


def test_a_new_class_in_a_collection_of_the_name_map_keeps_the_old_ones(
        db, dbname, make_dm, allowed):
    """The type-map entry that writing a new class creates starts with the
    classes of the name map, so documents without _py_persistent_type
    stay of the first one.  (The process must have read the collection's
    classes first; upgrade-format copies the name map into the type map
    for good.)"""
    from tests.operations_model import Annex
    original_database(db, dbname)
    dm = make_dm()
    check_stephan(dm.root['stephan'])   # the application reads first
    dm.root['annex'] = Annex('Annex', '0')
    transaction.commit()
    assert db['persistence_type_map'].find_one(
        {'_id': '%s.address' % dbname})['types'] == [
        'tests.model.Address', 'tests.model.ExtendedAddress',
        'tests.operations_model.Annex']
    assert db['address'].find_one({'city': 'Annex'})[
        '_py_persistent_type'] == 'tests.operations_model.Annex'
    check_stephan(make_dm().root['stephan'])
