"""Reproductions of the defects of issue 8, section 1: each failed before.

Lost or overwritten writes in ordinary use, objects taken back that could
not be used again, references read back as oids, cross-thread staleness,
MongoDB's document limits, and malformed stored data.
"""
import logging
import threading

import bson
import persistent
import pymongo
import pytest
import transaction
from bson.dbref import DBRef

from mongopersist import conflict, interfaces, metadata, serialize, testing
from mongopersist.datamanager import MongoDataManager
from tests.model import Address, Person, Simple

PERSON = 'tests.model.Person'
SIMPLE = 'tests.model.Simple'


@pytest.fixture
def cdm(make_dm):
    return make_dm(detect_conflicts=True)


@pytest.fixture
def other(make_dm):
    """A second data manager with its own transaction manager."""
    tm = transaction.TransactionManager()
    dm = make_dm(detect_conflicts=True, transaction_manager=tm)
    yield dm
    tm.abort()


# -- a change made after a flush ----------------------------------------------
@pytest.mark.parametrize('flush', [
    lambda dm: dm.count(Person),
    lambda dm: list(dm.find_objects(Person, {'name': 'x'})),
    lambda dm: dm.find_one_object(Person),
    lambda dm: dm.flush(),
    lambda dm: dm.get_collection_of_object(Person).find_one(),
], ids=['count', 'find_objects', 'find_one_object', 'flush', 'find_one'])
def test_change_after_an_implicit_flush_is_written(dm, db, flush):
    dm.root['foo'] = Person('one')
    transaction.commit()
    foo = dm.root['foo']
    foo.name = 'two'
    flush(dm)
    foo.name = 'three'
    transaction.commit()
    assert db[PERSON].find_one()['name'] == 'three'


def test_sub_object_change_after_a_flush_is_written(dm, db):
    dm.root['foo'] = Person('one', visited=['a'])
    transaction.commit()
    foo = dm.root['foo']
    foo.visited.append('b')
    dm.flush()
    foo.visited.append('c')
    transaction.commit()
    assert db[PERSON].find_one()['visited'] == ['a', 'b', 'c']


def test_new_object_changed_after_a_flush_is_written(dm, db):
    foo = Person('one')
    dm.insert(foo)
    dm.flush()
    foo.name = 'two'
    transaction.commit()
    assert db[PERSON].find_one()['name'] == 'two'


# -- abort never overwrites another transaction's write -------------------------
def test_abort_does_not_overwrite_a_commit_made_on_top_of_a_flush(
        cdm, other, db, caplog):
    cdm.root['p'] = Person('original')
    transaction.commit()
    cdm.root['p'].name = 'flushed by A'
    cdm.flush()
    # B reads A's flushed (uncommitted) write and commits on top of it.
    other.root['p'].name = 'committed by B'
    other.transaction_manager.commit()
    with caplog.at_level(logging.WARNING, logger='mongopersist'):
        transaction.abort()
    doc = db[PERSON].find_one()
    assert doc['name'] == 'committed by B'
    assert cdm.unrestored == [cdm.root['p']._p_oid]
    assert 'not taken back' in caplog.text
    assert 'committed by B' not in caplog.text


def _flush_put_back_by_another_abort(cdm, other):
    """A flushes a change; B builds on it, flushes and aborts: B's abort
    puts A's version back under a new serial (never the old one: A-B-A)."""
    cdm.root['p'] = Person('original')
    transaction.commit()
    cdm.root['p'].name = 'flushed by A'
    cdm.flush()
    other.root['p'].name = 'flushed by B'
    other.flush()
    other.transaction_manager.abort()


