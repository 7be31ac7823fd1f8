"""The compiled accelerator does what the Python code does.

``mongopersist._speedups`` replaces some methods and functions of the
library by compiled ones (``mongopersist.speedups``: ``COMPILED``,
``FUNCTIONS``).  Each mirrors the Python one, which stays as
``_python_<name>``.  These tests run the same input through both in one
process (``speedups.use_compiled``) and assert the same outcome: the same
document, the same loaded state, or the same error (class, message, field
path, document named).  The inputs are generated, hostile stored shapes
included (names refused, malformed values, reserved field names, cycles,
references the data manager may not follow).

The whole suite also runs both ways: CI runs it with
``MONGOPERSIST_PURE_PYTHON=1`` as well (``make test-pure``).
"""
import datetime
import decimal
import os
import re
import subprocess
import sys

import bson
import persistent
import pytest
import transaction
from bson.dbref import DBRef
from bson.int64 import Int64
from bson.objectid import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mongopersist import commit, limits, metadata, serialize, speedups
from mongopersist.datamanager import MongoDataManager
from mongopersist.serialize import PersistentDict, PersistentList

needs_compiled = pytest.mark.skipif(
    not speedups.enabled(),
    reason='the compiled accelerator is not built, or pure Python is forced')

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


class Thing(persistent.Persistent):
    """A top-level stored object whose attributes the tests draw."""
    _p_mongo_collection = 'speedups_thing'


class Target(persistent.Persistent):
    """Referenced by things."""
    _p_mongo_collection = 'speedups_target'


class Point:
    """A value object, stored as its attributes."""


class Stateful:
    """A value object with its own ``__setstate__``."""

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.restored = True


class Tracked(persistent.Persistent):
    """A sub-object stored inside its owner."""
    _p_mongo_sub_object = True


def both(function, *args):
    """``function(*args)`` with the compiled code, then with the Python
    code: the two outcomes (``('value', result)`` or ``('error',
    description)``)."""
    outcomes = []
    for flag in (True, False):
        before = speedups.use_compiled(flag)
        try:
            outcomes.append(('value', function(*args)))
        except Exception as error:   # noqa: B902 (compared, not hidden)
            outcomes.append(('error', describe(error)))
        finally:
            speedups.use_compiled(before)
    return outcomes


def describe(error):
    # Objects named in messages are the run's own: their addresses differ.
    message = re.sub(r' at 0x[0-9a-f]+', ' at 0x...', str(error))
    return (type(error), message, getattr(error, 'path', None),
            getattr(error, 'database', None),
            getattr(error, 'collection', None), getattr(error, 'id', None))


# -- values -------------------------------------------------------------------

keys = st.one_of(
    st.text(max_size=5),
    st.sampled_from(['_id', '$set', 'a.b', '_py_type', '_py_serial', 'x\x00',
                     '\ud800', 'é', '_p_jar', '__class__', 'data']))
scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-2 ** 65, max_value=2 ** 65),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6), st.binary(max_size=6),
    st.builds(ObjectId), st.builds(Int64, st.integers(-2 ** 63, 2 ** 63 - 1)),
    st.datetimes(min_value=datetime.datetime(1, 1, 1)),
    st.builds(bson.Decimal128, st.sampled_from(['1.5', '-0', 'NaN'])),
    st.builds(bson.Regex, st.sampled_from(['a', '^b'])),
    st.builds(metadata.OID, st.sampled_from(['c', 'speedups_target']),
              st.one_of(st.integers(0, 3), st.builds(ObjectId)),
              st.sampled_from([None, 'db'])),
    st.builds(DBRef, st.sampled_from(['c', 'd']), st.integers(0, 3),
              st.sampled_from([None, 'db'])),
    st.just(DBRef('c', 1, 'db', extra=1)))
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(keys, children, max_size=4)),
    max_leaves=12)


@needs_compiled
@SETTINGS
@given(st.dictionaries(keys, values, max_size=6))
def test_bson_size(doc):
    compiled, python = both(limits.bson_size, doc)
    assert compiled == python


