"""What the library logs (issue 18): ``mongopersist`` and its children.

* ``mongopersist.commit``: one DEBUG line per commit (collections, the
  documents written by kind, root entries, round trips, server
  transaction or not), never one per object;
* ``mongopersist.conflict``: one INFO line per conflict;
* ``mongopersist.transaction``: one INFO line per retry of
  ``Store.transaction()``, and when the last attempt fails too;
* ``mongopersist.undo``: a WARNING for writes an abort took back (others
  could see them), and for each it could not take back.

No line holds a stored value (each test stores a marked one and looks for
it in every record) or a credential.
"""
import logging

import pytest
import transaction

from mongopersist import interfaces, logs, pyramid
from mongopersist.datamanager import MongoDataManager
from mongopersist.store import Store
from tests.model import Address, Counter, Person

SECRET = 'SECRET-VALUE-0451'


def records(caplog, name):
    return [r for r in caplog.records if r.name == name]


def assert_no_secret(caplog):
    for record in caplog.records:
        assert SECRET not in record.getMessage(), record.getMessage()


@pytest.fixture
def counted(roundtrips, dbname):
    """A data manager (with conflict detection) on a counting client."""
    return MongoDataManager(roundtrips.client, default_database=dbname,
                            detect_conflicts=True)


def test_a_commit_is_one_debug_line(counted, roundtrips, dbname, caplog):
    dm = counted
    dm.root['alice'] = alice = Person('alice', address=Address(SECRET, '1'))
    dm.root['counter'] = counter = Counter()
    transaction.commit()
    # Inserted, updated and deleted documents in three collections.
    alice.name = SECRET
    dm.remove(counter)
    for number in range(50):
        dm.insert(Address('city %d' % number, SECRET))
    roundtrips.reset()
    with caplog.at_level(logging.DEBUG, logger='mongopersist'):
        transaction.commit()
    [line] = records(caplog, 'mongopersist.commit')
    assert line.levelno == logging.DEBUG
    assert line.getMessage() == (
        'Committed <MongoDataManager %s>: 52 documents written in %d round '
        'trips, no server transaction: %s.address (50 inserted); '
        '%s.counter (1 deleted); %s.tests.model.Person (1 updated)' % (
            dbname, roundtrips.reads_total + roundtrips.writes_total,
            dbname, dbname, dbname))
    assert_no_secret(caplog)


@pytest.mark.requires_real_mongodb(
    reason='the stand-in counts a bulk write as one call; a server gets a '
           'command per run of writes of one kind')
def test_a_bulk_write_of_several_kinds_is_several_round_trips(
        counted, roundtrips, dbname, caplog):
    dm = counted
    dm.root['alice'] = alice = Person('alice')
    dm.root['bob'] = bob = Person('bob')
    transaction.commit()
    alice.name = 'changed'
    dm.remove(bob)
    dm.insert(Person('carol'))
    roundtrips.reset()
    with caplog.at_level(logging.DEBUG, logger='mongopersist'):
        transaction.commit()
    [line] = records(caplog, 'mongopersist.commit')
    assert ' in %d round trips,' % (
        roundtrips.reads_total + roundtrips.writes_total) in line.getMessage()
    assert roundtrips.writes_total >= 2


def test_root_entries_and_round_trips_of_a_transaction(counted, roundtrips,
                                                       dbname, caplog):
    """Writes made before the commit (a root entry, a flush before a
    query) are part of the transaction's line, round trips included."""
    dm = counted
    dm.root['first'] = Person('first')
    transaction.commit()
    roundtrips.reset()
    with caplog.at_level(logging.DEBUG, logger='mongopersist'):
        dm.root['second'] = Person('second')
        dm.root['first'].name = 'changed'
        dm.flush()
        transaction.commit()
    [line] = records(caplog, 'mongopersist.commit')
    # Reads that are not the commit's (the root entry, validation) are
    # not counted; every write is.
    reads = roundtrips.reads['persistence_root'] + roundtrips.reads[
        'tests.model.Person']
    assert line.getMessage().startswith(
        'Committed <MongoDataManager %s>: 2 documents written and 1 root '
        'entry in %d round trips, no server transaction: ' % (
            dbname, roundtrips.writes_total + roundtrips.reads_total
            - reads))
    assert line.getMessage().endswith(
        '%s.tests.model.Person (1 inserted, 1 updated)' % dbname)