def test_abort_takes_back_a_flush_another_abort_put_back(cdm, other, db,
                                                         caplog):
    # A's abort must still take its write back, or the change A aborted
    # stays stored for good.
    _flush_put_back_by_another_abort(cdm, other)
    assert db[PERSON].find_one()['name'] == 'flushed by A'
    with caplog.at_level(logging.WARNING, logger='mongopersist'):
        transaction.abort()
    doc = db[PERSON].find_one()
    assert doc['name'] == 'original'
    assert doc['_py_serial'] == 5       # 2, 3; 4 put back by B; 5 by A
    assert doc['_py_restored'] == [1, 5]    # version 1, put back as 5
    assert cdm.unrestored == [] and other.unrestored == []
    assert 'not taken back' not in caplog.text
    # The mark goes with the next write; the object loads without it.
    person = cdm.root['p']
    assert person.name == 'original' and not hasattr(person, '_py_restored')
    person.name = 'next'
    transaction.commit()
    assert '_py_restored' not in db[PERSON].find_one()


def test_abort_takes_back_an_insert_another_abort_put_back(cdm, other, db):
    cdm.root['p'] = Person('new')       # written at once
    other.root['p'].name = 'flushed by B'
    other.flush()
    other.transaction_manager.abort()
    transaction.abort()
    assert list(db[PERSON].find()) == []
    assert cdm.unrestored == []


def test_abort_leaves_a_commit_made_on_top_of_an_abort_put_back(cdm, other,
                                                              db):
    # C then commits a change on top: the stored document is no longer
    # A's write, A's abort leaves it.
    _flush_put_back_by_another_abort(cdm, other)
    other.root['p'].name = 'committed by C'
    other.transaction_manager.commit()
    transaction.abort()
    assert db[PERSON].find_one()['name'] == 'committed by C'
    assert cdm.unrestored == [cdm.root['p']._p_oid]


def test_abort_leaves_a_commit_whose_content_equals_an_earlier_flush(
        cdm, other, db):
    # A flushes 'x', then 'y'; B commits 'x' on top.  The stored document
    # has the content of A's first flush, but it is B's commit: A's abort
    # must leave it (only a version an abort put back is A's write under
    # another serial).
    cdm.root['p'] = Person('original')
    transaction.commit()
    cdm.root['p'].name = 'x'
    cdm.flush()
    cdm.root['p'].name = 'y'
    cdm.flush()
    other.root['p'].name = 'x'
    other.transaction_manager.commit()
    transaction.abort()
    doc = db[PERSON].find_one()
    assert (doc['name'], doc['_py_serial']) == ('x', 4)
    assert cdm.unrestored == [cdm.root['p']._p_oid] * 2


def test_abort_does_not_delete_a_document_another_changed(cdm, other, db):
    foo = Person('new')
    cdm.root['p'] = foo     # written at once
    other.root['p'].name = 'changed by B'
    other.transaction_manager.commit()
    transaction.abort()
    assert db[PERSON].find_one()['name'] == 'changed by B'


def test_abort_does_not_resurrect_over_a_document_recreated(cdm, other, db):
    cdm.root['p'] = Person('x')
    transaction.commit()
    foo = cdm.root['p']
    ref = foo._p_oid
    cdm.remove(foo)
    cdm.flush()
    db[PERSON].insert_one({'_id': ref.id, 'name': 'recreated',
                           '_py_serial': 7})
    transaction.abort()
    assert db[PERSON].find_one()['name'] == 'recreated'
    assert cdm.unrestored == [ref]


def test_abort_still_takes_back_own_writes(cdm, db):
    cdm.root['p'] = Person('x')
    transaction.commit()
    cdm.root['p'].name = 'y'
    cdm.flush()
    cdm.insert(Person('new'))
    cdm.flush()
    transaction.abort()
    assert [d['name'] for d in db[PERSON].find()] == ['x']
    assert cdm.unrestored == []


def test_abort_does_not_take_back_a_root_entry_another_changed(cdm, other,
                                                                db):
    cdm.root['p'] = Person('mine')
    other.root['p'] = Person('theirs')
    other.transaction_manager.commit()
    transaction.abort()
    assert other.root['p'].name == 'theirs'


# -- objects taken back can be stored again -------------------------------------
def test_aborted_insert_leaves_a_usable_object(dm, make_dm, db):
    obj = Person('x')
    dm.insert(obj)
    transaction.abort()
    assert obj._p_jar is None and obj._p_oid is None
    obj.name = 'y'                       # no AttributeError
    assert obj.name == 'y'
    dm.insert(obj)
    transaction.commit()
    assert db[PERSON].find_one()['name'] == 'y'


