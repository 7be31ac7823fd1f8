"""Stored field names never set what the class and the library own.

A stored document's fields become instance attributes.  Names starting
with ``_py_`` are the library's; ``_p_`` and ``_v_`` attributes of a
persistent object come from its class and its data manager
(``_p_resolveConflict``, ``_p_mongo_doc_object``, ...); special names
(``__reduce_ex__``, ``__class__``, ``__deepcopy__``) are looked up on the
instance by ``copy`` and ``pickle`` (the data manager pickles states for
savepoints).  Reading refuses each with ``StoredDataError`` naming the
document and the field; writing refuses what reading would, so nothing is
stored that cannot be loaded again.
"""
import persistent
import pytest
import transaction

from mongopersist import conflict, interfaces, metadata
from tests.model import Person

FIRED = []


class Launcher:
    """An allowed class: loading may return it, never call it."""

    def __init__(self, *args):
        FIRED.append(args)


class Plain:
    pass


class Located:
    """Declares the location attributes of zope.location's ``Contained``."""
    __name__ = None
    __parent__ = None


class Listing(list):
    """A list subclass: stored with ``_py_listitems``."""


metadata.register_type(Launcher)
metadata.register_type(Plain)
metadata.register_type(Located)
metadata.register_type(Listing)
LAUNCHER = {'_py_type': 'type', 'path': '%s.Launcher' % __name__}
COLLECTION = 'tests.model.Person'


@pytest.fixture(autouse=True)
def _nothing_fired():
    del FIRED[:]
    yield
    assert FIRED == []


def store(dm, db, **fields):
    person = dm.root['p'] = Person('p')
    transaction.commit()
    db[COLLECTION].update_one({'_id': person._p_oid.id}, {'$set': fields})
    return person._p_oid.id


def load_error(make_dm, attribute=None):
    with pytest.raises(interfaces.StoredDataError) as info:
        person = make_dm().root['p']
        person._p_activate()
        if attribute is not None:
            getattr(person, attribute)
    return info.value


@pytest.mark.parametrize('name', [
    '_py_note', '_py_state', '_py_type_x', '_p_resolveConflict',
    '_p_mongo_doc_object', '_p_mongo_collection', '_p_mongo_sub_object',
    '_v_cache', '__reduce_ex__', '__class__', '__deepcopy__', '__dict__',
    '__setstate__', '__getattr__'])
def test_top_level_fields_with_reserved_names_are_refused(
        dm, db, make_dm, name):
    stored_id = store(dm, db, **{name: LAUNCHER})
    before = db[COLLECTION].find_one({'_id': stored_id})
    error = load_error(make_dm)
    assert error.path == name
    assert (error.database, error.collection, error.id) == (
        db.name, COLLECTION, stored_id)
    assert db[COLLECTION].find_one({'_id': stored_id}) == before


@pytest.mark.parametrize('name', [
    '_py_note', '__reduce_ex__', '__reduce__', '__class__', '__deepcopy__',
    '__getstate__'])
def test_value_fields_with_reserved_or_special_names_are_refused(
        dm, db, make_dm, name):
    store(dm, db, value={'_py_type': '%s.Plain' % __name__, name: LAUNCHER})
    error = load_error(make_dm, 'value')
    assert error.path == 'value.%s' % name


def test_value_objects_may_have_p_and_v_attributes(dm, db, make_dm):
    # Only persistent objects get those from their class.
    store(dm, db, value={'_py_type': '%s.Plain' % __name__, '_p_x': 1,
                         '_v_y': 2})
    value = make_dm().root['p'].value
    assert (value._p_x, value._v_y) == (1, 2)


def test_declared_location_attributes_load(dm, make_dm):
    person = dm.root['p'] = Person('p')
    person.value = Located()
    person.value.__name__ = 'item'
    person.value.__parent__ = 'folder'
    transaction.commit()
    value = make_dm().root['p'].value
    assert (value.__name__, value.__parent__) == ('item', 'folder')


def _unwritable(name):
    """A value whose attribute ``name`` reading would refuse."""
    value = Listing()
    setattr(value, name, 'shadow')
    return value


@pytest.mark.parametrize('name', ['__parent__', 'append'])
def test_what_reading_refuses_is_not_written(dm, name):
    # __parent__: a special name Listing does not declare; append: the
    # name of one of its methods.
    person = dm.root['p'] = Person('p')
    transaction.commit()
    person.value = _unwritable(name)
    with pytest.raises(interfaces.UnstorableObjectError) as info:
        transaction.commit()
    assert info.value.path == 'Person.value.%s' % name
    transaction.abort()


