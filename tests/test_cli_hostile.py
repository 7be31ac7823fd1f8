"""The command line against hostile stored data and arguments (generative).

Somebody who can write to the application's databases plants type-map
entries, name-map entries, root entries, documents and references of any
shape: names with control characters, huge names, names MongoDB refuses,
values that are not names at all, pointers into other databases.  Every
command then runs on it (``inspect``, ``check``, ``gc`` with and without
``--apply``, ``rename-class``, ``upgrade-format``, ``ensure-indexes``),
with varied arguments (more ``--database`` and ``--root-database``
values, some of them invalid; ``--json``; the commands' own options).

The oracle, for every run:

* no database but the given ones (the first ``--database`` and the others
  on the command line) was asked for: a client spy records every database
  a command gets hold of (``tests/database_spy.py``);
* a database that was not given (``victim``, which hostile pointers name
  among others) is byte-for-byte what it was, after all the runs;
* the exit code is 0, 1 or 2, the command returned (no exception), it
  reported something when it did not exit with 0, and it never met an
  error it did not expect (the one-line ``internal error`` message);
* the output holds no character that is not printable (but the newlines
  between lines); text output never holds a stored value of more than
  ``text.LIMIT`` characters' worth of it (a huge name is cut), and
  ``--json`` output is valid JSON.

``make test`` runs a few dozen examples; ``make explore`` more.  There
is no shrinking: each example runs every command, and shrinking one took
longer than a CI run may; the assertion names the command line and its
output, which is what a failure needs.

Mutations it catches (checked while writing it): the type-map check of
``walk`` and the confined client both disabled (a run reads the
victim); the reference check and the confined client both disabled
(``check`` looks the victim's documents up); the code before issue 17
(an uncaught ``TypeError`` on a type-map entry of the wrong shape).
"""
import io
import json
import uuid

from bson.dbref import DBRef
from bson.objectid import ObjectId
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pymongo.errors import DuplicateKeyError

from mongopersist import cli
from tests.database_spy import DatabaseSpy, contents

PERSON = 'tests.model.Person'
OLD = 'tests.operations_model.Gadget'
RUN = uuid.uuid4().hex[:8]
# The databases of one example (dropped before and after it).  APP is
# always given; EXTRA and ROOT when the arguments say so; VICTIM never.
APP = 'mp_clih_%s_app' % RUN
EXTRA = 'mp_clih_%s_extra' % RUN
ROOT = 'mp_clih_%s_root' % RUN
VICTIM = 'mp_clih_%s_victim' % RUN
DATABASES = (APP, EXTRA, ROOT, VICTIM)
HUGE = 'h'

CONTROL = st.sampled_from([
    '\x1b[2J', '\x1b]0;owned\x07', '\x1b[31m', '\n', '\r', '\t', '\x7f',
    '\x9b', '\u202e', '\u2028', '\x08'])
#: Names MongoDB refuses, and names of the library's own collections.
ODD_NAMES = ['', '$cmd', 'a\x00b', 'system.views', '.', 'a..b', 'x.',
             'persistence_root', 'persistence_type_map', PERSON, OLD]
names = st.one_of(
    st.sampled_from(ODD_NAMES),
    st.text(max_size=10),
    st.builds(lambda head, control, tail: head + control + tail,
              st.text(max_size=4), CONTROL, st.text(max_size=4)),
    st.integers(1000, 30000).map(lambda n: HUGE * n),
)
not_strings = st.one_of(st.none(), st.integers(-3, 3), st.just(['x']),
                        st.just({'d': 1}), st.just(True))
#: Where a stored pointer leads: given databases, databases never given,
#: names MongoDB refuses (strings only: a DBRef's database must be one).
pointer_databases = st.one_of(
    st.sampled_from([APP, EXTRA, ROOT, VICTIM, VICTIM, 'admin', 'local',
                     '', 'a/b', 'a.b', 'v\x1b[2J', 'x\x00y', 'z' * 80]),
    st.text(max_size=8))
stored_ids = st.one_of(
    st.integers(-5, 5), st.text(max_size=6), st.none(),
    st.builds(ObjectId),
    st.fixed_dictionaries({'k': st.integers(0, 3)}),
    st.integers(1000, 6000).map(lambda n: 'i' * n))
