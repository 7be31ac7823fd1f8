"""Batched commits: one round trip per collection, not one per object."""
import pytest
import transaction

from mongopersist import interfaces
from mongopersist.datamanager import MongoDataManager
from tests.model import Address, Simple

N = 1000
SIMPLE = 'tests.model.Simple'


@pytest.fixture
def cdm(roundtrips, dbname):
    return MongoDataManager(roundtrips.client, default_database=dbname,
                            detect_conflicts=True)


def test_inserting_many_objects_takes_one_bulk_write(cdm, roundtrips, db):
    for i in range(N):
        cdm.insert(Simple(i=i))
    roundtrips.reset()
    transaction.commit()
    assert roundtrips.writes[SIMPLE] == 1
    assert roundtrips.writes_total <= 2      # + the type map, once
    assert db[SIMPLE].count_documents({}) == N


def test_changing_many_objects_takes_at_most_two_writes(
        cdm, roundtrips, db, dbname):
    holder = Simple(items=[Simple(i=i) for i in range(N)])
    cdm.root['holder'] = holder
    transaction.commit()

    fresh = MongoDataManager(roundtrips.client, default_database=dbname,
                             detect_conflicts=True)
    items = fresh.root['holder'].items
    roundtrips.reset()
    for item in items:
        item.i += 1
    # Loading by reference: at most one find_one per object.
    assert roundtrips.reads[SIMPLE] <= N
    roundtrips.reset()
    transaction.commit()
    assert roundtrips.writes_total <= 2
    assert sorted(d['i'] for d in db[SIMPLE].find({'i': {'$exists': True}})
                  ) == list(range(1, N + 1))
    assert {d['_py_serial'] for d in db[SIMPLE].find(
        {'i': {'$exists': True}})} == {2}


def test_unchanged_objects_are_not_written(cdm, roundtrips):
    cdm.root['x'] = Simple(a=1, b=[1, 2], c={'d': 1})
    transaction.commit()
    obj = cdm.root['x']
    obj.a = 1
    obj.b = [1, 2]
    obj.c = {'d': 1}
    roundtrips.reset()
    transaction.commit()
    assert roundtrips.writes_total == 0


def test_partial_failure_without_server_transaction(dm, db):
    """A failing commit says what was written; the abort takes it back."""
    # Somebody else stored a document under the _id we are about to use.
    db[SIMPLE].insert_one({'_id': 'taken', 'n': 0})

    dm.insert(Address('Maynard', '01754'))
    dm.insert(Simple(n=1), oid='taken')       # duplicate _id: fails
    with pytest.raises(interfaces.CommitError) as info:
        transaction.commit()
    error = info.value
    assert 'taken' in str(error)
    assert [ref.collection for ref in error.written] == ['address']
    assert [ref.id for ref in error.not_written] == ['taken']
    transaction.abort()
    # Nothing of the failed commit stays, and the data manager is clean.
    assert db['address'].count_documents({}) == 0
    assert db[SIMPLE].find_one({'_id': 'taken'})['n'] == 0
    dm.insert(Simple(n=2))
    transaction.commit()
    assert db[SIMPLE].count_documents({}) == 2
    assert db[SIMPLE].find_one({'_id': 'taken'})['n'] == 0
