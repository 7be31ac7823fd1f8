"""Containers: items in a collection of their own, or in the container.

What is stored is checked through raw PyMongo collections; round trips are
counted with ``tests.roundtrips``.
"""
import persistent
import pytest
import transaction
from bson.dbref import DBRef

from mongopersist import container
from mongopersist.datamanager import MongoDataManager
from mongopersist.serialize import get_dotted_name
from tests.model import Address, Car, ExtendedAddress, Person


class Document(persistent.Persistent):
    _p_mongo_collection = 'documents'

    def __init__(self, title='', key=None):
        self.title = title
        if key is not None:
            self.key = key

    def __repr__(self):
        return '<Document %s>' % self.title


class Folder(container.MongoContainer):
    _p_mongo_collection = 'folders'
    _m_collection = 'documents'


class Inbox(container.IdNamesMongoContainer):
    _p_mongo_collection = 'folders'
    _m_collection = 'documents'


class Addresses(container.MongoContainer):
    """Holds only extended addresses, from the shared 'address' collection."""
    _p_mongo_collection = 'folders'
    _m_item_class = ExtendedAddress


class Garage(container.EmbeddedMongoContainer):
    pass


@pytest.fixture
def folder(dm):
    dm.root['folder'] = Folder()
    return dm.root['folder']


def fill(folder, count):
    for index in range(count):
        folder['d%04d' % index] = Document('Doc %d' % index)


def fresh(dm):
    """The data manager of a second process, on the same database."""
    return MongoDataManager(dm._client, default_database=dm.default_database)


# -- MongoContainer ---------------------------------------------------------
def test_items_are_documents_that_reference_the_container(dm, db, folder):
    doc = Document('Hello')
    folder['hello'] = doc
    assert doc.key == 'hello'
    assert doc.parent is folder
    assert doc._p_jar is dm
    transaction.commit()
    stored = db['documents'].find_one()
    assert stored['key'] == 'hello'
    assert stored['title'] == 'Hello'
    assert stored['parent'] == DBRef('folders', folder._p_oid.id, db.name)
    # The container's own document holds no items.
    assert set(db['folders'].find_one()) == {'_id'}


def test_mapping_protocol(dm, folder):
    one, two = Document('One'), Document('Two')
    folder['one'] = one
    folder['two'] = two
    transaction.commit()
    folder = fresh(dm).root['folder']
    assert folder.keys() == ['one', 'two']
    assert list(folder) == ['one', 'two']
    assert [d.title for d in folder.values()] == ['One', 'Two']
    assert [(k, d.title) for k, d in folder.items()] == [
        ('one', 'One'), ('two', 'Two')]
    assert len(folder) == 2
    assert 'one' in folder
    assert 'three' not in folder
    assert folder['two'].title == 'Two'
    assert folder['two'].parent is folder
    assert folder.get('three') is None
    assert folder.get('three', 3) == 3
    with pytest.raises(KeyError):
        folder['three']
    assert bool(folder)


def test_delete_removes_the_item(dm, db, folder):
    folder['one'] = Document('One')
    folder['two'] = Document('Two')
    transaction.commit()
    del folder['one']
    assert 'one' not in folder
    assert folder.keys() == ['two']
    transaction.commit()
    assert [d['key'] for d in db['documents'].find()] == ['two']
    assert fresh(dm).root['folder'].keys() == ['two']
    with pytest.raises(KeyError):
        del folder['one']


def test_add_uses_the_key_attribute_else_the_object_id(dm, db, folder):
    assert folder.add(Document('A', key='a')) == 'a'
    assert folder.keys() == ['a']
    unnamed = Document('No key')
    name = folder.add(unnamed)
    assert name == str(unnamed._p_oid.id)
    assert folder.keys() == sorted(['a', name])
    assert folder.add(Document('B'), 'b') == 'b'
    transaction.commit()
    assert fresh(dm).root['folder']['a'].title == 'A'
    assert fresh(dm).root['folder'][name].title == 'No key'
    assert db['documents'].find_one({'_id': unnamed._p_oid.id})['key'] == name


def test_containers_keep_their_items_apart(dm, folder):
    dm.root['other'] = other = Folder()
    folder['x'] = Document('in folder')
    other['x'] = Document('in other')
    other['y'] = Document('only in other')
    transaction.commit()
    assert folder.keys() == ['x']
    assert folder['x'].title == 'in folder'
    assert other.keys() == ['x', 'y']
    assert other['x'].title == 'in other'


def test_replacing_an_item_removes_the_old_one(dm, db, folder):
    folder['a'] = Document('old')
    transaction.commit()
    folder['a'] = Document('new')
    assert len(folder) == 1
    transaction.commit()
    assert [d['title'] for d in db['documents'].find()] == ['new']


