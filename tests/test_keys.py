"""Keys are values, never queries (issue 17).

``dm.root`` and a ``MongoCollectionMapping`` look their keys up with a
filter ``{field: key}``.  A key that is a dict (``{'$ne': 'guest'}``), a
regular expression or an array would turn that filter into a query: it
returned (and ``del`` deleted) another entry.  A key that is not of the
mapping's key type (``str`` for the root and by default) is refused before
any query is sent: ``InvalidKeyError``, which is both a ``KeyError`` and a
``TypeError``; ``in`` answers ``False``.
"""
import datetime
import re
import uuid

import persistent
import pytest
import transaction
from bson.dbref import DBRef
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.son import SON
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mongopersist import container, interfaces, mapping
from mongopersist.serialize import get_dotted_name
from tests.model import Person

PERSON = get_dotted_name(Person)
ROOT = 'persistence_root'

OPERATOR_KEYS = [
    {'$ne': 'guest'},
    {'$gt': ''},
    {'$exists': True},
    {'$in': ['admin', 'guest']},
    {'$regex': '^a'},
    {'$nin': []},
    SON([('$ne', 'guest')]),
    Regex('^adm'),
    re.compile('^adm'),
    ['admin'],
    ('admin',),
    {'name': 'admin'},
]


class People(mapping.MongoCollectionMapping):
    __mongo_collection__ = PERSON
    __mongo_mapping_key__ = 'short_name'


class Numbered(persistent.Persistent):
    _p_mongo_collection = 'numbered'

    def __init__(self, number=None):
        if number is not None:
            self.number = number


class ByNumber(mapping.MongoCollectionMapping):
    __mongo_collection__ = 'numbered'
    __mongo_mapping_key__ = 'number'
    __mongo_key_type__ = int


class CollectionSpy:
    """A PyMongo collection that records every operation sent through it."""

    def __init__(self, raw, calls):
        self._raw = raw
        self._calls = calls

    def __getattr__(self, name):
        value = getattr(self._raw, name)
        if name in ('database', 'name', 'full_name'):
            return value
        if callable(value):
            def call(*args, **kwargs):
                self._calls.append((name, args, kwargs))
                return value(*args, **kwargs)
            return call
        return value


def spy_on(dm):
    """Record the collection operations ``dm`` sends from now on."""
    calls = []
    dm.__dict__.pop('_raw_collection', None)     # an earlier spy
    raw_collection = dm._raw_collection
    dm._raw_collection = lambda db, coll: CollectionSpy(
        raw_collection(db, coll), calls)
    return calls


def snapshot(db):
    """Every collection's documents (empty collections too)."""
    return {name: sorted(db[name].find(), key=lambda doc: repr(doc['_id']))
            for name in sorted(db.list_collection_names())
            if not name.startswith('system.')}


@pytest.fixture
def people(dm, make_dm):
    """admin and guest, in the root and in the ``People`` mapping."""
    for name in ('admin', 'guest'):
        person = dm.root[name] = Person(name)
        person.short_name = name
    transaction.commit()
    return make_dm()


# -- the reproductions ----------------------------------------------------
@pytest.mark.parametrize('key', OPERATOR_KEYS, ids=repr)
def test_root_lookup_with_a_query_is_refused(people, db, key):
    before = snapshot(db)
    calls = spy_on(people)
    with pytest.raises(interfaces.InvalidKeyError) as raised:
        people.root[key]
    assert isinstance(raised.value, KeyError)
    assert isinstance(raised.value, TypeError)
    assert 'str' in str(raised.value)
    assert key not in people.root
    assert people.root.get(key) is None
    assert people.root.get(key, 'default') == 'default'
    with pytest.raises(interfaces.InvalidKeyError):
        del people.root[key]
    assert people.root.pop(key, 'default') == 'default'
    assert calls == []
    transaction.commit()
    assert snapshot(db) == before
    assert sorted(people.root.keys()) == ['admin', 'guest']


def test_root_ne_query_returned_and_deleted_admin(people, db):
    # The reproduction: both returned / deleted the admin entry.
    with pytest.raises(KeyError):
        people.root[{'$ne': 'guest'}]
    with pytest.raises(KeyError):
        del people.root[{'$ne': 'guest'}]
    transaction.commit()
    assert db[ROOT].count_documents({'name': 'admin'}) == 1


