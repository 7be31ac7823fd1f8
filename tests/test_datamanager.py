"""The data manager: transactions, the root, ghosts, identity, changes, abort.

Tests that look at MongoDB *before* a commit (the root and ``flush`` write
at once) use ``transactions='never'``: inside a server transaction those
writes are only visible to the transaction itself until it commits.
"""
import bson
import persistent
import pytest
import transaction
import zope.interface.verify
from bson.dbref import DBRef
from bson.objectid import ObjectId
from persistent.interfaces import IPersistentDataManager
from transaction.interfaces import IDataManager

from mongopersist import interfaces
from mongopersist.datamanager import MongoDataManager
from mongopersist.serialize import PersistentDict, PersistentList
from tests.model import (
    Address, Car, Counter, ExtendedAddress, Person, Phone, Simple)

PERSON = 'tests.model.Person'
SIMPLE = 'tests.model.Simple'


class ElsewhereThing(persistent.Persistent):
    """Stored in another database (``_p_mongo_database``, set per test)."""

    def __init__(self, value):
        self.value = value


# -- helpers ------------------------------------------------------------------
@pytest.fixture
def ndm(make_dm):
    """A data manager without server transactions: writes show at once."""
    return make_dm(transactions='never')


@pytest.fixture
def counting(roundtrips, dbname):  # noqa: F811 (fixture)
    """Round trip counts and a data manager whose client is counted."""
    return roundtrips, MongoDataManager(roundtrips.client,
                                        default_database=dbname)


def joined(dm):
    """True if ``dm`` takes part in the current transaction."""
    # transaction has no public way to list a transaction's resources.
    return dm in transaction.get()._resources


def raw(db, obj_or_ref):
    ref = getattr(obj_or_ref, '_p_oid', obj_or_ref)
    return db.client[ref.database][ref.collection].find_one({'_id': ref.id})


def docs(db, collection):
    return list(db[collection].find())


def snapshot(db):
    """Every stored document except the type map (and empty collections)."""
    found = {name: sorted(repr(sorted(doc.items()))
                          for doc in db[name].find())
             for name in db.list_collection_names()
             if name != 'persistence_type_map'}
    return {name: items for name, items in found.items() if items}


def store(dm, name, obj):
    """Put ``obj`` in the root and commit."""
    dm.root[name] = obj
    transaction.commit()
    return obj


# -- interfaces --------------------------------------------------------------
def test_implements_the_transaction_and_persistent_interfaces(dm):
    assert zope.interface.verify.verifyObject(IDataManager, dm)
    assert zope.interface.verify.verifyObject(IPersistentDataManager, dm)
    assert zope.interface.verify.verifyObject(interfaces.IMongoDataManager, dm)


def test_sort_key_is_a_stable_string(dm, make_dm):
    assert isinstance(dm.sortKey(), str)
    assert dm.sortKey() == dm.sortKey()
    assert make_dm().sortKey() != dm.sortKey()


def test_uses_the_given_transaction_manager(client, dbname):
    manager = transaction.TransactionManager()
    dm = MongoDataManager(client, default_database=dbname,
                          transaction_manager=manager)
    dm.insert(Simple(value=1))
    assert dm in manager.get()._resources
    assert not joined(dm)
    transaction.commit()  # the global manager: nothing of ours
    assert client[dbname][SIMPLE].count_documents({}) == 0
    manager.commit()
    assert client[dbname][SIMPLE].count_documents({}) == 1


# -- joining the transaction -----------------------------------------------
def test_joins_on_first_change_only(dm, make_dm):
    store(dm, 'p', Person('Stephan'))
    fresh = make_dm()
    person = fresh.root['p']
    assert person.name == 'Stephan'  # reading does not join
    assert not joined(fresh)
    person.name = 'Stephan Richter'
    assert joined(fresh)
    person.phone = None
    assert transaction.get()._resources.count(fresh) == 1
    transaction.commit()
    assert not joined(fresh)  # a new transaction: not joined until changed
    person.name = 'Roy'
    assert joined(fresh)


