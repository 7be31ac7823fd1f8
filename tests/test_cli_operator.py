"""The command line as a first-time operator meets it (issue 18).

* ``--trust __main__`` (the quick start stores ``__main__.Person``)
  crashed with ``ValueError: __main__.__spec__ is None`` in the console
  script; it says what ``__main__`` classes are and carries on.
* ``--config`` with a ``memory://`` store silently inspected a new, empty
  in-memory database: an in-memory store cannot be reached from another
  process (exit 2); so is ``--uri memory://``, and ``--uri`` names the
  URIs it takes instead of PyMongo's ``InvalidURI``.
* ``-d nosuchdb`` printed an empty table (exit 0): a database that does
  not exist is said so (exit 2), but for ``ensure-indexes``, which may
  create it.
* ``gc`` printed one line per unreachable document: it summarises them
  by collection and class, and lists them with ``--list`` (all) or
  ``--limit N`` (the first N).
"""
import io
import sys

import persistent
import pytest
import transaction
from hypothesis import given, settings
from hypothesis import strategies as st

from mongopersist import cli
from tests.database_spy import DatabaseSpy
from tests.model import Person

PERSON = 'tests.model.Person'


class Run:
    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err

    @property
    def lines(self):
        return self.out.splitlines()


def run(argv, client=None):
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(argv, client=client, out=out, err=err)
    return Run(code, out.getvalue(), err.getvalue())


def only_error(result):
    """The one error line of a run that exited with 2."""
    assert result.code == 2, (result.out, result.err)
    [line] = result.err.splitlines()
    assert line.startswith('mongopersist: error: ')
    return line[len('mongopersist: error: '):]


def stored_app(dm):
    dm.root['p'] = Person('p')
    transaction.commit()


# -- --trust __main__ ---------------------------------------------------------
def test_trust_main_says_what_main_classes_are(client, dm, dbname,
                                               monkeypatch):
    """In the console script, ``__main__`` has no ``__spec__``
    (``importlib.util.find_spec('__main__')`` raises ``ValueError``)."""
    stored_app(dm)
    monkeypatch.setattr(sys.modules['__main__'], '__spec__', None)
    result = run(['--trust', '__main__', 'inspect', '-d', dbname], client)
    assert result.code == 0, result.err
    [warning] = result.err.splitlines()
    assert warning == (
        'mongopersist: warning: --trust __main__: the classes of __main__ '
        'are those of the script that stored them (python script.py); no '
        'other process can load them, this command neither (inspect and '
        'gc do not need to).  Define them in a module, rename the stored '
        'name (mongopersist rename-class __main__.Person mymodule.Person) '
        'and --trust mymodule')
    assert 'Database %s' % dbname in result.lines


# -- stores no other process can reach ---------------------------------------
IN_MEMORY = ('is an in-memory store (memory://): it lives in the memory of '
             'the process that made it, and no other process (this command '
             'included) can reach it.  Give the command the URI of its '
             'server (mongodb://...) or its directory (file://DIR)')


def test_config_with_an_in_memory_store_exits_2(tmp_path, monkeypatch):
    monkeypatch.delenv('MONGODB_URI', raising=False)
    path = tmp_path / 'app.ini'
    path.write_text('[app:main]\nmongopersist.uri = memory://\n'
                    'mongopersist.database = blog\n')
    message = only_error(run(['inspect', '--config', str(path)]))
    assert message == '%s [app:main]: mongopersist.uri %s' % (path,
                                                              IN_MEMORY)
    # No URI in the settings, none in the environment: the same stand-in.
    path.write_text('[app:main]\nmongopersist.database = blog\n')
    message = only_error(run(['inspect', '--config', str(path)]))
    assert message == (
        '%s [app:main]: no mongopersist.uri and no $MONGODB_URI: the store '
        '%s' % (path, IN_MEMORY))


def test_uri_memory_exits_2(monkeypatch):
    assert only_error(run(['inspect', '--uri', 'memory://', '-d', 'x'])) == (
        '--uri memory:// %s' % IN_MEMORY)
    monkeypatch.setenv('MONGODB_URI', 'memory://')
    assert only_error(run(['inspect', '-d', 'x'])) == (
        '$MONGODB_URI memory:// %s' % IN_MEMORY)


ACCEPTED = ('give mongodb://HOST/DATABASE, mongodb+srv://HOST/DATABASE or '
            'file://DIR')


