"""What a crash in the middle of a commit leaves behind, and the journal.

A child process (tests/crash_child.py) talks to a server over the wire and
SIGKILLs itself between two write messages of a transaction.  The server
is the one of ``MONGODB_URI`` when it is set, else one run here
(tests/wire_server.py, backed by mongomock).  With
``transactions='never'``, the documents its writes reached are written,
the others are not, and the journal intent names every document of the
transaction; in a server transaction nothing is written and there is no
intent: exactly what docs/transactions.rst ("What a crash leaves behind")
promises.  The server-transaction case needs a deployment with
transactions: ``MONGODB_URI``'s if it has them, else a ``file://`` store
(SecantusDB, the ``server`` extra) made for the test.
"""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import types
import uuid

import bson
import pymongo
from bson import json_util
import pytest
import transaction

from mongopersist import (
    commit, fileserver, interfaces, journal, metadata, sessions, testing)
from mongopersist.datamanager import MongoDataManager
from mongopersist.serialize import PY_SERIAL
from tests.model import Address, Person
from tests.scripted_server import ScriptedReplicaSet
from tests.wire_server import WireServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PERSON = metadata.collection_name(Person)
CHILD_TIMEOUT = 10      # seconds; the child needs about one


@pytest.fixture(scope='module')
def server():
    """``uri`` (for the child) and ``store`` (a client, for the test) of
    the server under test."""
    if testing.uses_real_server():
        client = testing.client()
        yield types.SimpleNamespace(uri=os.environ[testing.URI_VARIABLE],
                                    store=client)
        client.close()
        return
    wire = WireServer()
    yield wire
    wire.stop()


@pytest.fixture(scope='module')
def transactional_server(server, tmp_path_factory):
    """A server with transactions: ``MONGODB_URI``'s, else SecantusDB on
    a directory of its own."""
    if testing.uses_real_server():
        if not sessions.deployment_supports_transactions(server.store):
            pytest.skip('the deployment of MONGODB_URI has no server '
                        'transactions (a standalone server)')
        yield server
        return
    if importlib.util.find_spec(fileserver.SERVER_MODULE) is None:
        pytest.skip('needs a deployment with server transactions: set '
                    "MONGODB_URI, or pip install 'mongopersist[server]'")
    path = str(tmp_path_factory.mktemp('crash') / 'store')
    held = fileserver.lease(path, linger=0)
    client = held.client()
    try:
        yield types.SimpleNamespace(uri=held.uri, store=client)
    finally:
        held.close()
        fileserver.stop(path)