@pytest.mark.parametrize('action', ['insert', 'remove', 'root'])
def test_joins_on_insert_remove_and_root_set(dm, make_dm, action):
    store(dm, 'p', Simple(value=1))
    fresh = make_dm()
    assert not joined(fresh)
    if action == 'insert':
        fresh.insert(Simple(value=2))
    elif action == 'remove':
        fresh.remove(fresh.root['p'])
    else:
        fresh.root['q'] = Simple(value=2)
    assert joined(fresh)


# -- the root ---------------------------------------------------------------
def test_root_set_writes_at_once(ndm, db, dbname):
    stephan = Person('Stephan')
    ndm.root['stephan'] = stephan
    # Before any commit: the entry and the object are stored.
    [entry] = docs(db, 'persistence_root')
    assert entry['name'] == 'stephan'
    assert entry['ref'] == DBRef(PERSON, stephan._p_oid.id, dbname)
    assert set(entry) == {'_id', 'name', 'ref'}
    assert raw(db, stephan)['name'] == 'Stephan'
    assert ndm.root['stephan'] is stephan


def test_root_mapping_api(dm, make_dm):
    a, b = Simple(value='a'), Simple(value='b')
    dm.root['a'] = a
    dm.root['b'] = b
    assert 'a' in dm.root and 'b' in dm.root and 'c' not in dm.root
    assert len(dm.root) == 2
    assert sorted(dm.root.keys()) == ['a', 'b']
    assert sorted(dm.root) == ['a', 'b']
    assert dm.root['a'] is a
    assert dm.root.get('c') is None
    with pytest.raises(KeyError):
        dm.root['c']
    del dm.root['a']
    assert 'a' not in dm.root and len(dm.root) == 1
    with pytest.raises(KeyError):
        del dm.root['a']
    transaction.commit()
    fresh = make_dm()
    assert list(fresh.root) == ['b']
    assert fresh.root['b'].value == 'b'


def test_root_set_replaces_an_entry(dm, db, make_dm):
    first, second = Simple(value=1), Simple(value=2)
    dm.root['x'] = first
    dm.root['x'] = second
    transaction.commit()
    assert len(docs(db, 'persistence_root')) == 1
    assert make_dm().root['x'].value == 2
    # The replaced object itself is still stored.
    assert raw(db, first)['value'] == 1


def test_root_set_of_a_stored_object_adds_no_document(dm, db, make_dm):
    person = store(dm, 'p', Person('Stephan'))
    dm.root['alias'] = dm.root['p']
    transaction.commit()
    assert len(docs(db, PERSON)) == 1
    fresh = make_dm()
    assert fresh.root['alias'] is fresh.root['p']
    assert fresh.root['alias']._p_oid == person._p_oid


def test_root_set_writes_pending_changes_of_the_object(ndm, db):
    person = store(ndm, 'p', Person('Stephan'))
    person.name = 'Stephan Richter'
    ndm.root['again'] = person
    assert raw(db, person)['name'] == 'Stephan Richter'


def test_root_refuses_non_persistent_objects(dm, db):
    before = snapshot(db)
    with pytest.raises(TypeError) as info:
        dm.root['x'] = {'not': 'persistent'}
    assert 'persistent' in str(info.value)
    assert 'x' not in dm.root
    transaction.abort()
    assert snapshot(db) == before


def test_root_refuses_objects_of_another_data_manager(dm, make_dm):
    other = make_dm()
    foreign = store(other, 'p', Simple(value=1))
    with pytest.raises(ValueError):
        dm.root['foreign'] = foreign
    assert 'foreign' not in dm.root