@needs_compiled
@SETTINGS
@given(values, values)
def test_same_value(a, b):
    compiled, python = both(commit.same_value, a, b)
    assert compiled[0] == python[0]
    if compiled[0] == 'value':
        assert bool(compiled[1]) == bool(python[1])
        assert type(compiled[1]) is type(python[1])
    else:
        assert compiled == python
    # A value is the same as itself (and as its equal copy).
    assert both(commit.same_value, a, a) == both(commit.same_value, a, a)


@needs_compiled
@SETTINGS
@given(st.dictionaries(keys, values, max_size=5),
       st.dictionaries(keys, values, max_size=5), st.data())
def test_changed_fields(doc, loaded, data):
    # Some fields the same in both, as a loaded document mostly is.
    for key in data.draw(st.lists(st.sampled_from(sorted(doc) or ['a']),
                                  max_size=3)):
        if key in doc:
            loaded[key] = doc[key]
    compiled, python = both(commit.changed_fields, doc, loaded)
    assert compiled == python


# -- the writer ---------------------------------------------------------------

@pytest.fixture
def dm(client, dbname):
    dm = MongoDataManager(client, default_database=dbname)
    yield dm
    transaction.abort()


attribute_names = st.one_of(
    st.sampled_from(['name', 'tags', 'scores', 'when', 'where', 'price']),
    st.sampled_from(['_id', '_py_type', '$x', 'a.b', 'items', 'data',
                     '__init__', '__getstate__', 'keys']))

# A spec of an attribute value: built afresh for each implementation.
specs = st.recursive(
    st.one_of(
        scalars.filter(lambda v: not isinstance(v, DBRef)),
        st.tuples(st.just('date'), st.dates()),
        st.tuples(st.just('aware'), st.datetimes(
            timezones=st.just(datetime.timezone.utc))),
        st.tuples(st.just('decimal'), st.sampled_from(['1.25', '-0'])),
        st.tuples(st.just('big'), st.just(2 ** 80)),
        st.tuples(st.just('ref'), st.integers(0, 2)),
        st.tuples(st.just('new'), st.integers(0, 2))),
    lambda children: st.one_of(
        st.tuples(st.just('list'), st.lists(children, max_size=3)),
        st.tuples(st.just('tuple'), st.lists(children, max_size=3)),
        st.tuples(st.just('set'), st.lists(st.integers(0, 5), max_size=3)),
        st.tuples(st.just('dict'), st.dictionaries(keys, children,
                                                   max_size=3)),
        st.tuples(st.just('pdict'), st.dictionaries(
            st.text(max_size=3), children, max_size=3)),
        st.tuples(st.just('plist'), st.lists(children, max_size=3)),
        st.tuples(st.just('point'), st.dictionaries(
            attribute_names, children, max_size=3)),
        st.tuples(st.just('tracked'), st.dictionaries(
            attribute_names, children, max_size=2)),
        st.tuples(st.just('self'), children)),
    max_leaves=8)


def build(spec, targets, owner):
    """The value a spec describes (fresh objects)."""
    if not isinstance(spec, tuple) or not spec or not isinstance(
            spec[0], str):
        return spec
    kind, arg = spec
    if kind in ('date', 'aware'):
        return arg
    if kind == 'decimal':
        return decimal.Decimal(arg)
    if kind == 'big':
        return arg
    if kind == 'ref':
        return targets[arg]
    if kind == 'new':
        target = Target()
        target.number = arg
        return target
    if kind == 'list':
        return [build(item, targets, owner) for item in arg]
    if kind == 'tuple':
        return tuple(build(item, targets, owner) for item in arg)
    if kind == 'set':
        return set(arg)
    if kind == 'dict':
        return {key: build(item, targets, owner) for key, item in arg.items()}
    if kind == 'pdict':
        return PersistentDict({key: build(item, targets, owner)
                               for key, item in arg.items()})
    if kind == 'plist':
        return PersistentList([build(item, targets, owner) for item in arg])
    if kind in ('point', 'tracked'):
        value = Point() if kind == 'point' else Tracked()
        for name, item in arg.items():
            value.__dict__[name] = build(item, targets, owner)
        return value
    if kind == 'self':
        # A list that holds itself (a cycle), or the owner.
        cycle = [build(arg, targets, owner)]
        cycle.append(cycle if isinstance(arg, int) else owner)
        return cycle
    return spec


