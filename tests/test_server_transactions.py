"""The commit protocol with server transactions, tested at the wire level.

The in-process stand-in has no sessions, so these tests run the data manager
against a scripted replica-set member (mockupdb) and look at the commands it
receives: every write of a transaction carries the same session and
transaction number, the server transaction is committed in ``tpc_vote``, and
faults during a commit abort it so that nothing is committed.
"""
import pymongo
import pytest
import transaction
from pymongo.errors import PyMongoError

from mongopersist import interfaces, sessions
from mongopersist.datamanager import MongoDataManager
from tests.model import Address, Simple
from tests.scripted_server import ScriptedReplicaSet


@pytest.fixture
def rs():
    transaction.abort()
    server = ScriptedReplicaSet()
    yield server
    transaction.abort()
    server.close()


@pytest.fixture
def tdm(rs):
    return MongoDataManager(rs.client, default_database='db',
                            transactions='always')


def transactional(rs):
    """(name, lsid, txnNumber) of the commands sent inside a transaction."""
    return [(name, doc['lsid'], doc['txnNumber'])
            for name, doc in rs.commands if 'txnNumber' in doc]


def test_auto_mode_uses_transactions_on_a_replica_set(rs):
    dm = MongoDataManager(rs.client, default_database='db',
                          transactions='auto')
    assert dm.transactions is True


def test_auto_mode_falls_back_on_a_standalone(rs):
    # The same scripted server, answering hello like a standalone mongod.
    for key in ('setName', 'hosts', 'me'):
        rs.hello.pop(key)
    standalone = pymongo.MongoClient(rs.server.uri, directConnection=True,
                                     serverSelectionTimeoutMS=3000)
    try:
        assert standalone.admin.command('hello')['maxWireVersion'] == 21
        assert sessions.deployment_supports_transactions(standalone) is False
        dm = MongoDataManager(standalone, default_database='db',
                              transactions='auto')
        assert dm.transactions is False
    finally:
        standalone.close()


def test_always_refuses_a_deployment_without_transactions(client, dbname):
    # The stand-in (or a standalone server) has no server transactions.
    if sessions.deployment_supports_transactions(client):
        pytest.skip('MONGODB_URI points at a deployment with transactions')
    # Made without asking the server; refused on first use, before
    # anything is written.
    dm = MongoDataManager(client, default_database=dbname,
                          transactions='always')
    with pytest.raises(interfaces.TransactionsNotSupportedError,
                       match='replica set or sharded cluster'):
        dm.insert(Simple(x=1))
    transaction.abort()
    assert client[dbname].list_collection_names() == []


def test_unknown_mode_is_refused(client):
    with pytest.raises(ValueError, match="'auto', 'always', 'never'|auto, always, never"):
        MongoDataManager(client, default_database='x', transactions='maybe')


def test_commit_sends_all_writes_in_one_transaction(rs, tdm):
    tdm.root['a'] = Address('Maynard', '01754')
    tdm.insert(Simple(x=1))
    tdm.insert(Simple(x=2))
    transaction.commit()
    sent = transactional(rs)
    names = [name for name, _, _ in sent]
    # The root write (insert + root entry) and the commit's bulk write, then
    # the commit of the server transaction.
    assert names[-1] == 'commitTransaction'
    assert names.count('commitTransaction') == 1
    assert 'abortTransaction' not in names
    assert {'insert', 'findAndModify'} <= set(names)
    assert len({repr(lsid) for _, lsid, _ in sent}) == 1
    assert len({txn for _, _, txn in sent}) == 1
    first = [doc for _, doc in rs.commands if 'txnNumber' in doc][0]
    assert first.get('startTransaction') is True
    # Both Simple objects went in one insert command.
    inserts = [doc for doc in rs.docs('insert') if 'txnNumber' in doc
               and doc['insert'] == 'tests.model.Simple']
    assert len(inserts) == 1 and len(inserts[0]['documents']) == 2


def test_abort_aborts_the_server_transaction(rs, tdm):
    tdm.insert(Simple(x=1))
    tdm.flush()
    transaction.abort()
    names = [name for name, _, _ in transactional(rs)]
    assert names == ['insert', 'abortTransaction']