def test_renaming_an_item(dm, db, folder):
    doc = Document('Doc')
    folder['a'] = doc
    transaction.commit()
    assert len(folder) == 1
    folder['b'] = folder['a']
    assert folder.keys() == ['b']
    assert len(folder) == 1
    transaction.commit()
    assert [d['key'] for d in db['documents'].find()] == ['b']
    assert fresh(dm).root['folder'].keys() == ['b']


def test_integer_names(dm, folder):
    folder[2] = Document('Two')
    folder[1] = Document('One')
    transaction.commit()
    other = fresh(dm).root['folder']
    assert other.keys() == [1, 2]
    assert other[1].title == 'One'


def test_setting_the_same_item_again_changes_nothing(dm, folder):
    doc = Document('Doc')
    folder['a'] = doc
    folder['a'] = doc
    assert len(folder) == 1
    assert folder.keys() == ['a']


def test_abort_forgets_added_items(dm, db, folder):
    folder['a'] = Document('kept')
    transaction.commit()
    folder['b'] = Document('dropped')
    assert folder.keys() == ['a', 'b']
    transaction.abort()
    assert folder.keys() == ['a']
    assert [d['key'] for d in db['documents'].find()] == ['a']


class AnyShelf(container.MongoContainer):
    """Its instances may keep their items in 'documents' (given to the
    constructor, stored with the container)."""
    _m_allowed_locations = ('documents',)


def test_constructor_settings_are_stored(dm, db):
    shelf = AnyShelf(collection='documents', mapping_key='name',
                     parent_key='shelf')
    dm.root['shelf'] = shelf
    shelf['faust'] = Document('Faust')
    transaction.commit()
    assert db['documents'].find_one()['name'] == 'faust'
    assert db['documents'].find_one()['shelf'] == shelf._p_oid
    other = fresh(dm).root['shelf']
    assert other.keys() == ['faust']
    assert other['faust'].shelf is other


def test_item_class_filters_a_shared_collection(dm, db):
    dm.root['addresses'] = addresses = Addresses()
    addresses['home'] = ExtendedAddress('Tettau', '96355', 'Germany')
    transaction.commit()
    # A plain address that points at the container all the same.
    stray = Address('Maynard', '01754')
    stray.key = 'stray'
    stray.parent = addresses
    dm.insert(stray)
    transaction.commit()
    assert db['address'].count_documents({'key': 'stray'}) == 1
    other = fresh(dm).root['addresses']
    assert other.keys() == ['home']
    assert 'stray' not in other
    assert len(other) == 1
    with pytest.raises(TypeError, match='ExtendedAddress objects'):
        addresses['plain'] = Address('Boston', '02101')


# -- round trips and the per-transaction cache -----------------------------
def test_listing_a_thousand_items_costs_at_most_two_round_trips(
        roundtrips, dbname):
    dm = MongoDataManager(roundtrips.client, default_database=dbname)
    dm.root['folder'] = folder = Folder()
    roundtrips.reset()
    fill(folder, 1000)
    # Adding asks whether each name is taken, and writes nothing yet.
    assert roundtrips.reads['documents'] <= 1000, roundtrips
    assert roundtrips.writes_total == 0, roundtrips
    roundtrips.reset()
    transaction.commit()
    # All items are written in one round trip.
    assert roundtrips.writes['documents'] == 1, roundtrips

    other = MongoDataManager(roundtrips.client, default_database=dbname)
    folder = other.root['folder']
    folder._p_activate()
    roundtrips.reset()
    items = folder.items()
    assert len(items) == 1000
    assert items[0][0] == 'd0000'
    assert items[999][1].title == 'Doc 999'
    assert roundtrips.reads_total <= 2, roundtrips
    assert roundtrips.reads['documents'] == 1, roundtrips
    # The rest of the transaction asks nothing more.
    roundtrips.reset()
    assert len(folder) == 1000
    assert folder.keys()[-1] == 'd0999'
    assert folder['d0500'].title == 'Doc 500'
    assert 'd0999' in folder and 'd1000' not in folder
    assert len(folder.values()) == 1000
    assert roundtrips.total == 0, roundtrips