def test_nothing_is_formatted_unless_debug_is_enabled(dm, caplog,
                                                      monkeypatch):
    def fail(*args):
        raise AssertionError('formatted although not logged')
    monkeypatch.setattr(logs, '_by_collection', fail)
    monkeypatch.setattr(logs.limits, 'excerpt', fail)
    with caplog.at_level(logging.INFO, logger='mongopersist'):
        dm.root['p'] = Person('p')
        transaction.commit()
    assert records(caplog, 'mongopersist.commit') == []


def test_a_conflict_is_one_info_line(make_dm, dbname, caplog):
    dm = make_dm(detect_conflicts=True)
    dm.root['p'] = person = Person('p')
    transaction.commit()
    assert person.name == 'p'       # used (validated) in this transaction
    tm = transaction.TransactionManager()
    other = make_dm(detect_conflicts=True, transaction_manager=tm)
    other.load(person._p_oid).name = SECRET
    tm.commit()
    person.name = SECRET + '2'
    with caplog.at_level(logging.INFO, logger='mongopersist'):
        with pytest.raises(interfaces.ConflictError):
            transaction.commit()
    transaction.abort()
    [line] = records(caplog, 'mongopersist.conflict')
    assert line.levelno == logging.INFO
    assert line.getMessage() == (
        'Conflict on %s.tests.model.Person _id=%r (Person): loaded serial '
        '1, stored serial 2' % (dbname, person._p_oid.id))
    assert_no_secret(caplog)


@pytest.fixture
def store(client, dbname):
    return Store(client, dbname)


def test_retries_and_the_last_attempt_are_info_lines(store, retry_waits,
                                                     caplog):
    with store.transaction() as dm:
        dm.root['counter'] = Counter()
    with caplog.at_level(logging.INFO, logger='mongopersist'):
        with pytest.raises(interfaces.ConflictError):
            for attempt in store.transaction(attempts=3):
                with attempt as dm:
                    dm.root['counter'].value += 10
                    with store.transaction() as other:
                        other.root['counter'].value += 1
    lines = [r.getMessage() for r in records(
        caplog, 'mongopersist.transaction')]
    assert [line.split(' in ')[0] for line in lines[:2]] == [
        'Store.transaction(): attempt 1 of 3 ended',
        'Store.transaction(): attempt 2 of 3 ended']
    assert all('ConflictError; running it again' in line
               for line in lines[:2])
    assert lines[2] == ('Store.transaction(): attempt 3 of 3 ended in '
                        'ConflictError too; no attempt left, it is raised')
    assert len(lines) == 3
    assert len(records(caplog, 'mongopersist.conflict')) == 3


def test_a_transaction_that_succeeds_at_once_logs_no_retry(store, caplog):
    with caplog.at_level(logging.DEBUG, logger='mongopersist'):
        for attempt in store.transaction():
            with attempt as dm:
                dm.root['c'] = Counter()
    assert records(caplog, 'mongopersist.transaction') == []
    assert len(records(caplog, 'mongopersist.commit')) == 1


def test_writes_taken_back_by_an_abort_are_a_warning(dm, dbname, caplog):
    dm.root['p'] = person = Person('p')
    transaction.commit()
    person.name = SECRET
    dm.insert(Address(SECRET, '1'))
    dm.flush()
    with caplog.at_level(logging.WARNING, logger='mongopersist'):
        transaction.abort()
    [line] = records(caplog, 'mongopersist.undo')
    assert line.levelno == logging.WARNING
    assert line.getMessage() == (
        'Took back 2 writes of <MongoDataManager %s> (no server '
        'transaction: others could read them until now): %s.address 1, '
        '%s.tests.model.Person 1' % (dbname, dbname, dbname))
    assert_no_secret(caplog)


