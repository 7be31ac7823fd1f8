"""The container family: locations, the classes, events, containers stored
elsewhere, query hooks, the access log, and what a stored container may
say about itself.

Stored documents are checked through raw PyMongo collections; events are
recorded from ``zope.event``'s subscribers.
"""
import logging

import persistent
import pytest
import transaction
from bson.dbref import DBRef
from bson.objectid import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mongopersist import container, events, interfaces, mapping, specs
from mongopersist.datamanager import MongoDataManager
from mongopersist.serialize import get_dotted_name

zope_event = pytest.importorskip(
    'zope.event', reason='container events need mongopersist[zope]')
lifecycle = pytest.importorskip(
    'zope.lifecycleevent', reason='container events need mongopersist[zope]')


class Plain(persistent.Persistent):
    """An item that knows nothing of locations."""
    _p_mongo_collection = 'items'

    def __init__(self, title=''):
        self.title = title


class Item(container.MongoContained, persistent.Persistent):
    """Told its location by the container that hands it out."""
    _p_mongo_collection = 'items'

    def __init__(self, title=''):
        self.title = title

    def __repr__(self):
        return '<Item %s>' % self.title


class Proxied(container.MongoContained, persistent.Persistent):
    """Finds its location in its own stored attributes."""
    _p_mongo_collection = 'items'
    _m_name_attr = 'key'
    _m_parent_attr = 'parent'


class Functions(container.MongoContained, persistent.Persistent):
    """Gets and sets its location through functions of the class."""
    _p_mongo_collection = 'items'
    _m_name_getter = staticmethod(lambda obj: obj.label.lower())
    _m_name_setter = staticmethod(
        lambda obj, value: setattr(obj, 'label', value.upper()))

    def __init__(self, label):
        self.label = label


class Located(persistent.Persistent):
    """zope.location's way: __name__ and __parent__ are stored data."""
    _p_mongo_collection = 'items'
    __name__ = None
    __parent__ = None


class Folder(container.MongoContainer):
    _p_mongo_collection = 'folders'
    _m_collection = 'items'


class KeepingFolder(Folder):
    """Taking an item out keeps its document."""
    _m_remove_documents = False


class Everything(container.AllItemsMongoContainer):
    _p_mongo_collection = 'folders'
    _m_collection = 'items'


class Shelf(container.SimpleMongoContainer):
    _p_mongo_collection = 'shelves'


class Box(container.SubDocumentMongoContainer):
    _p_mongo_collection = 'boxes'


class Note(persistent.Persistent):
    _p_mongo_sub_object = True

    def __init__(self, text):
        self.text = text


def fresh(dm):
    return MongoDataManager(dm._client, default_database=dm.default_database)


@pytest.fixture
def folder(dm):
    dm.root['folder'] = Folder()
    return dm.root['folder']


@pytest.fixture
def fired():
    """The events fired, as ``(event class name, object, old parent, old
    name, new parent, new name)``; container events as ``(name,
    container)``."""
    seen = []

    def record(event):
        if isinstance(event, events.ContainerModifiedEvent):
            seen.append(('Modified', event.object))
        else:
            seen.append((type(event).__name__.replace('Object', '').replace(
                'Event', ''), event.object, event.oldParent, event.oldName,
                event.newParent, event.newName))
    zope_event.subscribers.append(record)
    yield seen
    zope_event.subscribers.remove(record)


# -- locations ----------------------------------------------------------------
def test_items_know_their_location_without_storing_it(dm, db, folder):
    item = Item('A')
    folder['a'] = item
    assert (item.__name__, item.__parent__) == ('a', folder)
    transaction.commit()
    stored = db['items'].find_one()
    assert set(stored) == {'_id', 'title', 'key', 'parent'}
    other = fresh(dm)
    loaded = other.root['folder']['a']
    assert loaded.__name__ == 'a'
    assert loaded.__parent__ is other.root['folder']
    # Being told its location does not change the item.
    assert not loaded._p_changed
    assert (list(other.root['folder'].values())[0].__parent__
            is other.root['folder'])
    transaction.commit()
    assert db['items'].find_one() == stored


