"""Pushed invalidations (``mongopersist.invalidation``).

The stand-in has no change streams: the watcher is tested at the wire
level against a scripted replica-set member (mockupdb) that answers the
``aggregate`` opening a change stream and its ``getMore`` s with scripted
events and faults; how the data manager applies what a watcher reports is
tested on the stand-in with a scripted watcher; a real-server test runs
with ``MONGODB_URI``.
"""
import collections
import threading
import time
import uuid

import pymongo
import pytest
import transaction
from bson.int64 import Int64
from transaction.interfaces import NoTransaction

from mongopersist import invalidation, metadata, testing
from mongopersist.datamanager import MongoDataManager
from tests import capabilities
from tests.model import Person
from tests.scripted_server import ScriptedReplicaSet

PERSON = 'tests.model.Person'


class ChangeStreamServer(ScriptedReplicaSet):
    """Answers change streams with scripted batches of events."""

    def __init__(self):
        super().__init__()
        self.batches = collections.deque()
        self.cursor_ids = iter(range(100, 10000))
        self.tokens = iter(range(1, 100000))
        self.lock = threading.Lock()

    def script(self, *events, fault=None):
        """The next ``getMore`` answers ``events`` (or ``fault``)."""
        with self.lock:
            self.batches.append((list(events), fault))

    def token(self):
        return {'_data': 'T%06d' % next(self.tokens)}

    def _reply_aggregate(self, request):
        assert '$changeStream' in request.doc['pipeline'][0]
        return request.ok(cursor={
            'id': Int64(next(self.cursor_ids)),
            'ns': '%s.$cmd.aggregate' % request.doc['$db'],
            'firstBatch': [], 'postBatchResumeToken': self.token()})

    def _reply_getMore(self, request):
        with self.lock:
            events, fault = (self.batches.popleft() if self.batches
                             else ([], None))
        if fault is not None:
            return fault(request)
        if not events:
            time.sleep(0.01)
        batch = []
        for event in events:
            event = dict(event)
            event['_id'] = self.token()
            batch.append(event)
        return request.ok(cursor={
            'id': request.doc['getMore'],
            'ns': '%s.%s' % (request.doc['$db'], request.doc['collection']),
            'nextBatch': batch, 'postBatchResumeToken': self.token()})

    def _reply_killCursors(self, request):
        return request.ok(cursorsKilled=[request.doc['cursors'][0]])


@pytest.fixture
def server():
    scripted = ChangeStreamServer()
    yield scripted
    scripted.close()


@pytest.fixture
def watcher(server):
    watching = invalidation.ChangeWatcher(
        server.client, lambda: {'app'}, max_await_ms=20, retry_seconds=0.05)
    assert watching.wait_open()
    yield watching
    watching.close()


def update(doc_id, serial, coll='people'):
    return {'operationType': 'update', 'ns': {'db': 'app', 'coll': coll},
            'documentKey': {'_id': doc_id},
            'updateDescription': {'updatedFields': {'_py_serial': serial}}}