def test_aborted_insert_can_be_stored_by_another_data_manager(dm, make_dm,
                                                              db):
    obj = Person('x')
    dm.root['x'] = obj
    transaction.abort()
    obj.name = 'y'
    second = make_dm()
    second.root['x'] = obj
    transaction.commit()
    assert db[PERSON].find_one()['name'] == 'y'
    assert obj._p_jar is second


def test_removed_and_committed_object_is_usable_and_storable(dm, db):
    dm.root['x'] = Person('x')
    transaction.commit()
    obj = dm.root['x']
    del dm.root['x']
    dm.remove(obj)
    transaction.commit()
    assert db[PERSON].count_documents({}) == 0
    obj.name = 'back'
    dm.root['x'] = obj
    transaction.commit()
    assert db[PERSON].find_one()['name'] == 'back'


def test_sub_object_of_a_taken_back_object_does_not_register(dm, db):
    obj = Person('x', visited=['a'])
    dm.root['x'] = obj
    transaction.commit()
    obj = dm.root['x']
    visited = obj.visited
    del dm.root['x']
    dm.remove(obj)
    transaction.commit()
    visited.append('b')                  # no error, nothing joins
    transaction.commit()
    assert db[PERSON].count_documents({}) == 0


# -- references written in this transaction read back as objects ---------------
class Merging(persistent.Persistent):
    _p_mongo_collection = 'merging'

    def __init__(self, friend):
        self.friend = friend
        self.count = 0

    def _p_resolveConflict(self, old, committed, new):
        Merging.states = (old, committed, new)
        merged = dict(committed)
        merged['count'] = committed['count'] + new['count'] - old['count']
        return merged


def test_resolve_conflict_sees_references_as_objects(make_dm, db):
    ours = make_dm(conflict_handler=conflict.ResolvingSerialConflictHandler)
    tm = transaction.TransactionManager()
    theirs = make_dm(conflict_handler=conflict.ResolvingSerialConflictHandler,
                     transaction_manager=tm)
    ours.root['m'] = Merging(Person('friend'))
    transaction.commit()
    mine = ours.root['m']
    mine.friend = Person('new friend')   # a reference written this transaction
    mine.count += 1
    ours.flush()
    theirs.root['m'].count += 10
    tm.commit()
    mine.count += 1
    transaction.commit()
    for state in Merging.states:
        assert isinstance(state['friend'], Person), state
        assert not isinstance(state['friend'], DBRef)
    assert db['merging'].find_one()['count'] == 12


# -- threads ----------------------------------------------------------------------
def _in_thread(func):
    result = {}

    def run():
        try:
            result['value'] = func()
        except BaseException as error:   # noqa: B902 (hand it back)
            result['error'] = error
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    return result


def test_thread_bound_data_manager_refuses_other_threads(dm):
    dm.root['p'] = Person('a')
    transaction.commit()
    person = dm.root['p']
    result = _in_thread(lambda: setattr(person, 'name', 'b') or
                        transaction.commit())
    assert isinstance(result.get('error'), interfaces.WrongThreadError)
    assert 'thread' in str(result['error'])
    result = _in_thread(lambda: dm.root['p'])
    assert isinstance(result.get('error'), interfaces.WrongThreadError)


def test_data_manager_with_its_own_manager_works_from_any_thread(make_dm, db):
    tm = transaction.TransactionManager()
    dm = make_dm(transaction_manager=tm)
    dm.root['p'] = Person('a')
    tm.commit()
    person = dm.root['p']

    def change():
        person.name = 'b'
        tm.commit()
    assert _in_thread(change) == {'value': None}
    db[PERSON].update_one({}, {'$set': {'name': 'outside'}})
    # The boundary was heard: the next transaction reads fresh state.
    assert _in_thread(lambda: dm.root['p'].name) == {'value': 'outside'}
    assert person.name == 'outside'


