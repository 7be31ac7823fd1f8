"""The ``mongopersist`` command (``mongopersist.cli.main``).

Every command runs through ``main(argv, client=...)`` on the test client;
the tests assert the printed table, the ``--json`` result, the exit code
and the stored documents afterwards.  The console script itself runs in a
subprocess (``--help`` always; a command against ``MONGODB_URI``, since the
stand-in lives in one process).
"""
import io
import json
import os
import shutil
import subprocess
import sys
import uuid
from unittest import mock

import persistent
import pytest
import transaction
from bson.dbref import DBRef
from bson.objectid import ObjectId
from hypothesis import given, settings
from hypothesis import strategies as st

from mongopersist import cli, container, testing
from mongopersist.cli import walk
from mongopersist.datamanager import MongoDataManager
from tests.model import Address, ExtendedAddress, Person, Phone
from tests.operations_model import (
    Box, Gadget, Part, Shape, Sharded, Widget)

PERSON = 'tests.model.Person'


class Result:
    def __init__(self, code, out, err):
        self.code = code
        self.out = out
        self.err = err

    @property
    def json(self):
        return json.loads(self.out)


class Terminal(io.StringIO):
    """An error stream that says it is a terminal (for the progress bar)."""

    def isatty(self):
        return True


@pytest.fixture
def run(client, dbname):
    """Run ``mongopersist ARGV -d DBNAME`` on the test client."""
    def run(*argv, err=None):
        out = io.StringIO()
        err = err if err is not None else io.StringIO()
        code = cli.main(list(argv) + ['--database', dbname], client=client,
                        out=out, err=err)
        return Result(code, out.getvalue(), err.getvalue())
    return run


def snapshot(db):
    return {name: sorted((doc for doc in db[name].find()),
                         key=lambda doc: repr(doc['_id']))
            for name in sorted(db.list_collection_names())}


def stored_person(dm):
    stephan = Person('Stephan', phone=Phone('+1', '978', '394-5124'))
    stephan.address = Address('Maynard', '01754')
    stephan.address2 = ExtendedAddress('Tettau', '01945', 'Germany')
    dm.root['stephan'] = stephan
    transaction.commit()
    return stephan


# -- inspect ----------------------------------------------------------------
def test_inspect_table_and_json(run, dm, db, dbname):
    stephan = stored_person(dm)
    before = snapshot(db)
    result = run('inspect')
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0] == 'Database %s' % dbname
    assert lines[1].split() == ['collection', 'documents', 'size',
                                'classes', '(documents)']
    address = [line for line in lines if line.startswith('address ')]
    assert len(address) == 1
    assert address[0].split()[1] == '2'
    assert address[0].endswith(
        'tests.model.Address (1), tests.model.ExtendedAddress (1)')
    person = [line for line in lines if line.startswith(PERSON)]
    assert person[0].split()[1] == '1'
    assert 'Root entries (%s.persistence_root): 1' % dbname in lines
    assert '  stephan -> %s %r' % (PERSON, stephan._p_oid.id) in lines
    assert result.err == ''

    data = run('inspect', '--json').json
    assert data['database'] == dbname
    by_name = {c['collection']: c for c in data['collections']}
    assert set(by_name) == {'address', PERSON}
    assert by_name['address']['classes'] == {
        'tests.model.Address': 1, 'tests.model.ExtendedAddress': 1}
    assert by_name['address']['type_map'] == [
        'tests.model.Address', 'tests.model.ExtendedAddress']
    assert by_name[PERSON]['documents'] == 1
    assert by_name[PERSON]['bytes'] > 100
    assert data['root'] == [{'name': 'stephan', 'ref': {
        '$ref': PERSON, '$id': {'$oid': str(stephan._p_oid.id)},
        '$db': dbname}}]
    assert snapshot(db) == before


def test_progress_bar_only_on_a_terminal(run, dm):
    stored_person(dm)
    shown = run('inspect', err=Terminal())
    assert 'docs' in shown.err and '/s' in shown.err   # counts and rate
    assert run('inspect').err == ''                    # not a terminal
    assert run('inspect', '--json', err=Terminal()).err == ''
    assert run('inspect', '--no-progress', err=Terminal()).err == ''


def test_progress_without_tqdm(run, dm, monkeypatch):
    stored_person(dm)
    monkeypatch.setitem(sys.modules, 'tqdm', None)   # import fails
    result = run('inspect', err=Terminal())
    assert result.code == 0 and result.err == ''
    assert 'tests.model.Person' in result.out


