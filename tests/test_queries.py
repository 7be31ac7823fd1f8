"""Queries: collections that flush first, and object queries without N+1.

What is stored is checked through raw PyMongo collections (which see only
what has been written); round trips are counted with ``tests.roundtrips``.
"""
import persistent
import pytest
import transaction
from bson.dbref import DBRef

from mongopersist import batching, metadata, query, sessions
from mongopersist.collection import MongoCollection, pipeline_collections
from mongopersist.datamanager import MongoDataManager
from mongopersist.serialize import PY_PERSISTENT_TYPE, get_dotted_name
from tests.model import Address, Car, ExtendedAddress, Person, Phone

PERSON = get_dotted_name(Person)


class Book(persistent.Persistent):
    """A class whose collection (``book``) nothing else shares."""
    _p_mongo_collection = 'book'

    def __init__(self, title, year):
        self.title = title
        self.year = year


def store_people(dm, *names):
    for name in names:
        dm.root[name] = Person(name)
    transaction.commit()


def names_of(objects):
    return sorted(obj.name for obj in objects)


# -- 1. collections from the data manager flush first ----------------------
def test_get_collection_wraps_the_raw_collection(dm, db):
    coll = dm.get_collection(db.name, 'things')
    assert isinstance(coll, MongoCollection)
    assert coll.name == 'things'
    assert coll.full_name == '%s.things' % db.name
    assert coll.raw == db['things']
    assert isinstance(coll['sub'], MongoCollection)
    assert coll['sub'].name == 'things.sub'
    assert isinstance(coll.with_options(), MongoCollection)
    # Other methods are PyMongo's own.
    coll.insert_one({'_id': 1, 'x': 1})
    assert db['things'].find_one({'_id': 1}) == {'_id': 1, 'x': 1}
    with pytest.raises(TypeError):
        iter(coll)


def test_get_collection_of_object_wraps(dm, db):
    stephan = Person('Stephan')
    by_class = dm.get_collection_of_object(stephan)
    assert isinstance(by_class, MongoCollection)
    assert by_class.name == PERSON
    dm.root['stephan'] = stephan
    by_oid = dm.get_collection_of_object(stephan)
    assert isinstance(by_oid, MongoCollection)
    assert (by_oid.database.name, by_oid.name) == (db.name, PERSON)


def test_query_sees_an_uncommitted_change(dm, db):
    store_people(dm, 'stephan')
    dm.root['stephan'].name = 'Stephan Richter'
    raw = db[PERSON]
    assert raw.find_one()['name'] == 'stephan'
    coll = dm.get_collection_of_object(dm.root['stephan'])
    assert coll.find_one()['name'] == 'Stephan Richter'
    transaction.commit()
    assert raw.find_one()['name'] == 'Stephan Richter'


def test_query_sees_new_and_removed_objects(dm, db):
    store_people(dm, 'stephan', 'roy')
    roger = Person('roger')
    dm.insert(roger)
    dm.remove(dm.root['roy'])
    coll = dm.get_collection(db.name, PERSON)
    assert sorted(d['name'] for d in coll.find()) == ['roger', 'stephan']


def test_abort_takes_back_what_a_query_flushed(dm, db):
    store_people(dm, 'stephan')
    dm.root['stephan'].name = 'changed'
    dm.insert(Person('new'))
    assert dm.get_collection(db.name, PERSON).count_documents({}) == 2
    transaction.abort()
    assert [d['name'] for d in db[PERSON].find()] == ['stephan']


def test_query_flushes_only_the_queried_collection(dm, db):
    stephan = Person('Stephan', address=Address('Maynard', '01754'))
    dm.root['stephan'] = stephan
    transaction.commit()
    stephan.name = 'Stephan R.'
    stephan.address.city = 'Boston'
    assert dm.get_collection(db.name, 'address').find_one()['city'] == \
        'Boston'
    # The change to the person is still pending.
    assert db[PERSON].find_one()['name'] == 'Stephan'
    transaction.commit()
    assert db[PERSON].find_one()['name'] == 'Stephan R.'