def test_every_way_of_handing_out_items_locates_them(dm, folder):
    for name in 'abc':
        folder[name] = Item(name)
    transaction.commit()
    other = fresh(dm).root['folder']
    assert [(i.__name__, i.__parent__ is other) for i in other.values()] \
        == [('a', True), ('b', True), ('c', True)]
    other = fresh(dm).root['folder']
    assert [(i.__name__, i.__parent__ is other) for i in other.find()] \
        == [('a', True), ('b', True), ('c', True)]
    other = fresh(dm).root['folder']
    found = other.find_one({'title': 'b'})
    assert (found.__name__, found.__parent__) == ('b', other)
    assert other.find_one(found._p_oid.id) is found
    assert other.get('c').__name__ == 'c'
    assert dict(other.items())['a'].__parent__ is other


def test_a_plain_item_is_left_as_it_is(dm, db, folder):
    item = Plain('P')
    folder['p'] = item
    assert not hasattr(item, '__parent__')
    transaction.commit()
    assert '__name__' not in db['items'].find_one()


def test_proxy_attributes_locate_items_loaded_any_way(dm, folder):
    folder['x'] = Proxied()
    transaction.commit()
    other = fresh(dm)
    loaded = list(other.find_objects(Proxied))[0]
    assert loaded.__name__ == 'x'
    assert loaded.__parent__ is other.root['folder']
    # Assigning the location does not touch the attributes.
    loaded.__name__ = 'y'
    assert (loaded.__name__, loaded.key) == ('y', 'x')


def test_getter_and_setter_functions(dm):
    item = Functions('Hello')
    assert item.__name__ == 'hello'
    item.__name__ = 'bye'
    assert item.label == 'BYE'
    assert item.__parent__ is None


def test_a_class_declaring_its_location_stores_it(dm, db, folder):
    item = Located()
    folder['z'] = item
    assert (item.__name__, item.__parent__) == ('z', folder)
    transaction.commit()
    stored = db['items'].find_one()
    assert stored['__name__'] == 'z'
    assert stored['__parent__'] == DBRef('folders', folder._p_oid.id,
                                         db.name)
    assert fresh(dm).root['folder']['z'].__name__ == 'z'


def test_a_stored_location_of_a_mongo_contained_item_is_refused(dm, db,
                                                                folder):
    folder['a'] = Item('A')
    transaction.commit()
    db['items'].update_one({}, {'$set': {'__name__': 'forged'}})
    with pytest.raises(interfaces.StoredDataError, match='__name__'):
        fresh(dm).root['folder']['a']


# -- the classes --------------------------------------------------------------
def test_all_items_container_sees_every_named_item(dm, db, folder):
    dm.root['other'] = other = Folder()
    folder['a'] = Item('in folder')
    other['b'] = Item('in other')
    dm.insert(Item('no name'))
    dm.root['all'] = everything = Everything()
    transaction.commit()
    everything = fresh(dm).root['all']
    assert everything.keys() == ['a', 'b']
    assert everything['b'].__parent__ is everything
    everything['c'] = Item('added')
    transaction.commit()
    stored = db['items'].find_one({'key': 'c'})
    assert 'parent' not in stored


def test_simple_container_references_its_items(dm, db, roundtrips):
    dm.root['shelf'] = shelf = Shelf()
    for index in range(50):
        shelf['i%02d' % index] = Item('Item %d' % index)
    transaction.commit()
    stored = db['shelves'].find_one()
    assert stored['data']['i07'] == DBRef('items', shelf['i07']._p_oid.id,
                                          db.name)
    assert db['items'].count_documents({}) == 50
    other = MongoDataManager(roundtrips.client,
                             default_database=dm.default_database)
    loaded = other.root['shelf']
    roundtrips.reset()
    titles = [item.title for item in loaded.values()]
    assert titles[7] == 'Item 7'
    # The items load in batches, not one read each.
    assert roundtrips.reads['items'] <= 2, roundtrips
    assert loaded['i03'].__parent__ is loaded
    del loaded['i03']
    transaction.commit()
    assert db['items'].count_documents({}) == 49
    assert 'i03' not in db['shelves'].find_one()['data']