@pytest.mark.parametrize('uri', ['notmongo://x', 'localhost:27017',
                                 'http://u:pw@h/db', 'mongodb:/x', ''])
def test_uri_says_which_uris_it_takes(uri, monkeypatch):
    monkeypatch.delenv('MONGODB_URI', raising=False)
    message = only_error(run(['inspect', '--uri', uri, '-d', 'x']))
    if uri:
        assert message.startswith('--uri %s: ' % repr(uri.replace(
            ':pw@', ':****@')))
        assert ACCEPTED in message
    else:
        assert message == 'no server: give --uri or set MONGODB_URI'
    assert 'pw@' not in message


# -- a database that does not exist -------------------------------------------
@pytest.mark.parametrize('command', [
    ['inspect'], ['check'], ['gc'], ['gc', '--apply'], ['upgrade-format'],
    ['rename-class', 'a.B', 'c.D']])
def test_a_database_that_does_not_exist_is_said_so(client, dm, dbname,
                                                   command):
    stored_app(dm)
    missing = dbname + '_nosuch'
    message = only_error(run(command + ['-d', missing], client))
    assert message.startswith(
        "database %r (--database) does not exist: it holds no collection"
        % missing)
    assert dbname in message            # the databases there are named
    # As the root database too, and as a second one.
    message = only_error(run(command + ['-d', dbname, '--root-database',
                                        missing], client))
    assert message.startswith("database %r (--root-database) does not "
                              "exist" % missing)
    message = only_error(run(command + ['-d', dbname, '-d', missing],
                             client))
    assert message.startswith("database %r (--database) does not exist"
                              % missing)
    assert client[missing].list_collection_names() == []


def test_ensure_indexes_may_create_the_database(client, dbname):
    result = run(['ensure-indexes', 'tests.operations_model', '-d', dbname],
                 client)
    assert result.code == 0, result.err


# -- gc: a summary, documents on request ------------------------------------
class Shelf(persistent.Persistent):
    _p_mongo_collection = 'shelves'


class Box(Shelf):
    pass


def seed_garbage(dm, db, count):
    stored_app(dm)
    for number in range(count):
        dm.insert(Person('orphan %d' % number))
    dm.insert(Shelf())
    dm.insert(Box())
    dm.insert(Box())
    transaction.commit()
    db['loose'].insert_many([{'_id': 'a'}, {'_id': 'b', '_py_persistent_type':
                                            5}])


def test_gc_summarises_by_collection_and_class(client, dm, db, dbname):
    seed_garbage(dm, db, 30)
    result = run(['gc', '-d', dbname], client)
    assert result.code == 1
    lines = result.lines
    assert lines[:2] == [
        '36 documents, 1 reachable from the root, 35 unreachable',
        'Unreachable, by collection and class:']
    assert lines[2].split() == ['collection', 'class', 'documents']
    assert [line.split() for line in lines[4:9]] == [
        ['loose', '(malformed)', '1'],
        ['loose', '(unknown)', '1'],
        ['shelves', 'tests.test_cli_operator.Box', '2'],
        ['shelves', 'tests.test_cli_operator.Shelf', '1'],
        [PERSON, PERSON, '30']]
    assert lines[9:] == [
        'List them with --list (or the first N with --limit N)',
        'Nothing removed (dry run): run with --apply to remove']
    assert 'orphan' not in result.out and "'a'" not in result.out


def test_gc_lists_documents_with_list_or_limit(client, dm, db, dbname):
    seed_garbage(dm, db, 3)
    listed = run(['gc', '-d', dbname, '--list'], client)
    rows = [line for line in listed.lines if line.startswith(
        ('loose ', 'shelves ', PERSON + ' '))]
    assert len(rows) == 5 + 8       # the summary, then each document
    limited = run(['gc', '-d', dbname, '--limit', '2'], client)
    assert '... and 6 more (--list shows them all)' in limited.lines
    data = run(['gc', '-d', dbname, '--json', '--limit', '2'], client)
    import json
    found = json.loads(data.out)
    assert len(found['unreachable']) == 2
    assert found['unreachable_count'] == 8
    assert {(c['collection'], c['class'], c['documents'])
            for c in found['unreachable_by_class']} == {
        ('loose', '(unknown)', 1), ('loose', '(malformed)', 1),
        ('shelves', 'tests.test_cli_operator.Shelf', 1),
        ('shelves', 'tests.test_cli_operator.Box', 2),
        (PERSON, PERSON, 3)}
    # Without --limit, --json lists them all (it is for programs).
    assert len(json.loads(run(['gc', '-d', dbname, '--json'],
                              client).out)['unreachable']) == 8


