"""Batched commits: one round trip per collection, not one per object."""
import pytest
import transaction
from bson.dbref import DBRef

from mongopersist import batching, interfaces
from mongopersist.datamanager import MongoDataManager
from tests.model import Address, Counter, Person, Simple

N = 1000
SIMPLE = 'tests.model.Simple'
PERSON = 'tests.model.Person'


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
    # Loading by reference: the items found in one list, in one query.
    assert roundtrips.reads[SIMPLE] == 1
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


# -- batched loading: a ghost's siblings are read with it ------------------

COUNTER = 'counter'


def fresh(roundtrips, dbname, **kwargs):
    """A new data manager (another process) counting its round trips."""
    kwargs.setdefault('detect_conflicts', True)
    return MongoDataManager(roundtrips.client, default_database=dbname,
                            **kwargs)


def test_references_in_a_list_load_in_one_query(cdm, roundtrips, dbname):
    cdm.root['holder'] = Simple(items=[Simple(i=i) for i in range(50)])
    transaction.commit()

    holder = fresh(roundtrips, dbname).root['holder']
    roundtrips.reset()
    assert [item.i for item in holder.items] == list(range(50))
    # The holder's document, then every item in one $in query.
    assert roundtrips.reads[SIMPLE] == 2
    assert roundtrips.reads_total == 2


def test_references_of_one_document_load_together_per_collection(
        cdm, roundtrips, dbname):
    cdm.root['x'] = Simple(
        home=Address('Boston', '02101'), work=Address('Berlin', '10115'),
        visits=Counter(3), likes={'a': Counter(4)})
    transaction.commit()

    x = fresh(roundtrips, dbname).root['x']
    x.home                           # reads x
    roundtrips.reset()
    assert x.home.city == 'Boston'
    # One query per collection, for the siblings of every collection.
    assert roundtrips.reads == {'address': 1, COUNTER: 1}
    assert x.work.city == 'Berlin'
    assert x.visits.value == 3
    assert x.likes['a'].value == 4
    assert roundtrips.reads == {'address': 1, COUNTER: 1}


def test_references_on_a_query_page_load_together(cdm, roundtrips, dbname):
    addresses = [Address('City %d' % i, '%05d' % i) for i in range(5)]
    for i in range(40):
        cdm.insert(Person('P%d' % i, address=addresses[i % 5]))
    transaction.commit()

    dm = fresh(roundtrips, dbname)
    roundtrips.reset()
    cities = [p.address.city for p in dm.find_objects(Person)]
    assert cities == ['City %d' % (i % 5) for i in range(40)]
    assert roundtrips.reads == {PERSON: 1, 'address': 1}


def test_pages_grow(cdm, roundtrips, dbname, monkeypatch):
    monkeypatch.setattr(batching, 'PAGE_SIZES', (3, 6))
    assert [len(page) for page in batching.pages(range(20))] == [3, 6, 6, 5]
    assert [len(page) for page in batching.pages(range(9))] == [3, 6]
    addresses = [Address('City %d' % i, '%05d' % i) for i in range(20)]
    for i in range(20):
        cdm.insert(Person('P%d' % i, address=addresses[i]))
    transaction.commit()

    dm = fresh(roundtrips, dbname)
    roundtrips.reset()
    assert len({p.address.city for p in dm.find_objects(Person)}) == 20
    # One read of the people, one per page of the addresses they name.
    assert roundtrips.reads == {PERSON: 1, 'address': 4}


def test_prefetch_reads_one_query_per_collection(cdm, roundtrips, dbname):
    refs = [cdm.insert(Address('City %d' % i, '%05d' % i)) for i in range(5)]
    refs += [cdm.insert(Counter(i)) for i in range(3)]
    transaction.commit()

    dm = fresh(roundtrips, dbname)
    roundtrips.reset()
    objects = dm.prefetch(refs[:3] + [dm.load(ref) for ref in refs[3:]])
    assert roundtrips.reads == {'address': 1, COUNTER: 1}
    assert [obj._p_oid for obj in objects] == refs
    assert [o.city for o in objects[:5]] == ['City %d' % i for i in range(5)]
    assert [o.value for o in objects[5:]] == [0, 1, 2]
    assert roundtrips.reads == {'address': 1, COUNTER: 1}
    # Loaded objects are not read again.
    roundtrips.reset()
    assert dm.prefetch(objects) == objects
    assert roundtrips.reads_total == 0


