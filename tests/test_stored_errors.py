"""Malformed stored data raises StoredDataError, per object (issue 17).

Documents that MongoDB accepts but the library cannot use reached bare
errors: a root entry without a name (``KeyError('name')``), a document
whose ``_id`` is an embedded document (``TypeError: unhashable type``), a
reference to the collection ``''``, ``'$cmd'`` or a name with NUL
(PyMongo's ``InvalidName``).  Each now raises ``StoredDataError`` naming
the document (database, collection, ``_id``), and only for that object:
listing carries on with the next one.
"""
import re

import pytest
import transaction
from bson.dbref import DBRef
from bson.regex import Regex

from mongopersist import interfaces, mapping
from mongopersist.serialize import get_dotted_name
from tests.model import Person

PERSON = get_dotted_name(Person)
ROOT = 'persistence_root'

BAD_COLLECTIONS = ['', '$cmd', 'a\x00b', '.leading', 'trailing.', 'a..b',
                   'x$y', 'c' * 300, 'system.users', 'system.js']
BAD_IDS = [{'$ne': None}, {'$gt': ''}, {'a': 1}, [1, 2], Regex('.*')]


class People(mapping.MongoCollectionMapping):
    __mongo_collection__ = PERSON
    __mongo_mapping_key__ = 'name'


def drain(iterator):
    """Every item of ``iterator``, and every StoredDataError it raised in
    place of one (carrying on after each)."""
    items, errors = [], []
    while True:
        try:
            items.append(next(iterator))
        except StopIteration:
            return items, errors
        except interfaces.StoredDataError as error:
            errors.append(error)


def located(error, db, collection, id):
    assert (error.database, error.collection, error.id) == (
        db, collection, id), (error.database, error.collection, error.id)
    assert '%s.%s' % (db, collection) in str(error)


# -- root entries -----------------------------------------------------------
@pytest.fixture
def root_with_a_bad_entry(dm, db, make_dm):
    dm.root['a'] = Person('a')
    dm.root['c'] = Person('c')
    transaction.commit()
    ref = dm.root['a']._p_oid
    db[ROOT].insert_one({'_id': 'nameless', 'ref': DBRef(
        ref.collection, ref.id, ref.database)})
    db[ROOT].insert_one({'_id': 'number-name', 'name': 5,
                         'ref': DBRef(ref.collection, ref.id, ref.database)})
    return make_dm()


def test_root_listing_names_the_entry_without_a_name(root_with_a_bad_entry,
                                                     dbname):
    root = root_with_a_bad_entry.root
    with pytest.raises(interfaces.StoredDataError) as raised:
        root.keys()
    assert raised.value.path == 'name'
    assert raised.value.collection == ROOT
    assert raised.value.id in ('nameless', 'number-name')
    with pytest.raises(interfaces.StoredDataError):
        root.refs()


def test_root_listing_carries_on_after_a_bad_entry(root_with_a_bad_entry,
                                                   dbname):
    names, errors = drain(iter(root_with_a_bad_entry.root))
    assert sorted(names) == ['a', 'c']
    assert sorted(error.id for error in errors) == ['nameless', 'number-name']
    for error in errors:
        located(error, dbname, ROOT, error.id)
    # The good entries still load.
    assert root_with_a_bad_entry.root['c'].name == 'c'


# -- documents whose _id is not a usable identity ---------------------------
@pytest.fixture
def dict_id(dm, db, make_dm):
    for name in ('a', 'b', 'c'):
        dm.root[name] = Person(name)
    transaction.commit()
    db[PERSON].insert_one({'_id': {'kind': 'odd', 'n': 1}, 'name': 'b2'})
    return make_dm()


def test_find_objects_names_a_document_whose_id_is_a_dict(dict_id, dbname):
    with pytest.raises(interfaces.StoredDataError) as raised:
        list(dict_id.find_objects(Person))
    located(raised.value, dbname, PERSON, {'kind': 'odd', 'n': 1})
    assert '_id' in str(raised.value)


def test_find_objects_carries_on_after_a_bad_document(dict_id, dbname):
    objects, errors = drain(dict_id.find_objects(Person, sort='name'))
    assert [obj.name for obj in objects] == ['a', 'b', 'c']
    assert len(errors) == 1
    located(errors[0], dbname, PERSON, {'kind': 'odd', 'n': 1})