def test_sub_document_container_is_the_embedded_one(dm, db):
    assert container.SubDocumentMongoContainer is \
        container.EmbeddedMongoContainer
    dm.root['box'] = box = Box()
    assert box.add(Note('one'), 'n1') == 'n1'
    name = box.add(Note('two'))
    assert ObjectId.is_valid(name)
    transaction.commit()
    assert db['boxes'].find_one()['data']['n1']['text'] == 'one'
    assert sorted(fresh(dm).root['box'].keys()) == sorted(['n1', name])


def test_the_mapping_methods(dm, db, folder):
    folder.update({'a': Item('A')}, b=Item('B'))
    assert folder.setdefault('a', Item('other')).title == 'A'
    assert folder.setdefault('c', Item('C')).title == 'C'
    assert folder.pop('b').title == 'B'
    assert folder.pop('b', None) is None
    with pytest.raises(KeyError):
        folder.pop('b')
    transaction.commit()
    assert sorted(d['key'] for d in db['items'].find()) == ['a', 'c']
    folder.clear()
    assert folder.keys() == []
    transaction.commit()
    assert db['items'].count_documents({}) == 0


def test_raw_find_gives_the_documents_of_the_items(dm, db, folder):
    folder['a'] = Item('A')
    folder['b'] = Item('B')
    dm.root['other'] = other = Folder()
    other['c'] = Item('C')
    docs = list(folder.raw_find({'title': {'$in': ['B', 'C']}}))
    assert [d['key'] for d in docs] == ['b']
    assert folder.raw_find_one({'title': 'A'})['key'] == 'a'
    assert folder.raw_find_one(docs[0]['_id'], {'title': 1}) == {
        '_id': docs[0]['_id'], 'title': 'B'}
    assert folder.raw_find_one({'title': 'C'}) is None
    with pytest.raises(TypeError, match='neither a filter nor an _id'):
        folder.find_one(['a'])


def test_taking_out_without_removing_the_document(dm, db):
    dm.root['keeping'] = keeping = KeepingFolder()
    keeping['a'] = Item('A')
    transaction.commit()
    del keeping['a']
    assert keeping.keys() == []
    transaction.commit()
    stored = db['items'].find_one()
    assert stored['title'] == 'A' and 'key' not in stored \
        and 'parent' not in stored


def test_moving_an_item_between_containers(dm, db, folder, fired):
    dm.root['other'] = other = Folder()
    item = Item('A')
    folder['a'] = item
    assert folder.keys() == ['a']
    other['b'] = item
    assert folder.keys() == []
    assert other.keys() == ['b']
    assert len(folder) == 0
    assert fired[-2] == ('Moved', item, folder, 'a', other, 'b')
    transaction.commit()
    stored = db['items'].find_one()
    assert (stored['key'], stored['parent'].id) == ('b', other._p_oid.id)


# -- events -------------------------------------------------------------------
def test_events_of_adding_renaming_and_removing(dm, folder, fired):
    item = Item('A')
    folder['a'] = item
    assert fired == [('Added', item, None, None, folder, 'a'),
                     ('Modified', folder)]
    folder['a'] = item          # nothing changes: no event
    assert len(fired) == 2
    folder['b'] = item
    assert fired[2:] == [('Moved', item, folder, 'a', folder, 'b'),
                         ('Modified', folder)]
    replacement = Item('B2')
    folder['b'] = replacement
    assert fired[4:] == [('Removed', item, folder, 'b', None, None),
                         ('Added', replacement, None, None, folder, 'b'),
                         ('Modified', folder)]
    del folder['b']
    assert fired[7:] == [('Removed', replacement, folder, 'b', None, None),
                         ('Modified', folder)]
    assert replacement.__parent__ is None


@pytest.mark.parametrize('make', [Shelf, Box])
def test_events_of_in_document_containers(dm, fired, make):
    dm.root['c'] = box = make()
    item = Item('A') if make is Shelf else Note('a')
    box['a'] = item
    del box['a']
    assert [event[0] for event in fired] == [
        'Added', 'Modified', 'Removed', 'Modified']


