"""The type map is kept for the process and read again on a miss."""
import threading

import persistent
import pytest
import transaction

from mongopersist import typemap
from mongopersist.datamanager import MongoDataManager
from mongopersist.typemap import TYPE_MAP_COLLECTION
from tests.model import Address
from tests.roundtrips import counting_client


class Shop(persistent.Persistent):
    """Shares the collection of ``Address`` without being one."""
    _p_mongo_collection = 'address'

    def __init__(self, city):
        self.city = city


@pytest.fixture(autouse=True)
def new_process():
    typemap.forget_process_cache()


def dm_of(client, dbname):
    return MongoDataManager(client, default_database=dbname,
                            detect_conflicts=True)


def test_a_new_data_manager_reads_no_type_map(roundtrips, dbname):
    ref = dm_of(roundtrips.client, dbname).insert(Address('Boston', '1'))
    transaction.commit()

    roundtrips.reset()
    dm = dm_of(roundtrips.client, dbname)
    dm.load(ref).city = 'Berlin'
    transaction.commit()
    assert roundtrips.reads[TYPE_MAP_COLLECTION] == 0
    assert roundtrips.writes[TYPE_MAP_COLLECTION] == 0
    # Load by _id and the conditional write: raw PyMongo's two.
    assert roundtrips.total == 2


def test_another_process_adding_a_type_is_seen_on_a_miss(
        client, roundtrips, dbname, db):
    ours = dm_of(roundtrips.client, dbname)
    boston = ours.insert(Address('Boston', '1'))
    transaction.commit()
    assert ours._types.types_of(dbname, 'address') == [
        'tests.model.Address']

    # Another process (its own client, so its own cache) starts storing
    # shops in the same collection.
    other = dm_of(counting_client(client).client, dbname)
    shop = other.insert(Shop('Boston'))
    transaction.commit()
    assert db[TYPE_MAP_COLLECTION].find_one()['types'] == [
        'tests.model.Address', 'tests.test_typemap.Shop']

    dm = dm_of(roundtrips.client, dbname)
    # Loading follows the class the document names (a ghost made from
    # the short entry takes its class when its document is read).
    obj = dm.load(shop)
    assert obj.city == 'Boston'
    assert isinstance(obj, Shop)
    transaction.abort()

    # Our entry is short of Shop: the query leaves the shop out and
    # reads the entry again ...
    dm = dm_of(roundtrips.client, dbname)
    roundtrips.reset()
    assert [a._p_oid for a in dm.find_objects(Address)] == [boston]
    assert roundtrips.reads[TYPE_MAP_COLLECTION] == 1
    assert dm._types.types_of(dbname, 'address') == [
        'tests.model.Address', 'tests.test_typemap.Shop']
    # ... so that the next query and counts filter on the class.
    roundtrips.reset()
    assert [a._p_oid for a in dm.find_objects(Address)] == [boston]
    assert dm.count(Address) == 1
    assert roundtrips.reads[TYPE_MAP_COLLECTION] == 0
    transaction.abort()


def test_find_one_object_asks_again_after_a_miss(client, roundtrips, dbname):
    ours = dm_of(roundtrips.client, dbname)
    boston = ours.insert(Address('Boston', '1'))
    transaction.commit()
    other = dm_of(counting_client(client).client, dbname)
    other.insert(Shop('Boston'))
    transaction.commit()

    dm = dm_of(roundtrips.client, dbname)
    for _ in range(2):
        found = dm.find_one_object(Address, {'city': 'Boston'},)
        assert found._p_oid == boston
        transaction.abort()
    assert dm.find_one_object(Shop)._p_oid != boston


def test_writing_a_class_the_entry_lacks_reads_the_whole_entry(
        client, roundtrips, dbname, db):
    ours = dm_of(roundtrips.client, dbname)
    ours.insert(Address('Boston', '1'))
    transaction.commit()
    other = dm_of(counting_client(client).client, dbname)
    other.insert(Shop('Lima'))
    transaction.commit()

    # We write a class of our own into the collection: the entry comes
    # back whole, so our documents name their class from now on.
    class Kiosk(Shop):
        pass
    dm = dm_of(roundtrips.client, dbname)
    ref = dm.insert(Kiosk('Perth'))
    transaction.commit()
    assert len(dm._types.types_of(dbname, 'address')) == 3
    assert db['address'].find_one({'_id': ref.id})[
        '_py_persistent_type'].endswith('Kiosk')
    # And a document of the first class, written without its name,
    # still loads as that class.
    ref = dm.insert(Address('Lisbon', '2'))
    transaction.commit()
    assert isinstance(dm_of(roundtrips.client, dbname).load(ref), Address)


def test_a_dropped_type_map_is_written_again_by_the_next_insert(
        client, roundtrips, dbname, db):
    # The entry the process keeps outlives the stored one (a dropped
    # database or type map); inserting records it again, once per data
    # manager and collection, so that other processes find it.
    dm_of(roundtrips.client, dbname).insert(Shop('Lima'))
    transaction.commit()
    db[TYPE_MAP_COLLECTION].drop()
    db['address'].drop()

    dm = dm_of(roundtrips.client, dbname)
    roundtrips.reset()
    dm.insert(Shop('Perth'))
    dm.insert(Shop('Osaka'))
    transaction.commit()
    assert db[TYPE_MAP_COLLECTION].find_one()['types'] == [
        'tests.test_typemap.Shop']
    # One write records it (no read first), one writes the shops.
    assert roundtrips.writes[TYPE_MAP_COLLECTION] == 1
    assert roundtrips.reads[TYPE_MAP_COLLECTION] == 0
    roundtrips.reset()
    dm.insert(Shop('Nairobi'))
    transaction.commit()
    assert roundtrips.writes[TYPE_MAP_COLLECTION] == 0


def test_a_client_gone_while_the_process_cache_is_locked_is_forgotten():
    # The cache forgets a client's entries from a weakref callback, which
    # runs wherever the client is collected: also inside the cache's own
    # locked section (garbage collection runs at any allocation; Python
    # 3.12 collected clients of earlier tests there).  With a lock that the
    # thread holding it cannot take again, that deadlocked.
    class Client:
        pass

    client = Client()
    typemap._process_cache(client, 'db', 'type_map')
    key = id(client)
    done = []

    def collect_while_locked():
        nonlocal client
        with typemap._shared_lock:
            client = None       # the callback runs here
        done.append(key not in typemap._shared)

    worker = threading.Thread(target=collect_while_locked, daemon=True)
    worker.start()
    worker.join(60)
    assert done == [True]