def run_child(server, database, scenario):
    """Run the child until it kills itself; return its JSON messages."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        filter(None, [ROOT, env.get('PYTHONPATH')]))
    child = subprocess.Popen(
        [sys.executable, '-m', 'tests.crash_child', server.uri, database,
         scenario], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        out, err = child.communicate(timeout=CHILD_TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == -signal.SIGKILL, err
    messages = {}
    for line in out.splitlines():
        message = json.loads(line)
        messages[message.pop('step')] = message
    assert 'survived' not in messages
    return messages, child.pid


def oid(text):
    from bson.objectid import ObjectId
    return ObjectId(text)


def check_leftovers(server, database, pid, planned, sent):
    """``planned``: (collection, _id, op, written-state check) per write."""
    store = server.store[database]
    intents = journal.incomplete(server.store, database)
    assert len(intents) == 1
    intent = intents[0]
    assert intent.pid == pid
    assert database in intent.data_manager
    # The intent names every document the transaction was about to write,
    # and nothing else.
    named = sorted((w['db'], w['coll'], str(w['id']), w['op'])
                   for w in intent.writes)
    assert named == sorted((database, coll, str(doc_id), op)
                           for coll, doc_id, op, _ in planned)
    states = {(w['coll'], w['id']): state
              for w, state in intent.status(server.store)}
    for coll, doc_id, op, looks_written in planned:
        doc = store[coll].find_one({'_id': doc_id})
        written = coll in sent
        assert looks_written(doc) is written, (coll, doc_id, doc)
        assert states[(coll, doc_id)] == (
            'written' if written else 'not written')
    # What the operator does once repaired: discard the intent.
    intent.discard(server.store, database)
    assert journal.incomplete(server.store, database) == []


def test_killed_between_the_collections_of_a_commit(server):
    database = 'mp_crash_%s' % uuid.uuid4().hex[:8]
    messages, pid = run_child(server, database, 'commit')
    setup, killed = messages['setup'], messages['killed']
    # It died after one collection's writes reached the server, before the
    # other's were sent.
    assert len(killed['sent']) == 1
    assert {killed['sent'][0], killed['before']} == {'address', PERSON}
    alice, bob = oid(setup['alice']), oid(setup['bob'])
    address = oid(setup['address'])
    new = oid(messages['planned']['new_address'])

    def serial(doc):
        return doc[PY_SERIAL] if doc else None
    planned = [
        ('address', new, 'insert', lambda doc: doc is not None),
        ('address', address, 'update',
         lambda doc: doc['city'] == 'Potsdam' and serial(doc) == 2),
        (PERSON, alice, 'update',
         lambda doc: doc['name'] == 'Alice' and serial(doc) == 2),
        (PERSON, bob, 'update',
         lambda doc: doc['address'] is not None and serial(doc) == 2),
    ]
    check_leftovers(server, database, pid, planned, killed['sent'])
    server.store.drop_database(database)


def test_killed_in_a_flush_before_a_query(server):
    database = 'mp_crash_%s' % uuid.uuid4().hex[:8]
    messages, pid = run_child(server, database, 'flush')
    setup, killed = messages['setup'], messages['killed']
    # The first flush (alice) reached the server; the process died before
    # the second flush (the address) was sent.
    assert killed == {'before': 'address', 'sent': []}
    planned = [
        (PERSON, oid(setup['alice']), 'update',
         lambda doc: doc['name'] == 'Alice' and doc[PY_SERIAL] == 2),
        ('address', oid(setup['address']), 'update',
         lambda doc: doc['city'] == 'Potsdam'),
    ]
    check_leftovers(server, database, pid, planned, [PERSON])
    server.store.drop_database(database)


def test_killed_in_a_server_transaction_writes_nothing(transactional_server):
    server = transactional_server
    database = 'mp_crash_%s' % uuid.uuid4().hex[:8]
    messages, pid = run_child(server, database, 'transaction')
    setup, killed = messages['setup'], messages['killed']
    # It died after one collection's writes were sent, in the server
    # transaction, before the other's were.
    assert len(killed['sent']) == 1
    store = server.store[database]
    # All or nothing: the transaction never committed, so none of its
    # writes is seen, and no intent was journaled (none is needed).
    alice = store[PERSON].find_one({'_id': oid(setup['alice'])})
    bob = store[PERSON].find_one({'_id': oid(setup['bob'])})
    address = store['address'].find_one({'_id': oid(setup['address'])})
    assert (alice['name'], alice[PY_SERIAL]) == ('alice', 1)
    assert bob['address'] is None and bob[PY_SERIAL] == 1
    assert (address['city'], address[PY_SERIAL]) == ('Berlin', 1)
    new = oid(messages['planned']['new_address'])
    assert store['address'].find_one({'_id': new}) is None
    assert journal.incomplete(server.store, database) == []
    # The server transaction of the dead process is still open (a server
    # ends it after transactionLifetimeLimitSeconds, 60 by default); until
    # then it holds what it wrote.  Ending its session aborts it, as an
    # operator would.
    server.store.admin.command(
        'killSessions', [json_util.loads(killed['lsid'])])
    server.store.drop_database(database)


# The journal in a living process (the in-process stand-in) -------------

@pytest.fixture
def intents_written(monkeypatch):
    """Record the transaction of every intent (part) the journal inserts."""
    written = []
    original = journal.Journal._write

    def spy(self, entries):
        original(self, entries)
        written.append(self.txn)
    monkeypatch.setattr(journal.Journal, '_write', spy)
    return written


def make(client, dbname, intents_written):
    dm = MongoDataManager(client, default_database=dbname,
                          transactions='never', detect_conflicts=True)
    # Two collections and a root entry: journaled, then deleted.
    dm.root['alice'] = Person('alice', address=Address('Berlin', '10115'))
    transaction.commit()
    assert len(set(intents_written)) == 1
    assert journal.incomplete(client, dbname) == []
    del intents_written[:]
    return dm


def test_a_commit_deletes_its_intent(client, dbname, intents_written):
    dm = make(client, dbname, intents_written)
    alice = dm.root['alice']
    alice.name = 'Alice'
    alice.address.city = 'Potsdam'
    transaction.commit()
    assert len(intents_written) == 1
    assert journal.incomplete(client, dbname) == []


def test_one_message_needs_no_intent(client, dbname, intents_written):
    dm = make(client, dbname, intents_written)
    dm.root['alice'].name = 'Alice'
    transaction.commit()
    dm.insert(Person('carol'))
    dm.insert(Person('dave'))
    transaction.commit()
    assert intents_written == []


def test_taking_back_a_one_message_commit_is_journaled(
        client, dbname, intents_written, monkeypatch):
    dm = make(client, dbname, intents_written)
    alice = dm.root['alice']
    alice.name = 'Alice'
    check = commit.Flush.check

    def removed_after_the_check(flush):
        check(flush)
        client[dbname][PERSON].delete_one({'_id': alice._p_oid.id})
        return flush
    monkeypatch.setattr(commit.Flush, 'check', removed_after_the_check)
    # The conditional update recreates the removed document (a conflict);
    # the failed commit's abort deletes it again: a second message,
    # journaled first.
    with pytest.raises(interfaces.ConflictError):
        transaction.commit()
    transaction.abort()
    assert len(intents_written) == 1
    assert journal.incomplete(client, dbname) == []
    assert client[dbname][PERSON].count_documents({}) == 0


def test_a_flush_before_the_commit_is_journaled(
        client, dbname, intents_written):
    dm = make(client, dbname, intents_written)
    dm.root['alice'].name = 'Alice'
    dm.count(Person)        # one message, but the transaction goes on
    [intent] = journal.incomplete(client, dbname)
    assert [(w['coll'], w['op']) for w in intent.writes] == [
        (PERSON, 'update')]
    transaction.commit()
    assert journal.incomplete(client, dbname) == []


def flush_into_two_collections(dm):
    """Change alice and her address, each written by a query's flush."""
    alice = dm.root['alice']
    alice.name = 'Alice'
    dm.count(Person)
    alice.address.city = 'Potsdam'
    dm.count(Address)