def _find(coll):
    return [d['name'] for d in coll.find({'name': 'new'})]


def _find_one(coll):
    return coll.find_one({'name': 'new'})['name']


def _count(coll):
    return coll.count_documents({'name': 'new'})


def _distinct(coll):
    return coll.distinct('name')


def _aggregate(coll):
    return [d['name'] for d in coll.aggregate([{'$match': {'name': 'new'}}])]


def _find_one_and_update(coll):
    return coll.find_one_and_update({'name': 'new'},
                                    {'$set': {'seen': True}})['name']


def _find_one_and_replace(coll):
    return coll.find_one_and_replace({'name': 'new'},
                                     {'name': 'replaced'})['name']


def _find_one_and_delete(coll):
    return coll.find_one_and_delete({'name': 'new'})['name']


@pytest.mark.parametrize('operation, result', [
    (_find, ['new']),
    (_find_one, 'new'),
    (_count, 1),
    (_distinct, ['new']),
    (_aggregate, ['new']),
    (_find_one_and_update, 'new'),
    (_find_one_and_replace, 'new'),
    (_find_one_and_delete, 'new'),
])
def test_every_query_method_flushes_first(dm, db, operation, result):
    dm.insert(Person('new'))
    assert db[PERSON].count_documents({}) == 0
    assert operation(dm.get_collection(db.name, PERSON)) == result


def test_raw_collections_do_not_flush(dm, db):
    dm.insert(Person('new'))
    assert db[PERSON].find_one({'name': 'new'}) is None
    assert dm._raw_collection(db.name, PERSON).find_one() is None
    assert db[PERSON].count_documents({}) == 0


def test_aggregate_flushes_collections_it_looks_up(dm, db):
    stephan = Person('Stephan')
    dm.root['stephan'] = stephan
    transaction.commit()
    stephan.address = Address('Maynard', '01754')
    stephan._p_jar.insert(Book('Faust', 1808))
    coll = dm.get_collection(db.name, PERSON)
    found = list(coll.aggregate([
        {'$lookup': {'from': 'address', 'localField': 'name',
                     'foreignField': 'city', 'as': 'addresses'}}]))
    # The person (changed) and the address (new) were written first; the
    # book, in a collection the pipeline does not read, was not.
    assert db[PERSON].find_one()['address'] == stephan.address._p_oid
    assert db['address'].count_documents({}) == 1
    assert db['book'].count_documents({}) == 0
    assert [(d['name'], d['addresses']) for d in found] == [('Stephan', [])]


def test_pipeline_collections():
    assert pipeline_collections([
        {'$match': {}},
        {'$lookup': {'from': 'a', 'pipeline': [
            {'$unionWith': 'b'}]}},
        {'$graphLookup': {'from': 'c'}},
        {'$unionWith': {'coll': 'd', 'pipeline': []}},
        {'$facet': {'x': [{'$lookup': {'from': 'e'}}]}},
    ]) == {'a', 'b', 'c', 'd', 'e'}
    assert pipeline_collections(None) == set()


# -- 2. object queries ---------------------------------------------------
def test_find_objects(dm):
    store_people(dm, 'stephan', 'roy', 'roger')
    found = list(dm.find_objects(Person, {'name': {'$in': ['roy', 'roger']}}))
    assert names_of(found) == ['roger', 'roy']
    assert all(isinstance(p, Person) for p in found)
    assert names_of(dm.find_objects(Person)) == ['roger', 'roy', 'stephan']


def test_find_objects_sort_limit_skip(dm):
    store_people(dm, 'a', 'b', 'c', 'd', 'e')
    by_name = [p.name for p in dm.find_objects(Person, sort='name')]
    assert by_name == ['a', 'b', 'c', 'd', 'e']
    desc = [p.name for p in dm.find_objects(Person, sort=[('name', -1)])]
    assert desc == ['e', 'd', 'c', 'b', 'a']
    page = [p.name for p in dm.find_objects(
        Person, sort=[('name', 1)], limit=2, skip=1)]
    assert page == ['b', 'c']
    assert [p.name for p in dm.find_objects(
        Person, {'name': {'$gt': 'b'}}, sort={'name': -1}, limit=1)] == ['e']


