"""The command line stays in the databases it was given (issue 17).

Stored data chooses nothing about where a command reads or writes: a
type-map entry ``{'database': 'victim', ...}`` in the application's
database, or a ``DBRef`` into ``victim``, used to make ``gc --apply``
delete victim's documents, ``upgrade-format`` and ``rename-class`` rewrite
them, and ``inspect`` and ``check`` read them.  Each test here plants such
a pointer, runs the command through a client spy
(``tests/database_spy.py``) and asserts:

* the spy never handed out the foreign database (nothing read or written
  there), and its documents are byte-for-byte what they were;
* the command reports the pointer (a line naming the type-map entry or
  the referencing document, and the foreign database) and exits with 1.

Then: what the command line does with malformed stored data (it reports
and carries on, never a traceback), and what it prints (control
characters escaped, stored values bounded, JSON valid, no password).
"""
import io
import json

import pytest
import transaction
from bson.dbref import DBRef
from bson.objectid import ObjectId

from mongopersist import cli, limits
from tests.database_spy import DatabaseSpy, contents
from tests.model import Person

PERSON = 'tests.model.Person'
OLD, NEW = 'tests.operations_model.Gadget', 'tests.operations_model.Widget'


class Run:
    """The outcome of one command: exit code, output, error output, and
    the databases the spy saw."""

    def __init__(self, code, out, err, databases):
        self.code = code
        self.out = out
        self.err = err
        self.databases = databases

    @property
    def json(self):
        return json.loads(self.out)

    def lines(self, start):
        return [line for line in self.out.splitlines()
                if line.startswith(start)]


@pytest.fixture
def victim(client, dbname):
    """Another application's database on the same server."""
    name = dbname + '_victim'
    yield name
    client.drop_database(name)


@pytest.fixture
def mp(client, dbname):
    """Run ``mongopersist ARGV -d DBNAME`` through a client spy."""
    def run(*argv, database=True):
        spy = DatabaseSpy(client)
        out, err = io.StringIO(), io.StringIO()
        # The application's database comes first (more may follow).
        argv = [argv[0]] + (['--database', dbname] if database else []
                            ) + list(argv[1:])
        code = cli.main(argv, client=spy, out=out, err=err)
        return Run(code, out.getvalue(), err.getvalue(), set(spy.databases))
    return run


def stored_app(dm):
    """The application's own data: a person in the root."""
    dm.root['p'] = Person('p')
    transaction.commit()


def poison_type_map(db, victim, **fields):
    """The application's type map names a collection of ``victim``."""
    entry = dict({'_id': '%s.c' % victim, 'database': victim,
                  'collection': 'c', 'types': [PERSON]}, **fields)
    db['persistence_type_map'].insert_one(entry)
    return entry['_id']


def refused_entry_line(result, dbname, entry_id, victim):
    """The line of the text output that reports the type-map entry."""
    [line] = result.lines('Refused: ')
    assert line == (
        'Refused: %s.persistence_type_map _id=%r field database: names '
        'database %r, which this command was not given (--database): '
        'nothing there is read or written' % (dbname, entry_id, victim))
    return line


# -- a poisoned type map ------------------------------------------------------
def test_gc_apply_leaves_a_database_the_type_map_names_alone(
        mp, client, dm, db, dbname, victim):
    stored_app(dm)
    client[victim]['c'].insert_many([{'_id': 1, 'x': 1}, {'_id': 2}])
    db['orphans'].insert_one({'_id': 'orphan'})     # truly unreachable
    entry = poison_type_map(db, victim)
    before = contents(client, victim)
    mine = contents(client, dbname)

    result = mp('gc', '--apply', '--min-age', '0')
    assert victim not in result.databases
    assert contents(client, victim) == before
    assert result.code == 1
    refused_entry_line(result, dbname, entry, victim)
    # The graph is incomplete (the application may keep objects there
    # that refer back): nothing is removed, not even the orphan.
    assert contents(client, dbname) == mine
    assert ('Nothing removed: the databases the application uses were not '
            'all given (see "Refused" above)') in result.out.splitlines()

    data = mp('gc', '--json').json
    assert data['refused'] == [{
        'database': dbname, 'collection': 'persistence_type_map',
        'id': entry, 'path': 'database',
        'problem': 'names database %r, which this command was not given '
                   '(--database): nothing there is read or written'
                   % victim}]
    assert {(n['database'], n['collection']) for n in data['unreachable']
            } == {(dbname, 'orphans')}


