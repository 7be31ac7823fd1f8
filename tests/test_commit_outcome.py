"""A lost acknowledgement does not apply a unit of work twice.

A commit can take effect and its reply be lost: the server or the network
fails after the writes or the ``commitTransaction`` were sent.  The retry
(PyMongo's or ``Store.transaction()``'s) must not run the unit of work a
second time on top of the first.  The commit reads back what it wrote
(``mongopersist.outcome``: the serial and ``_py_write`` of each document)
and reports success if it took effect, retries if it did not, and raises
``CommitOutcomeUnknownError`` (not retried) if it cannot tell.

Here a scripted replica-set member (mockupdb) plays the server: it applies
a commit and then hangs up instead of replying, and answers the retry like
a server that forgot the first attempt (SecantusDB after a restart did
exactly that).  tests/test_server_crash.py kills a real server instead.
"""
import pytest
from bson.dbref import DBRef
from bson.int64 import Int64
from bson.objectid import ObjectId
from hypothesis import given, settings, strategies as st

from mongopersist import commit, interfaces, outcome
from mongopersist.serialize import PY_SERIAL, PY_WRITE
from mongopersist.store import Store
from tests.model import Simple
from tests.scripted_server import ScriptedReplicaSet

SIMPLE = 'tests.model.Simple'


@pytest.fixture
def rs():
    server = ScriptedReplicaSet()
    yield server
    server.close()


@pytest.fixture
def retrying_rs():
    """Its client retries a write whose reply was lost (retryWrites)."""
    server = ScriptedReplicaSet(retry_writes=True)
    yield server
    server.close()


def store_with(rs, ids, transactions):
    """A store on ``rs`` whose documents ``ids`` (Simple, x=1) exist."""
    store = Store(rs.client, database='db', transactions=transactions)
    with store.transaction() as dm:
        for doc_id in ids:
            dm.insert(Simple(x=1), oid=doc_id)
    for doc in rs.docs('insert'):
        rs.apply(doc)
    del rs.commands[:]
    return store


def increment(store, ids, runs):
    """The unit of work: ``x += 1`` on each of ``ids``, in one commit."""
    for attempt in store.transaction():
        with attempt as dm:
            runs.append(1)
            for doc_id in ids:
                dm.load(DBRef(SIMPLE, doc_id, 'db')).x += 1


def lose_commit_reply(rs, applied):
    """A ``commitTransaction`` fault: the server commits (if ``applied``)
    and dies before replying; restarted, it knows no such transaction."""
    def fault(request):
        if applied:
            rs.apply_transaction_of(request)
        rs.abort_transaction_of(request)
        return request.hangup()
    return fault


def stored(rs, doc_id='s1'):
    return rs.stored[SIMPLE][doc_id]


def test_a_transaction_that_committed_without_its_reply_runs_once(
        rs, retry_waits):
    store = store_with(rs, ['s1'], 'always')
    rs.fail('commitTransaction', 1, lose_commit_reply(rs, applied=True))
    runs = []
    increment(store, ['s1'], runs)
    assert runs == [1]
    assert stored(rs)['x'] == 2 and stored(rs)[PY_SERIAL] == 2
    names = rs.names()
    assert names.count('commitTransaction') >= 2
    # The documents were read back after the commit's retry failed.
    assert names[-1] == 'find'
    with store.transaction() as dm:
        obj = dm.load(DBRef(SIMPLE, 's1', 'db'))
        assert obj.x == 2 and obj._p_serial == (2).to_bytes(8, 'big')


def test_a_transaction_that_did_not_commit_is_retried(rs, retry_waits):
    store = store_with(rs, ['s1'], 'always')
    rs.fail('commitTransaction', 1, lose_commit_reply(rs, applied=False))
    runs = []
    increment(store, ['s1'], runs)
    assert runs == [1, 1]
    # The second run wrote on the version it loaded again: the first.
    updates = rs.docs('update')
    assert [u['updates'][0]['q'][PY_SERIAL] for u in updates] == [1, 1]
    assert updates[0]['updates'][0]['u']['$set'][PY_WRITE] != \
        updates[1]['updates'][0]['u']['$set'][PY_WRITE]


def test_an_unknown_outcome_is_reported_and_not_retried(rs, retry_waits):
    store = store_with(rs, ['s1'], 'always')
    lose = lose_commit_reply(rs, applied=False)

    def and_somebody_writes(request):
        stored(rs).update({'x': 7, PY_SERIAL: 2, PY_WRITE: 'theirs'})
        return lose(request)
    rs.fail('commitTransaction', 1, and_somebody_writes)
    runs = []
    with pytest.raises(interfaces.CommitOutcomeUnknownError) as info:
        increment(store, ['s1'], runs)
    assert runs == [1]
    error = info.value
    assert error.unsure == [DBRef(SIMPLE, 's1', 'db')]
    assert 'could not tell whether it took effect' in str(error)
    assert isinstance(error, interfaces.CommitError)
    dm = store.open()
    try:
        assert not dm.should_retry(error)
    finally:
        dm.close()


