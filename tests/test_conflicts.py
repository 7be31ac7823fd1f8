"""Optimistic concurrency: ``_py_serial`` and conditional writes."""
import pytest
import transaction
import transaction.interfaces

from mongopersist import commit, conflict, interfaces
from mongopersist.datamanager import MongoDataManager
from tests.model import Car, Counter, Person

PERSON = 'tests.model.Person'


@pytest.fixture
def cdm(client, dbname):
    return MongoDataManager(client, default_database=dbname,
                            detect_conflicts=True)


@pytest.fixture
def other(client, dbname):
    """A second data manager with its own transaction manager."""
    tm = transaction.TransactionManager()
    dm = MongoDataManager(client, default_database=dbname,
                          detect_conflicts=True, transaction_manager=tm)
    yield dm
    tm.abort()


def stored(db, name='stephan'):
    return db[PERSON].find_one({'name': name})


def they_commit_first_and_we_conflict(other, name):
    """``other`` renames the root object 'p' and commits; our commit fails."""
    other.root['p'].name = name
    other.transaction_manager.commit()
    with pytest.raises(interfaces.ConflictError):
        transaction.commit()
    transaction.abort()


def test_seed_walk_through(cdm, db):
    cdm.root['stephan'] = Person('Stephan')
    assert cdm.root['stephan']._p_serial == (1).to_bytes(8, 'big')
    assert db[PERSON].find_one()['_py_serial'] == 1

    cdm.root['stephan'].name = 'Stephan <Unknown>'
    transaction.commit()
    assert db[PERSON].find_one()['_py_serial'] == 2

    cdm.root['stephan'].name = 'Stephan Richter'
    db[PERSON].update_one({'name': 'Stephan <Unknown>'},
                          {'$set': {'name': 'Stephan R.', '_py_serial': 3}})
    with pytest.raises(interfaces.ConflictError) as info:
        transaction.commit()
    transaction.abort()
    error = info.value
    assert isinstance(error, transaction.interfaces.TransientError)
    message = str(error)
    assert message.startswith('database conflict error (oid ')
    assert 'class Person, start serial 2, current serial 3' in message
    assert str(db[PERSON].find_one()['_id']) in message
    assert error.orig_state['name'] == 'Stephan <Unknown>'
    assert error.cur_state['name'] == 'Stephan R.'
    assert error.new_state['name'] == 'Stephan Richter'
    # The other writer's version is untouched.
    doc = db[PERSON].find_one()
    assert (doc['name'], doc['_py_serial']) == ('Stephan R.', 3)
    # After the abort the object shows what is stored.
    assert cdm.root['stephan'].name == 'Stephan R.'


def test_no_detection_means_no_serial_and_last_writer_wins(dm, make_dm, db):
    dm.root['p'] = Person('A')
    transaction.commit()
    assert '_py_serial' not in db[PERSON].find_one()
    dm.root['p'].name = 'B'
    db[PERSON].update_one({}, {'$set': {'name': 'other'}})
    transaction.commit()
    assert db[PERSON].find_one()['name'] == 'B'


def test_concurrent_data_managers(cdm, other, db):
    cdm.root['p'] = Person('A')
    transaction.commit()
    cdm.root['p'].name = 'mine'
    they_commit_first_and_we_conflict(other, 'theirs')
    assert db[PERSON].find_one()['name'] == 'theirs'
    assert db[PERSON].find_one()['_py_serial'] == 2


@pytest.mark.parametrize('change', [
    lambda p, value: setattr(p.car, 'year', value),
    lambda p, value: p.friends.__setitem__('x', value),
    lambda p, value: p.visited.append(value),
], ids=['sub-object', 'PersistentDict', 'PersistentList'])
def test_editing_inside_a_document_checks_and_bumps_its_serial(
        cdm, other, db, change):
    person = Person('A', visited=['USA'])
    person.car = Car('2005', 'Ford', 'Explorer')
    cdm.root['p'] = person
    transaction.commit()
    change(cdm.root['p'], '2004')
    transaction.commit()
    assert stored(db, 'A')['_py_serial'] == 2
    # Another edit conflicts with a concurrent change.
    change(cdm.root['p'], '2003')
    they_commit_first_and_we_conflict(other, 'B')
    assert stored(db, 'B')['_py_serial'] == 3


def test_removing_a_concurrently_changed_object_conflicts(cdm, other, db):
    cdm.root['p'] = Person('A')
    transaction.commit()
    cdm.remove(cdm.root['p'])
    they_commit_first_and_we_conflict(other, 'B')
    assert stored(db, 'B') is not None


def test_lost_race_inside_the_conditional_write(cdm, db, monkeypatch):
    """A write between the serial check and the write is not overwritten."""
    cdm.root['a'] = Person('A')
    cdm.root['b'] = Person('B')
    transaction.commit()
    cdm.root['a'].name = 'A2'
    cdm.root['b'].name = 'B2'
    check = commit.Flush.check

    def racing_check(self):
        result = check(self)
        db[PERSON].update_one({'name': 'B'},
                              {'$set': {'name': 'B-other'},
                               '$inc': {'_py_serial': 1}})
        return result
    monkeypatch.setattr(commit.Flush, 'check', racing_check)
    with pytest.raises(interfaces.ConflictError) as info:
        transaction.commit()
    assert 'start serial 1, current serial 2' in str(info.value)
    transaction.abort()
    # The other writer's change stands, and the abort took back the write
    # of 'A' that went out in the same batch.
    assert stored(db, 'B-other')['_py_serial'] == 2
    # 'A' is back, under a serial never used (A2 was serial 2): whoever
    # loaded A2 meanwhile cannot overwrite a later serial-2 write.
    assert stored(db, 'A')['_py_serial'] == 3
    assert stored(db, 'A2') is None