def test_gc_apply_in_every_database_given(mp, client, dm, db, dbname,
                                          victim):
    """Given with --database, the other database is walked and cleaned
    as the application's own."""
    stored_app(dm)
    client[victim]['c'].insert_one({'_id': 1})
    poison_type_map(db, victim)
    result = mp('gc', '--apply', '--min-age', '0', '--json',
                '--database', victim)
    assert result.code == 0, result.out
    assert result.json['removed'] == 1 and result.json['refused'] == []
    assert client[victim]['c'].count_documents({}) == 0


def test_upgrade_format_leaves_a_database_the_type_map_names_alone(
        mp, client, dm, db, dbname, victim):
    stored_app(dm)
    client[victim]['c'].insert_one(
        {'_id': 1, 'rate': {'_py_constant': 'shop.STANDARD'}})
    db['mine'].insert_one({'_id': 1, 'd': {'dict_data': [[1, 2]]}})
    entry = poison_type_map(db, victim)
    before = contents(client, victim)

    result = mp('upgrade-format')
    assert victim not in result.databases
    assert contents(client, victim) == before
    assert result.code == 1
    refused_entry_line(result, dbname, entry, victim)
    # The application's own database is upgraded.
    assert db['mine'].find_one()['d'] == {'_py_type': 'builtins.dict',
                                          'items': [[1, 2]]}


def test_upgrade_format_copies_no_name_map_entry_of_another_database(
        mp, client, dm, db, dbname, victim):
    stored_app(dm)
    db['persistence_name_map'].insert_one(
        {'_id': 1, 'database': victim, 'collection': 'c', 'path': PERSON})
    result = mp('upgrade-format', '--json')
    assert victim not in result.databases
    assert result.code == 1
    assert result.json['type_map_added'] == 0
    assert db['persistence_type_map'].find_one(
        {'_id': '%s.c' % victim}) is None
    [refused] = result.json['refused']
    assert (refused['collection'], refused['id'], refused['path']) == (
        'persistence_name_map', 1, 'database')


def test_rename_class_leaves_a_database_the_type_map_names_alone(
        mp, client, dm, db, dbname, victim):
    stored_app(dm)
    client[victim]['c'].insert_one(
        {'_id': 1, '_py_persistent_type': OLD, 'g': {'_py_type': OLD}})
    db['mine'].insert_one({'_id': 1, 'g': {'_py_type': OLD}})
    entry = poison_type_map(db, victim)
    before = contents(client, victim)

    result = mp('rename-class', OLD, NEW)
    assert victim not in result.databases
    assert contents(client, victim) == before
    assert result.code == 1
    refused_entry_line(result, dbname, entry, victim)
    assert db['mine'].find_one()['g'] == {'_py_type': NEW}
    # Not finished: the checkpoint stays, a later run skips 'mine'.
    assert db['persistence_migrations'].count_documents({}) == 1


def test_inspect_does_not_read_a_database_the_type_map_names(
        mp, client, dm, db, dbname, victim):
    stored_app(dm)
    client[victim]['c'].insert_one({'_id': 1, 'secret': 'x'})
    entry = poison_type_map(db, victim)
    result = mp('inspect')
    assert victim not in result.databases
    assert result.code == 1
    refused_entry_line(result, dbname, entry, victim)
    assert victim not in ''.join(
        line for line in result.out.splitlines()
        if not line.startswith('Refused: '))
    data = mp('inspect', '--json').json
    assert [c['database'] for c in data['collections']] == [dbname]
    assert len(data['refused']) == 1