# -- document limits ---------------------------------------------------------------
def test_nan_is_not_rewritten_on_every_commit(cdm, db):
    cdm.root['p'] = Person('a', visited=[float('nan')])
    cdm.root['p'].phone = float('nan')
    transaction.commit()
    serial = db[PERSON].find_one()['_py_serial']
    cdm.root['p']._p_activate()
    cdm.root['p']._p_changed = True
    transaction.commit()
    assert db[PERSON].find_one()['_py_serial'] == serial


def nested(depth):
    value = 'bottom'
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize('depth', [101, 1000, 5000])
def test_too_deep_nesting_is_refused_before_writing(dm, db, depth):
    dm.root['ok'] = Person('ok')
    transaction.commit()
    person = dm.root['ok']
    person.visited = nested(depth)
    with pytest.raises(interfaces.DocumentLimitError) as info:
        transaction.commit()
    transaction.abort()
    message = str(info.value)
    assert 'Person' in message and 'visited' in message
    assert '100' in message and len(message) < 500
    assert db[PERSON].find_one()['name'] == 'ok'
    assert 'bottom' not in repr(db[PERSON].find_one())


def nested_frozensets(depth):
    value = frozenset(['bottom'])
    for _ in range(depth):
        value = frozenset([value])
    return value


def nested_int_keyed(depth):
    value = 'bottom'
    for _ in range(depth):
        value = {1: value}      # {'_py_type': 'builtins.dict', 'items': ...}
    return value


class DeepSerializer(serialize.ObjectSerializer):
    def can_write(self, obj):
        return isinstance(obj, Deep)

    def write(self, obj):
        return nested(obj.depth)


class Deep:
    def __init__(self, depth):
        self.depth = depth


@pytest.mark.parametrize('value', [
    nested_frozensets(300),     # values that do not nest as containers
    nested_int_keyed(40),       # 40 values, 3 levels each
    Deep(150),                  # a custom serializer's deep result
], ids=['frozensets', 'int-keyed-dicts', 'custom-serializer'])
def test_every_kind_of_deep_value_is_refused(make_dm, db, value):
    dm = make_dm(serializers=[DeepSerializer()])
    dm.root['ok'] = Person('ok')
    transaction.commit()
    dm.root['ok'].phone = value
    with pytest.raises(interfaces.DocumentLimitError) as info:
        transaction.commit()
    transaction.abort()
    assert 'Person' in str(info.value) and 'phone' in str(info.value)
    assert len(str(info.value)) < 500
    assert db[PERSON].find_one()['phone'] is None


def test_nesting_at_the_limit_is_stored(dm, db):
    # The document is level 1, so its fields may nest 99 more levels.
    dm.root['ok'] = Simple(deep=nested(98))
    transaction.commit()
    assert db[SIMPLE].find_one()['deep'] == nested(98)


def test_document_over_16_mb_is_refused_before_writing(dm, db):
    dm.root['ok'] = Person('ok')
    transaction.commit()
    dm.root['ok'].name = 'x' * (17 * 1024 * 1024)
    with pytest.raises(interfaces.DocumentLimitError) as info:
        transaction.commit()
    transaction.abort()
    message = str(info.value)
    assert 'Person' in message and '16' in message
    assert len(message) < 500
    assert db[PERSON].find_one()['name'] == 'ok'


@pytest.mark.parametrize('value, path', [
    ('\ud800', 'name'),
    (['ok', 'x\udcff'], 'name.1'),
    ({'k': {'\ud800': 1}}, 'name.k'),
])
def test_text_bson_cannot_hold_is_refused_naming_the_attribute(
        dm, db, value, path):
    # A lone surrogate cannot be UTF-8: bson's bare UnicodeEncodeError
    # came out of the commit.
    dm.root['ok'] = Person('ok')
    transaction.commit()
    dm.root['ok'].name = value
    with pytest.raises(interfaces.UnstorableObjectError) as info:
        transaction.commit()
    transaction.abort()
    message = str(info.value)
    assert 'Person' in message and 'lone surrogate' in message
    assert info.value.path.startswith(path)
    assert db[PERSON].find_one()['name'] == 'ok'