def test_events_reach_object_subscribers_through_zope_component(dm, folder):
    component = pytest.importorskip(
        'zope.component', reason='object events need zope.component')
    from zope.lifecycleevent.interfaces import IObjectAddedEvent
    added = []

    def handler(obj, event):
        added.append((obj.title, event.newName))
    import zope.component.event
    registry = component.getGlobalSiteManager()
    # What zope.component's configure.zcml registers: object events go to
    # the subscribers of (object, event).
    registry.registerHandler(zope.component.event.objectEventNotify)
    registry.registerHandler(handler, (Item, IObjectAddedEvent))
    try:
        folder['a'] = Item('A')
        folder.add(Item('B'), 'b')
    finally:
        registry.unregisterHandler(handler, (Item, IObjectAddedEvent))
        registry.unregisterHandler(zope.component.event.objectEventNotify)
    assert added == [('A', 'a'), ('B', 'b')]


def test_id_names_container_fires_added(dm, fired):
    class Inbox(container.IdNamesMongoContainer):
        _p_mongo_collection = 'folders'
        _m_collection = 'items'
    dm.root['inbox'] = inbox = Inbox()
    item = Item('mail')
    name = inbox.add(item)
    assert fired[0] == ('Added', item, None, None, inbox, name)
    assert item.__name__ == name
    assert inbox.add(item) == name
    assert len(fired) == 2


# -- a container stored in ZODB -----------------------------------------------
class People(container.MongoContainer):
    _m_collection = 'items'


class Provider:
    def __init__(self, dm):
        self.dm = dm

    def get(self):
        return self.dm


@pytest.fixture
def provider():
    yield
    container.set_data_manager_provider(None)


def test_a_container_stored_in_zodb_keeps_its_items_in_mongodb(
        dm, db, provider):
    ZODB = pytest.importorskip('ZODB', reason='ZODB hosts the container')
    zodb = ZODB.DB(None)
    try:
        root = zodb.open().root()
        root['people'] = People()
        transaction.commit()
        people = root['people']
        with pytest.raises(interfaces.ConfigurationError,
                           match='set_data_manager_provider'):
            people.keys()
        container.set_data_manager_provider(Provider(dm))
        assert people.keys() == []
        people['stephan'] = Item('Stephan')
        transaction.commit()
        stored = db['items'].find_one()
        assert stored['parent'] == 'zodb-' + people._p_oid.hex()
        again = zodb.open().root()['people']
        assert again.keys() == ['stephan']
        stephan = again['stephan']
        assert (stephan.__name__, stephan.__parent__) == ('stephan', again)
        del again['stephan']
        transaction.commit()
        assert db['items'].count_documents({}) == 0
    finally:
        transaction.abort()
        zodb.close()


def test_a_provider_must_give_a_data_manager(provider):
    with pytest.raises(TypeError, match='get'):
        container.set_data_manager_provider(object())


# -- query hooks --------------------------------------------------------------
class Tenanted(container.MongoContained, persistent.Persistent):
    _p_mongo_collection = 'items'

    def __init__(self, tenant):
        self.tenant = tenant


class ByKey(mapping.MongoCollectionMapping):
    __mongo_collection__ = 'items'


@pytest.fixture
def tenant():
    current = {'tenant': 'a'}
    seen = []

    def only_the_tenant(collection, spec):
        seen.append(collection.name)
        return {'$and': [spec, {'tenant': current['tenant']}]}
    specs.register(only_the_tenant)
    yield current, seen
    specs.unregister(only_the_tenant)


def test_a_spec_processor_rewrites_every_query(dm, folder, tenant):
    current, seen = tenant
    folder['a1'] = Tenanted('a')
    folder['b1'] = Tenanted('b')
    transaction.commit()
    other = fresh(dm).root['folder']
    assert other.keys() == ['a1']
    assert 'b1' not in other
    assert len(other) == 1
    assert [i.tenant for i in other.find()] == ['a']
    assert [d['key'] for d in other.raw_find()] == ['a1']
    assert other.find_one({'key': 'b1'}) is None
    assert ByKey(dm).keys() == ['a1']
    current['tenant'] = 'b'
    transaction.commit()
    assert fresh(dm).root['folder'].keys() == ['b1']
    assert set(seen) == {'items'}


def test_a_spec_processor_must_return_a_filter(dm, folder):
    @specs.register
    def broken(collection, spec):
        return None
    try:
        with pytest.raises(TypeError, match='not a filter'):
            folder.keys()
    finally:
        specs.unregister(broken)
    with pytest.raises(TypeError, match='spec processor'):
        specs.register(42)