# -- usage and connection errors -------------------------------------------
def test_usage_errors_exit_2(client, monkeypatch):
    monkeypatch.delenv('MONGODB_URI', raising=False)
    err = io.StringIO()
    assert cli.main(['inspect'], client=client, out=io.StringIO(),
                    err=err) == 2
    assert 'no database' in err.getvalue()
    err = io.StringIO()
    assert cli.main(['inspect', '-d', 'x'], out=io.StringIO(),
                    err=err) == 2
    assert 'MONGODB_URI' in err.getvalue()
    err = io.StringIO()
    assert cli.main(['no-such-command'], client=client, out=io.StringIO(),
                    err=err) == 2
    assert "invalid choice: 'no-such-command'" in err.getvalue()
    out = io.StringIO()
    assert cli.main(['gc', '--help'], out=out, err=io.StringIO()) == 0
    assert '--apply' in out.getvalue() and '--keep' in out.getvalue()


def test_server_errors_exit_2(dbname):
    err = io.StringIO()
    code = cli.main(['inspect', '--uri', 'mongodb://127.0.0.1:1/?'
                     'serverSelectionTimeoutMS=100&connectTimeoutMS=100',
                     '-d', dbname], out=io.StringIO(), err=err)
    assert code == 2
    assert err.getvalue().startswith(
        'mongopersist: error: No MongoDB server answered within 0.1 s '
        '(serverSelectionTimeoutMS=100) at 127.0.0.1:1: ')
    err = io.StringIO()
    assert cli.main(['inspect', '--uri', 'notmongo://x'],
                    out=io.StringIO(), err=err) == 2
    assert err.getvalue() == (
        "mongopersist: error: --uri 'notmongo://x': give "
        "mongodb://HOST/DATABASE, mongodb+srv://HOST/DATABASE or file://DIR, "
        "as mongopersist.connect() takes them\n")


def test_options_after_the_command_and_database_from_uri(client, dbname,
                                                         dm):
    stored_person(dm)
    out = io.StringIO()
    code = cli.main(['inspect', '--uri', 'mongodb://localhost/%s' % dbname,
                     '--json'], client=client, out=out, err=io.StringIO())
    assert code == 0
    assert json.loads(out.getvalue())['database'] == dbname


# -- check --------------------------------------------------------------------
def seed_every_problem(dm, db, dbname):
    """One of every problem ``check`` finds; returns {problem: location}."""
    stored_person(dm)
    dm.root['box'] = Box('box', content=Gadget(1))
    dm.root['sharded'] = Sharded('eu', 'one')
    transaction.commit()
    people = db[PERSON]
    ids = {}

    def plant(coll, **fields):
        doc = dict({'name': 'planted'}, **fields)
        return db[coll].insert_one(doc).inserted_id

    ids['dangling'] = plant(PERSON, friend={'best': DBRef(
        'address', 'gone', dbname)})
    ids['unknown class'] = plant(PERSON, pet={
        '_py_type': 'tests.operations_model.Gone'})
    ids['refused factory'] = plant(PERSON, pet=[{
        '_py_factory': 'os.system', '_py_factory_args': ['true']}])
    ids['malformed serial'] = plant(PERSON, _py_serial='seven')
    ids['malformed type'] = plant(PERSON, pet={'_py_type': 5})
    ids['not in type map'] = plant(
        'boxes', _py_persistent_type='tests.operations_model.Crate')
    ids['shard key'] = db['sharded'].insert_one({'name': 'no region'}
                                                ).inserted_id
    ids['bad type map'] = 'bad.entry'
    db['persistence_type_map'].insert_one(
        {'_id': 'bad.entry', 'database': dbname, 'collection': 'entry',
         'types': 'not a list'})
    ids['root without ref'] = db['persistence_root'].insert_one(
        {'name': 'broken', 'ref': 'nowhere'}).inserted_id
    return ids


