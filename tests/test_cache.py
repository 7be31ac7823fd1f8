"""The object cache: objects survive transactions, and are never stale.

A data manager with conflict detection keeps loaded objects (and the
documents they were loaded from) across transactions; at the start of the
next one it reads the serials of what it holds, one query per collection,
and reloads only what changed.  See ``docs/cache.rst``.
"""
import gc
import threading
import time
import weakref

import pytest
import transaction
from pymongo.errors import AutoReconnect
from transaction.interfaces import NoTransaction

from mongopersist import batching
from mongopersist import cache as cache_module
from mongopersist import interfaces
from mongopersist.datamanager import MongoDataManager
from mongopersist.serialize import PersistentDict
from tests.model import Address, Person, Phone

PERSON = 'tests.model.Person'


@pytest.fixture(params=[True, False], ids=['explicit', 'implicit'])
def tm(request):
    """A transaction manager; ``explicit`` ones need ``begin()``."""
    manager = transaction.TransactionManager(explicit=request.param)
    yield manager
    try:
        manager.abort()
    except NoTransaction:
        pass        # explicit, and the test ended its transaction


def begin(tm):
    """Start a transaction: ``begin()`` where it is needed, else nothing
    (an implicit transaction starts when the last one ended)."""
    if tm.explicit:
        tm.begin()


def people_dm(client, dbname, tm, count=3, **kwargs):
    """A data manager with ``count`` committed people under root 'p<i>'."""
    kwargs.setdefault('detect_conflicts', True)
    dm = MongoDataManager(client, default_database=dbname,
                          transaction_manager=tm, **kwargs)
    begin(tm)
    for i in range(count):
        dm.root['p%d' % i] = Person('name%d' % i, visited=['x'])
    tm.commit()
    return dm


def load_people(dm, tm, count=3):
    begin(tm)
    people = [dm.root['p%d' % i] for i in range(count)]
    for person in people:
        person.name
    tm.commit()
    return people


def write_outside(db, name, new_name, bump=True):
    """Rename a person with PyMongo, bumping ``_py_serial`` (or not)."""
    update = {'$set': {'name': new_name}}
    if bump:
        update['$inc'] = {'_py_serial': 1}
    db[PERSON].update_one({'name': name}, update)


def own_dm(client, dbname, explicit=False, **kwargs):
    """A data manager with a transaction manager of its own: ``(dm, tm)``."""
    tm = transaction.TransactionManager(explicit=explicit)
    kwargs.setdefault('detect_conflicts', True)
    return MongoDataManager(client, default_database=dbname,
                            transaction_manager=tm, **kwargs), tm


def a_and_b(client, dbname, **kwargs):
    """``own_dm`` with people 'a' and 'b' committed under those names."""
    dm, tm = own_dm(client, dbname, **kwargs)
    dm.root['a'] = Person('a')
    dm.root['b'] = Person('b')
    tm.commit()
    return dm, tm


@pytest.fixture
def held(client, dbname, tm):
    """A data manager with conflict detection and three committed people
    it loaded in a transaction that ended: ``(dm, people)``."""
    dm = people_dm(client, dbname, tm)
    return dm, load_people(dm, tm)


def reads_of(roundtrips, collection=PERSON):
    return roundtrips.reads[collection]


# -- warm transactions -----------------------------------------------------
def test_held_objects_are_read_with_one_query(roundtrips, dbname, tm):
    dm = people_dm(roundtrips.client, dbname, tm)
    people = load_people(dm, tm)
    roundtrips.reset()
    begin(tm)
    assert [p.name for p in people] == ['name0', 'name1', 'name2']
    assert [p.visited[0] for p in people] == ['x', 'x', 'x']
    # One read of serials for the collection; none per object.
    assert reads_of(roundtrips) == 1
    assert roundtrips.reads_total == 1
    tm.commit()


def test_explicit_transactions_keep_objects_loaded(roundtrips, dbname):
    tm = transaction.TransactionManager(explicit=True)
    dm = people_dm(roundtrips.client, dbname, tm)
    people = load_people(dm, tm)
    assert all(p._p_status == 'saved' for p in people)
    tm.begin()
    # Validated by begin(): still loaded, nothing to reload.
    assert all(p._p_status == 'saved' for p in people)
    tm.abort()