references = st.one_of(
    # To a victim's document (or one of a given database).
    st.builds(DBRef, st.just('c'), st.sampled_from([1, 2]),
              st.sampled_from([VICTIM, APP, EXTRA])),
    st.builds(DBRef, st.one_of(st.sampled_from(ODD_NAMES + ['c', 'things']),
                               names),
              stored_ids, st.one_of(st.none(), pointer_databases)))
stored_values = st.one_of(
    references,
    st.lists(references, max_size=3),
    st.fixed_dictionaries({'_py_type': st.one_of(names, not_strings)}),
    st.fixed_dictionaries({'_py_factory': names,
                           '_py_factory_args': st.lists(st.integers(-9, 9),
                                                        max_size=2)}),
    st.fixed_dictionaries({'_py_constant': names}),
    st.just({'dict_data': [[1, 2]]}),
    st.just({'_py_type': 'enum.Enum', 'class': OLD, 'name': 'X'}),
    st.text(max_size=5))
# Field names a server stores (no NUL, no leading '$').
field_names = st.one_of(
    st.sampled_from(['v', 'ref', 'parent', 'g', 'name']),
    st.text(st.characters(blacklist_characters='\x00$.',
                          blacklist_categories=('Cs',)), min_size=1,
            max_size=6),
    st.builds(lambda control: 'f' + control, CONTROL.filter(
        lambda c: c != '\x00')))
documents = st.builds(
    lambda id, fields, extra: dict(extra, _id=id, **fields),
    stored_ids,
    st.dictionaries(field_names, stored_values, max_size=3),
    st.fixed_dictionaries({}, optional={
        '_py_persistent_type': st.one_of(names, not_strings),
        '_py_serial': st.one_of(st.integers(-1, 3), st.text(max_size=3)),
    }))
#: Collections documents are stored in (names a server accepts).
collections = st.sampled_from([PERSON, 'things', 'c\x1b[31m', 'd' * 90,
                               'e\u202e', 'items'])
type_map_entries = st.one_of(
    # Well-formed, pointing anywhere (the victim's collection included).
    st.builds(lambda database, collection, types: {
        '_id': '%s.%s' % (database, collection), 'database': database,
        'collection': collection, 'types': types},
        pointer_databases, st.one_of(st.just('c'), collections),
        st.lists(st.one_of(st.just(PERSON), names), max_size=2)),
    # Any shape.
    st.fixed_dictionaries(
        {'_id': st.one_of(stored_ids, names)},
        optional={'database': st.one_of(pointer_databases, not_strings),
                  'collection': st.one_of(collections, names, not_strings),
                  'types': st.one_of(st.lists(st.one_of(names, not_strings),
                                              max_size=3), not_strings)}))
root_entries = st.fixed_dictionaries({}, optional={
    'name': st.one_of(names, not_strings),
    'ref': st.one_of(references, not_strings, names)})
name_map_entries = st.fixed_dictionaries({}, optional={
    'database': st.one_of(pointer_databases, not_strings),
    'collection': st.one_of(names, not_strings),
    'path': st.one_of(names, not_strings)})


def placed(documents):
    return st.lists(st.tuples(collections, documents), max_size=6)


stored = st.fixed_dictionaries({
    'app': placed(documents),
    'extra': placed(documents),
    'type_map': st.lists(type_map_entries, max_size=4),
    'root': st.lists(root_entries, max_size=3),
    'name_map': st.lists(name_map_entries, max_size=2),
})

# -- arguments ---------------------------------------------------------------
# (Never a database outside the example's own: given, it is walked, and
# gc --apply cleans it.)
argument_databases = st.sampled_from(
    [EXTRA, ROOT, APP, '', 'a/b', 'x\x1b[2J', 'y' * 70, 'a\x00b'])


def flags(*choices):
    """Lists of option groups (each a list of arguments), flattened."""
    return st.lists(st.sampled_from(choices) | st.tuples(
        st.just('--database'), argument_databases).map(list) | st.tuples(
        st.just('--root-database'), argument_databases).map(list),
        max_size=3).map(lambda groups: [arg for group in groups
                                        for arg in group])


COMMON = (['--json'], ['--no-progress'], ['--trust', 'tests'],
          ['-\x1b[2J'], ['stray\x1b]0;owned\x07'], ['--min-age', 'x\x1b'])