def test_check_finds_one_of_every_problem(run, dm, db, dbname):
    ids = seed_every_problem(dm, db, dbname)
    before = snapshot(db)
    result = run('check', '--json')
    assert result.code == 1
    data = result.json
    found = {(p['collection'], json.dumps(p['id'], sort_keys=True),
              p['path']): p['problem'] for p in data['problems']}

    def at(collection, id, path):
        key = (collection, json.dumps(
            {'$oid': str(id)} if isinstance(id, ObjectId) else id), path)
        assert key in found, (key, sorted(found))
        return found.pop(key)

    assert 'dangling reference to %s.address' % dbname in at(
        PERSON, ids['dangling'], 'friend.best')
    assert 'tests.operations_model.Gone' in at(
        PERSON, ids['unknown class'], 'pet')
    assert 'os.system' in at(PERSON, ids['refused factory'], 'pet.0')
    assert '_py_serial' in at(PERSON, ids['malformed serial'], '_py_serial')
    assert 'must be a string' in at(PERSON, ids['malformed type'], 'pet')
    assert 'not in the type map entry' in at(
        'boxes', ids['not in type map'], '_py_persistent_type')
    assert 'shard-key field region missing' in at(
        'sharded', ids['shard key'], 'region')
    assert 'array of class names' in at(
        'persistence_type_map', ids['bad type map'], 'types')
    assert 'holds no reference' in at(
        'persistence_root', ids['root without ref'], 'ref')
    # A document of a class the type map does not list does not load
    # either; nothing else is reported.
    assert set(found) <= {('boxes', json.dumps(
        {'$oid': str(ids['not in type map'])}), '')}, found
    assert all(p['database'] == dbname for p in data['problems'])
    assert snapshot(db) == before

    table = run('check')
    assert table.code == 1
    lines = table.out.splitlines()
    assert lines[0] == 'Checked %d documents of %s: %d problems' % (
        data['documents'], dbname, len(data['problems']))
    assert lines[1].split() == ['collection', '_id', 'field', 'problem']
    dangling = [line for line in lines if 'dangling' in line]
    assert dangling and '%s.%s' % (dbname, PERSON) in dangling[0]
    assert repr(ids['dangling']) in dangling[0]


def test_check_clean_database(run, dm):
    stored_person(dm)
    result = run('check')
    assert result.code == 0
    assert result.out.splitlines() == [
        'Checked 3 documents of %s: 0 problems' % dm.default_database]


def test_check_refuses_what_the_application_would(run, dm, db, dbname):
    """Names of modules neither imported nor trusted are refused; --trust
    allows them as the application's trusted_modules would."""
    import tests.trust_model  # noqa: F401 (imported, yet not allowed)
    stored_person(dm)       # the process knows Person, as the application
    db['things'].insert_one({'_id': 1, 'v': {
        '_py_type': 'tests.trust_model.Untrusted', 'size': 1}})
    db['persistence_type_map'].insert_one({
        '_id': '%s.things' % dbname, 'database': dbname,
        'collection': 'things', 'types': [PERSON]})
    refused = run('check', '--json')
    assert refused.code == 1
    [problem] = refused.json['problems']
    assert (problem['id'], problem['path']) == (1, 'v')
    assert "'tests.trust_model.Untrusted'" in problem['problem']
    allowed = run('check', '--json', '--trust', 'tests.trust_model')
    assert allowed.code == 0, allowed.json
    assert allowed.err == ''
    missing = run('check', '--trust', 'no_such_application')
    assert missing.err == (
        'mongopersist: warning: --trust no_such_application: no such module '
        'on the path (is it on PYTHONPATH?); its classes stay refused\n')


# -- rename-class -------------------------------------------------------------
OLD, NEW = 'tests.operations_model.Gadget', 'tests.operations_model.Widget'


def seed_gadgets(dm, db, n=3):
    """Gadgets everywhere a class name can be; returns the boxes."""
    boxes = []
    for i in range(n):
        box = Box('box%d' % i, content={
            'gadget': Gadget(i), 'list': [[Gadget(10 + i)]],
            'cls': Gadget, 'shape': Shape.ROUND,
            'part': Part('p%d' % i)})
        dm.root['box%d' % i] = box
        boxes.append(box)
    person = Person('owner')
    person.gadget = Gadget(99)
    dm.root['owner'] = person
    transaction.commit()
    return boxes