# -- generative: what the operator types --------------------------------------
def refused_uri(uri):
    uri = uri.strip()
    return not (uri.startswith(('mongodb://', 'mongodb+srv://'))
                or uri.startswith('file://'))


uris = st.one_of(
    st.text(max_size=30).filter(refused_uri),
    st.builds(lambda scheme, rest: scheme + rest,
              st.sampled_from(['memory://', 'memory:', 'mongo://',
                               'MONGODB://', 'file:/', 'http://',
                               'mongodb:/', ' ']),
              st.text(max_size=15)).filter(refused_uri))


@settings(max_examples=60, deadline=None)
@given(uri=uris)
def test_any_uri_it_does_not_take_is_one_line(uri):
    """Nothing is connected to; one printable line says what it takes."""
    import pymongo

    def no_client(*args, **kwargs):
        raise AssertionError('a client was made for %r' % (uri,))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pymongo, 'MongoClient', no_client)
        patch.delenv('MONGODB_URI', raising=False)
        result = run(['inspect', '--uri', uri, '-d', 'x'])
    message = only_error(result)
    assert all(c.isprintable() for c in result.err.rstrip('\n'))
    assert len(message) < 700
    if uri.strip() == 'memory://':
        assert IN_MEMORY in message
    elif uri:
        assert ACCEPTED in message or IN_MEMORY in message


APP = 'mp_test_cliop_app'
names = st.one_of(st.text(max_size=12), st.sampled_from(
    [APP, APP, 'admin', 'local', 'config', 'x' * 70, 'a.b', 'A']))


@settings(max_examples=40, deadline=None)
@given(name=names, command=st.sampled_from(['inspect', 'check', 'gc']))
def test_any_database_name_stays_where_it_is_told(client, name, command):
    """A database that does not exist, or is no database name, is one
    line (exit 2) and nothing is read elsewhere; one that exists is
    walked."""
    client[APP]['things'].replace_one({'_id': 1}, {'_id': 1}, upsert=True)
    spy = DatabaseSpy(client)
    out, err = io.StringIO(), io.StringIO()
    try:
        code = cli.main([command, '-d', name, '--no-progress'], client=spy,
                        out=out, err=err)
        assert set(spy.databases) <= {name}
        if name == APP:
            assert code in (0, 1), err.getvalue()
        elif name not in client.list_database_names():
            assert code == 2, (name, out.getvalue(), err.getvalue())
            assert err.getvalue().startswith('mongopersist: error: ')
            assert len(err.getvalue().splitlines()) == 1
        assert all(c.isprintable() for c in err.getvalue().rstrip('\n'))
    finally:
        client.drop_database(APP)


limits_given = st.one_of(
    st.integers(-3, 12).map(str), st.text(max_size=4),
    st.sampled_from(['1e3', '0x2', ' 2', '2.0', '-0', '\x1b[2J']))


@settings(max_examples=30, deadline=None)
@given(limit=limits_given)
def test_any_limit_lists_that_many_or_is_refused(client, limit):
    """``gc --limit N``: N documents listed (of those unreachable), or a
    usage error for what is not a whole number of 0 or more; nothing is
    removed either way."""
    from mongopersist.datamanager import MongoDataManager
    dm = MongoDataManager(client, default_database=APP)
    try:
        seed_garbage(dm, client[APP], 3)
        before = sorted(repr(d) for d in client[APP]['loose'].find())
        result = run(['gc', '-d', APP, '--json', '--limit', limit], client)
        try:
            number = int(limit)
        except ValueError:
            number = -1
        if number < 0:
            assert result.code == 2, result.err
            assert 'usage:' in result.err and '--limit' in result.err
            assert all(c.isprintable() for c in result.err.replace(
                '\n', ''))
        else:
            import json
            found = json.loads(result.out)
            assert result.code == 1
            assert found['unreachable_count'] == 8
            assert len(found['unreachable']) == min(number, 8)
        assert sorted(repr(d) for d in client[APP]['loose'].find()) == \
            before
    finally:
        transaction.abort()
        client.drop_database(APP)