def test_root_database_and_collection(client, dbname):
    root_db = dbname + '_root'
    try:
        dm = MongoDataManager(client, default_database=dbname,
                              root_database=root_db, root_collection='entries')
        dm.root['p'] = person = Person('Stephan')
        transaction.commit()
        [entry] = list(client[root_db]['entries'].find())
        assert entry['ref'] == DBRef(PERSON, person._p_oid.id, dbname)
        assert client[dbname][PERSON].count_documents({}) == 1
        fresh = MongoDataManager(client, default_database=dbname,
                                 root_database=root_db,
                                 root_collection='entries')
        assert fresh.root['p'].name == 'Stephan'
    finally:
        transaction.abort()
        client.drop_database(root_db)


@pytest.mark.parametrize('change', ['new', 'replace', 'delete'])
def test_aborted_root_change_is_taken_back(dm, db, make_dm, change):
    store(dm, 'kept', Simple(value='kept'))
    before = snapshot(db)
    if change == 'new':
        dm.root['new'] = Simple(value='new')
    elif change == 'replace':
        dm.root['kept'] = Simple(value='replacement')
    else:
        del dm.root['kept']
    transaction.abort()
    assert snapshot(db) == before
    fresh = make_dm()
    assert list(fresh.root) == ['kept']
    assert fresh.root['kept'].value == 'kept'
    assert list(dm.root) == ['kept']


# -- insert, remove, load, dump, collections ----------------------------------
def test_insert_is_written_at_commit(dm, db, dbname, make_dm):
    obj = Simple(value=1)
    ref = dm.insert(obj)
    assert ref == DBRef(SIMPLE, ref.id, dbname)
    assert isinstance(ref.id, ObjectId)
    assert obj._p_oid == ref and obj._p_jar is dm
    assert docs(db, SIMPLE) == []
    transaction.commit()
    assert raw(db, ref) == {'_id': ref.id, 'value': 1}
    assert make_dm().load(ref).value == 1


def test_insert_with_an_oid(dm, db, make_dm):
    ref = dm.insert(Simple(value=1), oid='my-id')
    assert ref.id == 'my-id'
    transaction.commit()
    assert docs(db, SIMPLE) == [{'_id': 'my-id', 'value': 1}]
    assert make_dm().load(ref).value == 1


def test_insert_refuses_bad_objects(dm, make_dm):
    with pytest.raises(TypeError) as info:
        dm.insert(Phone('+1', '978', '394-5124'))
    assert 'persistent' in str(info.value)
    with pytest.raises(TypeError) as info:
        dm.insert(Car('2005', 'Ford', 'Explorer'))
    assert 'Car' in str(info.value)
    stored = Simple(value=1)
    dm.insert(stored)
    with pytest.raises(ValueError):
        dm.insert(stored)
    with pytest.raises(ValueError):
        make_dm().insert(stored)


def test_remove(dm, db, make_dm):
    keep = store(dm, 'keep', Simple(value='keep'))
    gone = store(dm, 'gone', Simple(value='gone'))
    ref = gone._p_oid
    dm.remove(dm.root['gone'])
    assert raw(db, ref) is not None  # at commit, not before
    transaction.commit()
    assert raw(db, ref) is None
    assert raw(db, keep) is not None
    ghost = make_dm().load(ref)
    with pytest.raises(interfaces.DocumentNotFoundError) as info:
        ghost.value
    assert str(ref.id) in str(info.value)


def test_remove_of_a_new_object_writes_nothing(dm, db):
    obj = Simple(value=1)
    dm.insert(obj)
    dm.remove(obj)
    transaction.commit()
    assert docs(db, SIMPLE) == []


def test_remove_refuses_objects_it_does_not_store(dm, make_dm):
    with pytest.raises(ValueError):
        dm.remove(Simple(value=1))
    other = make_dm()
    with pytest.raises(ValueError):
        dm.remove(store(other, 'x', Simple(value=1)))


