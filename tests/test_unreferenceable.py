"""Persistent classes the object cache cannot hold (issue 18).

The object cache keeps one object per document through weak references
(``mongopersist.cache``).  Objects of a class that cannot be weakly
referenced (ZODB's ``BTrees``, written in C; a persistent class with
``__slots__`` and no ``__weakref__``) used to fail from inside the cache
with a bare ``TypeError: cannot create weak reference``, and ``insert``
left the object half attached.  They are refused at once, wherever they
meet a data manager, with an ``UnstorableObjectError`` that names the
class and the alternatives; nothing is written and the object stays new.
"""
import persistent
import pytest
import transaction
from bson.objectid import ObjectId
from hypothesis import given, settings
from hypothesis import strategies as st

from mongopersist import interfaces, metadata
from tests.model import Person

BTrees = pytest.importorskip(
    'BTrees', reason='BTrees (ZODB) is installed by the bench extra')
from BTrees import IOBTree, LOBTree, OIBTree, OOBTree  # noqa: E402


class Slotted(persistent.Persistent):
    """A persistent class of an application that cannot be weakly
    referenced: ``__slots__`` without ``__weakref__``."""

    __slots__ = ('name',)
    _p_mongo_collection = 'slotted'

    def __init__(self, name='s'):
        self.name = name


metadata.register_type(Slotted)

UNREFERENCEABLE = [
    OOBTree.OOBTree, OOBTree.OOBucket, OOBTree.OOSet, OOBTree.OOTreeSet,
    IOBTree.IOBTree, OIBTree.OIBTree, LOBTree.LOBTree, Slotted]


def stored(db):
    return {name: list(db[name].find())
            for name in db.list_collection_names()}


def assert_refused(error, cls):
    message = str(error)
    assert isinstance(error, interfaces.UnstorableObjectError)
    assert isinstance(error, TypeError)
    assert metadata.get_dotted_name(cls) in message
    assert 'weak reference' in message
    if cls.__module__.startswith('BTrees'):
        for alternative in ('MongoContainer', 'MongoCollectionMapping',
                            'find_objects'):
            assert alternative in message
    else:
        assert 'without __slots__' in message


def test_a_btree_in_the_root_is_refused_at_once(dm, db):
    tree = OOBTree.OOBTree()
    with pytest.raises(interfaces.UnstorableObjectError) as raised:
        dm.root['tree'] = tree
    assert_refused(raised.value, OOBTree.OOBTree)
    # Not attached: still a new object, and nothing written.
    assert tree._p_jar is None and tree._p_oid is None
    assert 'tree' not in dm.root
    transaction.commit()
    assert stored(db).get('persistence_root', []) == []


def test_a_btree_reached_from_a_stored_object_is_refused_at_commit(dm, db):
    dm.root['p'] = person = Person('p')
    transaction.commit()
    before = stored(db)
    person.tree = tree = OOBTree.OOBTree({'a': 1})
    with pytest.raises(interfaces.UnstorableObjectError) as raised:
        transaction.commit()
    assert_refused(raised.value, OOBTree.OOBTree)
    transaction.abort()
    assert tree._p_jar is None and tree._p_oid is None
    assert stored(db) == before


def test_a_slotted_class_says_how_to_make_it_storable(dm, db):
    slotted = Slotted()
    with pytest.raises(interfaces.UnstorableObjectError) as raised:
        dm.insert(slotted)
    assert_refused(raised.value, Slotted)
    assert slotted._p_jar is None and slotted._p_oid is None
    assert 'slotted' not in db.list_collection_names()


def test_loading_a_document_of_such_a_class_is_refused(dm, db, dbname):
    """A document names a class the cache cannot hold (written by hand,
    or by another program): one clear error naming the document."""
    oid = db['slotted'].insert_one({'name': 'x'}).inserted_id
    db['persistence_type_map'].insert_one({
        '_id': '%s.slotted' % dbname, 'database': dbname,
        'collection': 'slotted',
        'types': [metadata.get_dotted_name(Slotted)]})
    for load in (lambda: list(dm.find_objects(Slotted, {})),
                 lambda: dm.load(metadata.OID('slotted', oid, dbname))):
        with pytest.raises(interfaces.UnstorableObjectError) as raised:
            load()
        assert_refused(raised.value, Slotted)
        assert repr(oid) in str(raised.value)
        assert 'slotted' in str(raised.value)


DOORS = ['root', 'insert', 'attribute', 'register', 'list', 'dict']


@settings(max_examples=30, deadline=None)
@given(cls=st.sampled_from(UNREFERENCEABLE), door=st.sampled_from(DOORS),
       name=st.text(min_size=1, max_size=5))
def test_no_bare_error_from_the_cache_for_any_such_class(client, cls, door,
                                                          name):
    """Wherever an object of such a class meets a data manager (the root,
    ``insert``, an attribute of a stored object, ``register`` by hand,
    inside a list or dict value), the one error is
    ``UnstorableObjectError`` naming the class; the object stays new and
    nothing is written."""
    from mongopersist.datamanager import MongoDataManager
    dbname = 'mp_test_%s' % ObjectId()
    dm = MongoDataManager(client, default_database=dbname)
    try:
        dm.root['holder'] = holder = Person('holder')
        transaction.commit()
        before = stored(client[dbname])
        obj = cls()
        with pytest.raises(interfaces.UnstorableObjectError) as raised:
            if door == 'root':
                dm.root[name] = obj
            elif door == 'insert':
                dm.insert(obj)
            elif door == 'register':
                dm.register(obj)
            else:
                value = {'attribute': obj, 'list': [obj],
                         'dict': {'k': obj}}[door]
                holder.value = value
            transaction.commit()
        assert_refused(raised.value, cls)
        transaction.abort()
        assert obj._p_jar is None and obj._p_oid is None
        assert stored(client[dbname]) == before
    finally:
        transaction.abort()
        client.drop_database(dbname)


class SlottedWithWeakref(persistent.Persistent):
    """Slots, and weakly referable: the cache holds it; the writer must
    say why it cannot store it (its state is not a dict)."""
    __slots__ = ('a', '__weakref__')


def test_a_slotted_class_with_a_weakref_slot_gets_one_clear_error(dm):
    obj = SlottedWithWeakref()
    obj.a = 1
    with pytest.raises(interfaces.UnstorableObjectError,
                       match='state is a dict'):
        dm.root['s'] = obj
    transaction.abort()