def test_find_one_object_and_count(dm):
    store_people(dm, 'stephan', 'roy')
    assert dm.find_one_object(Person, {'name': 'roy'}) is dm.root['roy']
    assert dm.find_one_object(Person, {'name': 'nobody'}) is None
    assert dm.count(Person) == 2
    assert dm.count(Person, {'name': 'roy'}) == 1
    assert dm.count(Person, {'name': 'nobody'}) == 0


def test_object_query_sees_an_uncommitted_change(dm, db):
    store_people(dm, 'stephan')
    dm.root['stephan'].name = 'Stephan Richter'
    dm.insert(Person('new'))
    assert db[PERSON].count_documents({'name': 'Stephan Richter'}) == 0
    assert names_of(dm.find_objects(Person)) == ['Stephan Richter', 'new']
    assert dm.count(Person, {'name': 'Stephan Richter'}) == 1
    transaction.abort()
    assert [d['name'] for d in db[PERSON].find()] == ['stephan']


def test_queried_object_is_the_loaded_object(dm):
    store_people(dm, 'stephan', 'roy')
    stephan = dm.root['stephan']
    stephan.name = 'Stephan Richter'
    found = dm.find_one_object(Person, {'name': 'Stephan Richter'})
    assert found is stephan
    assert {id(p) for p in dm.find_objects(Person)} == {
        id(stephan), id(dm.root['roy'])}


def test_new_object_found_by_query_is_the_same_object(dm):
    roger = Person('roger')
    dm.insert(roger)
    assert list(dm.find_objects(Person)) == [roger]
    assert dm.find_one_object(Person) is roger


def test_one_query_for_all_results(roundtrips, dbname):
    dm = MongoDataManager(roundtrips.client, default_database=dbname)
    store_people(dm, *['p%02d' % i for i in range(50)])
    other = MongoDataManager(roundtrips.client, default_database=dbname)
    other.count(Person)          # reads the type map once
    roundtrips.reset()
    found = list(other.find_objects(Person))
    assert len(found) == 50
    # Every object is filled from the query result: no read per object.
    assert all(p._p_status == 'saved' for p in found)
    assert names_of(found)[:2] == ['p00', 'p01']
    assert roundtrips.reads[PERSON] == 1, roundtrips
    assert roundtrips.writes_total == 0
    # The objects stay in the identity map: querying again returns them.
    roundtrips.reset()
    again = list(other.find_objects(Person))
    assert {id(p) for p in again} == {id(p) for p in found}
    assert roundtrips.reads[PERSON] == 1
    assert roundtrips.reads_total == 1


def test_queried_object_in_next_transaction_reloads_from_the_query(dm):
    store_people(dm, 'stephan')
    stephan = dm.root['stephan']
    transaction.commit()
    assert stephan._p_status == 'ghost'
    found = dm.find_one_object(Person, {'name': 'stephan'})
    assert found is stephan
    assert stephan._p_status == 'saved'
    assert stephan.name == 'stephan'


def test_find_objects_streams(make_dm, monkeypatch):
    # Objects are made a page at a time (mongopersist.batching).
    monkeypatch.setattr(batching, 'PAGE_SIZES', (1, 2))
    dm = make_dm()
    store_people(dm, 'a', 'b', 'c', 'd')
    other = make_dm()
    objects = other.find_objects(Person, sort='name')

    def made():
        return sorted(ref.id for ref in other._cache.keys()
                      if ref.collection == PERSON)
    first = next(objects)
    assert first.name == 'a'
    # Only the first page (one object) was made so far.
    assert made() == [first._p_oid.id]
    assert next(objects).name == 'b'
    assert len(made()) == 3
    assert [p.name for p in objects] == ['c', 'd']