def test_load_returns_a_ghost_of_the_right_class(dm, make_dm, dbname):
    person = store(dm, 'p', Person('Stephan'))
    fresh = make_dm()
    ghost = fresh.load(person._p_oid)
    assert type(ghost) is Person
    assert ghost._p_status == 'ghost'
    assert ghost._p_oid == person._p_oid and ghost._p_jar is fresh
    assert ghost.name == 'Stephan'
    assert ghost._p_status == 'saved'
    # A DBRef without a database means the default database.
    assert fresh.load(DBRef(PERSON, person._p_oid.id)) is ghost


def test_dump(dm, db, make_dm):
    new = Simple(value='new')
    ref = dm.dump(new)
    assert ref == new._p_oid and new._p_jar is dm
    assert dm.dump(new) == ref
    transaction.commit()
    assert raw(db, ref)['value'] == 'new'
    loaded = make_dm().load(ref)
    assert loaded._p_jar.dump(loaded) == ref
    with pytest.raises(ValueError):
        dm.dump(loaded)  # belongs to another data manager


def test_get_collection(dm, db, dbname):
    person = store(dm, 'p', Person('Stephan'))
    coll = dm.get_collection(dbname, PERSON)
    assert coll.name == PERSON
    assert coll.database.name == dbname
    assert coll.find_one({'_id': person._p_oid.id})['name'] == 'Stephan'
    other = dm.get_collection(dbname + '_x', 'c')
    assert (other.database.name, other.name) == (dbname + '_x', 'c')


def test_get_collection_of_object(dm, dbname):
    address = store(dm, 'a', Address('Maynard', '01754'))
    coll = dm.get_collection_of_object(address)
    assert (coll.database.name, coll.name) == (dbname, 'address')
    assert coll.find_one({'_id': address._p_oid.id})['city'] == 'Maynard'
    unsaved = dm.get_collection_of_object(Person('Roy'))
    assert (unsaved.database.name, unsaved.name) == (dbname, PERSON)


def test_get_collection_of_a_class(dm, dbname):
    coll = dm.get_collection_of_object(Address)
    assert (coll.database.name, coll.name) == (dbname, 'address')


# -- ghosts and round trips -------------------------------------------------
def test_ghosts_load_lazily_one_find_one_per_activation(dm, dbname, counting):
    address = Address('Maynard', '01754')
    store(dm, 'p', Person('Stephan', address=address,
                          friends={'roy': Person('Roy')}))
    trips, fresh = counting
    person = fresh.root['p']
    assert person._p_status == 'ghost'
    assert trips.reads[PERSON] == 0
    assert person.name == 'Stephan'
    assert trips.reads[PERSON] == 1
    # Referenced objects are ghosts: no read until they are used.
    home = person.address
    roy = person.friends['roy']
    assert home._p_status == 'ghost' and roy._p_status == 'ghost'
    assert trips.reads['address'] == 0
    assert trips.reads[PERSON] == 1
    assert home.city == 'Maynard' and home.zip == '01754'
    assert roy.name == 'Roy'
    assert trips.reads['address'] == 1
    assert trips.reads[PERSON] == 2
    # Using them again reads nothing.
    trips.reset()
    assert (person.name, home.city, roy.name) == ('Stephan', 'Maynard', 'Roy')
    assert trips.reads_total == 0 and trips.writes_total == 0
    # A new transaction: each object is read again once, when used.
    transaction.abort()
    assert person._p_status == 'ghost'
    assert person.name == 'Stephan' and person.visited == []
    assert trips.reads[PERSON] == 1


def test_ghost_in_a_shared_collection_is_read_once(dm, counting):
    store(dm, 'a', Address('Maynard', '01754'))
    store(dm, 'e', ExtendedAddress('Tettau', '01945', 'Germany'))
    trips, fresh = counting
    # The class is in the document: loading the ghost reads it, and the
    # activation uses what was read.
    entry = fresh.root['e']
    assert type(entry) is ExtendedAddress
    assert entry.country == 'Germany'
    assert trips.reads['address'] == 1