def wait_for(poll, timeout=10.0):
    """Call ``poll()`` until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = poll()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError('timed out')


def test_the_stream_is_projected_to_what_identifies_a_change(server,
                                                             watcher):
    [aggregate] = server.docs('aggregate')
    assert aggregate['$db'] == 'app'
    project = aggregate['pipeline'][-1]['$project']
    assert project['documentKey'] == 1 and project['ns'] == 1
    assert 'fullDocument' not in project       # only its serial
    assert project['fullDocument._py_serial'] == 1


def test_changes_are_reported_once_the_stream_is_open(server, watcher):
    # Opened just now: what changed before must be validated.
    assert watcher.changes() is None
    server.script(update(1, 5), {
        'operationType': 'delete', 'ns': {'db': 'app', 'coll': 'people'},
        'documentKey': {'_id': 2}})
    changes = wait_for(watcher.changes)
    assert changes == [(metadata.OID('people', 1, 'app'), 5),
                       (metadata.OID('people', 2, 'app'), None)]
    assert watcher.changes() == []


@pytest.mark.parametrize('event', [
    {'operationType': 'invalidate'},
    {'operationType': 'drop', 'ns': {'db': 'app', 'coll': 'people'}},
    {'operationType': 'dropDatabase', 'ns': {'db': 'app'}},
], ids=['invalidate', 'drop', 'dropDatabase'])
def test_events_that_lose_track_make_the_cache_validate(server, watcher,
                                                        event):
    assert watcher.changes() is None
    server.script(event)
    wait_for(lambda: watcher.changes() is None)
    if event['operationType'] == 'invalidate':
        # The stream is over: a new one is opened.
        wait_for(lambda: len(server.docs('aggregate')) == 2)


def test_a_failed_stream_is_reopened_and_the_cache_validated(server,
                                                             watcher):
    assert watcher.changes() is None
    server.script(fault=lambda r: r.command_err(
        code=280, errmsg='ChangeStreamFatalError'))
    wait_for(lambda: len(server.docs('aggregate')) == 2)
    # Until it is open again, and once after, the answer is "validate".
    wait_for(lambda: watcher.changes() is None)
    assert watcher.wait_open()
    server.script(update(3, 2))
    wait_for(lambda: watcher.changes() == [
        (metadata.OID('people', 3, 'app'), 2)])


class StandaloneServer(ScriptedReplicaSet):
    """A standalone server (no ``setName``): it refuses change streams as
    MongoDB does, with code 40573."""

    def __init__(self):
        super().__init__()
        del self.hello['setName']
        self.standalone = pymongo.MongoClient(
            self.server.uri, directConnection=True,
            serverSelectionTimeoutMS=3000)

    def close(self):
        self.standalone.close()
        super().close()

    def _reply_aggregate(self, request):
        return request.command_err(
            code=40573, errmsg='The $changeStream stage is only supported '
            'on replica sets')


def test_a_standalone_server_is_not_asked_again_and_again(caplog):
    """A standalone server has no change streams: the watcher gives up
    after the first refusal (one warning, not one a second forever) and
    the data manager validates by serials."""
    server = StandaloneServer()
    watcher = invalidation.ChangeWatcher(
        server.standalone, lambda: {'app'}, max_await_ms=20,
        retry_seconds=0.01)
    try:
        thread = watcher._threads['app']
        thread.join(10)
        assert not thread.is_alive()
        assert len(server.docs('aggregate')) == 1
        assert watcher.changes() is None and watcher.changes() is None
        assert len(server.docs('aggregate')) == 1
        [warning] = [r.getMessage() for r in caplog.records
                     if r.name == 'mongopersist']
        assert 'app' in warning and 'no change streams' in warning
    finally:
        watcher.close()
        server.close()


# -- the data manager applies what the watcher reports --------------------
class ScriptedWatcher:
    """Reports scripted changes (``None``: validate)."""

    def __init__(self):
        self.reports = []

    def changes(self):
        return self.reports.pop(0) if self.reports else []

    def close(self):
        pass


@pytest.fixture
def watched(roundtrips, dbname):
    tm = transaction.TransactionManager(explicit=True)
    dm = MongoDataManager(roundtrips.client, default_database=dbname,
                          detect_conflicts=True, transaction_manager=tm)
    dm._watcher = ScriptedWatcher()
    with tm:
        dm.root['ann'] = Person('Ann')
        dm.root['bob'] = Person('Bob')
    tm.begin()
    people = dm.root['ann'], dm.root['bob']
    [p.name for p in people]
    tm.commit()
    yield dm, tm, people
    try:
        tm.abort()
    except NoTransaction:
        pass        # the test ended its transaction


def test_pushed_changes_are_applied_without_a_query(watched, roundtrips, db):
    dm, tm, (ann, bob) = watched
    db[PERSON].update_one({'name': 'Bob'}, {'$set': {'name': 'Robert'},
                                            '$inc': {'_py_serial': 1}})
    dm._watcher.reports = [[(bob._p_oid, 2)]]
    roundtrips.reset()
    tm.begin()
    assert (ann._p_status, bob._p_status) == ('saved', 'ghost')
    assert roundtrips.reads_total == 0
    assert bob.name == 'Robert'
    tm.commit()


def test_own_writes_reported_back_are_kept(watched, roundtrips):
    dm, tm, (ann, bob) = watched
    tm.begin()
    ann.name = 'Anne'
    tm.commit()
    serial = int.from_bytes(ann._p_serial, 'big')
    dm._watcher.reports = [[(ann._p_oid, serial)]]
    roundtrips.reset()
    tm.begin()
    assert ann._p_status == 'saved' and ann.name == 'Anne'
    assert roundtrips.reads_total == 0
    tm.commit()


def test_a_watcher_that_lost_track_means_validation(watched, roundtrips, db):
    dm, tm, (ann, bob) = watched
    db[PERSON].update_one({'name': 'Ann'}, {'$set': {'name': 'Anne'},
                                            '$inc': {'_py_serial': 1}})
    dm._watcher.reports = [None]
    roundtrips.reset()
    tm.begin()
    assert roundtrips.reads[PERSON] == 1       # the serials
    assert ann.name == 'Anne' and bob._p_status == 'saved'
    tm.commit()


def test_watching_needs_conflict_detection(client, dbname):
    with pytest.raises(ValueError):
        MongoDataManager(client, default_database=dbname, watch_changes=True)


@pytest.mark.requires_real_mongodb(
    reason='change streams need a replica set or sharded cluster')
def test_a_commit_elsewhere_arrives_as_an_invalidation(change_streams):
    client = testing.client()
    dbname = 'mp_test_watch_%s' % uuid.uuid4().hex[:8]
    tm = transaction.TransactionManager(explicit=True)
    other_tm = transaction.TransactionManager()
    dm = MongoDataManager(client, default_database=dbname,
                          detect_conflicts=True, transaction_manager=tm,
                          watch_changes=True)
    other = MongoDataManager(client, default_database=dbname,
                             detect_conflicts=True,
                             transaction_manager=other_tm)
    try:
        with tm:
            dm.root['ann'] = Person('Ann')
        assert dm._watcher.wait_open()
        with tm:
            ann = dm.root['ann']
            ann.name
        other.root['ann'].name = 'Anne'
        other_tm.commit()
        # Pushed shortly after the commit (and then applied at begin()).
        wait_for(lambda: (ann._p_oid, 2) in list(dm._watcher._queue))
        with tm:
            assert ann.name == 'Anne'
    finally:
        dm.close()
        client.drop_database(dbname)


def test_without_change_streams_the_cache_is_validated(client, dbname, db):
    """The stand-in (or a standalone server) cannot watch: the data
    manager validates instead."""
    if capabilities.change_stream_gap(client) is None:
        pytest.skip('this deployment has change streams (see the test '
                    'above for what it does with them)')
    tm = transaction.TransactionManager(explicit=True)
    dm = MongoDataManager(client, default_database=dbname,
                          detect_conflicts=True, transaction_manager=tm,
                          watch_changes=True)
    try:
        with tm:
            dm.root['ann'] = Person('Ann')
        with tm:
            ann = dm.root['ann']
            ann.name
        db[PERSON].update_one({}, {'$set': {'name': 'Anne'},
                                   '$inc': {'_py_serial': 1}})
        with tm:
            assert ann.name == 'Anne'
    finally:
        dm.close()


def test_changes_are_matched_by_database_collection_and_id(watched):
    """A change stream's ``documentKey`` may hold a shard key too."""
    dm, tm, (ann, bob) = watched

    class KeyedRef(metadata.OID):
        __slots__ = ('shard',)

        def __eq__(self, other):
            return False

        __hash__ = metadata.OID.__hash__
    change = KeyedRef(bob._p_oid.collection, bob._p_oid.id,
                      bob._p_oid.database)
    dm._watcher.reports = [[(change, None)]]
    tm.begin()
    assert (ann._p_status, bob._p_status) == ('saved', 'ghost')
    tm.commit()