def test_prefetch_refuses_what_is_not_an_object_of_the_data_manager(
        cdm, dbname, roundtrips):
    with pytest.raises(TypeError):
        cdm.prefetch(Simple())
    with pytest.raises(TypeError):
        cdm.prefetch([42])
    with pytest.raises(ValueError):
        cdm.prefetch([Simple()])
    other = fresh(roundtrips, dbname)
    obj = Simple()
    other.insert(obj)
    with pytest.raises(ValueError):
        cdm.prefetch([obj])


def _items_one_gone(cdm, roundtrips, dbname, db, count, index):
    """``count`` stored addresses in a list, the document of the one at
    ``index`` removed behind the data manager's back; the list as a new
    data manager loads it, and the ``_id`` removed."""
    cdm.root['holder'] = Simple(items=[Address('A%d' % i, '0') for i in
                                       range(count)])
    transaction.commit()
    gone = cdm.root['holder'].items[index]._p_oid.id
    db['address'].delete_one({'_id': gone})
    transaction.abort()
    return fresh(roundtrips, dbname).root['holder'].items, gone


def test_a_missing_sibling_fails_alone(cdm, roundtrips, dbname, db):
    items, gone = _items_one_gone(cdm, roundtrips, dbname, db, 4, 2)
    roundtrips.reset()
    assert items[0].city == 'A0'
    with pytest.raises(interfaces.DocumentNotFoundError) as info:
        items[2].city
    assert repr(gone) in str(info.value)
    assert items[3].city == 'A3'
    # The batch, and the missing one asked for once more.
    assert roundtrips.reads == {'address': 2}


def test_a_missing_document_in_a_batch_is_reported_for_itself(
        cdm, roundtrips, dbname, db):
    items, gone = _items_one_gone(cdm, roundtrips, dbname, db, 3, 0)
    with pytest.raises(interfaces.DocumentNotFoundError) as info:
        items[0].city
    assert repr(gone) in str(info.value)
    roundtrips.reset()
    assert [items[1].city, items[2].city] == ['A1', 'A2']
    assert roundtrips.reads_total == 0


def test_a_refused_reference_in_a_batch_names_its_document(
        cdm, roundtrips, dbname, db):
    cdm.root['holder'] = Simple(items=[Address('A%d' % i, '0') for i in
                                       range(3)])
    transaction.commit()
    holder_id = cdm.root['holder']._p_oid.id
    stored = db[SIMPLE].find_one({'_id': holder_id})
    stored['items'].insert(1, DBRef('address', 'x', 'elsewhere_db'))
    db[SIMPLE].replace_one({'_id': holder_id}, stored)
    transaction.abort()

    dm = fresh(roundtrips, dbname)
    holder = dm.root['holder']
    with pytest.raises(interfaces.RefusedReferenceError) as info:
        holder.items
    error = info.value
    assert (error.database, error.collection, error.id) == (
        dbname, SIMPLE, holder_id)
    assert 'elsewhere_db' in str(error)
    # Loading it directly, or prefetching it, names the reference.
    with pytest.raises(interfaces.RefusedReferenceError) as info:
        dm.prefetch([DBRef('address', 'x', 'elsewhere_db')])
    assert (info.value.database, info.value.id) == ('elsewhere_db', 'x')
    # Nothing was written there (asked per database: listDatabases of
    # the wire-protocol stand-in cannot size documents holding DBRefs).
    assert roundtrips.client['elsewhere_db'].list_collection_names() == []


def test_documents_read_ahead_are_not_served_in_a_later_transaction(
        cdm, roundtrips, dbname, db):
    cdm.root['holder'] = Simple(items=[Address('A%d' % i, '0') for i in
                                       range(3)])
    transaction.commit()

    dm = fresh(roundtrips, dbname)
    items = dm.root['holder'].items
    assert items[0].city == 'A0'        # items 1 and 2 read ahead
    db['address'].update_one({'_id': items[1]._p_oid.id},
                             {'$set': {'city': 'changed'}})
    transaction.commit()
    items = dm.root['holder'].items
    assert items[1].city == 'changed'

    dm.prefetch(items)
    db['address'].update_one({'_id': items[2]._p_oid.id},
                             {'$set': {'city': 'changed too'}})
    transaction.abort()
    assert dm.root['holder'].items[2].city == 'changed too'


def test_documents_read_ahead_are_dropped_by_a_savepoint_rollback(
        cdm, roundtrips, dbname, db):
    refs = [cdm.insert(Address('A%d' % i, '0')) for i in range(3)]
    transaction.commit()

    dm = fresh(roundtrips, dbname)
    dm.insert(Simple())                 # joins the transaction
    savepoint = transaction.savepoint()
    objects = dm.prefetch(refs)
    db['address'].update_one({'_id': refs[1].id},
                             {'$set': {'city': 'changed'}})
    savepoint.rollback()
    assert objects[1].city == 'changed'