def test_commit_without_changes_writes_nothing(dm, counting):
    store(dm, 'p', Person('Stephan', friends={'a': 1}, visited=['x']))
    trips, fresh = counting
    person = fresh.root['p']
    person.name, person.friends['a'], person.visited[0]
    transaction.commit()
    person.name = person.name  # changed, but stored as it is
    transaction.commit()
    assert trips.writes_total == 0


# -- the identity map ---------------------------------------------------------
def test_one_dbref_one_object(dm, make_dm):
    shared = Address('Maynard', '01754')
    stephan = Person('Stephan', address=shared)
    roy = Person('Roy', address=shared, friends={'stephan': stephan})
    stephan.friends = {'roy': roy}
    store(dm, 's', stephan)
    dm.root['r'] = roy
    transaction.commit()
    fresh = make_dm()
    s, r = fresh.root['s'], fresh.root['r']
    assert fresh.root['s'] is s
    assert fresh.load(s._p_oid) is s
    assert s.address is r.address
    assert s.friends['roy'] is r and r.friends['stephan'] is s


def test_identity_holds_across_transactions(dm):
    person = store(dm, 'p', Person('Stephan'))
    transaction.commit()
    assert dm.root['p'] is person
    transaction.abort()
    assert dm.root['p'] is person
    assert person.name == 'Stephan'


# -- change tracking ----------------------------------------------------------
def test_attribute_change_is_written_at_commit(dm, db, make_dm):
    person = store(dm, 'p', Person('Stephan'))
    dm.root['p'].name = 'Stephan Richter'
    assert raw(db, person)['name'] == 'Stephan'
    transaction.commit()
    assert raw(db, person)['name'] == 'Stephan Richter'
    assert make_dm().root['p'].name == 'Stephan Richter'


def test_new_attribute_and_deleted_attribute(dm, db, make_dm):
    obj = store(dm, 'o', Simple(a=1, b=2))
    obj.c = 3
    del obj.a
    transaction.commit()
    doc = raw(db, obj)
    del doc['_id']
    assert doc == {'b': 2, 'c': 3}
    fresh = make_dm().root['o']
    assert not hasattr(fresh, 'a') and (fresh.b, fresh.c) == (2, 3)


def test_explicit_p_changed(dm, db):
    obj = store(dm, 'o', Simple(items=[1]))
    obj.items.data.append(2)  # behind the back of change tracking
    obj._p_changed = True
    transaction.commit()
    assert raw(db, obj)['items'] == [1, 2]


@pytest.mark.parametrize('mutate, expected', [
    (lambda d: d.__setitem__('c', 3), {'a': 1, 'b': [1, 2], 'c': 3}),
    (lambda d: d.__delitem__('a'), {'b': [1, 2]}),
    (lambda d: d.update(a=5), {'a': 5, 'b': [1, 2]}),
    (lambda d: d.setdefault('z', 0), {'a': 1, 'b': [1, 2], 'z': 0}),
    (lambda d: d.pop('a'), {'b': [1, 2]}),
    (lambda d: d.popitem(), {'b': [1, 2]}),
    (lambda d: d.clear(), {}),
    (lambda d: d['b'].append(3), {'a': 1, 'b': [1, 2, 3]}),
], ids=['set', 'del', 'update', 'setdefault', 'pop', 'popitem', 'clear',
        'nested-list'])
def test_persistent_dict_read_from_mongodb(dm, db, make_dm, mutate, expected):
    obj = store(dm, 'o', Simple(data={'a': 1, 'b': [1, 2]}))
    data = make_dm().root['o'].data
    assert type(data) is PersistentDict
    mutate(data)
    transaction.commit()
    assert raw(db, obj)['data'] == expected
    assert make_dm().root['o'].data == expected