def test_a_persistent_object_with_an_undeclared_special_name_is_not_written(
        dm):
    person = Person('p')
    person.__parent__ = 'folder'
    dm.root['p'] = Person('q')
    transaction.commit()
    dm.insert(person)
    with pytest.raises(interfaces.UnstorableObjectError) as info:
        transaction.commit()
    assert info.value.path == 'Person.__parent__'
    transaction.abort()


# A lone surrogate is not text BSON can hold: a client decoding with
# ``unicode_decode_error_handler='surrogateescape'`` makes one of a stored
# name that is not UTF-8.  As an attribute name it cannot be written back
# (persistent's ``__getstate__`` of such a state crashed the process).
@pytest.mark.parametrize('name', ['\udcff', 'ok\ud800'])
def test_a_field_name_that_is_not_text_is_refused(dm, db, make_dm, name):
    person = dm.root['p'] = Person('p')
    transaction.commit()
    document = dict(db[COLLECTION].find_one({'_id': person._p_oid.id}))
    reader = make_dm()
    with pytest.raises(interfaces.StoredDataError) as info:
        reader._object_from_document(
            db.name, COLLECTION, dict(document, **{name: 1}))
    assert info.value.path == name
    assert 'lone surrogate' in str(info.value)
    value = {'_py_type': '%s.Plain' % __name__, name: 1}
    with pytest.raises(interfaces.StoredDataError) as info:
        reader._object_from_document(
            db.name, COLLECTION, dict(document, value=value))._p_activate()
    assert info.value.path == 'value.%s' % name
    transaction.abort()


def test_a_stored_field_never_hides_a_method(dm, db, make_dm):
    # ``append`` is a method of Listing: a stored field of that name is
    # refused (the items would otherwise go in with the stored value, and
    # the application's ``value.append(...)`` would call it).
    store(dm, db, value={
        '_py_type': '%s.Listing' % __name__, 'append': LAUNCHER,
        '_py_listitems': ['rm -rf /']})
    error = load_error(make_dm, 'value')
    assert error.path == 'value.append'


def test_list_items_are_added_with_the_methods_of_the_class(dm, db, make_dm):
    store(dm, db, value={
        '_py_type': '%s.Listing' % __name__, 'size': 1,
        '_py_listitems': ['a', 'b']})
    value = make_dm().root['p'].value
    assert type(value) is Listing and list(value) == ['a', 'b']
    assert value.size == 1


def test_list_items_of_a_class_without_append_are_malformed(dm, db, make_dm):
    store(dm, db, value={
        '_py_type': '%s.Plain' % __name__, 'append': LAUNCHER,
        '_py_listitems': ['rm -rf /']})
    error = load_error(make_dm, 'value')
    assert error.path == 'value._py_listitems'


class Merging(persistent.Persistent):
    _p_mongo_collection = 'stored_names_merging'

    def __init__(self):
        self.count = 0

    def _p_resolveConflict(self, old, committed, new):
        merged = dict(committed)
        merged['count'] = committed['count'] + new['count'] - old['count']
        return merged


def test_conflicts_are_resolved_by_the_class_only(dm, db, make_dm):
    dm.root['m'] = Merging()
    transaction.commit()
    ours = make_dm(
        conflict_handler=conflict.ResolvingSerialConflictHandler).root['m']
    ours.count += 1
    # Set on the instance (which stored data can no longer do), a resolver
    # is not the class's: it is not called.
    ours.__dict__['_p_resolveConflict'] = Launcher
    db['stored_names_merging'].update_one(
        {'_id': ours._p_oid.id}, {'$inc': {'_py_serial': 1, 'count': 10}})
    transaction.commit()
    assert db['stored_names_merging'].find_one(
        {'_id': ours._p_oid.id})['count'] == 11


def test_a_stored_resolver_is_refused_when_resolving(dm, db, make_dm):
    dm.root['m'] = Merging()
    transaction.commit()
    ours = make_dm(
        conflict_handler=conflict.ResolvingSerialConflictHandler).root['m']
    ours.count += 1
    coll = db['stored_names_merging']
    coll.update_one({'_id': ours._p_oid.id},
                    {'$inc': {'_py_serial': 1, 'count': 10},
                     '$set': {'_p_resolveConflict': LAUNCHER}})
    before = coll.find_one({'_id': ours._p_oid.id})
    with pytest.raises(interfaces.StoredDataError) as info:
        transaction.commit()
    transaction.abort()
    assert info.value.path == '_p_resolveConflict'
    assert coll.find_one({'_id': ours._p_oid.id}) == before