def test_implicit_transactions_reload_from_validated_documents(
        roundtrips, dbname):
    tm = transaction.TransactionManager()
    dm = people_dm(roundtrips.client, dbname, tm)
    people = load_people(dm, tm)
    # Nothing would tell the data manager when the next transaction
    # starts: held objects are ghosts, so that reading them asks it.
    assert all(p._p_status == 'ghost' for p in people)
    roundtrips.reset()
    assert people[0].name == 'name0'
    assert roundtrips.reads_total == 1      # the serials, once
    assert people[2].name == 'name2'
    assert roundtrips.reads_total == 1


def test_a_commit_of_another_data_manager_is_seen(held, client, dbname, tm):
    dm, people = held
    other, other_tm = own_dm(client, dbname)
    other.root['p1'].name = 'changed'
    other_tm.commit()
    begin(tm)
    assert [p.name for p in people] == ['name0', 'changed', 'name2']
    tm.commit()


def test_a_write_that_bumps_the_serial_is_seen(held, db, tm):
    dm, people = held
    write_outside(db, 'name2', 'outside')
    begin(tm)
    assert people[2].name == 'outside'
    tm.commit()


def test_a_write_that_keeps_the_serial_is_not_seen(held, db, tm):
    """The documented limit: the cache knows changes by their serial."""
    dm, people = held
    write_outside(db, 'name2', 'outside', bump=False)
    begin(tm)
    assert people[2].name == 'name2'
    # Its write is conditional on the serial: it overwrites (the serial
    # says nobody else wrote).
    tm.commit()


def test_a_removed_document_is_not_served(held, db, tm):
    dm, people = held
    db[PERSON].delete_one({'name': 'name1'})
    begin(tm)
    assert people[0].name == 'name0'
    with pytest.raises(interfaces.DocumentNotFoundError):
        people[1].name
    tm.abort()


def test_own_commit_needs_no_reload(roundtrips, dbname, tm):
    dm = people_dm(roundtrips.client, dbname, tm)
    people = load_people(dm, tm)
    begin(tm)
    people[0].name = 'mine'
    people[0].visited.append('y')
    tm.commit()
    roundtrips.reset()
    begin(tm)
    assert people[0].name == 'mine'
    assert list(people[0].visited) == ['x', 'y']
    assert roundtrips.reads_total == 1
    tm.commit()


def test_changes_of_an_aborted_transaction_are_gone(held, tm):
    dm, people = held
    begin(tm)
    people[0].name = 'aborted'
    people[1].visited.append('aborted')
    tm.abort()
    begin(tm)
    assert people[0].name == 'name0'
    assert list(people[1].visited) == ['x']
    tm.commit()


def test_flushed_and_aborted_writes_are_reloaded(held, db, tm):
    dm, people = held
    begin(tm)
    people[0].name = 'flushed'
    dm.flush()
    assert db[PERSON].find_one({'_id': people[0]._p_oid.id})['name'] == \
        'flushed'
    tm.abort()
    begin(tm)
    assert people[0].name == 'name0'
    # Put back under a new serial, which the object now has.
    stored = db[PERSON].find_one({'_id': people[0]._p_oid.id})
    assert people[0]._p_serial == stored['_py_serial'].to_bytes(8, 'big')
    people[0].name = 'again'
    tm.commit()
    assert db[PERSON].find_one({'_id': people[0]._p_oid.id})['name'] == \
        'again'


def test_savepoint_rollback_then_commit(held, db, tm):
    dm, people = held
    begin(tm)
    people[0].name = 'kept'
    savepoint = tm.savepoint()
    people[0].name = 'rolled back'
    people[1].name = 'rolled back'
    dm.flush()
    savepoint.rollback()
    tm.commit()
    begin(tm)
    assert [p.name for p in people] == ['kept', 'name1', 'name2']
    names = sorted(doc['name'] for doc in db[PERSON].find())
    assert names == ['kept', 'name1', 'name2']
    tm.commit()


def test_sub_objects_survive_and_stay_tracked(client, dbname, db, tm):
    dm = people_dm(client, dbname, tm, count=1)
    begin(tm)
    person = dm.root['p0']
    person.friends = PersistentDict({'a': 1})
    tm.commit()
    begin(tm)
    person.friends['b'] = 2
    tm.commit()
    assert db[PERSON].find_one()['friends'] == {'a': 1, 'b': 2}
    begin(tm)
    person.friends['c'] = 3
    tm.abort()
    begin(tm)
    assert dict(person.friends) == {'a': 1, 'b': 2}
    tm.commit()