def test_find_objects_queries_at_once(dm, db):
    # The pending change is flushed when find_objects is called, not when
    # the result is first iterated.
    dm.insert(Person('new'))
    objects = dm.find_objects(Person)
    assert db[PERSON].count_documents({}) == 1
    assert [p.name for p in objects] == ['new']


# -- shared collections ---------------------------------------------------
@pytest.fixture
def addresses(dm):
    """Two plain addresses (stored first: their documents name no class)
    and two extended ones (the collection is shared from then on)."""
    dm.root['a1'] = Address('Maynard', '01754')
    dm.root['a2'] = Address('Boston', '02101')
    transaction.commit()
    dm.root['e1'] = ExtendedAddress('Tettau', '96355', 'Germany')
    dm.root['e2'] = ExtendedAddress('Dresden', '01067', 'Germany')
    transaction.commit()
    return dm


def test_shared_collection_returns_only_the_class_asked_for(addresses, db):
    dm = addresses
    docs = {d['city']: d for d in db['address'].find()}
    assert PY_PERSISTENT_TYPE not in docs['Maynard']
    assert docs['Tettau'][PY_PERSISTENT_TYPE] == \
        get_dotted_name(ExtendedAddress)
    extended = list(dm.find_objects(ExtendedAddress))
    assert sorted(a.city for a in extended) == ['Dresden', 'Tettau']
    assert all(type(a) is ExtendedAddress for a in extended)
    assert dm.count(ExtendedAddress) == 2
    assert dm.count(ExtendedAddress, {'city': 'Maynard'}) == 0
    assert dm.find_one_object(ExtendedAddress, {'city': 'Maynard'}) is None
    # The base class finds its subclass's instances too.
    everything = list(dm.find_objects(Address, sort='city'))
    assert [type(a).__name__ for a in everything] == [
        'Address', 'ExtendedAddress', 'Address', 'ExtendedAddress']
    assert dm.count(Address) == 4


def test_shared_collection_in_another_data_manager(addresses, make_dm):
    other = make_dm()
    found = other.find_objects(ExtendedAddress, {'country': 'Germany'},
                               sort='city')
    assert [(type(a), a.city) for a in found] == [
        (ExtendedAddress, 'Dresden'), (ExtendedAddress, 'Tettau')]
    plain = other.find_one_object(Address, {'city': 'Boston'})
    assert type(plain) is Address
    assert plain.zip == '02101'


def test_plain_address_after_sharing_names_its_class(addresses, db):
    dm = addresses
    dm.root['a3'] = Address('Salem', '01970')
    transaction.commit()
    assert db['address'].find_one({'city': 'Salem'})[PY_PERSISTENT_TYPE] == \
        get_dotted_name(Address)
    assert dm.count(ExtendedAddress) == 2
    assert sorted(a.city for a in dm.find_objects(
        Address, {'zip': {'$lt': '02000'}})) == ['Dresden', 'Maynard', 'Salem']


def test_type_filter():
    class FakeTypes:
        def __init__(self, types):
            self.types = types

        def types_of(self, database, collection):
            return self.types

    class FakeDM:
        default_database = 'db'
        _collection_name_of = MongoDataManager._collection_name_of
        type_registry = metadata.REGISTRY

    dm = FakeDM()
    address, extended = get_dotted_name(Address), get_dotted_name(
        ExtendedAddress)
    dm._types = FakeTypes([address])
    assert query.type_filter(dm, Address) == {}
    dm._types = FakeTypes([address, extended])
    assert query.type_filter(dm, Address) == {}
    assert query.type_filter(dm, ExtendedAddress) == {
        PY_PERSISTENT_TYPE: {'$in': [extended]}}
    dm._types = FakeTypes([extended, address])
    assert query.type_filter(dm, ExtendedAddress) == {
        PY_PERSISTENT_TYPE: {'$in': [extended, None]}}