def collide_on_id(doc_id):
    """The reply of a server that applied this conditional update before
    (and forgot it): it matches nothing now, and upserting collides."""
    def reply(request):
        return request.ok(n=0, nModified=0, writeErrors=[{
            'index': 0, 'code': 11000,
            'errmsg': 'E11000 duplicate key error collection: db.%s index: '
                      '_id_ dup key: { _id: "%s" }' % (SIMPLE, doc_id),
            'keyPattern': {'_id': 1}, 'keyValue': {'_id': doc_id}}])
    return reply


def apply_and_hang_up(rs, applied=True):
    def fault(request):
        if applied:
            rs.apply(request.doc)
        return request.hangup()
    return fault


def test_a_retried_write_that_was_applied_is_not_a_conflict(
        retrying_rs, retry_waits):
    """Without server transactions: PyMongo sends the update again after
    the lost reply; each conditional write then collides with its own
    first application, known by its ``_py_write``."""
    rs = retrying_rs
    store = store_with(rs, ['s1', 's2'], 'never')
    rs.fail('update', 1, apply_and_hang_up(rs))
    rs.fail('update', 2, collide_on_id('s1'))
    rs.fail('update', 3, collide_on_id('s2'))
    runs = []
    increment(store, ['s1', 's2'], runs)
    assert runs == [1]
    updates = rs.docs('update')
    # Sent, sent again by PyMongo, then the rest after s1 was found done.
    assert [len(u['updates']) for u in updates] == [2, 2, 1]
    assert [stored(rs, i)['x'] for i in ('s1', 's2')] == [2, 2]


def test_a_lost_reply_without_retry_is_read_back(rs, retry_waits):
    store = store_with(rs, ['s1', 's2'], 'never')
    rs.fail('update', 1, apply_and_hang_up(rs))
    runs = []
    increment(store, ['s1', 's2'], runs)
    assert runs == [1]
    assert [stored(rs, i)[PY_SERIAL] for i in ('s1', 's2')] == [2, 2]


def test_a_lost_reply_that_cannot_be_read_back_is_unknown(rs, retry_waits):
    store = store_with(rs, ['s1', 's2'], 'never')
    lose = apply_and_hang_up(rs, applied=False)

    def and_somebody_writes(request):
        stored(rs, 's2').update({'x': 7, PY_SERIAL: 2, PY_WRITE: 'theirs'})
        return lose(request)
    rs.fail('update', 1, and_somebody_writes)
    runs = []
    with pytest.raises(interfaces.CommitOutcomeUnknownError) as info:
        increment(store, ['s1', 's2'], runs)
    assert runs == [1]
    error = info.value
    # s1 still holds the version loaded: not written; s2 cannot be told.
    assert error.unsure == [DBRef(SIMPLE, 's2', 'db')]
    assert DBRef(SIMPLE, 's1', 'db') in error.not_written


# -- reading back stored data: a door for outside data ------------------------

OURS, BEFORE = ObjectId(), ObjectId()
SERIALS = st.one_of(
    st.integers(-3, 5), st.integers(-3, 5).map(Int64), st.booleans(),
    st.none(), st.floats(allow_nan=True), st.text(max_size=3),
    st.lists(st.integers(0, 3), max_size=2))
WRITE_IDS = st.one_of(st.sampled_from([OURS, BEFORE]), st.none(),
                      st.text(max_size=3), st.binary(max_size=12),
                      st.builds(ObjectId))
STORED = st.one_of(
    st.none(),
    st.fixed_dictionaries({}, optional={PY_SERIAL: SERIALS,
                                        PY_WRITE: WRITE_IDS}),
    st.integers(), st.text(max_size=3))


def _is(value, expected):
    return (type(value) in (int, Int64) and type(expected) is int
            and value == expected) or (
        type(value) is ObjectId and value == expected)


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from([commit.INSERT, commit.UPDATE, commit.DELETE]),
       stored=STORED)
def test_reading_back_judges_any_stored_document_by_its_stamps(kind, stored):
    """Whatever a document holds, the read-back calls nothing and says
    'applied' only for this write's serial and id, 'not applied' only for
    the replaced version's (or no document where it inserted)."""
    before = None if kind == commit.INSERT else {
        '_id': 1, PY_SERIAL: 2, PY_WRITE: BEFORE}
    write = commit.DocumentWrite(kind, None, DBRef('c', 1, 'db'),
                                 doc=None if kind == commit.DELETE else {
                                     '_id': 1, PY_SERIAL: 3, PY_WRITE: OURS},
                                 loaded=before)
    found = outcome.verdict(write, stored)
    is_dict = isinstance(stored, dict)
    ours = is_dict and kind != commit.DELETE and \
        _is(stored.get(PY_SERIAL), 3) and _is(stored.get(PY_WRITE), OURS)
    replaced = is_dict and kind != commit.INSERT and \
        _is(stored.get(PY_SERIAL), 2) and _is(stored.get(PY_WRITE), BEFORE)
    if ours:
        assert found == outcome.APPLIED
    elif replaced or (stored is None and kind == commit.INSERT):
        assert found == outcome.NOT_APPLIED
    else:
        assert found is None