def test_spec_processors_may_be_objects(dm, folder):
    class Processor:
        def process(self, collection, spec):
            return {'$and': [spec, {'title': 'kept'}]}
    processor = specs.register(Processor())
    try:
        folder['a'] = Item('kept')
        folder['b'] = Item('hidden')
        transaction.commit()
        assert fresh(dm).root['folder'].keys() == ['a']
    finally:
        specs.unregister(processor)
    assert specs.registered() == ()


# -- the collection-access log ------------------------------------------------
def test_the_access_log_logs_and_counts_collection_commands(caplog):
    import pymongo
    from mongopersist.accesslog import CollectionAccessLog
    from tests.scripted_server import ScriptedReplicaSet
    scripted = ScriptedReplicaSet()
    access = CollectionAccessLog(filters=True)
    client = pymongo.MongoClient(
        scripted.server.uri, replicaSet='rs0', event_listeners=[access],
        serverSelectionTimeoutMS=3000, connectTimeoutMS=3000,
        socketTimeoutMS=5000, retryWrites=False)
    try:
        with caplog.at_level(logging.DEBUG, 'mongopersist.collection'):
            assert client.blog.posts.find_one({'title': 'x' * 500}) is None
            client.blog['\x1b[31mred'].insert_one({'_id': 2})
        assert access.counts[('blog', 'posts', 'find')] == 1
        assert access.counts[('blog', '\x1b[31mred', 'insert')] == 1
        lines = [r.getMessage() for r in caplog.records
                 if r.name == 'mongopersist.collection']
        assert lines[0].startswith("find blog.posts {'title': 'xxx")
        assert '...(' in lines[0] and len(lines[0]) < 400
        assert lines[1].startswith('insert blog.\\x1b[31mred ')
        access.reset()
        assert not access.counts
    finally:
        client.close()
        scripted.close()


# -- what a stored container may say about itself -----------------------------
class Allowing(container.MongoContainer):
    _p_mongo_collection = 'folders'
    _m_collection = 'items'
    _m_allowed_locations = ('more_items', ('archive', 'old_items'))


def test_constructor_locations_are_checked_against_the_class():
    assert Allowing(collection='more_items')._m_collection == 'more_items'
    assert Allowing(collection='old_items',
                    database='archive')._m_database == 'archive'
    for collection, database in [('users', None), ('old_items', None),
                                 ('more_items', 'archive')]:
        with pytest.raises(ValueError, match='does not allow'):
            Allowing(collection=collection, database=database)
    with pytest.raises(ValueError, match='does not allow'):
        container.MongoContainer(collection='anything')
    with pytest.raises(ValueError, match='reserved'):
        Folder(mapping_key='_id')
    with pytest.raises(ValueError, match='must not hold'):
        Folder(parent_key='$where')


@pytest.mark.parametrize('field, value, words', [
    ('_m_collection', 'users', 'does not allow'),
    ('_m_collection', 'system.users', 'system collection'),
    ('_m_database', 'admin', 'does not allow'),
    ('_m_database', 'a/b', 'not a database name'),
    ('_m_mapping_key', '$where', 'must not hold'),
    ('_m_mapping_key', '_py_type', 'reserved'),
    ('_m_parent_key', None, 'must not be null'),
    ('_m_parent_key', 7, 'must be a string'),
    ('_m_allow_global', 'yes', 'true or false'),
    ('_m_filter', {'a': 1}, 'hide the method _m_filter'),
    ('_m_item_class', {'_py_type': 'type',
                       'path': 'tests.test_container_family.Item'},
     'not a setting'),
    ('keys', ['a'], 'hide the method keys'),
])
def test_a_stored_container_cannot_change_what_its_class_says(
        dm, db, folder, field, value, words):
    folder['a'] = Item('A')
    transaction.commit()
    db['folders'].update_one({}, {'$set': {field: value}})
    with pytest.raises(interfaces.StoredDataError, match=words) as info:
        fresh(dm).root['folder'].keys()
    assert info.value.path == field
    assert info.value.collection == 'folders'
    assert db['items'].count_documents({}) == 1