def test_rename_class_rewrites_every_occurrence(run, dm, db, make_dm):
    seed_gadgets(dm, db)
    # A shared collection whose type map names the class, and documents
    # that name it as theirs.
    db['persistence_type_map'].insert_one({
        '_id': '%s.legacy_gadgets' % dm.default_database,
        'database': dm.default_database, 'collection': 'legacy_gadgets',
        'types': [OLD, PERSON]})
    db['persistence_name_map'].insert_one({
        'database': dm.default_database, 'collection': 'legacy_gadgets',
        'path': OLD})
    db['legacy_gadgets'].insert_one({'_py_persistent_type': OLD,
                                     'enum': {'_py_type': 'enum.Enum',
                                              'class': OLD, 'name': 'X'}})
    before = snapshot(db)

    dry = run('rename-class', OLD, NEW, '--dry-run', '--json')
    assert dry.code == 0
    assert snapshot(db) == before
    assert dry.json['documents'] == 5 and dry.json['dry_run'] is True

    result = run('rename-class', OLD, NEW)
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0] == 'Renamed %s -> %s' % (OLD, NEW)
    assert 'Rewrote 5 documents and 2 type map entries' in lines
    assert ('Names replaced: _py_persistent_type 1, _py_type 7, '
            'class value 3, enum class 1') in lines
    text = repr(snapshot(db))
    assert OLD not in text
    assert db['persistence_type_map'].find_one(
        {'collection': 'legacy_gadgets'})['types'] == [NEW, PERSON]
    assert db['persistence_name_map'].find_one()['path'] == NEW
    stored = db['boxes'].find_one({'name': 'box1'})['content']
    assert stored['gadget'] == {'_py_type': NEW, 'size': 1}
    assert stored['list'] == [[{'_py_type': NEW, 'size': 11}]]
    assert stored['cls'] == {'_py_type': 'type', 'path': NEW}
    # Unrelated names stay.
    assert stored['part']['_py_persistent_type'] == (
        'tests.operations_model.Part')
    assert stored['shape']['class'] == 'tests.operations_model.Shape'

    box = make_dm().root['box1']
    assert type(box.content['gadget']) is Widget
    assert box.content['gadget'] == Widget(1)
    assert box.content['cls'] is Widget
    assert box.content['shape'] is Shape.ROUND
    assert type(make_dm().root['owner'].gadget) is Widget

    again = run('rename-class', OLD, NEW, '--json')
    assert again.code == 0 and again.json['documents'] == 0


def test_rename_class_bumps_serials_so_writers_conflict(run, make_dm, db):
    from mongopersist.interfaces import ConflictError
    dm = make_dm(detect_conflicts=True)
    dm.root['box'] = Box('box', content=Gadget(1))
    transaction.commit()
    box = dm.root['box']
    box.name = 'renamed meanwhile'      # loaded before the rename ...
    assert db['boxes'].find_one()['_py_serial'] == 1
    assert run('rename-class', OLD, NEW).code == 0
    assert db['boxes'].find_one()['_py_serial'] == 2
    with pytest.raises(ConflictError):  # ... so its write conflicts
        transaction.commit()
    transaction.abort()
    assert db['boxes'].find_one()['content'] == {'_py_type': NEW, 'size': 1}


def test_rewrite_is_conditional_on_the_fields_it_changes(db):
    coll = db['things']
    coll.insert_one({'_id': 1, 'a': {'_py_type': OLD}, 'b': 1})
    read = coll.find_one({'_id': 1})
    coll.update_one({'_id': 1}, {'$set': {'a': {'_py_type': 'other'}}})
    rewrite = walk.Rewrite(coll)
    assert not rewrite.apply(read, dict(read, a={'_py_type': NEW}))
    assert coll.find_one({'_id': 1})['a'] == {'_py_type': 'other'}
    # A change to another field is kept.
    read = coll.find_one({'_id': 1})
    coll.update_one({'_id': 1}, {'$set': {'b': 2}})
    assert rewrite.apply(read, dict(read, a={'_py_type': NEW}))
    assert coll.find_one({'_id': 1}) == {'_id': 1, 'a': {'_py_type': NEW},
                                         'b': 2}


def test_rename_rereads_a_document_changed_in_between(run, dm, db,
                                                      monkeypatch):
    seed_gadgets(dm, db, n=3)
    original = walk.Rewrite.apply_batch
    calls = []

    def concurrent(self, pairs):
        if not calls:
            # Another writer changes a document after it was read.
            self.coll.update_one({'_id': pairs[1][0]['_id']},
                                 {'$set': {'content.note': 'theirs'}})
        calls.append(len(pairs))
        return original(self, pairs)
    monkeypatch.setattr(walk.Rewrite, 'apply_batch', concurrent)
    result = run('rename-class', OLD, NEW, '--json')
    assert calls == [3, 1]      # boxes in one batch, then the person
    assert result.code == 0
    assert result.json['conflicts'] == []
    assert result.json['documents'] == 4
    assert result.json['fields'] == {'_py_type': 7, 'class value': 3}
    stored = db['boxes'].find_one({'name': 'box1'})['content']
    assert stored['note'] == 'theirs'
    assert stored['gadget'] == {'_py_type': NEW, 'size': 1}
    assert OLD not in repr(snapshot(db))