# -- bad input ------------------------------------------------------------
@pytest.mark.parametrize('cls, words', [
    (Phone, 'persistent class'),
    (Car, '_p_mongo_sub_object'),
    ('Person', 'persistent class'),
])
def test_query_by_a_class_that_has_no_documents(dm, db, cls, words):
    dm.insert(Person('new'))
    with pytest.raises(TypeError, match=words):
        dm.find_objects(cls)
    with pytest.raises(TypeError, match=words):
        dm.find_one_object(cls, {})
    with pytest.raises(TypeError, match=words):
        dm.count(cls)
    assert db[PERSON].count_documents({}) == 0


@pytest.mark.parametrize('kwargs, error, words', [
    ({'filter': 'name'}, TypeError, 'filter must be a dict'),
    ({'limit': -1}, ValueError, 'limit must not be negative'),
    ({'skip': '1'}, TypeError, 'skip must be an integer'),
])
def test_bad_query_arguments_write_nothing(dm, db, kwargs, error, words):
    dm.insert(Person('new'))
    with pytest.raises(error, match=words):
        dm.find_objects(Person, **kwargs)
    assert db[PERSON].count_documents({}) == 0
    with pytest.raises(TypeError, match='filter must be a dict'):
        dm.count(Person, ['name'])
    assert db[PERSON].count_documents({}) == 0


def test_document_of_an_unknown_collection_names_the_collection(dm, db):
    db['address'].insert_one({'city': 'Nowhere', 'zip': '0'})
    with pytest.raises(LookupError, match="'address'"):
        list(dm.find_objects(Address))


def test_dbref_reads_back_from_a_query(dm, db):
    store_people(dm, 'stephan')
    doc = db['persistence_root'].find_one({'name': 'stephan'})
    assert isinstance(doc['ref'], DBRef)
    assert dm.find_one_object(Person, {'_id': doc['ref'].id}) is \
        dm.root['stephan']


@pytest.mark.requires_real_mongodb(
    reason='the stand-in has no server transactions')
def test_flushed_changes_stay_invisible_until_commit(client, dbname):
    if not sessions.deployment_supports_transactions(client):
        pytest.skip('the server is not a replica set or sharded cluster')
    dm = MongoDataManager(client, default_database=dbname,
                          transactions='always')
    dm.root['stephan'] = Person('stephan')
    transaction.commit()
    dm.root['stephan'].name = 'changed'
    assert dm.count(Person, {'name': 'changed'}) == 1
    # Others (no session) do not see the flushed change yet.
    assert client[dbname][PERSON].find_one()['name'] == 'stephan'
    transaction.commit()
    assert client[dbname][PERSON].find_one()['name'] == 'changed'


# -- the round-trip counter (tests/roundtrips.py) ------------------------
def test_roundtrip_counter_counts_per_collection(roundtrips, dbname):
    db = roundtrips.client[dbname]
    db['a'].insert_one({'x': 1})
    db['a'].find_one()
    list(db['a'].find())
    db.get_collection('b').count_documents({})
    db['b'].insert_many([{'y': 1}])
    assert roundtrips.reads == {'a': 2, 'b': 1}, roundtrips
    assert roundtrips.writes == {'a': 1, 'b': 1}, roundtrips
    assert (roundtrips.reads_total, roundtrips.writes_total) == (3, 2)
    roundtrips.reset()
    assert roundtrips.total == 0


def test_roundtrip_counter_reads_command_events():
    from types import SimpleNamespace

    from tests.roundtrips import RoundTrips
    trips = RoundTrips()
    for name, command in [('find', {'find': 'a'}),
                          ('getMore', {'getMore': 1, 'collection': 'a'}),
                          ('aggregate', {'aggregate': 'b'}),
                          ('insert', {'insert': 'a'}),
                          ('findAndModify', {'findAndModify': 'c'}),
                          ('createIndexes', {'createIndexes': 'a'}),
                          ('aggregate', {'aggregate': 1})]:
        trips.started(SimpleNamespace(command_name=name, command=command,
                                      database_name='db'))
    assert trips.reads == {'a': 2, 'b': 1, None: 1}
    assert trips.writes == {'a': 1, 'c': 1}
    assert trips.others == {'createIndexes': 1}