class MergingCounter(Counter):
    _p_mongo_collection = 'merging_counter'

    def _p_resolveConflict(self, old, committed, new):
        merged = dict(committed)
        merged['value'] = committed['value'] + new['value'] - old['value']
        return merged


def test_resolving_handler_merges(client, dbname, db):
    dm = MongoDataManager(client, default_database=dbname,
                          conflict_handler=conflict.ResolvingSerialConflictHandler)
    dm.root['c'] = MergingCounter(10)
    transaction.commit()
    dm.root['c'].value += 1
    db['merging_counter'].update_one({}, {'$inc': {'value': 5, '_py_serial': 1}})
    transaction.commit()
    doc = db['merging_counter'].find_one()
    assert (doc['value'], doc['_py_serial']) == (16, 3)


def test_resolving_handler_gives_up_without_resolver(client, dbname, db):
    dm = MongoDataManager(client, default_database=dbname,
                          conflict_handler='resolving' and
                          conflict.ResolvingSerialConflictHandler)
    dm.root['c'] = Counter(10)
    transaction.commit()
    dm.root['c'].value += 1
    db['counter'].update_one({}, {'$inc': {'value': 5, '_py_serial': 1}})
    with pytest.raises(interfaces.ConflictError):
        transaction.commit()
    transaction.abort()
    assert db['counter'].find_one()['value'] == 15


def test_attempts_retry_a_conflict(cdm, db):
    cdm.root['c'] = Counter(0)
    transaction.commit()
    interfere = [True]
    for attempt in transaction.manager.attempts(3):
        with attempt:
            counter = cdm.root['c']
            counter.value += 1
            if interfere.pop() if interfere else False:
                db['counter'].update_one(
                    {}, {'$inc': {'value': 100, '_py_serial': 1}})
    doc = db['counter'].find_one()
    assert (doc['value'], doc['_py_serial']) == (101, 3)


def test_should_retry(cdm):
    assert cdm.should_retry(interfaces.ConflictError())
    assert not cdm.should_retry(ValueError('x'))


def test_unchanged_document_is_not_written(cdm, db):
    cdm.root['p'] = Person('A')
    transaction.commit()
    person = cdm.root['p']
    person.name = 'A'          # the same value: marked changed, same document
    transaction.commit()
    assert stored(db, 'A')['_py_serial'] == 1


def _mode_or_skip(client, mode):
    """``mode`` if the deployment can run it, else skip with the reason."""
    from mongopersist import sessions
    if mode == 'always' and not sessions.deployment_supports_transactions(
            client):
        pytest.skip("transactions='always' needs server transactions (a "
                    "replica set or sharded cluster); this deployment has "
                    "none")
    return mode


@pytest.mark.parametrize('mode', ['auto', 'always', 'never'])
def test_two_data_managers_conflict_in_every_transactions_mode(
        client, dbname, db, mode):
    """The second commit of one version is a ConflictError with its
    details, with or without server transactions (in one, the lost
    conditional write aborts it: the version is read outside it)."""
    _mode_or_skip(client, mode)
    ours_tm, theirs_tm = (transaction.TransactionManager(),
                          transaction.TransactionManager())
    ours, theirs = [
        MongoDataManager(client, default_database=dbname,
                         detect_conflicts=True, transactions=mode,
                         transaction_manager=tm)
        for tm in (ours_tm, theirs_tm)]
    ours.root['c'] = Counter()
    ours_tm.commit()
    counter = ours.root['c']
    counter.value += 1
    theirs.root['c'].value += 10
    theirs_tm.commit()
    with pytest.raises(interfaces.ConflictError) as info:
        ours_tm.commit()
    ours_tm.abort()
    error = info.value
    assert error.object is counter
    assert error.oid == counter._p_oid.id
    assert (error.start_serial, error.current_serial) == (1, 2)
    assert error.cur_state['value'] == 10
    assert ours.should_retry(error)
    assert db['counter'].find_one()['value'] == 10


@pytest.mark.requires_real_mongodb(
    reason='a WriteConflict needs two open server transactions')
def test_a_write_conflict_between_open_server_transactions(
        client, dbname, db):
    from mongopersist import sessions
    if not sessions.deployment_supports_transactions(client):
        pytest.skip('MONGODB_URI is a deployment without server '
                    'transactions: no WriteConflict')
    first_tm, second_tm = (transaction.TransactionManager(),
                           transaction.TransactionManager())
    first, second = [
        MongoDataManager(client, default_database=dbname,
                         detect_conflicts=True, transactions='always',
                         transaction_manager=tm)
        for tm in (first_tm, second_tm)]
    first.root['c'] = Counter()
    first_tm.commit()
    counter = second.root['c']
    first.root['c'].value += 1
    first.flush()               # written in its open server transaction
    counter.value += 10
    with pytest.raises(interfaces.ConflictError) as info:
        second_tm.commit()
    second_tm.abort()
    error = info.value
    assert 'WriteConflict' in str(error)
    assert error.object is counter and error.oid == counter._p_oid.id
    # The first has not committed: the committed version is the loaded.
    assert (error.start_serial, error.current_serial) == (1, 1)
    assert second.should_retry(error)
    first_tm.commit()
    assert db['counter'].find_one()['value'] == 1