def test_check_does_not_read_a_database_the_type_map_names(
        mp, client, dm, db, dbname, victim):
    stored_app(dm)
    client[victim]['c'].insert_one({'_id': 1, 'v': {'_py_type': 'x.Y'}})
    entry = poison_type_map(db, victim)
    result = mp('check', '--json')
    assert victim not in result.databases
    assert result.code == 1
    assert result.json['problems'] == [{
        'database': dbname, 'collection': 'persistence_type_map',
        'id': entry, 'path': 'database',
        'problem': 'names database %r, which this command was not given '
                   '(--database): nothing there is read or written'
                   % victim}]
    assert result.json['documents'] == 1        # the person only
    table = mp('check')
    assert table.code == 1 and victim not in table.databases
    [row] = [line for line in table.out.splitlines()
             if 'persistence_type_map' in line]
    assert entry in row and 'names database %r' % victim in row


def test_check_does_not_follow_a_reference_into_another_database(
        mp, client, dm, db, dbname, victim):
    stored_app(dm)
    client[victim]['c'].insert_one({'_id': 1})
    holder = db[PERSON].insert_one(
        {'name': 'h', 'friend': {'x': [DBRef('c', 1, victim)]}}).inserted_id
    db['persistence_root'].insert_one(
        {'name': 'elsewhere', 'ref': DBRef('c', 2, victim)})
    before = contents(client, victim)
    result = mp('check', '--json')
    assert victim not in result.databases
    assert contents(client, victim) == before
    assert result.code == 1
    problems = {(p['collection'], repr(p['id']), p['path']): p['problem']
                for p in result.json['problems']}
    message = ('refers to database %r, which this command was not given '
               '(--database): not followed' % victim)
    assert problems.pop((PERSON, repr({'$oid': str(holder)}),
                         'friend.x.0')) == message
    [(where, problem)] = problems.items()
    assert where[0] == 'persistence_root' and where[2] == 'ref'
    assert problem == message


def test_check_follows_references_into_every_database_given(
        mp, client, dm, db, dbname, victim):
    stored_app(dm)
    client[victim]['c'].insert_one({'_id': 1})
    db[PERSON].insert_one({'name': 'h', 'friend': DBRef('c', 1, victim),
                           'gone': DBRef('c', 2, victim)})
    poison_type_map(db, victim)
    result = mp('check', '--json', '--database', victim)
    assert result.code == 1
    [problem] = result.json['problems']
    assert problem['path'] == 'gone'
    assert problem['problem'] == (
        "dangling reference to %s.c _id=2" % victim)


def test_the_root_database_is_given_too(mp, client, dm, db, dbname, victim):
    """--root-database: the root and type map live there; the command
    reads them, and walks it only where the type map names it."""
    root_db = victim     # here the 'victim' is the application's root
    client[root_db]['persistence_type_map'].insert_one({
        '_id': '%s.%s' % (dbname, PERSON), 'database': dbname,
        'collection': PERSON, 'types': [PERSON]})
    person = db[PERSON].insert_one({'name': 'p'}).inserted_id
    client[root_db]['persistence_root'].insert_one(
        {'name': 'p', 'ref': DBRef(PERSON, person, dbname)})
    result = mp('check', '--json', '--root-database', root_db)
    assert result.code == 0, result.json
    assert result.databases == {dbname, root_db}


def test_settings_file_database_is_the_one_given(client, dm, db, dbname,
                                                 victim, tmp_path):
    stored_app(dm)
    client[victim]['c'].insert_one({'_id': 1})
    poison_type_map(db, victim)
    path = tmp_path / 'app.ini'
    path.write_text('[app:main]\nmongopersist.database = %s\n'
                    'mongopersist.allowed_databases = %s\n' % (dbname, victim))
    spy = DatabaseSpy(client)
    out = io.StringIO()
    code = cli.main(['gc', '--apply', '--min-age', '0', '--config',
                     str(path)], client=spy, out=out, err=io.StringIO())
    assert code == 1
    assert victim not in spy.databases
    assert client[victim]['c'].count_documents({}) == 1