def test_an_abort_deletes_its_intent_once_taken_back(
        client, dbname, intents_written):
    dm = make(client, dbname, intents_written)
    flush_into_two_collections(dm)
    assert len(intents_written) == 2        # two parts
    assert len(set(intents_written)) == 1   # of one intent
    transaction.abort()
    assert journal.incomplete(client, dbname) == []
    assert client[dbname][PERSON].find_one()['name'] == 'alice'


def test_an_undo_that_fails_keeps_the_intent(
        client, dbname, intents_written, monkeypatch):
    flush_into_two_collections(make(client, dbname, intents_written))
    coll_class = type(client[dbname][PERSON])

    def unreachable(*args, **kwargs):
        raise pymongo.errors.ServerSelectionTimeoutError('gone')
    monkeypatch.setattr(coll_class, 'replace_one', unreachable)
    monkeypatch.setattr(coll_class, 'update_one', unreachable)
    with pytest.raises(pymongo.errors.ServerSelectionTimeoutError):
        transaction.abort()
    monkeypatch.undo()
    [intent] = journal.incomplete(client, dbname)
    assert {w['coll'] for w in intent.writes} == {PERSON, 'address'}
    transaction.abort()


def test_no_journal_in_a_server_transaction():
    rs = ScriptedReplicaSet()
    try:
        dm = MongoDataManager(rs.client, default_database='db',
                              transactions='always')
        dm.insert(Person('carol'))
        dm.insert(Address('Berlin', '10115'))
        transaction.commit()
        assert [doc for doc in rs.docs('insert')
                if doc['insert'] == journal.JOURNAL_COLLECTION] == []
        assert {doc['insert'] for doc in rs.docs('insert')} == {
            PERSON, 'address'}
    finally:
        transaction.abort()
        rs.close()


def test_messages_counts_what_pymongo_sends():
    ref = metadata.OID('coll', 1, 'db')

    def write(kind, doc=None):
        planned = commit.DocumentWrite(kind, None, ref, doc)
        planned.size = len(bson.encode(doc)) if doc else 0
        return planned
    small = {'_id': 1, 'x': 'y'}
    assert journal.messages([write('update', small)] * 3) == 1
    assert journal.messages([write('insert', small), write('update', small),
                             write('insert', small)]) == 3
    big = {'_id': 1, 'x': 'y' * (15 * 1000 * 1000)}
    assert journal.messages([write('insert', big)] * 2) == 1
    assert journal.messages([write('insert', big)] * 3) == 2