def test_rename_interrupted_half_way_and_resumed(run, dm, db, make_dm,
                                                 monkeypatch):
    seed_gadgets(dm, db, n=4)       # 4 documents in boxes, 1 in Person
    original = walk.Rewrite.apply_batch
    batches = []

    def interrupted(self, pairs):
        if len(batches) == 1:
            raise KeyboardInterrupt
        batches.append(len(pairs))
        return original(self, pairs)
    monkeypatch.setattr(walk.Rewrite, 'apply_batch', interrupted)
    with pytest.raises(KeyboardInterrupt):
        run('rename-class', OLD, NEW, '--batch-size', '2')
    monkeypatch.setattr(walk.Rewrite, 'apply_batch', original)
    # Half-way: two boxes renamed, the rest not.
    boxes = list(db['boxes'].find().sort('_id'))
    assert [b['content']['gadget']['_py_type'] for b in boxes] == [
        NEW, NEW, OLD, OLD]

    result = run('rename-class', OLD, NEW, '--json')
    assert result.code == 0
    assert result.json['documents'] == 3       # two boxes and the person
    assert OLD not in repr(snapshot(db))
    assert db['persistence_migrations'].count_documents({}) == 0
    assert [type(make_dm().root['box%d' % i].content['gadget'])
            for i in range(4)] == [Widget] * 4


def test_rename_resumes_after_the_finished_collections(run, dm, db,
                                                       monkeypatch):
    seed_gadgets(dm, db, n=2)
    original = walk.rewrite_all
    seen = []

    def stop_in_second_collection(context, database, collection, *args,
                                  **kw):
        seen.append(collection)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return original(context, database, collection, *args, **kw)
    monkeypatch.setattr(walk, 'rewrite_all', stop_in_second_collection)
    with pytest.raises(KeyboardInterrupt):
        run('rename-class', OLD, NEW)
    monkeypatch.setattr(walk, 'rewrite_all', original)
    checkpoint = db['persistence_migrations'].find_one()
    assert checkpoint['done'] == [[dm.default_database, seen[0]]]

    result = run('rename-class', OLD, NEW, '--json')
    assert result.json['skipped'] == ['%s.%s' % (dm.default_database,
                                                 seen[0])]
    assert 'Skipped' not in result.out   # --json: no table
    assert OLD not in repr(snapshot(db))
    assert db['persistence_migrations'].count_documents({}) == 0


def test_rename_notes_a_collection_named_after_the_class(run, db, dbname):
    db[OLD].insert_one({'size': 1})
    db['persistence_type_map'].insert_one({
        '_id': '%s.%s' % (dbname, OLD), 'database': dbname,
        'collection': OLD, 'types': [OLD]})
    result = run('rename-class', OLD, NEW)
    assert result.code == 0
    assert ("Note: collection %s.%s is named after the old class; give %s "
            "_p_mongo_collection = %r" % (dbname, OLD, NEW, OLD)
            ) in result.out.splitlines()
    assert db['persistence_type_map'].find_one()['types'] == [NEW]


# -- ensure-indexes -----------------------------------------------------------
def test_ensure_indexes(run, db):
    dry = run('ensure-indexes', 'tests.operations_model', '--dry-run',
              '--json')
    assert dry.code == 0
    assert dry.json['classes'] == [{
        'class': 'tests.operations_model.Indexed',
        'collection': '%s.indexed' % db.name,
        'indexes': ['by_name', 'recent']}]
    assert 'indexed' not in db.list_collection_names()

    result = run('ensure-indexes', 'tests.operations_model')
    assert result.code == 0
    assert result.out.splitlines()[0].split()[-2:] == ['indexes', 'created']
    assert result.out.splitlines()[2].split() == [
        'tests.operations_model.Indexed', '%s.indexed' % db.name,
        'by_name,', 'recent']
    info = db['indexed'].index_information()
    assert info['by_name']['unique'] is True
    assert list(info['recent']['key']) == [('when', -1), ('name', 1)]

    again = run('ensure-indexes', 'tests.operations_model', '--json')
    assert again.code == 0
    assert again.json['classes'][0]['indexes'] == []
    dry = run('ensure-indexes', 'tests.operations_model', '--dry-run')
    assert dry.code == 0
    assert dry.out.splitlines()[2].split()[-2:] == ['(all', 'exist)']