def test_cache_follows_adds_and_deletes_in_the_transaction(
        roundtrips, dbname):
    dm = MongoDataManager(roundtrips.client, default_database=dbname)
    dm.root['folder'] = folder = Folder()
    fill(folder, 3)
    transaction.commit()
    folder._p_activate()
    roundtrips.reset()
    assert folder.keys() == ['d0000', 'd0001', 'd0002']
    assert roundtrips.reads_total == 1, roundtrips
    roundtrips.reset()
    folder['new'] = Document('New')
    del folder['d0001']
    assert folder.keys() == ['d0000', 'd0002', 'new']
    assert len(folder) == 3
    assert 'd0001' not in folder
    assert folder['new'].title == 'New'
    assert roundtrips.total == 0, roundtrips
    # A query sees the same (the pending changes are written first).
    assert [d.key for d in folder.find()] == ['d0000', 'd0002', 'new']
    transaction.commit()
    # A new transaction asks again and gets what was committed.
    roundtrips.reset()
    assert folder.keys() == ['d0000', 'd0002', 'new']
    assert roundtrips.reads['documents'] == 1, roundtrips


def test_lookups_are_cached_without_listing(roundtrips, dbname):
    dm = MongoDataManager(roundtrips.client, default_database=dbname)
    dm.root['folder'] = folder = Folder()
    fill(folder, 3)
    transaction.commit()
    folder._p_activate()
    dm.count(Document)          # reads the type map
    roundtrips.reset()
    assert folder['d0001'].title == 'Doc 1'
    assert 'nothing' not in folder
    assert roundtrips.reads['documents'] == 2, roundtrips
    assert folder['d0001'].title == 'Doc 1'
    assert 'nothing' not in folder
    assert folder.get('nothing') is None
    assert len(folder) == 3
    assert len(folder) == 3
    assert roundtrips.reads['documents'] == 3, roundtrips
    folder['d0003'] = Document('Doc 3')
    assert len(folder) == 4
    assert roundtrips.reads['documents'] == 4, roundtrips  # was 'd0003' free?
    del folder['d0000']
    assert len(folder) == 3
    assert roundtrips.reads['documents'] == 5, roundtrips  # find d0000


def test_find_pages_through_the_items(roundtrips, dbname):
    dm = MongoDataManager(roundtrips.client, default_database=dbname)
    dm.root['folder'] = folder = Folder()
    fill(folder, 10)
    transaction.commit()
    other = MongoDataManager(roundtrips.client, default_database=dbname)
    folder = other.root['folder']
    folder._p_activate()
    other.count(Document)
    roundtrips.reset()
    page = list(folder.find(limit=3, skip=3))
    assert [d.key for d in page] == ['d0003', 'd0004', 'd0005']
    assert roundtrips.reads_total == 1, roundtrips
    # Only the page was loaded.
    loaded = [ref for ref in other._cache.keys()
              if ref.collection == 'documents']
    assert len(loaded) == 3
    assert [d.key for d in folder.find(
        {'title': {'$in': ['Doc 1', 'Doc 7', 'Doc 8']}},
        sort=[('key', -1)], limit=2)] == ['d0008', 'd0007']
    assert [d.key for d in folder.find(sort='title', skip=8)] == [
        'd0008', 'd0009']


def test_find_sees_items_added_in_this_transaction(dm, folder):
    folder['b'] = Document('B')
    folder['a'] = Document('A')
    assert [d.title for d in folder.find()] == ['A', 'B']
    assert [d.title for d in folder.find({'title': 'B'})] == ['B']


# -- bad input ----------------------------------------------------------
def test_container_must_be_stored_before_adding(dm, db):
    unstored = Folder()
    doc = Document('Doc')
    assert unstored.keys() == []
    assert len(unstored) == 0
    assert list(unstored.find()) == []
    with pytest.raises(ValueError, match='Store the Folder'):
        unstored['a'] = doc
    assert doc._p_jar is None
    assert not hasattr(doc, 'key')
    transaction.commit()
    assert db['documents'].count_documents({}) == 0


@pytest.mark.parametrize('item, error, words', [
    (object(), TypeError, 'persistent objects'),
    (Car('2005', 'Ford', 'Explorer'), TypeError, 'persistent objects'),
    (Person('Stephan'), ValueError, 'stored in .*documents'),
])
def test_bad_items_are_refused(dm, db, folder, item, error, words):
    transaction.commit()
    with pytest.raises(error, match=words):
        folder['a'] = item
    assert folder.keys() == []
    transaction.commit()
    assert db['documents'].count_documents({}) == 0
    assert db[get_dotted_name(Person)].count_documents({}) == 0


@pytest.mark.parametrize('name', [None, True, 1.5, ('a', 'b')])
def test_bad_names_are_refused(dm, db, folder, name):
    doc = Document('Doc')
    with pytest.raises(ValueError, match='not a valid name'):
        folder[name] = doc
    assert doc._p_jar is None
    transaction.commit()
    assert db['documents'].count_documents({}) == 0