def test_an_abort_with_nothing_written_logs_nothing(dm, caplog):
    dm.root['p'] = person = Person('p')
    transaction.commit()
    person.name = 'changed, never written'
    with caplog.at_level(logging.DEBUG, logger='mongopersist'):
        transaction.abort()
    assert caplog.records == []


def test_a_write_not_taken_back_is_a_warning(make_dm, dbname, caplog):
    dm = make_dm(detect_conflicts=True)
    dm.root['p'] = person = Person('p')
    transaction.commit()
    person.name = 'flushed'
    dm.flush()
    tm = transaction.TransactionManager()
    other = make_dm(detect_conflicts=True, transaction_manager=tm)
    other.load(person._p_oid).name = SECRET
    tm.commit()
    with caplog.at_level(logging.WARNING, logger='mongopersist'):
        transaction.abort()
    [line] = records(caplog, 'mongopersist.undo')
    assert line.levelno == logging.WARNING
    assert 'was not taken back' in line.getMessage()
    assert_no_secret(caplog)


def test_a_pyramid_retry_is_an_info_line(caplog, monkeypatch):
    from mongopersist import store as store_module
    monkeypatch.setattr(store_module, 'retry_delay', lambda retry: 0)

    class Event:
        environ = {'retry.attempt': 0, 'retry.attempts': 3}
        exception = interfaces.ConflictError()
    with caplog.at_level(logging.INFO, logger='mongopersist'):
        pyramid.wait_before_retry(Event())
    [line] = records(caplog, 'mongopersist.transaction')
    assert line.getMessage() == (
        'Pyramid request: attempt 1 of 3 ended in ConflictError; running '
        'it again in 0.000 s')


def test_every_logger_is_a_child_of_mongopersist():
    for logger in (logs.COMMIT, logs.CONFLICT, logs.TRANSACTION, logs.UNDO):
        assert logger.parent is logging.getLogger('mongopersist')


def test_a_commit_in_a_server_transaction_says_so(caplog):
    """On a (scripted) replica set: the line says the commit was atomic,
    and counts the commands of the transaction, commitTransaction
    included."""
    from tests.scripted_server import ScriptedReplicaSet
    transaction.abort()
    rs = ScriptedReplicaSet()
    try:
        dm = MongoDataManager(rs.client, default_database='db',
                              transactions='always')
        dm.root['a'] = Address('Maynard', '01754')
        dm.insert(Person(SECRET))
        with caplog.at_level(logging.DEBUG, logger='mongopersist'):
            transaction.commit()
        sent = [name for name, doc in rs.commands if 'txnNumber' in doc]
        [line] = records(caplog, 'mongopersist.commit')
        assert line.getMessage() == (
            'Committed <MongoDataManager db>: 2 documents written and 1 '
            'root entry in %d round trips, in a server transaction: '
            'db.address (1 inserted); db.tests.model.Person (1 inserted)'
            % len(sent))
        assert sent[-1] == 'commitTransaction'
        assert_no_secret(caplog)
    finally:
        transaction.abort()
        rs.close()


def test_writes_a_savepoint_rollback_took_back_are_not_committed(
        dm, dbname, caplog):
    dm.root['p'] = person = Person('p')
    transaction.commit()
    with caplog.at_level(logging.DEBUG, logger='mongopersist'):
        person.name = 'kept'                # joins the transaction
        savepoint = transaction.savepoint()
        dm.insert(Address('Maynard', '01754'))
        dm.flush([(dbname, 'address')])
        savepoint.rollback()
        transaction.commit()
    [taken] = records(caplog, 'mongopersist.undo')
    assert taken.levelno == logging.WARNING
    assert taken.getMessage().startswith('Took back 1 write of ')
    assert taken.getMessage().endswith(': %s.address 1' % dbname)
    [line] = records(caplog, 'mongopersist.commit')
    message = line.getMessage()
    assert message.startswith('Committed <MongoDataManager %s>: 1 document '
                              'written in ' % dbname)
    assert message.endswith('%s.tests.model.Person (1 updated)' % dbname)
    assert 'address' not in message