def test_stand_in_enforces_the_server_limits(db):
    if testing.uses_real_server():
        pytest.skip('checks the stand-in itself')
    with pytest.raises(pymongo.errors.WriteError) as info:
        db['raw'].insert_one({'deep': nested(120)})
    assert 'levels of nesting' in str(info.value)
    with pytest.raises(pymongo.errors.DocumentTooLarge):
        db['raw'].insert_one({'big': 'x' * (17 * 1024 * 1024)})
    db['raw'].insert_one({'_id': 1})
    with pytest.raises(pymongo.errors.WriteError):
        db['raw'].update_one({'_id': 1}, {'$set': {'deep': nested(120)}})
    db['raw'].delete_one({'_id': 1})
    assert db['raw'].count_documents({}) == 0


# -- malformed stored data ------------------------------------------------------
def test_serial_that_is_not_an_int_names_the_document(cdm, db, dbname):
    cdm.root['p'] = Person('a')
    transaction.commit()
    doc_id = db[PERSON].find_one()['_id']
    db[PERSON].update_one({}, {'$set': {'_py_serial': 'seven'}})
    with pytest.raises(interfaces.StoredDataError) as info:
        cdm.root['p'].name
    error = info.value
    assert (error.database, error.collection, error.id) == (
        dbname, PERSON, doc_id)
    assert '_py_serial' in str(error) and str(doc_id) in str(error)


def test_root_entry_without_ref_names_the_document(dm, db, dbname):
    db['persistence_root'].insert_one({'name': 'bad'})
    with pytest.raises(interfaces.StoredDataError) as info:
        dm.root['bad']
    assert info.value.collection == 'persistence_root'
    assert "'bad'" in str(info.value) or 'bad' in str(info.value)
    dm.root['good'] = Person('g')
    transaction.commit()
    assert dm.root['good'].name == 'g'      # the others still load


def test_root_refs_skips_nothing_silently(dm, db):
    db['persistence_root'].insert_one({'name': 'bad', 'ref': 'not a ref'})
    with pytest.raises(interfaces.StoredDataError):
        dm.root['bad']


def test_malformed_value_names_the_document(dm, db, dbname):
    dm.root['p'] = Person('a')
    transaction.commit()
    doc_id = db[PERSON].find_one()['_id']
    db[PERSON].update_one({}, {'$set': {'phone': {'_py_type': 'builtins.set'}}})
    with pytest.raises(interfaces.StoredDataError) as info:
        dm.root['p'].phone
    assert info.value.id == doc_id
    assert info.value.collection == PERSON
    assert 'phone' in str(info.value)


# -- the type map records classes that always name their type --------------------
class AlwaysNamed(persistent.Persistent):
    _p_mongo_collection = 'shared_named'
    _p_mongo_store_type = True

    def __init__(self, name):
        self.name = name


class SharesWithAlwaysNamed(persistent.Persistent):
    _p_mongo_collection = 'shared_named'

    def __init__(self, name):
        self.name = name


def test_store_type_class_is_recorded_in_the_type_map(dm, make_dm, db,
                                                       dbname):
    dm.root['a'] = AlwaysNamed('a')
    dm.root['b'] = SharesWithAlwaysNamed('b')
    transaction.commit()
    entry = db['persistence_type_map'].find_one(
        {'_id': '%s.shared_named' % dbname})
    assert entry['types'] == [metadata.get_dotted_name(AlwaysNamed),
                              metadata.get_dotted_name(SharesWithAlwaysNamed)]
    fresh = make_dm()
    assert [o.name for o in fresh.find_objects(SharesWithAlwaysNamed)] == ['b']
    assert fresh.count(SharesWithAlwaysNamed) == 1
    assert [o.name for o in fresh.find_objects(AlwaysNamed)] == ['a']


