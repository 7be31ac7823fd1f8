"""The fixed round trips of a one-object request (fresh data manager, load
one object by ``_id``, change it, commit): raw PyMongo's two, a find and an
update, in every mode."""
import pytest
import transaction

from mongopersist import conflict, typemap
from mongopersist.datamanager import MongoDataManager
from tests.model import Address

HANDLERS = [conflict.NoCheckConflictHandler,
            conflict.SimpleSerialConflictHandler]


@pytest.fixture
def stored(roundtrips, dbname):
    """A stored address; the process has read the type map (it stored)."""
    dm = MongoDataManager(roundtrips.client, default_database=dbname)
    ref = dm.insert(Address('Boston', '02101'))
    transaction.commit()
    return ref


def request(roundtrips, dbname, ref, handler, city):
    dm = MongoDataManager(roundtrips.client, default_database=dbname,
                          conflict_handler=handler)
    dm.load(ref).city = city
    transaction.commit()
    return dm


@pytest.mark.parametrize('handler', HANDLERS)
def test_one_object_request_takes_two_round_trips(
        roundtrips, dbname, db, stored, handler):
    roundtrips.reset()
    request(roundtrips, dbname, stored, handler, 'Berlin')
    assert roundtrips.reads == {'address': 1}
    assert roundtrips.writes == {'address': 1}
    assert roundtrips.total == 2
    assert db['address'].find_one()['city'] == 'Berlin'


def test_a_new_process_reads_the_type_map_once(
        roundtrips, dbname, stored):
    typemap.forget_process_cache()
    roundtrips.reset()
    request(roundtrips, dbname, stored, HANDLERS[1], 'Berlin')
    request(roundtrips, dbname, stored, HANDLERS[1], 'Lima')
    assert roundtrips.reads[typemap.TYPE_MAP_COLLECTION] == 1
    assert roundtrips.total == 5


def test_without_conflict_detection_abort_puts_back_what_the_write_replaced(
        roundtrips, dbname, db, stored):
    dm = MongoDataManager(roundtrips.client, default_database=dbname)
    dm.load(stored).city = 'Berlin'
    # Somebody else writes after we loaded (last writer wins) ...
    db['address'].update_one({}, {'$set': {'city': 'Lima'}})
    roundtrips.reset()
    dm.flush()
    # ... and our write learns their version as it replaces it (a flush
    # before the commit is journaled: the transaction goes on after it).
    assert roundtrips.reads_total == 0
    assert roundtrips.writes['address'] == 1
    assert db['address'].find_one()['city'] == 'Berlin'
    transaction.abort()
    assert db['address'].find_one()['city'] == 'Lima'
    assert dm.unrestored == []


def test_with_conflict_detection_the_conditional_write_decides(
        roundtrips, dbname, db, stored):
    from mongopersist import interfaces
    dm = MongoDataManager(roundtrips.client, default_database=dbname,
                          detect_conflicts=True)
    obj = dm.load(stored)
    obj.city = 'Berlin'
    db['address'].update_one({}, {'$set': {'city': 'Lima'},
                                  '$inc': {'_py_serial': 1}})
    roundtrips.reset()
    with pytest.raises(interfaces.ConflictError):
        transaction.commit()
    # The write, and the read of the current version for the error.
    assert roundtrips.writes == {'address': 1}
    transaction.abort()
    assert db['address'].find_one()['city'] == 'Lima'


def test_an_update_of_a_removed_document_conflicts_and_is_taken_back(
        make_dm, db, dbname):
    """Without the pre-check, the conditional upsert tells the lost race,
    also behind other writes to the collection, and the abort takes it
    back: the removal stays."""
    from mongopersist import interfaces
    from tests.model import Simple
    tms = [transaction.TransactionManager() for _ in range(2)]
    ours, theirs = [make_dm(detect_conflicts=True, transaction_manager=tm)
                    for tm in tms]
    ref = theirs.insert(Simple(name='a'), oid='k1')
    tms[1].commit()
    ours.insert(Simple(name='new'), oid='k2')
    mine = ours.load(ref)
    mine.name = 'b'
    theirs.remove(theirs.load(ref))
    tms[1].commit()
    with pytest.raises(interfaces.ConflictError) as info:
        tms[0].commit()
    assert info.value.oid == 'k1'
    assert 'start serial 1' in str(info.value)
    tms[0].abort()
    assert list(db['tests.model.Simple'].find()) == []
    assert ours.unrestored == []