def write_outcome(client, dbname, attributes, ids):
    """Write a Thing with ``attributes`` (specs) in a new data manager;
    the document (references as ``(collection, id)``, new objects'
    ids left out), or the error."""
    dm = MongoDataManager(client, default_database=dbname)
    try:
        targets = []
        for number, oid in enumerate(ids):
            target = Target()
            target.number = number
            dm.insert(target, oid=oid)
            targets.append(target)
        thing = Thing()
        dm.insert(thing, oid='thing')
        for name, spec in attributes.items():
            thing.__dict__[name] = build(spec, targets, thing)
        writer = dm._writer
        doc = writer.get_document(thing)
        return plain(doc), writer.deepest, writer.untracked
    finally:
        transaction.abort()


def plain(value):
    """A stored value with references as (collection, id or 'new')."""
    if isinstance(value, DBRef):
        id = value.id
        return ('ref', value.collection, id if not isinstance(
            id, ObjectId) else 'new')
    if type(value) is dict:
        return ('dict', tuple((key, plain(item))
                              for key, item in value.items()))
    if type(value) is list:
        return ('list', tuple(plain(item) for item in value))
    if type(value) is float and value != value:
        return ('nan',)
    return (type(value), value)


@needs_compiled
@SETTINGS
@given(st.dictionaries(attribute_names, specs, max_size=5))
def test_writer(client, dbname, attributes):
    ids = [ObjectId() for _ in range(3)]
    compiled, python = both(write_outcome, client, dbname, attributes, ids)
    assert compiled == python


# -- the reader ---------------------------------------------------------------

metadata.register_type(Point)
metadata.register_type(Stateful)

type_names = st.sampled_from([
    'datetime.date', 'datetime.datetime', 'decimal.Decimal',
    'builtins.set', 'builtins.dict', 'builtins.int',
    'tests.test_speedups.Point', 'tests.test_speedups.Stateful',
    'tests.canary.NewCanary', 'os.system', 'no.such.Thing', 42])
stored_leaves = st.one_of(
    scalars.filter(lambda v: not isinstance(v, (DBRef, tuple))),
    st.builds(DBRef, st.sampled_from(['speedups_target', 'system.users',
                                      'a$b', '']),
              st.one_of(st.integers(0, 3), st.just([1])),
              st.sampled_from([None, 'elsewhere'])),
    st.fixed_dictionaries({'_py_type': st.just('datetime.date'),
                           'iso': st.sampled_from(['2024-02-29',
                                                   '2023-02-29', 'x', 5])}))
stored_values = st.recursive(
    stored_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(keys, children, max_size=3),
        st.builds(lambda name, fields: dict(fields, _py_type=name),
                  type_names, st.dictionaries(keys, children, max_size=3)),
        st.builds(lambda name, fields: dict(fields, _py_persistent_type=name),
                  st.sampled_from(['tests.test_speedups.Tracked',
                                   'tests.canary.Canary']),
                  st.dictionaries(keys, children, max_size=2)),
        st.builds(lambda args: {'_py_factory': 'builtins.set',
                                '_py_factory_args': args},
                  st.lists(children, max_size=2))),
    max_leaves=10)


def read_outcome(client, dbname, doc):
    """Load ``doc`` as a query result in a new data manager: the state of
    the object (shaped: references as their oids), or the error."""
    dm = MongoDataManager(client, default_database=dbname)
    try:
        obj = dm._object_from_document(dbname, 'speedups_thing', dict(doc))
        # Its instance dict (persistent's __getstate__ would encode the
        # names, and a lone surrogate in one crashes it).
        return type(obj).__name__, shape(dict(vars(obj)))
    finally:
        transaction.abort()