def test_database_option_is_repeatable_before_and_after_the_command(
        client, dm, dbname, victim):
    stored_app(dm)
    client[victim]['c'].insert_one({'_id': 1})
    spy = DatabaseSpy(client)
    out = io.StringIO()
    code = cli.main(['--database', dbname, 'inspect', '--json',
                     '--database', victim], client=spy, out=out,
                    err=io.StringIO())
    assert code == 0
    assert json.loads(out.getvalue())['databases'] == [dbname, victim]
    # --trust (and --import) add up the same way.
    err = io.StringIO()
    cli.main(['--trust', 'no_such_app_a', 'inspect', '-d', dbname,
              '--trust', 'no_such_app_b'], client=client, out=io.StringIO(),
             err=err)
    assert [line.split()[3] for line in err.getvalue().splitlines()] == [
        'no_such_app_a:', 'no_such_app_b:']


def test_ensure_indexes_refuses_a_class_of_another_database(
        mp, client, dbname, monkeypatch):
    from tests import operations_model
    other = dbname + '_victim'
    monkeypatch.setattr(operations_model.Indexed, '_p_mongo_database', other,
                        raising=False)
    result = mp('ensure-indexes', 'tests.operations_model')
    assert result.code == 1
    assert other not in result.databases
    [line] = result.lines('Failed: ')
    assert line == (
        'Failed: tests.operations_model.Indexed (%s.indexed): stored in '
        'database %r, which this command was not given (--database)'
        % (other, other))


# -- the backstop: a confined client ------------------------------------------
def test_a_command_that_strays_gets_one_clear_error(mp, dm, dbname, victim,
                                                    monkeypatch):
    """Should a command ever ask for another database (a defect), the
    client it works with refuses: one error line, exit code 1."""
    from mongopersist.cli import inspect
    stored_app(dm)

    def strays(context):
        context.client[victim]['c'].find_one()
    monkeypatch.setattr(inspect, 'run', strays)
    result = mp('inspect')
    assert victim not in result.databases
    assert result.code == 1
    assert result.err == (
        'mongopersist: error: database %r is not one of the databases this '
        'command was given (%s): left alone\n' % (victim, dbname))


# -- malformed stored data ----------------------------------------------------
def test_check_reports_malformed_data_and_carries_on(mp, client, dm, db,
                                                     dbname):
    stored_app(dm)
    db['persistence_root'].insert_one({'_id': 'no-name', 'ref': DBRef(
        PERSON, 'x', dbname)})
    db['persistence_root'].insert_one({'_id': 'odd-name', 'name': {'a': 1},
                                       'ref': 'nowhere'})
    db[PERSON].insert_one({'_id': {'a': 1}, 'name': 'dict id'})
    db[PERSON].insert_one({'_id': 'x', 'name': 'x'})
    for i, collection in enumerate(['', '$cmd', 'a\x00b']):
        db[PERSON].insert_one({'_id': 'ref%d' % i, 'name': 'r',
                               'bad': DBRef(collection, 1)})
    db['persistence_type_map'].insert_many([
        {'_id': 'not-a-database', 'database': 5, 'collection': 'c',
         'types': [PERSON]},
        {'_id': 'bad-collection', 'database': dbname, 'collection': '',
         'types': [PERSON]},
        {'_id': 'bad-name', 'database': 'a/b', 'collection': 'c',
         'types': [PERSON]},
        {'_id': 'not-a-dict-types', 'database': dbname, 'collection': 'd',
         'types': 'x'},
    ])
    result = mp('check', '--json')
    assert result.code == 1, result.err
    assert result.err == ''
    found = {(p['collection'], json.dumps(p['id']), p['path']): p['problem']
             for p in result.json['problems']}

    def at(collection, id, path):
        return found.pop((collection, json.dumps(id), path))

    assert at('persistence_root', 'no-name', 'name') == (
        'the root entry has no name (a string)')
    assert at('persistence_root', 'odd-name', 'name') == (
        'the root entry has no name (a string)')
    assert at('persistence_root', 'odd-name', 'ref') == (
        'the root entry holds no reference')
    # Loading refuses it (what it says is the reader's to say).
    assert [key for key in found if key[:2] == (PERSON, '{"a": 1}')]
    assert at(PERSON, 'ref0', 'bad') == (
        "a reference to collection '', which is not a collection name")
    assert at(PERSON, 'ref1', 'bad') == (
        "a reference to collection '$cmd', which is not a collection name")
    assert at(PERSON, 'ref2', 'bad') == (
        "a reference to collection 'a\\x00b', which is not a collection "
        "name")
    assert at('persistence_type_map', 'not-a-database', 'database') == (
        'a type map entry names database 5, which is not a database name')
    assert at('persistence_type_map', 'bad-name', 'database') == (
        "a type map entry names database 'a/b', which is not a database "
        "name")
    assert at('persistence_type_map', 'bad-collection', 'collection') == (
        "a type map entry names collection '', which is not a collection "
        "name")
    assert 'array of class names' in at('persistence_type_map',
                                        'not-a-dict-types', 'types')
    # What loading itself says about these documents may come on top
    # (it names the same documents); nothing else.
    assert {key[:2] for key in found} <= {
        (PERSON, json.dumps('ref%d' % i)) for i in range(3)} | {
        (PERSON, json.dumps({'a': 1}))}, found