invocations = st.tuples(
    st.tuples(st.just(['inspect']), flags(*COMMON)),
    st.tuples(st.just(['check']), flags(*COMMON)),
    st.tuples(st.just(['gc']), flags(
        *COMMON, ['--apply'], ['--dry-run'], ['--min-age', '0'],
        ['--keep', 'things'], ['--parent-key', 'ref'])),
    st.tuples(st.builds(lambda old, new: ['rename-class', old, new],
                        st.one_of(st.just(OLD), names),
                        st.one_of(st.just('x.New'), names)),
              flags(*COMMON, ['--dry-run'], ['--restart'],
                    ['--batch-size', '1'], ['--batch-size', '0'])),
    st.tuples(st.just(['upgrade-format']), flags(
        *COMMON, ['--dry-run'], ['--batch-size', '2'])),
    st.tuples(st.builds(lambda module: ['ensure-indexes', module],
                        st.sampled_from(['tests.operations_model',
                                         'tests.no_such_module_here'])),
              flags(*COMMON, ['--dry-run'])),
)


# -- the scene ---------------------------------------------------------------
def plant(client, data):
    """Store the hostile data, and the victim's own documents."""
    for name in DATABASES:
        client.drop_database(name)
    client[VICTIM]['c'].insert_many([
        {'_id': 1, '_py_persistent_type': OLD, 'g': {'_py_type': OLD},
         'd': {'dict_data': [[1, 2]]}, 'r': {'_py_constant': 'x.Y'}},
        {'_id': 2, 'parent': DBRef('c', 1)}])
    client[VICTIM]['persistence_root'].insert_one(
        {'name': 'v', 'ref': DBRef('c', 1, VICTIM)})
    for database, placed_docs in ((APP, data['app']),
                                  (EXTRA, data['extra'])):
        for collection, doc in placed_docs:
            _insert(client[database][collection], doc)
    # The root database of the runs: ROOT when --root-database gives it,
    # else APP; both get the same entries.
    for database in (APP, ROOT):
        for entry in data['type_map']:
            _insert(client[database]['persistence_type_map'], dict(entry))
        for entry in data['root']:
            _insert(client[database]['persistence_root'], dict(entry))
        for entry in data['name_map']:
            _insert(client[database]['persistence_name_map'], dict(entry))


def _insert(coll, doc):
    try:
        coll.insert_one(doc)
    except DuplicateKeyError:
        pass


def given_databases(argv):
    """The databases the command line names (valid or not)."""
    given = {APP}
    for option, value in zip(argv, argv[1:]):
        if option in ('--database', '--root-database'):
            given.add(value)
    return given


def printable(text):
    return all(char.isprintable() or char == '\n' for char in text)


def check_run(client, argv):
    spy = DatabaseSpy(client)
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(argv, client=spy, out=out, err=err)
    out, err = out.getvalue(), err.getvalue()
    where = (argv, code, out[-2000:], err[-2000:])
    assert code in (0, 1, 2), where
    assert getattr(cli, 'UNEXPECTED', 'internal error') not in err, where
    if code == 2:
        assert err.startswith('mongopersist: error: ') or 'usage:' in err, (
            where)
    elif code == 1:
        assert out.strip() or err.strip(), where
    assert set(spy.databases) <= given_databases(argv), (
        set(spy.databases), where)
    assert printable(out) and printable(err), where
    if '--json' in argv and out:
        json.loads(out, parse_constant=lambda name: pytest_fail(name, where))
    elif out:
        # A huge stored name is cut: at most LIMIT characters of it in a
        # value (check shows what loading says, cut at 1,000).
        assert HUGE * 1001 not in out, where
    assert HUGE * 1001 not in err, where


def pytest_fail(name, where):
    raise AssertionError('%s in --json output: %r' % (name, where))


@settings(max_examples=30, deadline=None,
          phases=(Phase.explicit, Phase.reuse, Phase.generate),
          suppress_health_check=[HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=stored, runs=invocations)
def test_commands_on_hostile_data_stay_in_the_databases_given(
        client, data, runs):
    try:
        plant(client, data)
        victim = contents(client, VICTIM)
        for command, extra in runs:
            # The application's database first, the drawn options after
            # the command's own arguments.
            check_run(client, command[:1] + ['--database', APP] + command[1:]
                      + extra)
        assert contents(client, VICTIM) == victim
    finally:
        for name in DATABASES:
            client.drop_database(name)