def shape(value, depth=0):
    if depth > 200:
        return '...'
    if isinstance(value, persistent.Persistent) and not isinstance(
            value, (PersistentDict, PersistentList, Tracked)):
        oid = value._p_oid
        return ('persistent', type(value).__name__,
                None if oid is None else (oid.collection, oid.id))
    if isinstance(value, PersistentDict):
        return ('pdict', value._p_jar is not None,
                shape(dict(value.data), depth + 1))
    if isinstance(value, PersistentList):
        return ('plist', value._p_jar is not None,
                shape(list(value.data), depth + 1))
    if isinstance(value, (Point, Stateful, Tracked)):
        return (type(value).__name__, shape(vars(value), depth + 1))
    if type(value) is dict:
        return ('dict', tuple((key, shape(item, depth + 1))
                              for key, item in value.items()))
    if type(value) in (list, tuple):
        return (type(value).__name__, tuple(shape(item, depth + 1)
                                            for item in value))
    if isinstance(value, (set, frozenset)):
        return (type(value).__name__, tuple(sorted(map(repr, value))))
    if type(value) is float and value != value:
        return ('nan',)
    return (type(value), repr(value))


@needs_compiled
@SETTINGS
@given(st.dictionaries(keys, stored_values, max_size=5),
       st.sampled_from([1, 'one', [1], {'a': 1}, None]))
def test_reader(client, dbname, fields, id):
    client[dbname]['persistence_type_map'].update_one(
        {'_id': '%s.speedups_thing' % dbname},
        {'$set': {'types': [metadata.get_dotted_name(Thing)],
                  'database': dbname, 'collection': 'speedups_thing'}},
        upsert=True)
    metadata.get_dotted_name(Target)
    metadata.get_dotted_name(Tracked)
    doc = dict(fields)
    if id is not None:
        doc['_id'] = id
    compiled, python = both(read_outcome, client, dbname, doc)
    assert compiled == python


# -- what is inlined, and what is not -----------------------------------------

class CountingManager(MongoDataManager):
    """A data manager whose thread check is its own: the compiled code
    must call it."""
    checks = 0

    def _check_thread(self):
        CountingManager.checks += 1
        return super()._check_thread()


@needs_compiled
def test_an_overriding_subclass_gets_its_method_called(client, dbname):
    dm = MongoDataManager(client, default_database=dbname)
    dm.root['thing'] = thing = Thing()
    thing.target = Target()
    transaction.commit()
    CountingManager.checks = 0
    counting = CountingManager(client, default_database=dbname)
    loaded = counting.root['thing']
    assert loaded.target.__class__ is Target
    assert CountingManager.checks > 0
    transaction.abort()


class OwnWriter(serialize.ObjectWriter):
    """A writer of its own ``_write``."""
    seen = []

    def _write(self, obj, pobj, stack, custom):
        OwnWriter.seen.append(type(obj).__name__)
        return super()._write(obj, pobj, stack, custom)


@needs_compiled
def test_a_writer_of_its_own_writes_its_way(dm):
    thing = Thing()
    thing.tags = ['a']
    dm.insert(thing)
    OwnWriter.seen = []
    doc = OwnWriter(dm).get_document(thing)
    assert doc['tags'] == ['a']
    assert OwnWriter.seen == ['list']


# -- choosing the implementation ----------------------------------------------

def _which(env):
    code = ('import mongopersist.datamanager as d, mongopersist.speedups as s;'
            'print(s.enabled(), type(d.MongoDataManager.__dict__["load"])'
            '.__name__)')
    result = subprocess.run(
        [sys.executable, '-c', code], env=env, capture_output=True,
        text=True, check=True)
    return result.stdout.split()


def test_pure_python_forced():
    env = dict(os.environ, MONGOPERSIST_PURE_PYTHON='1')
    assert _which(env) == ['False', 'function']


@needs_compiled
def test_compiled_used_when_built():
    env = dict(os.environ)
    env.pop('MONGOPERSIST_PURE_PYTHON', None)
    assert _which(env) == ['True', 'instancemethod']
    env['MONGOPERSIST_PURE_PYTHON'] = '0'
    assert _which(env) == ['True', 'instancemethod']


def test_the_python_code_stays_available():
    # Whichever runs, the Python methods are there (the reference the
    # compiled ones hand what they do not handle to).
    if speedups.enabled():
        assert MongoDataManager._python_load.__module__ == \
            'mongopersist.datamanager'
        assert commit._python_same_value.__module__ == 'mongopersist.commit'