@pytest.mark.parametrize('mutate, expected', [
    (lambda l: l.append(4), [1, 2, {'k': 'v'}, 4]),
    (lambda l: l.extend([4, 5]), [1, 2, {'k': 'v'}, 4, 5]),
    (lambda l: l.__setitem__(0, 'x'), ['x', 2, {'k': 'v'}]),
    (lambda l: l.__delitem__(0), [2, {'k': 'v'}]),
    (lambda l: l.insert(0, 0), [0, 1, 2, {'k': 'v'}]),
    (lambda l: l.pop(), [1, 2]),
    (lambda l: l.remove(2), [1, {'k': 'v'}]),
    (lambda l: l.reverse(), [{'k': 'v'}, 2, 1]),
    (lambda l: l.__iadd__([9]), [1, 2, {'k': 'v'}, 9]),
    (lambda l: l[2].__setitem__('k', 'w'), [1, 2, {'k': 'w'}]),
], ids=['append', 'extend', 'setitem', 'delitem', 'insert', 'pop', 'remove',
        'reverse', 'iadd', 'nested-dict'])
def test_persistent_list_read_from_mongodb(dm, db, make_dm, mutate, expected):
    obj = store(dm, 'o', Simple(items=[1, 2, {'k': 'v'}]))
    items = make_dm().root['o'].items
    assert type(items) is PersistentList
    mutate(items)
    transaction.commit()
    assert raw(db, obj)['items'] == expected
    assert make_dm().root['o'].items == expected


def test_dict_with_non_string_keys_tracks_changes(dm, make_dm):
    store(dm, 'o', Simple(data={1: 'one', (2, 3): 'tuple'}))
    data = make_dm().root['o'].data
    assert type(data) is PersistentDict
    data[None] = 'none'
    del data[1]
    transaction.commit()
    assert dict(make_dm().root['o'].data) == {(2, 3): 'tuple', None: 'none'}


def test_sub_object_change_is_written(dm, db, make_dm):
    person = store(dm, 'p', Person('Stephan'))
    dm.root['p'].car = Car('2005', 'Ford', 'Explorer')
    transaction.commit()
    car = dm.root['p'].car
    car.year = '2004'
    transaction.commit()
    assert raw(db, person)['car']['year'] == '2004'
    loaded = make_dm().root['p'].car
    assert (loaded.year, loaded.make, loaded.model) == ('2004', 'Ford',
                                                         'Explorer')
    # Sub-objects read from MongoDB track their changes too.
    loaded.model = 'Escape'
    transaction.commit()
    assert raw(db, person)['car']['model'] == 'Escape'


def test_sub_object_in_a_list_change_is_written(dm, db, make_dm):
    obj = store(dm, 'o', Simple(cars=[Car('2005', 'Ford', 'Explorer')]))
    make_dm().root['o'].cars[0].year = '2010'
    transaction.commit()
    assert raw(db, obj)['cars'][0]['year'] == '2010'


def test_objects_are_saved_after_commit_and_edits_register_again(
        dm, db, make_dm):
    person = store(dm, 'p', Person('Stephan', friends={'a': 1}))
    for number, name in enumerate(['One', 'Two', 'Three']):
        person.name = name
        person.friends[name] = number
        assert person._p_changed
        transaction.commit()
        assert not person._p_changed
        assert person._p_status in ('saved', 'ghost')
        assert raw(db, person)['name'] == name
    assert make_dm().root['p'].friends == {'a': 1, 'One': 0, 'Two': 1,
                                           'Three': 2}


def test_stale_container_from_an_earlier_transaction_is_refused(dm, db):
    person = store(dm, 'p', Person('Stephan', friends={'a': 1}))
    friends = person.friends
    transaction.commit()  # person turns into a ghost; friends is stale
    with pytest.raises(interfaces.MongoPersistError) as info:
        friends['b'] = 2
    assert 'PersistentDict' in str(info.value)
    assert 'Person' in str(info.value)
    transaction.abort()
    assert raw(db, person)['friends'] == {'a': 1}


# -- abort --------------------------------------------------------------------
def _make_changes(dm):
    person = dm.root['p']
    person.name = 'changed'
    person.friends['new'] = 1
    person.visited.append('France')
    person.car.year = '1999'