def test_a_new_objects_plain_list_is_tracked_in_later_transactions(
        client, dbname, db, tm):
    dm = MongoDataManager(client, default_database=dbname,
                          detect_conflicts=True, transaction_manager=tm)
    begin(tm)
    person = Person('new', visited=['a'])
    dm.root['p'] = person
    tm.commit()
    begin(tm)
    person.visited.append('b')      # a PersistentList once reloaded
    tm.commit()
    assert db[PERSON].find_one()['visited'] == ['a', 'b']


def test_without_conflict_detection_everything_reloads(roundtrips, dbname,
                                                        tm):
    dm = people_dm(roundtrips.client, dbname, tm, detect_conflicts=False)
    people = load_people(dm, tm)
    assert all(p._p_status == 'ghost' for p in people)
    roundtrips.reset()
    begin(tm)
    assert [p.name for p in people] == ['name0', 'name1', 'name2']
    assert reads_of(roundtrips) == 3
    tm.commit()


def test_documents_without_serials_reload(roundtrips, dbname, db, tm):
    dm = people_dm(roundtrips.client, dbname, tm)
    people = load_people(dm, tm)
    db[PERSON].update_many({}, {'$unset': {'_py_serial': ''}})
    begin(tm)
    assert [p.name for p in people] == ['name0', 'name1', 'name2']
    tm.commit()
    # Loaded without a serial: validation cannot tell, so they reload.
    roundtrips.reset()
    begin(tm)
    assert [p.name for p in people] == ['name0', 'name1', 'name2']
    assert reads_of(roundtrips) == 3
    tm.commit()


def test_a_writer_without_conflict_detection_bumps_the_serial(
        held, client, dbname, db, tm):
    dm, people = held
    other_tm = transaction.TransactionManager()
    other = MongoDataManager(client, default_database=dbname,
                             transaction_manager=other_tm)
    other.root['p0'].name = 'last writer'
    other_tm.commit()
    assert db[PERSON].find_one({'name': 'last writer'})['_py_serial'] == 2
    begin(tm)
    assert people[0].name == 'last writer'
    tm.commit()


@pytest.mark.parametrize('writes', [1, 2], ids=['alone', 'in-bulk'])
def test_two_writers_without_conflict_detection_never_share_a_serial(
        held, client, dbname, db, tm, writes):
    # Both load serial 1 and write, last writer wins.  Were both writes
    # stamped "loaded + 1", the second would carry the serial of the first
    # and a cache holding the first would keep serving it as current.
    dm, people = held
    writers = []
    for n in range(2):
        other_tm = transaction.TransactionManager()
        other = MongoDataManager(client, default_database=dbname,
                                 transaction_manager=other_tm)
        for i in range(writes):
            other.root['p%d' % i].name
        writers.append((other, other_tm))
    for n, (other, other_tm) in enumerate(writers):
        for i in range(writes):
            other.root['p%d' % i].name = 'writer %d' % n
        other_tm.commit()
        if n == 0:
            begin(tm)
            assert people[0].name == 'writer 0'
            tm.commit()
    assert db[PERSON].find_one({'_id': people[0]._p_oid.id})[
        '_py_serial'] == 3
    begin(tm)
    assert people[0].name == 'writer 1'
    tm.commit()


def test_validation_reads_in_chunks(roundtrips, dbname, tm, monkeypatch):
    monkeypatch.setattr(cache_module, 'VALIDATION_CHUNK', 2)
    dm = people_dm(roundtrips.client, dbname, tm, count=5)
    people = load_people(dm, tm, count=5)
    roundtrips.reset()
    begin(tm)
    assert [p.name for p in people][-1] == 'name4'
    assert reads_of(roundtrips) == 3
    tm.commit()


def test_a_failed_validation_reloads_everything(held, db, tm, monkeypatch):
    dm, people = held
    write_outside(db, 'name0', 'outside')

    def unreachable(*args):
        raise AutoReconnect('down')
    monkeypatch.setattr(dm._validator, 'read_serials', unreachable)
    begin(tm)
    assert people[0].name == 'outside'
    tm.commit()


def test_queries_return_validated_objects(held, db, tm):
    dm, people = held
    write_outside(db, 'name0', 'outside')
    begin(tm)
    found = {p.name: p for p in dm.find_objects(Person)}
    assert sorted(found) == ['name1', 'name2', 'outside']
    assert found['outside'] is people[0]
    tm.commit()