def test_each_transaction_gets_a_new_server_transaction(rs, tdm):
    tdm.insert(Simple(x=1))
    transaction.commit()
    tdm.insert(Simple(x=2))
    transaction.commit()
    numbers = [txn for name, _, txn in transactional(rs)
               if name == 'commitTransaction']
    assert len(numbers) == 2 and numbers[0] != numbers[1]


def _commit_fails(rs):
    """Commit, expecting a clear error; return it."""
    with pytest.raises((interfaces.MongoPersistError, PyMongoError)) as info:
        transaction.commit()
    transaction.abort()
    return info.value


def assert_aborted(rs):
    """The server transaction was aborted and never committed."""
    names = rs.names(in_transaction=True)
    assert 'commitTransaction' not in names
    assert names[-1] == 'abortTransaction'


def _two_collection_commit(tdm):
    tdm.insert(Address('Maynard', '01754'))
    tdm.insert(Simple(x=1))


def test_network_error_on_second_command_aborts(rs, tdm):
    _two_collection_commit(tdm)
    rs.fail('insert', 2, lambda request: request.hangup())
    error = _commit_fails(rs)
    # A network error inside a transaction is transient: retry it.
    assert isinstance(error, interfaces.TransientTransactionError)
    assert tdm.should_retry(error)
    assert_aborted(rs)


def test_write_error_in_a_transaction_aborts(rs, tdm):
    _two_collection_commit(tdm)
    rs.fail('insert', 2, lambda request: request.ok(
        n=0, writeConcernError={'code': 64, 'errmsg': 'waiting timed out'}))
    error = _commit_fails(rs)
    assert isinstance(error, interfaces.CommitError)
    assert 'nothing was committed' in str(error)
    assert_aborted(rs)


def test_not_primary_aborts(rs, tdm):
    _two_collection_commit(tdm)
    rs.fail('insert', 1, lambda request: request.replies(
        ok=0, code=10107, errmsg='not primary'))
    error = _commit_fails(rs)
    assert 'not primary' in str(error)
    assert_aborted(rs)


def test_duplicate_key_aborts_and_names_the_document(rs, tdm):
    obj = Simple(x=1)
    tdm.insert(obj, oid='fixed-id')
    rs.fail('insert', 1, lambda request: request.ok(n=0, writeErrors=[{
        'index': 0, 'code': 11000,
        'errmsg': 'E11000 duplicate key error dup key: { _id: "fixed-id" }'}]))
    error = _commit_fails(rs)
    assert isinstance(error, interfaces.CommitError)
    assert 'duplicate key' in str(error)
    assert 'fixed-id' in str(error)
    names = rs.names(in_transaction=True)
    assert names == ['insert', 'abortTransaction']


def test_unknown_commit_result_is_retried(rs, tdm):
    tdm.insert(Simple(x=1))
    rs.fail('commitTransaction', 1, lambda request: request.hangup())
    transaction.commit()
    assert rs.names(in_transaction=True).count('commitTransaction') == 2


def test_commit_failure_in_vote_aborts_the_transaction(rs, tdm):
    tdm.insert(Simple(x=1))
    rs.fail('commitTransaction', 1, lambda request: request.replies(
        ok=0, code=251, errmsg='NoSuchTransaction',
        errorLabels=['TransientTransactionError']))
    error = _commit_fails(rs)
    assert isinstance(error, interfaces.TransientTransactionError)
    assert rs.names(in_transaction=True).count('commitTransaction') == 1


def test_attempts_retry_a_transient_failure(rs, tdm):
    rs.fail('commitTransaction', 1, lambda request: request.replies(
        ok=0, code=251, errmsg='NoSuchTransaction',
        errorLabels=['TransientTransactionError']))
    runs = []
    for attempt in transaction.manager.attempts(3):
        with attempt:
            runs.append(1)
            tdm.insert(Simple(x=len(runs)))
    assert len(runs) == 2
    assert rs.names(in_transaction=True).count('commitTransaction') == 2