def test_writing_refuses_what_loading_would(dm, folder):
    folder._m_filter = {}
    with pytest.raises(interfaces.UnstorableObjectError, match='_m_filter'):
        transaction.commit()
    transaction.abort()


def test_an_instance_setting_how_it_is_stored_is_refused(dm, db):
    # Before, persistent dropped the _p_ attribute: the flag was silently
    # ignored.  Now it is refused: how objects are stored is the class's.
    item = Plain('x')
    item._p_mongo_sub_object = True
    holder = Plain('holder')
    holder.inner = item
    with pytest.raises(interfaces.UnstorableObjectError,
                       match='_p_mongo_sub_object is set on the instance'):
        dm.root['holder'] = holder
    other = Plain('y')
    other._p_mongo_store_type = True
    with pytest.raises(interfaces.UnstorableObjectError,
                       match='_p_mongo_store_type is set on the instance'):
        dm.root['other'] = other
    transaction.abort()
    assert db['items'].count_documents({}) == 0


SETTING_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3),
    st.sampled_from(['items', 'more_items', 'old_items', 'users',
                     'system.users', 'archive', 'admin', '', '$where', 'a.b',
                     '_id', 'key', 'parent', 'name', '__class__', 'a\x00b',
                     'x' * 300]),
    st.text(st.characters(blacklist_categories=('Cs',)), max_size=20),
    st.dictionaries(
        st.text('abc', min_size=1, max_size=3),
        st.integers(-2 ** 31, 2 ** 31), max_size=2))
FIELDS = st.sampled_from([
    '_m_collection', '_m_database', '_m_mapping_key', '_m_parent_key',
    '_m_allow_global', '_m_item_class', '_m_filter', '_m_location', 'keys',
    '_m_remove_documents', 'title', 'get', '__name__'])


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(planted=st.dictionaries(FIELDS, SETTING_VALUES, max_size=4))
def test_any_stored_container_document_loads_safely(dm, db, planted):
    """Whatever a writer stores in a container's document, loading it
    either gives a container that keeps to what its class allows, or
    raises one StoredDataError naming a planted field; nothing stored
    changes and no other collection is read."""
    transaction.abort()
    for name in db.list_collection_names():
        db.drop_collection(name)
    dm.root['folder'] = folder = Allowing()
    folder['a'] = Item('A')
    transaction.commit()
    db['folders'].update_one({}, {'$set': planted})
    before = {name: list(db[name].find())
              for name in db.list_collection_names()}
    other = fresh(dm)
    try:
        loaded = other.root['folder']
        names = loaded.keys()
        location = loaded._m_location(other)
    except interfaces.StoredDataError as error:
        assert error.path in planted, error
        assert error.collection == 'folders'
    else:
        assert location in [(db.name, 'items'), (db.name, 'more_items'),
                            ('archive', 'old_items')]
        assert isinstance(loaded._m_allow_global, bool)
        for key in (loaded._m_mapping_key, loaded._m_parent_key):
            assert isinstance(key, str) and key[0] != '$' \
                and '.' not in key and key != '_id'
        assert names in ([], ['a'])
    transaction.abort()
    after = {name: list(db[name].find())
             for name in db.list_collection_names()}
    assert after == before


def test_containers_stored_as_the_base_class_load_once_allowed(
        dm, db, monkeypatch):
    # The original package stored MongoContainer('person') with its
    # collection in the container's document.
    dm.root['people'] = people = Allowing()
    transaction.commit()
    db['folders'].update_one({}, {'$set': {
        '_py_persistent_type': 'mongopersist.container.MongoContainer',
        '_m_collection': 'person'}})
    db['person'].insert_one({'key': 'stephan', 'parent': DBRef(
        'folders', people._p_oid.id, db.name), 'title': 'Stephan',
        '_py_persistent_type': get_dotted_name(Item)})

    def trusting():
        return MongoDataManager(dm._client, default_database=db.name,
                                trusted_modules=['mongopersist.container'])
    with pytest.raises(interfaces.StoredDataError, match='does not allow'):
        trusting().root['people']._p_activate()
    monkeypatch.setattr(container.MongoContainer, '_m_allowed_locations',
                        ('person',))
    loaded = trusting().root['people']
    assert loaded.keys() == ['stephan']
    assert type(loaded) is container.MongoContainer