def test_abort_discards_in_memory_changes(dm, db):
    person = store(dm, 'p', Person('Stephan', friends={'a': 1},
                                   visited=['Germany']))
    person.car = Car('2005', 'Ford', 'Explorer')
    transaction.commit()
    before = snapshot(db)
    _make_changes(dm)
    transaction.abort()
    assert person.name == 'Stephan'
    assert dict(person.friends) == {'a': 1}
    assert list(person.visited) == ['Germany']
    assert person.car.year == '2005'
    assert snapshot(db) == before


def test_aborted_changes_do_not_reach_a_later_commit(dm, db, make_dm):
    person = store(dm, 'p', Person('Stephan', friends={'a': 1}))
    person.car = Car('2005', 'Ford', 'Explorer')
    counter = store(dm, 'c', Counter(1))
    transaction.commit()
    _make_changes(dm)
    transaction.abort()
    counter.value = 2
    transaction.commit()
    fresh = make_dm()
    assert fresh.root['c'].value == 2
    p = fresh.root['p']
    assert (p.name, dict(p.friends), list(p.visited), p.car.year) == (
        'Stephan', {'a': 1}, [], '2005')


def test_abort_forgets_inserted_objects(dm, db):
    before = snapshot(db)
    obj = Simple(ref=Simple(value='referenced'))
    dm.insert(obj)
    transaction.abort()
    assert obj._p_jar is None and obj._p_oid is None
    transaction.commit()
    assert snapshot(db) == before


def test_abort_takes_back_flushed_writes(ndm, db):
    person = store(ndm, 'p', Person('Stephan'))
    before = snapshot(db)
    person.name = 'flushed'
    new = Simple(value='flushed')
    ndm.insert(new)
    ndm.root['entry'] = Simple(value='root')
    ndm.flush()
    assert raw(db, person)['name'] == 'flushed'
    assert raw(db, new)['value'] == 'flushed'
    transaction.abort()
    assert snapshot(db) == before
    assert person.name == 'Stephan'


def test_abort_keeps_removed_documents(dm, db):
    obj = store(dm, 'o', Simple(value=1))
    before = snapshot(db)
    dm.remove(obj)
    transaction.abort()
    transaction.commit()
    assert snapshot(db) == before


def test_abort_restores_a_flushed_removal_of_a_loaded_object(ndm, db):
    obj = store(ndm, 'o', Simple(value=1))
    before = snapshot(db)
    assert obj.value == 1
    ndm.remove(obj)
    ndm.flush()
    assert raw(db, obj) is None
    transaction.abort()
    assert snapshot(db) == before


def test_abort_restores_a_flushed_removal_of_a_ghost(ndm, db, make_dm):
    obj = store(ndm, 'o', Simple(value=1))
    before = snapshot(db)
    fresh = make_dm(transactions='never')
    ghost = fresh.load(obj._p_oid)
    assert ghost._p_status == 'ghost'
    fresh.remove(ghost)
    fresh.flush()
    transaction.abort()
    assert snapshot(db) == before


# -- collection sharing and databases -----------------------------------------
def test_collection_sharing(dm, db, make_dm):
    address = store(dm, 'a', Address('Maynard', '01754'))
    person = store(dm, 'p', Person('Stephan', address=address))
    person.address2 = ExtendedAddress('Tettau', '01945', 'Germany')
    transaction.commit()
    docs_by_city = {d['city']: d for d in docs(db, 'address')}
    assert set(docs_by_city) == {'Maynard', 'Tettau'}
    assert '_py_persistent_type' not in docs_by_city['Maynard']
    assert (docs_by_city['Tettau']['_py_persistent_type']
            == 'tests.model.ExtendedAddress')
    # Once shared, new documents of either class name their class.
    dm.root['a2'] = Address('Boston', '02101')
    transaction.commit()
    assert raw(db, dm.root['a2'])['_py_persistent_type'] == \
        'tests.model.Address'

    fresh = make_dm()
    p = fresh.root['p']
    assert type(p.address) is Address
    assert type(p.address2) is ExtendedAddress
    assert p.address2.country == 'Germany'
    assert (p.address.city, p.address2.city) == ('Maynard', 'Tettau')
    assert type(fresh.root['a2']) is Address