def test_every_query_path_names_a_document_whose_id_is_a_dict(dict_id,
                                                              dbname):
    with pytest.raises(interfaces.StoredDataError) as raised:
        dict_id.find_one_object(Person, {'name': 'b2'})
    located(raised.value, dbname, PERSON, {'kind': 'odd', 'n': 1})
    with pytest.raises(interfaces.StoredDataError):
        People(dict_id)['b2']
    with pytest.raises(interfaces.StoredDataError):
        People(dict_id).values()
    assert People(dict_id)['b'].name == 'b'


# -- references to collections and ids that are not ------------------------
@pytest.fixture
def holder(dm, db):
    dm.root['holder'] = Person('holder')
    transaction.commit()
    return dm.root['holder']._p_oid


class Spy:
    """Records the collections a data manager asks the client for."""

    def __init__(self, dm):
        self.names = []
        raw = dm._raw_collection

        def collection(db_name, coll_name):
            self.names.append(coll_name)
            return raw(db_name, coll_name)
        dm._raw_collection = collection


@pytest.mark.parametrize('collection', BAD_COLLECTIONS, ids=repr)
def test_reference_to_a_collection_that_is_not(holder, db, dbname, make_dm,
                                               collection):
    db[PERSON].update_one({'_id': holder.id}, {'$set': {
        'friend': DBRef(collection, 1, dbname)}})
    fresh = make_dm()
    spy = Spy(fresh)
    person = fresh.root['holder']
    with pytest.raises(interfaces.StoredDataError) as raised:
        person.friend
    # Named: the document holding the reference, and the field.
    located(raised.value, dbname, PERSON, holder.id)
    assert raised.value.path == 'friend'
    assert collection not in spy.names
    with pytest.raises(interfaces.StoredDataError) as raised:
        make_dm().load(DBRef(collection, 1, dbname))
    assert raised.value.collection == collection


@pytest.mark.parametrize('collection', BAD_COLLECTIONS, ids=repr)
def test_root_entry_referencing_a_collection_that_is_not(dm, db, dbname,
                                                         make_dm, collection):
    db[ROOT].insert_one({'_id': 'bad', 'name': 'bad',
                         'ref': DBRef(collection, 1, dbname)})
    with pytest.raises(interfaces.StoredDataError) as raised:
        make_dm().root['bad']
    located(raised.value, dbname, ROOT, 'bad')


@pytest.mark.parametrize('id', BAD_IDS, ids=repr)
def test_reference_whose_id_is_not_a_value(holder, db, dbname, make_dm, id):
    db[PERSON].update_one({'_id': holder.id}, {'$set': {
        'friend': DBRef(PERSON, id, dbname)}})
    fresh = make_dm()
    spy = Spy(fresh)
    person = fresh.root['holder']
    with pytest.raises(interfaces.StoredDataError) as raised:
        person.friend
    located(raised.value, dbname, PERSON, holder.id)
    assert raised.value.path == 'friend'
    # The reference was not followed: the holder's document only.
    assert spy.names.count(PERSON) <= 1
    db[ROOT].insert_one({'_id': 'bad', 'name': 'bad',
                         'ref': DBRef(PERSON, id, dbname)})
    with pytest.raises(interfaces.StoredDataError) as raised:
        make_dm().root['bad']
    located(raised.value, dbname, ROOT, 'bad')
    with pytest.raises(interfaces.StoredDataError):
        make_dm().load(DBRef(PERSON, id, dbname))


def test_an_id_query_never_loads_another_document(holder, db, dbname,
                                                  make_dm):
    # {'$ne': None} as an id would have matched the holder's document.
    with pytest.raises(interfaces.StoredDataError):
        make_dm().load(DBRef(PERSON, {'$ne': None}, dbname))


@pytest.mark.parametrize('oid', BAD_IDS + [
    re.compile('.*'), ('a',)], ids=repr)
def test_insert_refuses_an_oid_that_is_not_a_value(dm, db, oid):
    person = Person('x')
    with pytest.raises(TypeError, match='single value'):
        dm.insert(person, oid=oid)
    assert person._p_jar is None
    transaction.commit()
    assert db[PERSON].count_documents({}) == 0