@pytest.mark.parametrize('key', [1, 1.5, None, True, b'admin',
                                 ObjectId(), OPERATOR_KEYS[0]], ids=repr)
def test_root_refuses_setting_a_key_that_is_not_a_string(people, db, key):
    before = snapshot(db)
    calls = spy_on(people)
    newcomer = Person('newcomer')
    with pytest.raises(interfaces.InvalidKeyError) as raised:
        people.root[key] = newcomer
    assert isinstance(raised.value, TypeError)
    # Refused before anything was stored: the object stays new.
    assert newcomer._p_jar is None
    assert calls == []
    transaction.commit()
    assert snapshot(db) == before


def test_root_refuses_text_that_is_not_unicode(people, db):
    before = snapshot(db)
    calls = spy_on(people)
    with pytest.raises(interfaces.InvalidKeyError):
        people.root['\ud800'] = Person('surrogate')
    with pytest.raises(interfaces.InvalidKeyError):
        people.root['\ud800']
    assert '\ud800' not in people.root
    assert calls == []
    assert snapshot(db) == before


@pytest.mark.parametrize('end', ['commit', 'abort'])
def test_deleting_a_missing_root_name_leaves_no_journal_intent(people, db,
                                                               end):
    before = snapshot(db)
    with pytest.raises(KeyError):
        del people.root['nobody']
    getattr(transaction, end)()
    assert snapshot(db) == before


def test_root_string_keys_still_work(people, db):
    assert people.root['admin'].name == 'admin'
    assert 'guest' in people.root
    assert '$ne' not in people.root
    people.root['$ne'] = Person('dollar')
    people.root['a.b c'] = Person('dotted')
    transaction.commit()
    assert people.root['$ne'].name == 'dollar'
    assert people.root['a.b c'].name == 'dotted'
    del people.root['$ne']
    transaction.commit()
    assert sorted(people.root.keys()) == ['a.b c', 'admin', 'guest']


@pytest.mark.parametrize('key', OPERATOR_KEYS, ids=repr)
def test_mapping_lookup_with_a_query_is_refused(people, db, key):
    before = snapshot(db)
    guest = people.root['guest']
    calls = spy_on(people)
    found = People(people)
    with pytest.raises(interfaces.InvalidKeyError):
        found[key]
    assert key not in found
    assert found.get(key) is None
    with pytest.raises(KeyError):
        del found[key]
    with pytest.raises(TypeError):
        found[key] = guest
    assert calls == []
    transaction.commit()
    assert snapshot(db) == before
    assert People(people).keys() == ['admin', 'guest']


def test_mapping_ne_query_deleted_admin(people, db):
    # The reproduction on the mapping: del cleared admin's key.
    with pytest.raises(KeyError):
        del People(people)[{'$ne': 'guest'}]
    transaction.commit()
    assert People(people).keys() == ['admin', 'guest']


def test_mapping_declares_its_key_type(dm, db):
    numbers = ByNumber(dm)
    numbers[1] = Numbered()
    numbers[Int64(2)] = Numbered()
    transaction.commit()
    assert numbers.keys() == [1, 2]
    assert numbers[1].number == 1
    assert 2 in numbers
    calls = spy_on(dm)
    for key in ('1', True, 1.0, 2 ** 63, {'$gt': 0}):
        with pytest.raises(interfaces.InvalidKeyError):
            numbers[key]
        assert key not in numbers
        with pytest.raises(TypeError):
            numbers[key] = Numbered()
    assert calls == []


@pytest.mark.parametrize('declared', [dict, list, object, Regex, DBRef,
                                      (str, dict), 'str'], ids=repr)
def test_a_mapping_cannot_declare_a_key_type_read_as_a_query(dm, declared):
    class Loose(People):
        __mongo_key_type__ = declared
    with pytest.raises(TypeError, match='key type'):
        Loose(dm)