@pytest.mark.parametrize('command', [
    ['inspect'], ['gc'], ['gc', '--apply', '--min-age', '0'],
    ['upgrade-format'], ['rename-class', OLD, NEW]])
def test_other_commands_report_malformed_data(mp, client, dm, db, dbname,
                                              command):
    stored_app(dm)
    db['persistence_root'].insert_one({'_id': 'no-name', 'ref': DBRef(
        PERSON, {'a': 1}, dbname)})
    db[PERSON].insert_one({'_id': {'a': 1}, 'name': 'dict id',
                           'g': {'_py_type': OLD},
                           'bad': DBRef('$cmd', 1)})
    db['persistence_type_map'].insert_one(
        {'_id': 'bad', 'database': ['x'], 'collection': 'c', 'types': []})
    result = mp(*command)
    assert result.code == 1, (result.out, result.err)
    assert result.err == ''
    [line] = result.lines('Refused: ')
    assert line == (
        "Refused: %s.persistence_type_map _id='bad' field database: a type "
        "map entry names database ['x'], which is not a database name"
        % dbname)
    assert db[PERSON].count_documents({'_id': {'a': 1}}) == 1


def test_gc_removes_a_document_whose_id_is_a_document(mp, dm, db):
    stored_app(dm)
    db['things'].insert_one({'_id': {'k': 1}})
    result = mp('gc', '--apply', '--min-age', '0', '--json')
    assert result.code == 0
    assert result.json['removed'] == 1
    assert db['things'].count_documents({}) == 0


# -- output -------------------------------------------------------------------
ESCAPE = '\x1b]0;owned\x07\x1b[2J'


def test_text_output_escapes_control_characters(mp, dm, db, dbname):
    stored_app(dm)
    db['evil' + ESCAPE].insert_one(
        {'_id': 'e\x1b[31m', '_py_persistent_type': 'x' + ESCAPE})
    db['persistence_root'].insert_one(
        {'name': 'root' + ESCAPE, 'ref': DBRef('c\x1b', 'e\x1b')})
    db['persistence_type_map'].insert_one(
        {'_id': 'e' + ESCAPE, 'database': 'x' + ESCAPE, 'collection': 'c',
         'types': []})
    for command in (['inspect'], ['check'], ['gc'],
                    ['rename-class', 'x' + ESCAPE, 'y\x1b'],
                    ['upgrade-format']):
        result = mp(*command)
        assert result.code in (0, 1), (command, result.err)
        text = result.out + result.err
        assert not any(char < ' ' and char != '\n' for char in text), (
            command, text)
        assert '\\x1b' in text, (command, text)
    shown = mp('inspect').out
    assert 'evil\\x1b]0;owned\\x07\\x1b[2J' in shown
    assert 'root\\x1b]0;owned\\x07\\x1b[2J -> c\\x1b ' in shown


@pytest.mark.parametrize('argv', [
    ['rename-class', 'a', 'b', '-\x1b[2J'],
    ['inspect', 'extra\x1b]0;owned\x07'],
    ['gc', '--min-age', 'x\x1b'],
    ['\x1b[2J'],
])
def test_usage_errors_escape_the_arguments_they_echo(client, argv):
    err = io.StringIO()
    assert cli.main(argv + ['-d', 'x'], client=client, out=io.StringIO(),
                    err=err) == 2
    assert '\\x1b' in err.getvalue()
    assert all(char.isprintable() or char == '\n'
               for char in err.getvalue()), err.getvalue()