def test_item_of_another_data_manager_is_refused(dm, make_dm, folder):
    doc = Document('Doc')
    make_dm().insert(doc)
    with pytest.raises(ValueError, match='another data manager'):
        folder['a'] = doc
    assert not hasattr(doc, 'parent')


def test_container_needs_a_collection():
    with pytest.raises(TypeError, match='collection of its items'):
        container.MongoContainer()


# -- IdNamesMongoContainer ------------------------------------------------
def test_id_names(dm, db):
    dm.root['inbox'] = inbox = Inbox()
    doc = Document('Mail')
    name = inbox.add(doc)
    assert name == str(doc._p_oid.id)
    assert inbox.keys() == [name]
    assert inbox[name] is doc
    assert len(inbox) == 1
    assert inbox.add(doc) == name      # adding again changes nothing
    assert len(inbox) == 1
    transaction.commit()
    stored = db['documents'].find_one()
    assert str(stored['_id']) == name
    assert 'key' not in stored
    other = fresh(dm).root['inbox']
    assert other.keys() == [name]
    assert other[name].title == 'Mail'
    assert 'not an id' not in other
    assert other.get(None) is None
    with pytest.raises(KeyError):
        other['0' * 24]
    with pytest.raises(TypeError, match='use add'):
        other[name] = Document('x')
    del other[name]
    assert other.keys() == []
    transaction.commit()
    assert db['documents'].count_documents({}) == 0


def test_id_names_in_creation_order(dm):
    dm.root['inbox'] = inbox = Inbox()
    names = [inbox.add(Document('Mail %d' % i)) for i in range(5)]
    transaction.commit()
    other = fresh(dm).root['inbox']
    assert other.keys() == sorted(names)
    assert [d.title for d in other.find(limit=2)] == ['Mail 0', 'Mail 1']


# -- EmbeddedMongoContainer ---------------------------------------------
def test_embedded_items_live_in_the_container_document(dm, db):
    dm.root['garage'] = garage = Garage()
    garage['ford'] = Car('2005', 'Ford', 'Explorer')
    garage['note'] = 'sedans only'
    transaction.commit()
    stored = db[get_dotted_name(Garage)].find_one()
    assert stored['data']['ford']['make'] == 'Ford'
    assert stored['data']['note'] == 'sedans only'
    other = fresh(dm).root['garage']
    assert other.keys() == ['ford', 'note']
    assert other['ford'].model == 'Explorer'
    assert len(other) == 2
    assert 'ford' in other and 'vw' not in other
    assert other.get('vw') is None
    assert [v for k, v in other.items() if k == 'note'] == ['sedans only']
    other['ford'].year = '2004'
    del other['note']
    transaction.commit()
    stored = db[get_dotted_name(Garage)].find_one()
    assert stored['data']['ford']['year'] == '2004'
    assert 'note' not in stored['data']


def test_embedded_listing_costs_one_read(roundtrips, dbname):
    dm = MongoDataManager(roundtrips.client, default_database=dbname)
    dm.root['garage'] = garage = Garage()
    for index in range(1000):
        garage['car%04d' % index] = Car(str(2000 + index % 20), 'Ford', 'T')
    transaction.commit()
    other = MongoDataManager(roundtrips.client, default_database=dbname)
    garage = other.root['garage']
    roundtrips.reset()
    assert len(garage.values()) == 1000
    assert garage['car0999'].year == '2019'
    assert roundtrips.reads_total <= 2, roundtrips
    assert roundtrips.reads[get_dotted_name(Garage)] == 1, roundtrips


def test_embedded_refuses_references_and_odd_names(dm, db):
    dm.root['garage'] = garage = Garage()
    transaction.commit()
    with pytest.raises(TypeError, match='stored as a reference'):
        garage['stephan'] = Person('Stephan')
    with pytest.raises(TypeError, match='names must be strings'):
        garage[1] = 'one'
    transaction.commit()
    assert db[get_dotted_name(Garage)].find_one()['data'] == {}
    assert db[get_dotted_name(Person)].count_documents({}) == 0


def test_savepoint_rollback_forgets_what_the_container_learned(dm, db,
                                                                folder):
    folder['a'] = Document('A')
    transaction.commit()
    folder['c'] = Document('C')     # the data manager joins the transaction
    assert folder.keys() == ['a', 'c']
    savepoint = transaction.savepoint()
    folder['b'] = Document('B')
    del folder['a']
    assert folder.keys() == ['b', 'c']
    savepoint.rollback()
    assert folder.keys() == ['a', 'c']
    assert 'b' not in folder
    assert len(folder) == 2
    transaction.commit()
    assert sorted(d['key'] for d in db['documents'].find()) == ['a', 'c']