# -- generative: any BSON-able key ----------------------------------------
NAMES = ['admin', 'guest', 'root', '']
OPERATORS = ['$ne', '$gt', '$gte', '$lt', '$in', '$nin', '$exists',
             '$regex', '$where', '$expr', '$not', '$or', '$type', 'name']

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-2 ** 63, max_value=2 ** 63 - 1),
    st.floats(allow_nan=False), st.text(max_size=8),
    st.sampled_from(NAMES), st.binary(max_size=8),
    st.builds(ObjectId),
    st.datetimes(min_value=datetime.datetime(1970, 1, 1),
                 max_value=datetime.datetime(2100, 1, 1)).map(
        lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)),
    st.uuids(), st.builds(Regex, st.sampled_from(['.*', '^a', 'admin'])))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(OPERATORS) | st.text(max_size=4),
                        inner, max_size=3)),
    max_leaves=6)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(key=values, operation=st.sampled_from(
    ['get', 'in', 'del', 'set', 'pop']), where=st.sampled_from(
    ['root', 'mapping']))
def test_any_key_reaches_only_its_own_entry(people, db, key, operation,
                                            where):
    """Oracle: a key that is not a string sends no query and changes
    nothing; a string key reaches the entry of that name and no other."""
    transaction.abort()
    before = snapshot(db)
    target = people.root if where == 'root' else People(people)
    is_name = isinstance(key, str)
    assume(not (is_name and operation == 'set'))
    calls = spy_on(people)
    try:
        if operation == 'get':
            result = target[key]
        elif operation == 'in':
            result = key in target
        elif operation == 'del':
            del target[key]
            result = 'deleted'
        elif operation == 'pop':
            result = target.pop(key, 'missing')
        else:
            target[key] = Person('newcomer')
            result = 'set'
    except interfaces.InvalidKeyError as error:
        assert not is_name
        assert isinstance(error, KeyError) and isinstance(error, TypeError)
        result = error
    except KeyError:
        assert is_name and key not in ('admin', 'guest')
        result = None
    if not is_name:
        # Refused before anything was sent: no query, nothing changed.
        assert calls == [], calls
        assert result is False or result == 'missing' or isinstance(
            result, interfaces.InvalidKeyError), result
        transaction.commit()
        assert snapshot(db) == before
        return
    if operation == 'get' and result is not None:
        assert result.name == key
    elif operation == 'in':
        assert result == (key in ('admin', 'guest'))
    transaction.commit()
    after = snapshot(db)
    if key in ('admin', 'guest') and operation in ('del', 'pop'):
        # Exactly that entry left the mapping; the others are untouched.
        remaining = sorted({'admin', 'guest'} - {key})
        assert sorted(people.root.keys() if where == 'root'
                      else People(people).keys()) == remaining
        transaction.abort()
        # Put it back for the next example.
        person = people.find_one_object(Person, {'name': key})
        if where == 'root':
            people.root[key] = person
        else:
            person.short_name = key
        transaction.commit()
    else:
        assert after == before


def test_uuid_and_datetime_keys_are_refused_by_a_string_mapping(people):
    calls = spy_on(people)
    for key in (uuid.uuid4(), datetime.datetime(2020, 1, 1)):
        assert key not in people.root
        assert key not in People(people)
    assert calls == []


# -- containers: names are str or int, checked the same way ---------------
class Note(persistent.Persistent):
    _p_mongo_collection = 'notes'

    def __init__(self, title=''):
        self.title = title


class Notes(container.MongoContainer):
    _p_mongo_collection = 'notebooks'
    _m_collection = 'notes'


@pytest.mark.parametrize('key', OPERATOR_KEYS + [
    2 ** 63, -2 ** 63 - 1, '\udc80', True, None, 1.0], ids=repr)
def test_container_names_are_values(dm, make_dm, db, key):
    notes = dm.root['notes'] = Notes()
    notes['a'] = Note('a')
    notes[1] = Note('one')
    transaction.commit()
    other = make_dm()
    before = snapshot(db)
    notes = other.root['notes']
    notes._p_activate()
    calls = spy_on(other)
    with pytest.raises(KeyError):
        notes[key]
    assert key not in notes
    assert notes.get(key) is None
    with pytest.raises(KeyError):
        del notes[key]
    with pytest.raises(ValueError):
        notes[key] = Note('x')
    assert calls == []
    transaction.commit()
    assert snapshot(db) == before
    assert notes.keys() == [1, 'a'] or notes.keys() == ['a', 1] or \
        sorted(map(str, notes.keys())) == ['1', 'a']