def test_json_output_is_valid_json_with_the_names_as_stored(mp, dm, db):
    stored_app(dm)
    db['evil' + ESCAPE].insert_one({'_id': float('nan'),
                                    '_py_persistent_type': 'x' + ESCAPE})
    for command in (['inspect'], ['check'], ['gc']):
        result = mp(*command, '--json')
        text = result.out
        assert not any(char < ' ' and char not in '\n' for char in text)
        json.loads(text, parse_constant=pytest.fail)
    data = mp('inspect', '--json').json
    [coll] = [c for c in data['collections']
              if c['collection'].startswith('evil')]
    assert coll['collection'] == 'evil' + ESCAPE
    assert coll['classes'] == {'x' + ESCAPE: 1}


def test_stored_values_are_bounded(mp, dm, db, dbname):
    stored_app(dm)
    name, id = 'n' * 5000, 'i' * 3000
    db['persistence_root'].insert_one({'name': name, 'ref': 'nowhere'})
    db[PERSON].insert_one({'_id': id, '_py_persistent_type': name})
    bounded_name = 'n' * 200 + '...(4800 more)'
    bounded_id = limits.quote(id)
    for command, shows in ((['inspect'], [bounded_name]),
                           (['check'], [bounded_name, bounded_id]),
                           (['gc', '--list'], [bounded_id])):
        result = mp(*command)
        assert result.code in (0, 1)
        assert name not in result.out and id not in result.out
        if command != ['check']:
            # (check also shows what loading says, whose quotes of stored
            # values are the reader's to bound; it bounds the whole.)
            assert 'n' * 201 not in result.out
            assert 'i' * 201 not in result.out
        for text in shows:
            assert text in result.out, (command, result.out)
        assert max(len(line) for line in result.out.splitlines()) < 2000
    # JSON gives names and ids as stored; messages are bounded.
    data = mp('check', '--json').json
    assert max(len(p['problem']) for p in data['problems']) < 1100
    assert bounded_name in json.dumps(data)
    assert id in [p['id'] for p in data['problems']]


def test_no_password_in_error_messages(client, tmp_path):
    uri = 'mongodb://operator:s3cr3t-pa55@db.example.com:99999/shop'
    settings = tmp_path / 'app.ini'
    settings.write_text('[app:main]\nmongopersist.uri = %s\n'
                        % uri.replace('mongodb:', 'mongdb:'))
    for argv in (['inspect', '--uri', uri],
                 ['inspect', '--uri', uri.replace('@', '@@')],
                 ['inspect', '--config', str(settings)]):
        err = io.StringIO()
        code = cli.main(argv, out=io.StringIO(), err=err)
        assert code == 2
        assert err.getvalue().startswith('mongopersist: error: ')
        assert 's3cr3t' not in err.getvalue() and 'pa55' not in err.getvalue()


def test_mask_credentials():
    from mongopersist.cli.text import mask_credentials
    assert mask_credentials(
        "bad 'mongodb://ann:pw@h1,h2/db?x=1' and mongodb+srv://bob:p@w/d@h"
    ) == ("bad 'mongodb://ann:****@h1,h2/db?x=1' and "
          "mongodb+srv://bob:****@h")
    assert mask_credentials('mongodb://ann@h/db') == 'mongodb://ann@h/db'


def test_escaping_and_bounds():
    from mongopersist.cli.text import quoted, shown
    assert shown('a\x1bb\nc\u202ed\x7f\t') == (
        'a\\x1bb\\nc\\u202ed\\x7f\\t')
    assert shown('é ok') == 'é ok'
    assert shown('x' * 201) == 'x' * 200 + '...(1 more)'
    # Bounded as shown: 50 escaped characters make 200.
    assert shown('\x1b' * 300) == '\\x1b' * 50 + '...(250 more)'
    assert quoted('a\x1b') == "'a\\x1b'"
    assert quoted('y' * 300) == repr('y' * 200) + '...(100 more)'
    assert quoted(ObjectId('0' * 24)) == "ObjectId('%s')" % ('0' * 24)