def test_ensure_indexes_only_creates_what_is_missing(run, db):
    db['indexed'].create_index([('name', 1)], name='by_name', unique=True)
    dry = run('ensure-indexes', 'tests.operations_model', '--dry-run',
              '--json')
    assert dry.json['classes'][0]['indexes'] == ['recent']
    assert sorted(db['indexed'].index_information()) == ['_id_', 'by_name']
    result = run('ensure-indexes', 'tests.operations_model', '--json')
    assert result.code == 0
    assert result.json['classes'][0]['indexes'] == ['recent']


@pytest.mark.parametrize('dry_run', [False, True])
def test_ensure_indexes_reports_a_conflicting_index(run, db, dry_run):
    # An index of the declared name, but not unique: a problem found,
    # and nothing dropped, changed or created.
    db['indexed'].create_index([('name', 1)], name='by_name')
    result = run('ensure-indexes', 'tests.operations_model',
                 *(['--dry-run'] if dry_run else []))
    assert result.code == 1
    failed = result.out.splitlines()[-1]
    assert failed.startswith('Failed: tests.operations_model.Indexed '
                             '(%s.indexed): Index by_name of %s.indexed '
                             % (db.name, db.name))
    assert 'never drops' in failed
    info = db['indexed'].index_information()
    assert sorted(info) == ['_id_', 'by_name']
    assert not info['by_name'].get('unique')
    as_json = run('ensure-indexes', 'tests.operations_model', '--json')
    assert as_json.code == 1
    assert as_json.json['classes'] == []
    assert 'by_name' in as_json.json['problems'][0]['error']


def test_ensure_indexes_refuses_bad_declarations(run, db):
    result = run('ensure-indexes', 'tests.bad_indexes_model', '--json')
    assert result.code == 1
    assert 'pymongo.IndexModel' in result.json['problems'][0]['error']
    missing = run('ensure-indexes', 'tests.no_such_module_here')
    assert missing.code == 2


# -- gc -----------------------------------------------------------------------
class Shelf(container.MongoContainer):
    _p_mongo_collection = 'shelves'
    _m_collection = 'items'


class Item(persistent.Persistent):
    _p_mongo_collection = 'items'

    def __init__(self, key):
        self.key = key


def seed_garbage(dm, db):
    stephan = stored_person(dm)
    shelf = dm.root['shelf'] = Shelf()
    shelf['a'] = Item('a')
    orphan = Person('orphan')
    dm.insert(orphan)
    lost_item = Item('lost')        # an item of a container nobody has
    lost_shelf = Shelf()
    dm.insert(lost_shelf)
    transaction.commit()
    lost_shelf['lost'] = lost_item
    transaction.commit()
    return stephan, orphan, lost_shelf, lost_item


def test_gc_lists_and_removes_unreachable_documents(run, dm, db, dbname):
    stephan, orphan, lost_shelf, lost_item = seed_garbage(dm, db)
    before = snapshot(db)
    listed = run('gc', '--json')
    assert listed.code == 1
    garbage = {(n['collection'], n['id'] if not isinstance(n['id'], dict)
                else n['id']['$oid']) for n in listed.json['unreachable']}
    assert garbage == {(PERSON, str(orphan._p_oid.id)),
                       ('shelves', str(lost_shelf._p_oid.id)),
                       ('items', str(lost_item._p_oid.id))}
    assert listed.json['documents'] == 8 and listed.json['removed'] == 0
    assert snapshot(db) == before

    table = run('gc')
    assert table.out.splitlines()[0] == (
        '8 documents, 5 reachable from the root, 3 unreachable')
    assert table.out.splitlines()[-1] == (
        'Nothing removed (dry run): run with --apply to remove')

    both = run('gc', '--apply', '--dry-run')
    assert both.code == 1 and snapshot(db) == before
    # Made a moment ago: a commit writes new objects before the objects
    # referring to them, so they are kept until they are --min-age old.
    young = run('gc', '--apply', '--json')
    assert young.code == 1 and snapshot(db) == before
    assert young.json['removed'] == 0 and len(young.json['too_new']) == 3
    assert 'Not removed (made less than 300 s ago, --min-age): 3' in run(
        'gc', '--apply').out.splitlines()
    applied = run('gc', '--apply', '--min-age', '0')
    assert applied.code == 0
    assert 'Removed 3 documents' in applied.out.splitlines()
    assert db[PERSON].count_documents({'name': 'orphan'}) == 0
    assert db['items'].count_documents({}) == 1
    assert db['shelves'].count_documents({}) == 1
    assert db['address'].count_documents({}) == 2
    assert run('gc').code == 0