def test_sharing_seen_by_a_data_manager_that_knew_the_collection_before(
        dm, make_dm):
    store(dm, 'a', Address('Maynard', '01754'))
    early = make_dm()
    assert type(early.root['a']) is Address  # knows: one class, 'address'
    transaction.commit()
    store(make_dm(), 'e', ExtendedAddress('Tettau', '01945', 'Germany'))
    loaded = early.root['e']
    assert loaded.country == 'Germany'
    assert type(loaded) is ExtendedAddress


def test_p_mongo_database(client, dbname, make_dm, monkeypatch):
    other = dbname + '_other'
    monkeypatch.setattr(ElsewhereThing, '_p_mongo_database', other,
                        raising=False)
    try:
        dm = make_dm()
        thing = ElsewhereThing('far away')
        store(dm, 'thing', Simple(thing=thing))
        coll = 'tests.test_datamanager.ElsewhereThing'
        assert thing._p_oid.database == other
        assert client[other][coll].find_one()['value'] == 'far away'
        assert client[dbname][coll].count_documents({}) == 0
        assert raw(client[dbname], dm.root['thing'])['thing'] == DBRef(
            coll, thing._p_oid.id, other)
        loaded = make_dm().root['thing'].thing
        assert type(loaded) is ElsewhereThing and loaded.value == 'far away'
        loaded.value = 'changed'
        transaction.commit()
        assert client[other][coll].find_one()['value'] == 'changed'
    finally:
        transaction.abort()
        client.drop_database(other)


def test_bson_values_of_other_types_pass_through(dm, make_dm):
    values = dict(oid=ObjectId(), code=bson.Code('x'), regex=bson.Regex('^a'),
                  binary=bson.Binary(b'\x01', 5),
                  minkey=bson.MinKey(), maxkey=bson.MaxKey())
    store(dm, 'o', Simple(**values))
    loaded = make_dm().root['o']
    for name, value in values.items():
        assert getattr(loaded, name) == value


# -- contract points of IPersistentDataManager and the conflict setting -------
def test_oldstate_raises_key_error_for_a_revision_it_does_not_have(dm):
    # IPersistentDataManager: KeyError for a revision that does not exist
    # (was NotImplementedError).  MongoDB keeps none.
    dm.root['stephan'] = stephan = Person('Stephan')
    transaction.commit()
    with pytest.raises(KeyError):
        dm.oldstate(stephan, b'\0' * 8)


def test_assigning_a_conflict_handler_is_one_setting(make_dm, db):
    from mongopersist import conflict
    dm = make_dm()
    assert not dm.detect_conflicts
    dm.conflict_handler = conflict.SimpleSerialConflictHandler
    assert dm.detect_conflicts
    assert isinstance(dm.conflict_handler,
                      conflict.SimpleSerialConflictHandler)
    assert dm.conflict_handler._jar is dm
    dm.root['stephan'] = Person('Stephan')
    transaction.commit()
    stephan = dm.root['stephan']
    assert stephan.name == 'Stephan'
    # Another process changes the document ...
    other = make_dm(detect_conflicts=True)
    other.root['stephan'].name = 'Steve'
    transaction.commit()
    # ... and the object cache of the first is validated (it was not when
    # only the handler was assigned: detect_conflicts stayed false).
    assert dm.root['stephan'].name == 'Steve'
    assert db[PERSON].find_one()['_py_serial'] == 2
    transaction.abort()
    dm.detect_conflicts = False
    assert isinstance(dm.conflict_handler, conflict.NoCheckConflictHandler)
    dm.detect_conflicts = True
    assert dm.detect_conflicts