# -- the strong cache ------------------------------------------------------
def test_one_read_per_document_in_a_cold_walk(roundtrips, dbname,
                                              monkeypatch):
    # Pages of one result: no two people's addresses load together
    # (mongopersist.batching), so only the strong cache keeps them.
    monkeypatch.setattr(batching, 'PAGE_SIZES', (1,))
    dm = MongoDataManager(roundtrips.client, default_database=dbname)
    addresses = [Address('city%d' % i, str(i)) for i in range(5)]
    for i in range(30):
        dm.insert(Person('p%d' % i, address=addresses[i % 5]))
    transaction.commit()
    dm = MongoDataManager(roundtrips.client, default_database=dbname)
    roundtrips.reset()
    cities = [person.address.city for person in dm.find_objects(Person)]
    assert len(cities) == 30
    assert roundtrips.reads['address'] == 5
    transaction.abort()


def test_cache_size_keeps_recently_used_objects(client, dbname):
    tm = transaction.TransactionManager()
    dm = MongoDataManager(client, default_database=dbname,
                          detect_conflicts=True, transaction_manager=tm,
                          cache_size=2)
    assert dm.cache_size == 2
    for i in range(4):
        dm.root['p%d' % i] = Person('p%d' % i)
    tm.commit()
    refs = []
    for i in range(4):
        obj = dm.root['p%d' % i]
        obj.name
        refs.append(weakref.ref(obj))
    del obj
    gc.collect()
    # Used in the transaction: all alive until it ends.
    assert all(ref() is not None for ref in refs)
    tm.commit()
    gc.collect()
    assert [ref() is not None for ref in refs] == [False, False, True, True]


def test_cache_size_zero_keeps_only_what_the_application_holds(client,
                                                                dbname):
    dm, tm = a_and_b(client, dbname, cache_size=0)
    held = dm.root['a']
    other = weakref.ref(dm.root['b'])
    tm.commit()
    gc.collect()
    assert other() is None
    assert dm.root['a'] is held


def test_cache_size_must_be_a_count(client, dbname):
    with pytest.raises(ValueError):
        MongoDataManager(client, default_database=dbname, cache_size=-1)


# -- two data managers in two threads ------------------------------------
@pytest.mark.parametrize('explicit', [True, False],
                         ids=['explicit', 'implicit'])