def test_gc_never_removes_everything_for_an_empty_root(run, dm, db):
    # A root without entries (a wrong --root-database, a root emptied by
    # mistake) makes every document unreachable: --apply removes nothing.
    seed_garbage(dm, db)
    db['persistence_root'].delete_many({})
    before = snapshot(db)
    applied = run('gc', '--apply', '--min-age', '0')
    assert applied.code == 1 and snapshot(db) == before
    assert 'The root (%s.persistence_root) has no entries: every document ' \
        'is unreachable from it' % db.name in applied.out.splitlines()
    assert applied.out.splitlines()[-1].startswith(
        'Nothing removed: a root without entries is taken for a mistake')
    assert run('gc', '--apply', '--min-age', '0', '--json').json[
        'applied'] is False


def test_gc_keep_and_changed_documents(run, dm, db, monkeypatch):
    seed_garbage(dm, db)
    kept = run('gc', '--json', '--keep', PERSON, '--keep', 'items',
               '--keep', 'shelves')
    assert kept.code == 0 and kept.json['unreachable'] == []
    # A document changed since it was read is not removed.
    db[PERSON].update_many({}, {'$set': {'_py_serial': 1}})
    original = walk.Rewrite.delete

    def changed_meanwhile(self, old):
        self.coll.update_one({'_id': old['_id']}, {'$inc': {'_py_serial': 1}})
        return original(self, old)
    monkeypatch.setattr(walk.Rewrite, 'delete', changed_meanwhile)
    result = run('gc', '--apply', '--json', '--keep', 'items', '--keep',
                 'shelves', '--min-age', '0')
    assert result.code == 1
    assert result.json['removed'] == 0 and len(
        result.json['changed_since']) == 1
    assert db[PERSON].count_documents({'name': 'orphan'}) == 1


# -- the console script -------------------------------------------------------
def _script():
    found = shutil.which('mongopersist', path=os.path.dirname(
        sys.executable))
    return [found] if found else [sys.executable, '-m', 'mongopersist']


@pytest.mark.parametrize('command', ['script', 'module'])
def test_help_in_a_subprocess(command):
    argv = (_script() if command == 'script'
            else [sys.executable, '-m', 'mongopersist'])
    done = subprocess.run(argv + ['--help'], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    for name in cli.COMMANDS:
        assert name in done.stdout
    done = subprocess.run(argv + ['rename-class', '--help'],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and '--dry-run' in done.stdout


@pytest.mark.requires_real_mongodb(
    reason='the stand-in lives in one process; the console script runs in '
           'another')
def test_console_script_against_the_server(client, dbname):
    dm = MongoDataManager(client, default_database=dbname)
    stored_person(dm)
    # The console script's path does not hold the repository: the test
    # classes (module tests.model) are found through PYTHONPATH.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    done = subprocess.run(
        _script() + ['inspect', '--json', '--database', dbname],
        capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert {c['collection'] for c in data['collections']} == {
        'address', PERSON}
    assert testing.uses_real_server()
    done = subprocess.run(
        _script() + ['check', '--database', dbname, '--trust', 'tests'],
        capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr


# -- rename-class against concurrent writers (property) ---------------------
@settings(max_examples=40, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0, 5),
                                st.sampled_from(['note', 'gadget', 'serial'])),
                      max_size=8),
       batch_size=st.integers(1, 4))