# -- unknown top-level classes: refused, or broken placeholders ----------------------
def seed_unknown_class(db, dbname):
    ref_id = db['gone'].insert_one({'name': 'kept', 'n': 1}).inserted_id
    db['persistence_type_map'].insert_one({
        '_id': '%s.gone' % dbname, 'database': dbname, 'collection': 'gone',
        'types': ['gone.module.Thing']})
    db['persistence_root'].insert_one(
        {'name': 'x', 'ref': DBRef('gone', ref_id, dbname)})
    return ref_id


def test_unknown_top_level_class_is_refused_naming_the_document(dm, db,
                                                                dbname):
    seed_unknown_class(db, dbname)
    with pytest.raises(interfaces.UnknownTypeError) as info:
        dm.root['x']
    assert info.value.name == 'gone.module.Thing'
    assert 'gone.module.Thing' in str(info.value)
    assert dbname in str(info.value)


def test_unknown_top_level_class_loads_broken_when_asked(make_dm, db,
                                                         dbname):
    from mongopersist import broken
    ref_id = seed_unknown_class(db, dbname)
    dm = make_dm(broken_objects=True)
    obj = dm.root['x']
    assert broken.is_broken(obj)
    assert broken.stored_state(obj) == {'name': 'kept', 'n': 1}
    with pytest.raises(broken.BrokenModified):
        obj.name = 'changed'
    transaction.commit()
    assert db['gone'].find_one() == {'_id': ref_id, 'name': 'kept', 'n': 1}
    assert list(dm.root.keys()) == ['x']


# -- found by the model-based test (tests/test_stateful.py) ------------------------
def test_abort_puts_back_the_version_before_the_write_without_detection(
        dm, make_dm, db):
    """Last writer wins, but an aborted writer must not win."""
    dm.root['p'] = Person('a')
    transaction.commit()
    tm = transaction.TransactionManager()
    theirs = make_dm(transaction_manager=tm)
    mine = dm.root['p']
    mine.friends['k'] = 0           # loaded {}, changed
    theirs.root['p'].friends['k'] = 0
    tm.commit()                      # they commit {'k': 0}
    dm.count(Person)                 # our flush writes the same content
    transaction.abort()
    assert db[PERSON].find_one()['friends'] == {'k': 0}


def test_removed_object_is_not_written_after_its_removal_was_flushed(cdm,
                                                                     db):
    cdm.root['p'] = Person('a')
    transaction.commit()
    obj = cdm.root['p']
    obj.name = 'changed'
    cdm.remove(obj)
    cdm.count(Person)                # flushes the removal
    transaction.commit()             # no ConflictError
    assert db[PERSON].count_documents({}) == 0


def test_savepoint_rollback_restores_a_flushed_removal(dm, db):
    dm.root['p'] = Person('a')
    transaction.commit()
    obj = dm.root['p']
    savepoint = transaction.savepoint()
    dm.remove(obj)
    list(dm.find_objects(Person))    # flushes the removal
    savepoint.rollback()
    assert db[PERSON].find_one()['name'] == 'a'
    assert dm.root['p'] is obj
    obj.name = 'b'
    transaction.commit()
    assert db[PERSON].find_one()['name'] == 'b'
    assert obj._p_jar is dm and obj._p_oid is not None
    assert dm.root['p'] is obj
    obj.name = 'c'
    transaction.commit()
    assert db[PERSON].find_one()['name'] == 'c'


def test_undo_gives_a_new_serial_so_a_reader_of_the_undone_write_conflicts(
        cdm, other, db):
    cdm.root['p'] = Person('v1')
    transaction.commit()
    cdm.root['p'].name = 'v2'
    cdm.flush()                      # serial 2, visible
    seen = other.root['p']
    assert seen.name == 'v2'         # they load serial 2
    transaction.abort()              # v1 is back, serial 3
    cdm.root['p'].name = 'v2 again'
    transaction.commit()             # serial 4
    seen.name = 'based on the undone v2'
    with pytest.raises(interfaces.ConflictError):
        other.transaction_manager.commit()
    other.transaction_manager.abort()
    assert db[PERSON].find_one()['name'] == 'v2 again'