def test_never_older_than_the_last_commit_seen_before_begin(
        client, dbname, explicit):
    """Thread A commits new values; thread B, in each of its transactions,
    reads the held object: never a value older than A's last commit that
    finished before B's transaction began."""
    setup_tm = transaction.TransactionManager()
    setup = MongoDataManager(client, default_database=dbname,
                             detect_conflicts=True,
                             transaction_manager=setup_tm)
    setup.root['counter'] = Person(0)
    setup_tm.commit()
    committed = [0]
    errors = []
    done = threading.Event()

    def writer():
        dm_a, tm_a = own_dm(client, dbname)
        try:
            for value in range(1, 40):
                dm_a.root['counter'].name = value
                tm_a.commit()
                committed[0] = value
        except Exception as error:     # reported by the main thread
            errors.append(error)
        finally:
            done.set()

    def reader():
        dm_b, tm_b = own_dm(client, dbname, explicit)
        try:
            if explicit:
                tm_b.begin()
            counter = dm_b.root['counter']
            tm_b.commit()
            seen = 0
            deadline = time.monotonic() + 60
            while ((not done.is_set() or seen < 39) and not errors
                   and time.monotonic() < deadline):
                before = committed[0]
                if explicit:
                    tm_b.begin()
                value = counter.name
                assert value >= before, (value, before)
                assert value >= seen
                seen = value
                tm_b.commit()
            assert seen == 39 or errors, seen
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=reader, daemon=True),
               threading.Thread(target=writer, daemon=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(70)
    assert not errors, errors
    assert committed[0] == 39


@pytest.mark.parametrize('change', [
    lambda person: setattr(person, 'name', 'on stale state'),
    lambda person: person.visited.append('on stale state'),
], ids=['attribute', 'sub-object'])
def test_changing_an_object_found_stale_is_a_conflict(client, dbname, db,
                                                      change):
    """Validation pending (the data manager's transaction was rolled back
    inside the ``transaction``) when a held object is changed: if it is
    stale, the change is refused rather than made on the old state, with
    the error a conflict raises (the transaction can be retried), also
    when the change is made to a sub-object just taken from it."""
    tm = transaction.TransactionManager(explicit=True)
    dm = people_dm(client, dbname, tm)
    people = load_people(dm, tm)
    tm.begin()
    savepoint = tm.savepoint()      # before the data manager joined
    people[1].name = 'joined'
    savepoint.rollback()            # aborts the data manager's part
    write_outside(db, 'name0', 'outside')
    with pytest.raises(interfaces.ConflictError):
        change(people[0])
    assert people[0].name == 'outside'
    assert list(people[0].visited) == ['x']
    tm.abort()


def test_objects_marked_changed_by_hand(client, dbname, db, tm):
    """A value object changed in place, then ``_p_changed = True``:
    committed, the change is stored and kept; aborted, it is gone."""
    dm = people_dm(client, dbname, tm, count=1)
    begin(tm)
    person = dm.root['p0']
    person.phone = Phone('+1', '555', '1')
    tm.commit()
    begin(tm)
    person.phone.number = '2'
    person._p_changed = True
    tm.commit()
    assert db[PERSON].find_one()['phone']['number'] == '2'
    begin(tm)
    assert person.phone.number == '2'
    person.phone.number = '3'
    person._p_changed = True
    tm.abort()
    begin(tm)
    assert person.phone.number == '2'
    tm.commit()


def test_cache_size_counts_loaded_objects_only(client, dbname):
    dm, tm = a_and_b(client, dbname, cache_size=1)
    loaded = dm.root['a']
    loaded.name
    ghost = weakref.ref(dm.root['b'])      # used, never loaded
    loaded = weakref.ref(loaded)
    tm.commit()
    gc.collect()
    assert loaded() is not None and ghost() is None


@pytest.mark.parametrize('detect', [True, False], ids=['detect', 'no-detect'])
def test_an_object_inserted_and_removed_then_aborted_is_not_served(
        client, dbname, detect):
    """Taken back with its insert: its reference no longer loads it."""
    dm, tm = own_dm(client, dbname, detect_conflicts=detect)
    person = Person('x')
    dm.root['p'] = person           # written at once
    ref = person._p_oid
    dm.remove(person)
    dm.flush()
    tm.abort()
    assert person._p_jar is None and person._p_oid is None
    assert person.name == 'x'
    loaded = dm.load(ref)
    assert loaded is not person and loaded._p_oid == ref


def test_savepoint_rollback_of_an_object_inserted_and_removed_since(
        client, dbname):
    dm, tm = own_dm(client, dbname)
    savepoint = tm.savepoint()
    dm.root['q'] = Person('y')
    person = dm.root['q']
    ref = person._p_oid
    dm.remove(person)
    dm.flush()
    savepoint.rollback()
    assert person._p_jar is None
    assert dm.load(ref) is not person
    tm.abort()


# -- what the cache keeps of objects gone -------------------------------------
def test_documents_of_objects_gone_are_dropped(client, dbname):
    """Documents of objects nobody holds any more go, also in collections
    never validated again: once more of the objects put in the cache are
    gone than alive (and at least ``sweep_after``), a transaction's end
    drops them, and their references."""
    dm, tm = own_dm(client, dbname, cache_size=0)
    dm._cache.sweep_after = 5
    for i in range(10):
        dm.insert(Person('p%d' % i))
    tm.commit()
    people = list(dm.find_objects(Person))
    assert [p.name for p in people] == ['p%d' % i for i in range(10)]
    tm.commit()
    held_people = (dbname, PERSON)
    assert len([ref for ref in dm._cache.docs
                if (ref.database, ref.collection) == held_people]) == 10
    del people
    gc.collect()
    # Transactions using another collection only: nothing validates the
    # people again.
    for i in range(10):
        dm.insert(Address('city%d' % i, str(i)))
        tm.commit()
    assert [ref for ref in dm._cache.docs
            if (ref.database, ref.collection) == held_people] == []
    assert held_people not in dm._cache._held
    # The identity map (weak references in a plain dict) forgets them too.
    assert [ref for ref in dm._cache._objects
            if (ref.database, ref.collection) == held_people] == []


def test_the_identity_map_holds_objects_weakly(client, dbname):
    dm, tm = own_dm(client, dbname, cache_size=0)
    dm.root['p'] = Person('p')
    tm.commit()
    person = dm.root['p']
    ref = person._p_oid
    assert dm._cache.get(ref) is person and ref in dm._cache
    assert dm._cache.items() == [(ref, person)] and len(dm._cache) == 1
    tm.commit()
    del person
    gc.collect()
    assert dm._cache.get(ref) is None and ref not in dm._cache
    assert dm._cache.items() == [] and len(dm._cache) == 0
    with pytest.raises(KeyError):
        dm._cache[ref]
    assert dm._cache.pop(ref, 'gone') == 'gone'
    # Loaded again: a new object, the only one for its document.
    again = dm.root['p']
    assert again.name == 'p' and dm._cache.get(ref) is again