@pytest.mark.requires_real_mongodb(
    reason='server transactions need a real replica set or sharded cluster')
def test_real_server_transaction(client, dbname, db):
    """On a real deployment with transactions: hidden until commit."""
    if not sessions.deployment_supports_transactions(client):
        pytest.skip('MONGODB_URI is a standalone server: no transactions')
    db.create_collection('tests.model.Simple')
    dm = MongoDataManager(client, default_database=dbname,
                          transactions='always')
    dm.insert(Simple(x=1))
    dm.flush()
    assert db['tests.model.Simple'].count_documents({}) == 0
    transaction.abort()
    assert db['tests.model.Simple'].count_documents({}) == 0
    dm.insert(Simple(x=2))
    transaction.commit()
    assert [d['x'] for d in db['tests.model.Simple'].find()] == [2]


# -- a lost race inside a server transaction ----------------------------------
SIMPLE = 'tests.model.Simple'


@pytest.fixture
def cdm(rs):
    """A conflict-detecting data manager in server transactions."""
    return MongoDataManager(rs.client, default_database='db',
                            transactions='always', detect_conflicts=True)


def stored_simple(rs, dm, oid='s1', x=1):
    """A Simple that ``dm`` inserted and the scripted server stores."""
    obj = Simple(x=x)
    dm.insert(obj, oid=oid)
    transaction.commit()
    for doc in rs.docs('insert'):
        rs.apply(doc)
    del rs.commands[:]
    return obj


def collide_on_id(rs, doc_id):
    """The reply of a conditional upsert that met a newer version: E11000
    on ``_id``; the server aborts the transaction (MongoDB does)."""
    def reply(request):
        rs.abort_transaction_of(request)
        return request.ok(n=0, nModified=0, writeErrors=[{
            'index': 0, 'code': 11000,
            'errmsg': 'E11000 duplicate key error collection: db.%s index: '
                      '_id_ dup key: { _id: "%s" }' % (SIMPLE, doc_id),
            'keyPattern': {'_id': 1}, 'keyValue': {'_id': doc_id}}])
    return reply


def write_conflict(rs):
    """The reply of a write another server transaction wrote first."""
    def reply(request):
        rs.abort_transaction_of(request)
        return request.replies(
            ok=0, code=112, codeName='WriteConflict',
            errmsg='WriteConflict error: this operation conflicted with '
                   'another operation.',
            errorLabels=['TransientTransactionError'])
    return reply


def test_a_lost_race_aborts_the_server_transaction_and_is_a_conflict(
        rs, cdm):
    obj = stored_simple(rs, cdm)
    obj.x = 2
    # Somebody else committed serial 2 first.
    rs.stored[SIMPLE]['s1'].update(x=5, _py_serial=2)
    rs.fail('update', 1, collide_on_id(rs, 's1'))
    error = _commit_fails(rs)
    assert type(error) is interfaces.ConflictError
    assert error.object is obj and error.oid == 's1'
    assert (error.start_serial, error.current_serial) == (1, 2)
    assert error.cur_state['x'] == 5 and error.new_state['x'] == 2
    assert cdm.should_retry(error)
    # The current version was read outside the aborted transaction.
    reads = rs.docs('find')
    assert reads and 'txnNumber' not in reads[-1]
    assert 'commitTransaction' not in rs.names(in_transaction=True)


@pytest.mark.parametrize('committed', [True, False],
                         ids=['other-committed', 'other-still-open'])
def test_a_server_write_conflict_is_a_conflict(rs, cdm, committed):
    obj = stored_simple(rs, cdm)
    obj.x = 2
    if committed:
        rs.stored[SIMPLE]['s1'].update(x=5, _py_serial=2)
    rs.fail('update', 1, write_conflict(rs))
    error = _commit_fails(rs)
    assert type(error) is interfaces.ConflictError
    assert 'WriteConflict' in str(error)
    assert error.object is obj and error.oid == 's1'
    assert error.start_serial == 1
    assert error.current_serial == (2 if committed else 1)
    assert cdm.should_retry(error)
    assert 'commitTransaction' not in rs.names(in_transaction=True)
