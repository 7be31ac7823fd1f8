"""Reads, writes, read preference and write concern on the wire.

A store's client carries the application's read preference and write
concern.  Reads outside a server transaction honour the read preference
(secondaries allowed); everything inside a server transaction goes to the
primary (a server transaction cannot read from a secondary); the write
concern is on every write outside a transaction and on the transaction's
commit.  Tested against a scripted replica-set member (mockupdb), which
records the commands it receives.
"""
import pymongo
import pytest
import transaction

import mongopersist
from tests.model import Simple
from tests.test_server_transactions import rs  # noqa: F401 (a fixture)


@pytest.fixture
def store_on(rs):
    """Make stores on the scripted replica set (closed afterwards)."""
    stores = []

    def make(**options):
        stores.append(mongopersist.connect(
            rs.server.uri, database='db', replicaSet='rs0',
            serverSelectionTimeoutMS=3000, retryWrites=False,
            read_preference='secondaryPreferred', write_concern='majority',
            **options))
        return stores[-1]
    yield make
    for store in stores:
        store.close()


def test_reads_outside_a_transaction_honour_the_read_preference(
        rs, store_on):
    store = store_on()
    dm = store.open()
    with pytest.raises(KeyError):
        dm.root['missing']       # a read, before any change
    (find,) = rs.docs('find')
    assert find['$readPreference'] == {'mode': 'secondaryPreferred'}
    assert 'txnNumber' not in find


def test_everything_inside_a_server_transaction_reads_the_primary(
        rs, store_on):
    store = store_on(transactions='always')
    dm = store.open()
    dm.insert(Simple(x=1))
    # A query flushes the insert, then reads, in the transaction.
    assert dm.find_one_object(Simple, {'x': 2}) is None
    transaction.commit()
    finds = [doc for doc in rs.docs('find') if 'txnNumber' in doc]
    assert finds, rs.names()
    for doc in finds:
        assert doc.get('$readPreference', {'mode': 'primary'}) == {
            'mode': 'primary'}
    (commit,) = rs.docs('commitTransaction')
    assert commit['writeConcern'] == {'w': 'majority'}
    # Writes inside the transaction carry no write concern of their
    # own (the server refuses one there); the commit has it.
    for doc in rs.docs('insert'):
        if 'txnNumber' in doc:
            assert 'writeConcern' not in doc


def test_every_write_outside_a_transaction_has_the_write_concern(
        rs, store_on):
    store = store_on(transactions='never')
    dm = store.open()
    dm.insert(Simple(x=1))
    transaction.commit()
    writes = rs.docs('insert') + rs.docs('update') + \
        rs.docs('findAndModify')
    assert writes
    for doc in writes:
        assert 'txnNumber' not in doc
        assert doc['writeConcern'] == {'w': 'majority'}, doc


def test_the_deployment_is_asked_when_first_needed(rs, store_on):
    store = store_on()
    dm = store.open()
    assert store.deployment._has_transactions is None
    dm.insert(Simple(x=1))
    assert store.deployment._has_transactions is True
    assert dm.transactions is True
    transaction.commit()
    assert rs.names(in_transaction=True)[-1] == 'commitTransaction'


def test_plain_pymongo_client_in_a_store_keeps_its_options(rs):
    client = pymongo.MongoClient(
        rs.server.uri, replicaSet='rs0', serverSelectionTimeoutMS=3000,
        readPreference='nearest', w=2)
    try:
        store = mongopersist.Store(client, 'db')
        assert store.read_preference == pymongo.ReadPreference.NEAREST
        assert store.write_concern.document == {'w': 2}
    finally:
        client.close()