def test_rename_keeps_what_concurrent_writers_wrote(client, edits,
                                                    batch_size):
    """Between each batch's read and its write, another writer changes
    documents (an unrelated field, the renamed value itself with the old
    name, or just the serial).  Rerun until it reports no conflict, the
    rename leaves no old name and loses none of the other writes."""
    dbname = 'mp_test_%s' % uuid.uuid4().hex[:12]
    coll = client[dbname]['things']
    coll.insert_many([{'_id': i, 'gadget': {'_py_type': OLD, 'size': i},
                       'note': 0, '_py_serial': 1} for i in range(6)])
    expected = {i: {'note': 0, 'size': i} for i in range(6)}
    pending = list(edits)
    original = walk.Rewrite.apply_batch

    def racing(self, pairs):
        if pending:
            i, field = pending.pop(0)
            if field == 'note':
                coll.update_one({'_id': i}, {'$inc': {'note': 1,
                                                      '_py_serial': 1}})
                expected[i]['note'] += 1
            elif field == 'gadget':
                coll.update_one({'_id': i}, {
                    '$set': {'gadget': {'_py_type': OLD, 'size': 100 + i}},
                    '$inc': {'_py_serial': 1}})
                expected[i]['size'] = 100 + i
            else:
                coll.update_one({'_id': i}, {'$inc': {'_py_serial': 1}})
        return original(self, pairs)
    try:
        with mock.patch.object(walk.Rewrite, 'apply_batch', racing):
            for _ in range(len(edits) + 2):
                code = cli.main(['rename-class', OLD, NEW, '-d', dbname,
                                 '--batch-size', str(batch_size)],
                                client=client, out=io.StringIO(),
                                err=io.StringIO())
                if code == 0 and not pending:
                    break
        code = cli.main(['rename-class', OLD, NEW, '-d', dbname, '--json'],
                        client=client, out=io.StringIO(), err=io.StringIO())
        assert code == 0
        for doc in coll.find():
            assert doc['gadget'] == {'_py_type': NEW,
                                     'size': expected[doc['_id']]['size']}
            assert doc['note'] == expected[doc['_id']]['note']
    finally:
        client.drop_database(dbname)


# -- --config: the application's settings file ---------------------------------
def write_settings(tmp_path, text):
    path = tmp_path / 'app.ini'
    path.write_text(text)
    return str(path)


def test_config_reads_database_and_trust_from_the_settings_file(
        client, dm, db, dbname, tmp_path):
    import tests.trust_model  # noqa: F401 (imported, yet not allowed)
    stored_person(dm)
    db['things'].insert_one({'_id': 1, 'v': {
        '_py_type': 'tests.trust_model.Untrusted', 'size': 1}})
    db['persistence_type_map'].insert_one({
        '_id': '%s.things' % dbname, 'database': dbname,
        'collection': 'things', 'types': [PERSON]})
    path = write_settings(tmp_path, (
        '[app:main]\nuse = egg:myapp\n'
        'mongopersist.database = %s\n'
        'mongopersist.trusted_modules = tests.trust_model\n'
        'other.setting = ignored\n'
        '[other]\nmongopersist.database = %s\n') % (dbname, dbname))

    def run(*argv):
        out, err = io.StringIO(), io.StringIO()
        code = cli.main(list(argv), client=client, out=out, err=err)
        return code, out.getvalue(), err.getvalue()
    code, out, err = run('check', '--config', path, '--json')
    assert (code, err) == (0, '')
    assert json.loads(out)['database'] == dbname
    # Another section: the same database, but nothing trusted.
    code, out, err = run('check', '--config', path, '--section', 'other',
                         '--json')
    assert code == 1
    assert 'tests.trust_model.Untrusted' in out
    # --database wins over the file (here: one that does not exist).
    code, out, err = run('inspect', '--config', path, '--database',
                         dbname + '_other', '--json')
    assert code == 2 and out == ''
    assert err.startswith("mongopersist: error: database '%s_other' "
                          "(--database) does not exist" % dbname)


@pytest.mark.parametrize('text, message', [
    ('[app:main]\nmongopersist.databse = x\n',
     'unknown setting mongopersist.databse'),
    ('[app:main]\nmongopersist.detect_conflicts = maybe\n',
     'mongopersist.detect_conflicts'),
    ('[server:main]\nport = 1\n', 'No section'),
    ('not an ini file', 'cannot read section [app:main]'),
])
def test_config_errors_exit_2(client, tmp_path, text, message):
    path = write_settings(tmp_path, text)
    err = io.StringIO()
    assert cli.main(['inspect', '--config', path], client=client,
                    out=io.StringIO(), err=err) == 2
    assert message in err.getvalue(), err.getvalue()
    assert path in err.getvalue()