def test_rollback_keeps_objects_loaded_since_the_savepoint_writable(cdm, db):
    cdm.root['a'] = Person('a')
    cdm.root['b'] = Person('b')
    transaction.commit()
    cdm.root['a'].name = 'a2'
    savepoint = transaction.savepoint()
    b = cdm.root['b']                # loaded after the savepoint
    b.name
    savepoint.rollback()
    b.name = 'b2'
    transaction.commit()             # no spurious ConflictError
    assert sorted(d['name'] for d in db[PERSON].find()) == ['a2', 'b2']


def test_savepoint_rollback_after_a_flush_commits_without_conflict(cdm, db):
    cdm.root['a'] = Person('a')
    transaction.commit()
    a = cdm.root['a']
    a.name = 'a1'
    savepoint = transaction.savepoint()
    a.name = 'a2'
    cdm.flush()                      # serial 2 written, taken back below
    savepoint.rollback()
    assert a.name == 'a1'
    transaction.commit()
    assert db[PERSON].find_one()['name'] == 'a1'


def test_rollback_of_a_flushed_removal_of_an_object_new_in_the_transaction(
        dm, db):
    obj = Person('a')
    dm.root['p'] = obj               # inserted and written at once
    savepoint = transaction.savepoint()
    dm.remove(obj)
    list(dm.find_objects(Person))    # flushes the removal
    savepoint.rollback()
    transaction.commit()
    assert db[PERSON].find_one()['name'] == 'a'
    assert obj._p_jar is dm
    obj.name = 'b'
    transaction.commit()
    assert db[PERSON].find_one()['name'] == 'b'


def test_rollback_keeps_a_new_object_changed_since_the_savepoint(dm, db):
    obj = Person('a')
    dm.insert(obj)
    savepoint = transaction.savepoint()
    obj.name = 'b'
    savepoint.rollback()
    assert obj._p_status != 'ghost' and obj.name == 'a'
    transaction.commit()
    assert db[PERSON].find_one()['name'] == 'a'


def test_plain_containers_of_a_flushed_object_are_written_at_commit(dm, db):
    """A new object's plain dict tells nobody about changes; after a flush
    it must still be compared and written at commit."""
    obj = Person('a')
    dm.insert(obj)
    dm.count(Person)                 # flushes the insert
    obj.friends['k'] = 0             # a plain dict: no register call
    dm.count(Person)
    obj.friends['k2'] = 1
    transaction.commit()
    assert db[PERSON].find_one()['friends'] == {'k': 0, 'k2': 1}


def test_abort_does_not_chain_through_a_version_another_wrote(dm, make_dm,
                                                              db):
    """Found by the model-based test: our update, their update over it,
    our removal, our abort: their version must stay."""
    dm.root['p'] = Person('a')
    transaction.commit()
    tm = transaction.TransactionManager()
    theirs = make_dm(transaction_manager=tm)
    mine = dm.root['p']
    mine.name = 'mine'
    dm.flush()                          # our update
    theirs.root['p'].friends['k'] = 1   # they load our version, change it
    theirs.flush()                      # and write over it
    dm.remove(mine)
    dm.flush()                          # our removal
    transaction.abort()                 # puts back *their* version only
    tm.commit()
    doc = db[PERSON].find_one()
    assert (doc['name'], doc['friends']) == ('mine', {'k': 1})


def test_size_limit_counts_the_class_name_and_serial_added_at_commit(
        cdm, db):
    """A document just under 16 MB before the serial is added is refused."""
    cdm.root['ok'] = Person('ok')
    transaction.commit()
    person = cdm.root['ok']
    base = len(bson.encode(cdm._writer.get_document(person)))
    person.name = 'x' * (16 * 1024 * 1024 - base - 4 + 2)
    assert len(bson.encode(cdm._writer.get_document(person))) <= (
        16 * 1024 * 1024)
    with pytest.raises(interfaces.DocumentLimitError):
        transaction.commit()
    transaction.abort()
    assert db[PERSON].find_one()['name'] == 'ok'
