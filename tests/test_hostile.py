"""Hostile documents: loading never runs code it was not allowed to run.

Threat model
------------
Somebody can write to the database (another application sharing it, a
compromised service, an operator's script, a restored backup), but cannot
change this process's code.  Every stored name (``_py_type``,
``_py_persistent_type``, ``_py_factory``, an enum's ``class``, the
``types`` of a type-map entry, a collection name used as a class name) and
every stored reference (a ``DBRef``, possibly into another database) is
therefore data chosen by that writer.  Loading must turn such names only
into what the application allowed (classes it stored or registered, and the
classes of their modules; registered factories; trusted module prefixes),
never import a module that is not imported yet (outside trusted prefixes),
never call or instantiate anything else, and never read a database it was
not given.  A refused name raises ``UnknownTypeError`` and a refused
reference ``RefusedReferenceError`` (both ``StoredDataError``), naming the
stored name and the document (database, collection, ``_id``).

The matrix
----------
Each hostile *vector* (a stored shape) is driven through each *load path*
(``dm.root``, ``dm.load``, ``find_objects``, ``find_one_object``, a
``MongoContainer``'s listing and lookup, an ``EmbeddedMongoContainer``,
a ``MongoCollectionMapping``'s lookup and listing, conflict resolution
with ``ResolvingSerialConflictHandler``, and batched loading: the
holder's document read in one query with its siblings).  A legitimate
application first stores its objects through a data manager; the attacker
then edits the stored documents with the raw collection; a *fresh* data
manager (another process) loads them.  Every case asserts:

1. nothing ran: no canary of ``tests/canary.py`` fired, the payload file
   ``/tmp/mp_canary_<uuid>`` (what the shell payloads would ``touch``) does
   not exist, and no module named by the document was even looked for
   (a ``sys.meta_path`` finder records import attempts and blocks
   ``this``, ``antigravity`` and ``webbrowser`` outright, so a failing run
   never prints the Zen of Python or opens a browser);
2. the error type, and that its message names the stored name and the
   document;
3. stored data is unchanged (every collection of the test's databases,
   compared before and after the load, and again after ``abort``).

Payloads are harmless by construction: shell commands only ``touch`` the
canary file, Python payloads only call ``tests.canary.fire``.

Positive controls at the end load the same shapes with allowed classes
(stored by the test first, or registered), so the paths demonstrably read
the planted fields and the refusals cannot pass vacuously.

Trust, round 2 (issue 17)
-------------------------
Allowed names are not enough: what loading *does* with allowed data
matters too.  The sections after the positive controls drive, through the
same paths:

* *calls through the data*: a field named ``append`` beside
  ``_py_listitems``, factory arguments that are stored instances carrying
  ``replace`` or ``keys``; their values are allowed callables (``Launcher``,
  an allowed class whose construction is the payload, and ``launch``, a
  function the application registered as a value), so a reader that looks
  a method up on a loaded instance calls them;
* *the class's business in stored state*: top-level ``_p_*``, ``_v_*`` and
  ``_py_*`` fields (``_p_resolveConflict`` must never be called,
  ``_p_mongo_doc_object`` must not swallow the next change);
* *work out of proportion to the document*: deep nesting with a refused
  name at the bottom (counted in reader steps, ``tests/bounded.py``), and
  factories that compute or allocate far more than was stored (run in a
  forked child under CPU and address-space limits, measured with
  ``tracemalloc``).  Each expects ``StoredDataError`` naming the document.
"""
import collections
import collections.abc
import datetime
import enum
import fractions
import importlib.abc
import os
import subprocess  # noqa: F401 (reachable as tests.test_hostile.subprocess)
import sys
import tempfile
import traceback
import uuid

import bson
import persistent
import pytest
import transaction
from bson.dbref import DBRef

from mongopersist import conflict, container, interfaces, mapping, metadata
from mongopersist.datamanager import MongoDataManager
from tests import bounded, canary
from tests.database_spy import DatabaseSpy
from tests.model import Car, Person, Phone

PERSON = 'tests.model.Person'
ROOT_COLLECTION = 'persistence_root'
TYPE_MAP = 'persistence_type_map'
FIELD = 'value'
PLACEHOLDER = 'placeholder'

#: Modules a load must never import, whatever the document says; the
#: import guard refuses them.
BLOCKED_MODULES = ('this', 'antigravity', 'webbrowser', 'legacy_models',
                   'tests.no_such_module')


# -- the application's own classes (allowed: the tests store them) ----------
class Color(enum.Enum):
    RED = 1
    GREEN = 2


class Registered:
    """Allowed only through ``register_type`` under an old name."""

    def __init__(self, x):
        self.x = x

    def __eq__(self, other):
        return type(other) is Registered and other.x == self.x


ALIAS = 'legacy_models.OldRegistered'
metadata.register_type(Registered, ALIAS)


class Special(Person):
    """Shares Person's collection: documents name their class."""
    _p_mongo_collection = PERSON


class Item(persistent.Persistent):
    _p_mongo_collection = 'hostile_items'


class Folder(container.MongoContainer):
    _p_mongo_collection = 'hostile_folders'
    _m_collection = 'hostile_items'


class Garage(container.EmbeddedMongoContainer):
    _p_mongo_collection = 'hostile_garages'


class People(mapping.MongoCollectionMapping):
    __mongo_collection__ = PERSON
    __mongo_mapping_key__ = 'short_name'


class Merging(persistent.Persistent):
    """Merges concurrent changes of ``count``; keeps the rest as stored."""
    _p_mongo_collection = 'hostile_merging'

    def _p_resolveConflict(self, old, committed, new):
        merged = dict(committed)
        merged['count'] = committed['count'] + new['count'] - old['count']
        return merged


class Plain:
    """An ordinary value class of the application (allowed: its module
    is), with no methods of its own."""


class Launcher:
    """An allowed class whose construction is the payload.

    Reading may return it as a class stored by name (``{'_py_type':
    'type', 'path': LAUNCHER}``); calling it fires a canary."""

    def __init__(self, *args, **kwargs):
        canary.fire('Launcher%r' % (args,))


def launch(*args, **kwargs):
    """A function the application registered as a value: loading may
    return it, never call it."""
    canary.fire('launch%r' % (args,))


metadata.register_global(launch)
PLAIN = 'tests.test_hostile.Plain'
LAUNCHER = {'_py_type': 'type', 'path': 'tests.test_hostile.Launcher'}
LAUNCH = {'_py_type': 'function', 'path': 'tests.test_hostile.launch'}


def application_values(obj, value):
    """Give ``obj`` the attributes of an ordinary application object.

    Storing it makes the classes it uses known to the process, as an
    application that uses them would; the planted shapes name them.
    """
    obj.phone = Phone('+1', '978', '394-5124')
    obj.car = Car(2005, 'Ford', 'Explorer')
    obj.color = Color.RED
    obj.extras = [collections.OrderedDict([('a', 1)]),
                  collections.deque([1, 2])]
    setattr(obj, FIELD, value)
    return obj


def holder_person(value):
    person = application_values(Person('holder'), value)
    person.short_name = 'p'
    return person


# -- the import guard and the client spy -------------------------------------
class ImportGuard(importlib.abc.MetaPathFinder):
    """Records import attempts (while ``recording``); blocks dangerous ones.

    Only imports of modules not in ``sys.modules`` reach a finder, so every
    recorded name is a module loading tried to import.
    """

    def __init__(self):
        self.attempts = []
        self.recording = False

    @staticmethod
    def blocked(fullname):
        return any(fullname == name or fullname.startswith(name + '.')
                   for name in BLOCKED_MODULES)

    def find_spec(self, fullname, path=None, target=None):
        if self.recording or self.blocked(fullname):
            self.attempts.append(fullname)
        if self.blocked(fullname):
            raise ModuleNotFoundError(
                'import of %r blocked by tests/test_hostile.py' % fullname,
                name=fullname)
        return None


class StoredDocument(dict):
    """A document as a snapshot read it: equal to another when their BSON
    is (a stored NaN equals itself, as it does byte for byte; field order
    counts)."""

    __hash__ = None

    def __eq__(self, other):
        return isinstance(other, dict) and bson.encode(self) == bson.encode(
            other)

    def __ne__(self, other):
        return not self == other


@pytest.fixture
def guard():
    canary.reset()
    saved = {name: sys.modules.pop(name) for name in list(sys.modules)
             if ImportGuard.blocked(name)}
    finder = ImportGuard()
    sys.meta_path.insert(0, finder)
    try:
        yield finder
    finally:
        sys.meta_path.remove(finder)
        canary.reset()
        for name in list(sys.modules):
            if ImportGuard.blocked(name):
                del sys.modules[name]
        sys.modules.update(saved)


class Scene:
    """One test's databases, data managers and canary file."""

    def __init__(self, client, dbname, dm, guard):
        self.client = client
        self.dbname = dbname
        self.db = client[dbname]
        self.other_dbname = dbname + '_other'
        self.other_db = client[self.other_dbname]
        self.dm = dm
        self.guard = guard
        self.marker = os.path.join(
            tempfile.gettempdir(), 'mp_canary_%s' % uuid.uuid4().hex)
        self.spies = []
        self.options = {}           # for the data managers that load
        self.state = {}             # per-path bookkeeping
        self.holder_id = None

    def fresh(self, **options):
        """A data manager of another process (records its databases)."""
        spy = DatabaseSpy(self.client)
        self.spies.append(spy)
        options = dict(self.options, **options)
        options.setdefault('default_database', self.dbname)
        return MongoDataManager(spy, **options)

    def in_child(self):
        """Called in a forked child (``tests/bounded.py``): its own client
        for a real server."""
        self.client = bounded.client_for_child(self.client)
        self.db = self.client[self.dbname]
        self.other_db = self.client[self.other_dbname]
        self.dm = MongoDataManager(self.client,
                                   default_database=self.dbname)

    def databases_asked_for(self):
        return {name for spy in self.spies for name in spy.databases}

    def snapshot(self):
        """Every non-empty collection's documents, of both databases."""
        result = {}
        for name in (self.dbname, self.other_dbname):
            db = self.client[name]
            colls = {}
            for coll in db.list_collection_names():
                if coll.startswith('system.'):
                    continue
                docs = sorted((StoredDocument(doc) for doc in db[coll].find()),
                              key=lambda doc: repr(doc.get('_id')))
                if docs:
                    colls[coll] = docs
            result[name] = colls
        return result


@pytest.fixture
def s(client, dbname, dm, guard):
    scene = Scene(client, dbname, dm, guard)
    yield scene
    transaction.abort()
    client.drop_database(scene.other_dbname)
    if os.path.exists(scene.marker):
        os.remove(scene.marker)


# -- load paths ---------------------------------------------------------------
class Path:
    """Stores a holder document, then loads it back through one path.

    ``collection`` is the holder's collection and ``field`` the (dotted)
    field of the holder document where a planted value goes.
    """

    name = None
    collection = PERSON
    field = FIELD
    extra_update = {}
    reads_document_class = True     # loading reads _py_persistent_type

    def __repr__(self):
        return self.name

    def install(self, s, value=PLACEHOLDER):
        s.dm.root['app'] = application_values(Person('app'), 'app')
        holder = s.dm.root['holder'] = holder_person(value)
        transaction.commit()
        s.holder_id = holder._p_oid.id

    def location(self, s):
        return (s.dbname, self.collection, s.holder_id)

    def neighbours(self, s):
        """Documents of the holder's collection the path loads before
        the holder (a refused type-map entry may be found in them)."""
        return []

    def prepare(self, s):
        """Called after install and before the attacker's edit."""

    def plant(self, s, update):
        update = dict(update, **self.extra_update)
        result = s.db[self.collection].update_one(
            {'_id': s.holder_id}, update)
        assert result.matched_count == 1

    def obtain(self, s):
        """Return the holder object, loaded through this path."""
        raise NotImplementedError

    def run(self, s):
        """Load the holder through this path; return the planted value."""
        return self.value_of(self.obtain(s))

    def value_of(self, holder):
        return getattr(holder, FIELD)


def _only(objects):
    objects = list(objects)
    assert len(objects) == 1, 'expected one object, got %r' % (objects,)
    return objects[0]


def _activated(obj):
    obj._p_activate()
    return obj


class RootPath(Path):
    name = 'root'

    def obtain(self, s):
        return _activated(s.fresh().root['holder'])


class LoadPath(Path):
    name = 'load'

    def obtain(self, s):
        return _activated(s.fresh().load(
            DBRef(PERSON, s.holder_id, s.dbname)))


class FindObjectsPath(Path):
    name = 'find_objects'

    def obtain(self, s):
        return _only(s.fresh().find_objects(Person, {'name': 'holder'}))


class FindOnePath(Path):
    name = 'find_one_object'

    def obtain(self, s):
        obj = s.fresh().find_one_object(Person, {'name': 'holder'})
        assert obj is not None, 'find_one_object found nothing'
        return obj


class ContainerPath(Path):
    collection = 'hostile_items'

    def install(self, s, value=PLACEHOLDER):
        s.dm.root['app'] = application_values(Person('app'), 'app')
        s.dm.root['folder'] = Folder()
        item = application_values(Item(), value)
        s.dm.root['folder']['k'] = item
        transaction.commit()
        s.holder_id = item._p_oid.id


class ContainerListingPath(ContainerPath):
    name = 'container-values'

    def obtain(self, s):
        return _only(s.fresh().root['folder'].values())


class ContainerLookupPath(ContainerPath):
    name = 'container-getitem'

    def obtain(self, s):
        return s.fresh().root['folder']['k']


class EmbeddedPath(Path):
    name = 'embedded-container'
    collection = 'hostile_garages'
    field = 'data.k'

    def install(self, s, value=PLACEHOLDER):
        s.dm.root['app'] = application_values(Person('app'), 'app')
        garage = Garage()
        garage['k'] = value
        s.dm.root['garage'] = garage
        transaction.commit()
        s.holder_id = garage._p_oid.id

    def obtain(self, s):
        return _activated(s.fresh().root['garage'])

    def value_of(self, holder):
        return holder['k']


class MappingLookupPath(Path):
    name = 'mapping-getitem'

    def obtain(self, s):
        return People(s.fresh())['p']


class MappingListingPath(Path):
    name = 'mapping-values'

    def obtain(self, s):
        return _only(People(s.fresh()).values())


class ConflictPath(Path):
    """Another writer replaced the document before our commit.

    Our data manager resolves the conflict through ``_p_resolveConflict``,
    reading the other writer's (hostile) document to make the states.
    """
    name = 'conflict-resolution'
    collection = 'hostile_merging'
    extra_update = {'$inc': {'_py_serial': 1, 'count': 10}}
    reads_document_class = False

    def _dm(self, s):
        return s.fresh(
            conflict_handler=conflict.ResolvingSerialConflictHandler)

    def install(self, s, value=PLACEHOLDER):
        s.dm.root['app'] = application_values(Person('app'), 'app')
        transaction.commit()
        merging = application_values(Merging(), value)
        merging.count = 1
        self._dm(s).root['merging'] = merging
        transaction.commit()
        s.holder_id = merging._p_oid.id

    def prepare(self, s):
        ours = self._dm(s).root['merging']
        ours.count += 1
        s.state['ours'] = ours

    def obtain(self, s):
        transaction.commit()
        stored = s.db[self.collection].find_one({'_id': s.holder_id})
        # 1 loaded, 2 ours, 11 theirs: the resolver merged them.
        assert stored['count'] == 12, 'the conflict was not resolved'
        return s.state['ours']


class BatchPath(Path):
    """Batched loading: the holder is the second of three friends of
    the root entry ``club``; using the first reads the documents of all
    three in one query (``mongopersist.batching``), the holder's among
    them."""
    name = 'batched'

    def install(self, s, value=PLACEHOLDER):
        s.dm.root['app'] = application_values(Person('app'), 'app')
        holder = application_values(Person('holder'), value)
        club = s.dm.root['club'] = Person('club')
        club.friends = [application_values(Person('first'), 'first'),
                        holder,
                        application_values(Person('last'), 'last')]
        transaction.commit()
        s.holder_id = holder._p_oid.id
        s.state['neighbours'] = [
            (s.dbname, PERSON, person._p_oid.id)
            for person in (club, club.friends[0])]

    def neighbours(self, s):
        return s.state['neighbours']

    def obtain(self, s):
        friends = s.fresh().root['club'].friends
        for friend in friends:
            friend._p_activate()
        return friends[1]


VALUE_PATHS = [RootPath(), LoadPath(), FindObjectsPath(), FindOnePath(),
               ContainerListingPath(), ContainerLookupPath(), EmbeddedPath(),
               MappingLookupPath(), MappingListingPath(), ConflictPath(),
               BatchPath()]
DOCUMENT_PATHS = [path for path in VALUE_PATHS if path.reads_document_class]


# -- vectors ------------------------------------------------------------------
class Vector:
    """A hostile stored shape.

    ``stored(s)`` returns it; ``name`` is the stored name the error must
    name (``None`` for references); ``names`` are all the dotted names in
    it (no module they name may be imported); ``prepare(s)`` stores what
    it needs around it; ``where(s)`` lists further documents the error may
    name (besides the document holding the shape).
    """

    def __init__(self, id, stored, name=None, names=(),
                 error=interfaces.UnknownTypeError, prepare=None,
                 where=None, foreign=False, exact_name=True):
        self.id = id
        self.exact_name = exact_name
        self._stored = stored
        self.name = name
        self.names = tuple(names) + ((name,) if name else ())
        self.error = error
        self.prepare = prepare or (lambda s: None)
        self.where = where or (lambda s: [])
        self.foreign = foreign

    def stored(self, s):
        return self._stored(s) if callable(self._stored) else self._stored

    def __repr__(self):
        return self.id


def factory(name, *args, extra=None):
    def stored(s):
        doc = {'_py_factory': name, '_py_factory_args': [
            arg(s) if callable(arg) else arg for arg in args]}
        doc.update(extra or {})
        return doc
    return Vector('_py_factory=%s' % name, stored, name)


def touch(s):
    return 'touch %s' % s.marker


def touch_argv(s):
    return ['touch', s.marker]


def marker(s):
    return s.marker


def py_type(stored_name, **state):
    return Vector('_py_type=%s' % stored_name,
                  dict(state, _py_type=stored_name), stored_name)


def enum_entry(cls_name, label, **state):
    return Vector('enum:%s(%s)' % (cls_name, label),
                  lambda s: {'_py_type': 'enum.Enum', 'class': cls_name,
                             **{k: v(s) if callable(v) else v
                                for k, v in state.items()}},
                  cls_name)


def by_name(kind, stored_name):
    """A class, function or constant stored by name."""
    return Vector('%s value %s' % (kind, stored_name),
                  {'_py_type': kind, 'path': stored_name}, stored_name)


def inner_persistent(stored_name, **state):
    return Vector('inner _py_persistent_type=%s' % stored_name,
                  dict(state, _py_persistent_type=stored_name), stored_name)


def collection_reference(name):
    def prepare(s):
        s.db[name].insert_one({'_id': 1, 'x': 1})
    # No stored class name here: the error need only name the collection
    # (``error.name`` may be None).
    return Vector('DBRef into collection %r' % name,
                  lambda s: DBRef(name, 1, s.dbname), name,
                  prepare=prepare, where=lambda s: [(s.dbname, name, 1)],
                  exact_name=False)


FOREIGN_ID = 'foreign-person'


def foreign_reference(dbname=None):
    """A reference into the test's other database (which holds the
    document referenced), or into ``dbname`` (not written to)."""
    def database(s):
        return dbname or s.other_dbname

    def prepare(s):
        if dbname is None:
            s.other_db[PERSON].insert_one(
                {'_id': FOREIGN_ID, 'name': 'foreign'})
    return Vector(
        'DBRef into database %s' % (dbname or '<other>'),
        lambda s: DBRef(PERSON, FOREIGN_ID, database(s)),
        error=interfaces.RefusedReferenceError, prepare=prepare,
        where=lambda s: [(database(s), PERSON, FOREIGN_ID)], foreign=True)


VALUE_VECTORS = [
    # _py_factory: only registered factories may be called.
    factory('os.system', touch),
    factory('subprocess.getoutput', touch),
    factory('subprocess.run', touch_argv),
    factory('subprocess.Popen', touch_argv),
    factory('builtins.exec', canary.EXEC_PAYLOAD),
    factory('builtins.eval', canary.EVAL_PAYLOAD),
    factory('builtins.open', marker, 'w'),
    factory('pickle.loads', canary.PICKLE_PAYLOAD),
    Vector('_py_factory=builtins.__import__(antigravity)',
           {'_py_factory': 'builtins.__import__',
            '_py_factory_args': ['antigravity']},
           'builtins.__import__', names=['antigravity']),
    Vector('_py_factory=importlib.import_module(this)',
           {'_py_factory': 'importlib.import_module',
            '_py_factory_args': ['this']},
           'importlib.import_module', names=['this']),
    factory('tests.canary.canary_function'),
    factory('tests.canary.InitCanary'),
    factory('antigravity.geohash', 37.4, -122.1, b'2005-05-26-10458.68'),
    # Attribute walks: to non-classes, through allowed modules, dunders.
    factory('os.environ.get', 'PATH'),
    factory('os.path.join', 'a', 'b'),
    Vector('_py_factory=mongopersist.metadata.importlib.import_module',
           {'_py_factory': 'mongopersist.metadata.importlib.import_module',
            '_py_factory_args': ['this']},
           'mongopersist.metadata.importlib.import_module', names=['this']),
    factory('tests.model.Phone.__init__.__globals__.get', '__builtins__'),
    # _py_type: only allowed (value) classes may be instantiated.
    Vector('_py_type=subprocess.Popen',
           lambda s: {'_py_type': 'subprocess.Popen',
                      '_child_created': False, 'args': touch_argv(s)},
           'subprocess.Popen'),
    Vector('_py_type=subprocess.Popen+_py_new_args',
           lambda s: {'_py_type': 'subprocess.Popen',
                      '_py_new_args': [touch_argv(s)],
                      '_child_created': False},
           'subprocess.Popen'),
    Vector('_py_type=tests.test_hostile.subprocess.Popen',
           {'_py_type': 'tests.test_hostile.subprocess.Popen',
            '_child_created': False},
           'tests.test_hostile.subprocess.Popen'),
    py_type('tests.canary.NewCanary'),
    py_type('tests.canary.SetstateCanary', x=1),
    py_type('os.environ'),
    py_type('os.path.join'),
    py_type('tests.model.Phone.__class__'),
    py_type('tests.model.Car'),
    py_type('this.x'),
    py_type('antigravity.x'),
    py_type('tests.no_such_module.X'),
    # Enum entries: only enum.Enum subclasses, looked up, never called.
    enum_entry('os.environ', 'PATH', name='PATH'),
    enum_entry('tests.model.Phone', 'non-enum class', name='x'),
    enum_entry('builtins.eval', 'value', value=canary.EVAL_PAYLOAD),
    enum_entry('os.system', 'value', value=touch),
    enum_entry('tests.canary.CanaryEnum', 'name', name='A'),
    enum_entry('tests.canary.CanaryEnum', 'value', value=1),
    enum_entry('this.x', 'name', name='A'),
    # _py_persistent_type inside a document: only sub-object classes.
    inner_persistent('subprocess.Popen', _child_created=False),
    inner_persistent('tests.canary.SubObjectCanary', x=1),
    inner_persistent('tests.canary.PersistentCanary', x=1),
    inner_persistent('tests.model.Person', name='inner'),
    inner_persistent('tests.model.Phone', area='978'),
    inner_persistent('antigravity.x'),
    # References: the collection name is not a class name to resolve, and
    # other databases are not read.
    collection_reference('tests.canary.PersistentCanary'),
    collection_reference('subprocess.Popen'),
    collection_reference('tests.model.Phone'),
    collection_reference('this.x'),
    collection_reference('antigravity.x'),
    foreign_reference(),
]

# Shapes of the original mongopersist (mongopersist.legacy) and values
# stored by name: only what the application allowed, never imported or
# called; malformed ones are StoredDataError.
LEGACY_CLASS = 'tests.test_hostile.Color'     # allowed (stored by the tests)
VALUE_VECTORS += [
    Vector('_py_constant=os.environ', {'_py_constant': 'os.environ'},
           'os.environ'),
    Vector('_py_constant=os.system', {'_py_constant': 'os.system'},
           'os.system'),
    Vector('_py_constant=tests.canary.canary_function',
           {'_py_constant': 'tests.canary.canary_function'},
           'tests.canary.canary_function'),
    Vector('_py_constant=this.x', {'_py_constant': 'this.x'}, 'this.x'),
    Vector('_py_constant of an allowed class',
           {'_py_constant': LEGACY_CLASS}, LEGACY_CLASS),
    by_name('type', 'subprocess.Popen'),
    by_name('type', 'os.system'),                   # not a class
    by_name('type', 'antigravity.x'),
    by_name('function', 'os.system'),
    by_name('function', 'tests.canary.canary_function'),
    by_name('constant', 'os.environ'),
    by_name('constant', 'this.x'),
    Vector('dict_data value os.system',
           lambda s: {'dict_data': [[1, {'_py_factory': 'os.system',
                                         '_py_factory_args': [touch(s)]}]]},
           'os.system'),
    Vector('dict_data key subprocess.Popen',
           lambda s: {'dict_data': [[{'_py_type': 'subprocess.Popen',
                                      'args': touch_argv(s)}, 1]]},
           'subprocess.Popen'),
    Vector('legacy datetime with a hostile tzinfo',
           lambda s: {'_py_factory': 'datetime.datetime',
                      '_py_factory_args': [
                          b'\x07\xdb\n\x01\t-\x00\x00\x00\x00',
                          {'_py_factory': 'os.system',
                           '_py_factory_args': [touch(s)]}]},
           'os.system'),
    factory('__builtin__.eval', canary.EVAL_PAYLOAD),
    factory('__builtin__.__import__', 'antigravity'),
    factory('copy_reg._reconstructor', 'tests.canary.NewCanary'),
    Vector('dict_data not pairs', {'dict_data': [1, 2]},
           error=interfaces.StoredDataError),
    Vector('dict_data pair of three', {'dict_data': [[1, 2, 3]]},
           error=interfaces.StoredDataError),
    Vector('_py_constant not a string', {'_py_constant': ['os', 'system']},
           error=interfaces.StoredDataError),
    Vector('class value without path', {'_py_type': 'type'},
           error=interfaces.StoredDataError),
    Vector('class value path not a string',
           {'_py_type': 'type', 'path': {'$numberInt': '1'}},
           error=interfaces.StoredDataError),
    Vector('legacy date of bad bytes',
           {'_py_factory': 'datetime.date',
            '_py_factory_args': [b'\xff\xff\xff\xff']},
           error=interfaces.StoredDataError),
    Vector('legacy datetime of a list',
           {'_py_factory': 'datetime.datetime',
            '_py_factory_args': [[1, 2, 3]]},
           error=interfaces.StoredDataError),
]


def called_through(id, stored):
    """A shape whose reading, done wrong, calls an allowed callable (the
    ``Launcher`` class or the registered ``launch`` function, both stored
    by name) found on a stored value.  Nothing in it is refused by name:
    the reader must not call a method it finds on loaded data, and must
    type-check factory arguments before calling the factory."""
    return [Vector('%s (%s)' % (id, what), stored(value),
                   error=interfaces.StoredDataError)
            for what, value in (('Launcher class', LAUNCHER),
                                ('launch function', LAUNCH))]


def _instance(**fields):
    return dict(fields, _py_type=PLAIN)


# Issue 17: "loading calls what the document names".
VALUE_VECTORS += [
    # ``_py_listitems`` beside a field named ``append``: value.append(item)
    # would call the stored callable with each item.
    *called_through('append + _py_listitems', lambda f: _instance(
        append=f, _py_listitems=['rm -rf /'])),
    *called_through('append in _py_state + _py_listitems', lambda f: {
        '_py_type': PLAIN, '_py_state': {'append': f},
        '_py_listitems': ['rm -rf /']}),
    *called_through('append on a sub-object + _py_listitems', lambda f: {
        '_py_persistent_type': 'tests.model.Car', 'append': f,
        '_py_listitems': ['rm -rf /']}),
    *called_through('append on an OrderedDict + _py_listitems', lambda f: {
        '_py_factory': 'collections.OrderedDict', '_py_factory_args': [],
        'append': f, '_py_listitems': ['rm -rf /']}),
    *called_through('extend + _py_listitems', lambda f: _instance(
        extend=f, _py_listitems=['rm -rf /'])),
    *called_through('update + _py_dictitems', lambda f: _instance(
        update=f, __setitem__=f, _py_dictitems=[['k', 'rm -rf /']])),
    # Factory arguments: uuid.UUID(hex) calls hex.replace(...); dict(x)
    # and OrderedDict(x) call x.keys().
    *called_through('uuid.UUID of an instance with replace', lambda f: {
        '_py_factory': 'uuid.UUID',
        '_py_factory_args': [_instance(replace=f)]}),
    *called_through('dict of an instance with keys', lambda f: {
        '_py_factory': 'builtins.dict',
        '_py_factory_args': [_instance(keys=f)]}),
    *called_through('OrderedDict of an instance with keys', lambda f: {
        '_py_factory': 'collections.OrderedDict',
        '_py_factory_args': [_instance(keys=f)]}),
    *called_through('Counter of an instance with keys', lambda f: {
        '_py_factory': 'collections.Counter',
        '_py_factory_args': [_instance(keys=f)]}),
]

#: Names of a document's own class (top-level ``_py_persistent_type``,
#: type-map entries, collection names used as class names).
CLASS_NAMES = [
    'subprocess.Popen',
    'tests.canary.PersistentCanary',
    'tests.canary.SubObjectCanary',
    'tests.model.Car',              # allowed, but a sub-object class
    'tests.model.Phone',            # allowed, but not persistent
    'os.environ',
    'os.path.join',
    'tests.test_hostile.subprocess.Popen',
    'this.x',
    'antigravity.x',
    'tests.no_such_module.X',
]


# -- checks -------------------------------------------------------------------
def module_prefixes(names):
    found = set()
    for name in names:
        parts = name.split('.')
        found.update('.'.join(parts[:i]) for i in range(1, len(parts) + 1))
    return found


def attempt(s, action):
    """Run ``action`` with imports recorded; return ``(result, error)``."""
    s.guard.recording = True
    try:
        return action(), None
    except Exception as error:
        return None, error
    finally:
        s.guard.recording = False


def describe(error):
    if error is None:
        return 'no error'
    return ''.join(traceback.format_exception(
        type(error), error, error.__traceback__))[-3000:]


def assert_nothing_ran(s, names=(), foreign=False):
    assert canary.FIRED == [], 'canary code ran: %r' % canary.FIRED
    assert not os.path.exists(s.marker), 'a shell payload ran'
    forbidden = module_prefixes(names) | set(BLOCKED_MODULES)
    tried = [name for name in s.guard.attempts
             if name in forbidden or ImportGuard.blocked(name)]
    assert not tried, 'loading tried to import %r (all attempts: %r)' % (
        tried, s.guard.attempts)
    assert 'this' not in sys.modules and 'antigravity' not in sys.modules
    if foreign:
        assert s.other_dbname not in s.databases_asked_for(), (
            'the data manager opened the foreign database')


def assert_error(error, expected, name, locations, foreign_db=None,
                 exact_name=True):
    assert error is not None, 'loaded without complaint'
    assert isinstance(error, expected), (
        'expected %s, got:\n%s' % (expected.__name__, describe(error)))
    assert isinstance(error, interfaces.StoredDataError)
    text = str(error)
    if name is not None:
        if exact_name:
            assert error.name == name, describe(error)
        else:
            assert getattr(error, 'name', None) in (None, name), text
        assert name in text, text
    if foreign_db is not None:
        assert foreign_db in text, text
    where = (error.database, error.collection, error.id)
    assert where in locations, 'error locates %r, expected one of %r: %s' % (
        where, locations, text)
    database, collection, id = where
    assert '%s.%s' % (database, collection) in text, text
    assert repr(id) in text, text


def check_refused(s, path, plant, locations, name, names,
                  error_type, foreign=False, may_load=False, exact_name=True,
                  budget=None):
    """Install, plant, load through ``path``; assert the three promises.

    ``locations()`` lists the documents the error may name (called once
    the documents are stored).  With ``budget``, loading may take at most
    that many steps (``tests/bounded.py``: it is stopped, and the test
    fails, once it takes more).
    """
    path.install(s)
    path.prepare(s)
    plant()
    before = s.snapshot()
    if budget is None:
        result, error = attempt(s, lambda: path.run(s))
    else:
        (result, error), _ = bounded.counted(
            lambda: attempt(s, lambda: path.run(s)), budget)
    after = s.snapshot()
    transaction.abort()
    after_abort = s.snapshot()
    assert_nothing_ran(s, names, foreign)
    if not (may_load and error is None):
        assert_error(error, error_type, name, locations(),
                     s.other_dbname if foreign else None, exact_name)
    assert after == before, 'loading changed stored data'
    assert after_abort == before, 'abort changed stored data'
    return result, error


# -- the matrix ---------------------------------------------------------------
@pytest.mark.parametrize('path', VALUE_PATHS, ids=repr)
@pytest.mark.parametrize('vector', VALUE_VECTORS, ids=repr)
def test_hostile_value(s, vector, path):
    """A hostile value inside an application document."""
    def plant():
        vector.prepare(s)
        path.plant(s, {'$set': {path.field: vector.stored(s)}})
    check_refused(
        s, path, plant,
        lambda: [path.location(s)] + vector.where(s), vector.name,
        vector.names, vector.error, vector.foreign,
        exact_name=vector.exact_name)


@pytest.mark.parametrize('path', DOCUMENT_PATHS, ids=repr)
@pytest.mark.parametrize('name', CLASS_NAMES)
def test_hostile_class_of_document(s, name, path):
    """A document's top-level ``_py_persistent_type`` names its class."""
    def plant():
        path.plant(s, {'$set': {'_py_persistent_type': name}})
    check_refused(s, path, plant, lambda: [path.location(s)], name, [name],
                  interfaces.UnknownTypeError)


QUERY_PATHS = {FindObjectsPath.name, FindOnePath.name}


@pytest.mark.parametrize('path', DOCUMENT_PATHS, ids=repr)
@pytest.mark.parametrize('name', CLASS_NAMES)
def test_hostile_type_map_entry(s, name, path):
    """The type map says the holder's collection holds only ``name``.

    Queries by class may instead just find no instance of that class
    there; either way nothing named runs or is imported.
    """
    type_map_id = '%s.%s' % (s.dbname, path.collection)

    def plant():
        s.db[TYPE_MAP].replace_one(
            {'_id': type_map_id},
            {'_id': type_map_id, 'database': s.dbname,
             'collection': path.collection, 'types': [name]}, upsert=True)
    may_load = path.name in QUERY_PATHS
    if may_load:
        # Finding nothing is fine; finding the holder means loading it.
        path = _Lenient(path)
    check_refused(
        s, path, plant,
        lambda: [(s.dbname, TYPE_MAP, type_map_id), path.location(s)]
        + path.neighbours(s),
        name, [name], interfaces.UnknownTypeError, may_load=may_load)


class _Lenient(Path):
    """A query path where finding nothing is an acceptable outcome."""

    def __init__(self, path):
        self._path = path
        self.name = path.name
        self.collection = path.collection
        self.neighbours = path.neighbours

    def install(self, s, value=PLACEHOLDER):
        self._path.install(s, value)

    def run(self, s):
        try:
            return self._path.run(s)
        except AssertionError:
            return None     # found nothing


@pytest.mark.parametrize('query', ['find_objects', 'find_one_object',
                                   'count'])
@pytest.mark.parametrize('name', CLASS_NAMES)
def test_shared_type_map_names_are_not_resolved(s, name, query):
    """Queries filter by class using the type map's names of a shared
    collection; an unknown name there is not a subclass, and is neither
    imported nor called."""
    path = RootPath()
    path.install(s)
    s.db[PERSON].update_many({}, {'$set': {'_py_persistent_type': PERSON}})
    s.db[TYPE_MAP].update_one({'_id': '%s.%s' % (s.dbname, PERSON)},
                              {'$push': {'types': name}})
    before = s.snapshot()

    def run():
        dm = s.fresh()
        if query == 'find_objects':
            return sorted(p.name for p in dm.find_objects(Person))
        if query == 'count':
            return dm.count(Person)
        return dm.find_one_object(Person, {'name': 'holder'}).name
    result, error = attempt(s, run)
    assert_nothing_ran(s, [name])
    assert error is None, describe(error)
    assert result == {'find_objects': ['app', 'holder'], 'count': 2,
                      'find_one_object': 'holder'}[query]
    transaction.abort()
    assert s.snapshot() == before


REFERENCE_VECTORS = [collection_reference(name) for name in (
    'tests.canary.PersistentCanary', 'subprocess.Popen', 'tests.model.Phone',
    'os.environ', 'this.x', 'antigravity.x')] + [
    foreign_reference(), foreign_reference('admin')]


@pytest.mark.parametrize('how', ['root', 'load'])
@pytest.mark.parametrize('vector', REFERENCE_VECTORS, ids=repr)
def test_hostile_reference(s, vector, how):
    """A root entry (or a ``DBRef`` given to ``load``) that is the hostile
    part itself."""
    RootPath().install(s)
    vector.prepare(s)
    ref = vector.stored(s)
    entry_id = s.db[ROOT_COLLECTION].insert_one(
        {'name': 'evil', 'ref': ref}).inserted_id
    foreign_db = ref.database if vector.foreign else None
    before = s.snapshot()

    def run():
        dm = s.fresh()
        obj = dm.root['evil'] if how == 'root' else dm.load(ref)
        return _activated(obj)
    result, error = attempt(s, run)
    after = s.snapshot()
    transaction.abort()
    assert_nothing_ran(s, vector.names)
    if foreign_db is not None:
        assert foreign_db not in s.databases_asked_for(), (
            'the data manager opened database %r' % foreign_db)
    assert_error(error, vector.error, vector.name,
                 vector.where(s) + [(s.dbname, ROOT_COLLECTION, entry_id)],
                 foreign_db, vector.exact_name)
    assert after == before
    assert s.snapshot() == before


NESTED = [
    VALUE_VECTORS[[v.id for v in VALUE_VECTORS].index(id)] for id in (
        '_py_factory=tests.canary.canary_function',
        '_py_type=this.x',
        'inner _py_persistent_type=tests.canary.SubObjectCanary',
        'enum:os.environ(PATH)',
        'DBRef into database <other>',
    )]

#: Ways to nest a value inside allowed shapes; ``True`` if the loaded
#: result still holds the nested value (for the positive control).
WRAPPERS = {
    'list': (lambda v: [1, [v]], True),
    'dict-value': (lambda v: {'a': {'b': v}}, True),
    'dict-key': (lambda v: {'_py_type': 'builtins.dict',
                            'items': [[v, 1]]}, True),
    'set-member': (lambda v: {'_py_type': 'builtins.set', 'items': [v]},
                   True),
    'new-args': (lambda v: {'_py_type': 'tests.model.Phone',
                            '_py_new_args': [v]}, False),
    'state': (lambda v: {'_py_type': 'tests.model.Phone',
                         '_py_state': {'area': v}}, True),
    'attribute': (lambda v: {'_py_type': 'tests.model.Phone', 'area': v},
                  True),
    'listitems': (lambda v: {'_py_factory': 'collections.deque',
                             '_py_factory_args': [],
                             '_py_listitems': [v]}, True),
    'dictitems': (lambda v: {'_py_factory': 'collections.OrderedDict',
                             '_py_factory_args': [],
                             '_py_dictitems': [['k', v]]}, True),
    'sub-object': (lambda v: {'_py_persistent_type': 'tests.model.Car',
                              'year': v}, True),
}


@pytest.mark.parametrize('wrapper', sorted(WRAPPERS))
@pytest.mark.parametrize('vector', NESTED, ids=repr)
def test_hostile_value_nested(s, vector, wrapper):
    """The hostile part is nested inside allowed shapes."""
    path = LoadPath()
    wrap = WRAPPERS[wrapper][0]

    def plant():
        vector.prepare(s)
        path.plant(s, {'$set': {path.field: wrap(vector.stored(s))}})
    check_refused(
        s, path, plant,
        lambda: [path.location(s)] + vector.where(s), vector.name,
        vector.names, vector.error, vector.foreign,
        exact_name=vector.exact_name)


# -- what is allowed still loads (positive controls) --------------------------
def _friend_refs(s):
    friend = s.dm.root['friend'] = Person('friend')
    transaction.commit()
    return [DBRef(PERSON, friend._p_oid.id, s.dbname)]


#: Allowed shapes: (python value stored by the application, or None to
#: plant ``raw(s)`` instead; check of the loaded value).
ALLOWED = {
    'value class': (lambda s: Phone('+1', '978', '1'), None,
                    lambda v: v == Phone('+1', '978', '1')),
    'sub-object': (lambda s: Car(2005, 'Ford', 'Explorer'), None,
                   lambda v: type(v) is Car and v.year == 2005),
    'enum': (lambda s: Color.GREEN, None, lambda v: v is Color.GREEN),
    'factory': (lambda s: collections.OrderedDict([('b', 2), ('a', 1)]),
                None, lambda v: v == collections.OrderedDict(
                    [('b', 2), ('a', 1)])),
    'reference': (lambda s: PLACEHOLDER, _friend_refs,
                  lambda v: [p.name for p in v] == ['friend']),
    'registered alias': (lambda s: PLACEHOLDER,
                         lambda s: {'_py_type': ALIAS, 'x': 1},
                         lambda v: v == Registered(1)),
    'non-string keys': (lambda s: {(1, 2): Color.GREEN}, None,
                        lambda v: dict(v) == {(1, 2): Color.GREEN}),
    'class value': (lambda s: Phone, None, lambda v: v is Phone),
    'legacy class value': (lambda s: PLACEHOLDER, lambda s: {
        '_py_type': 'type', 'path': 'tests.model.Phone'},
        lambda v: v is Phone),
    'legacy dict_data': (lambda s: PLACEHOLDER, lambda s: {
        'dict_data': [[[1, 2], {'_py_type': 'enum.Enum',
                                'class': 'tests.test_hostile.Color',
                                'name': 'GREEN'}]]},
        lambda v: dict(v) == {(1, 2): Color.GREEN}),
    'Python 2 factory name': (lambda s: PLACEHOLDER, lambda s: {
        '_py_factory': '__builtin__.set', '_py_factory_args': [[1, 2]]},
        lambda v: v == {1, 2}),
    'legacy date': (lambda s: PLACEHOLDER, lambda s: {
        '_py_factory': 'datetime.date',
        '_py_factory_args': [b'\x07\xbc\x01\x19']},
        lambda v: v == datetime.date(1980, 1, 25)),
    # Issue 17: what the fixes of the reader must keep loading.
    'attributes named like methods': (lambda s: _with_method_names(),
                                      None, lambda v: type(v) is Plain and (
                                          v.append, v.keys, v.replace) == (
                                          'text', 3, [1])),
    'deque with maxlen': (lambda s: collections.deque([1, 2, 3], 2), None,
                          lambda v: v == collections.deque([2, 3], 2)
                          and v.maxlen == 2),
    'Counter': (lambda s: collections.Counter('abca'), None,
                lambda v: v == collections.Counter('abca')),
    'Fraction': (lambda s: fractions.Fraction(1, 3), None,
                 lambda v: v == fractions.Fraction(1, 3)),
    'range': (lambda s: range(2, 10, 3), None,
              lambda v: v == range(2, 10, 3)),
    'bytearray': (lambda s: bytearray(b'abc'), None,
                  lambda v: v == bytearray(b'abc')),
    'bytes': (lambda s: b'\x00abc', None, lambda v: v == b'\x00abc'),
    'UUID': (lambda s: uuid.UUID(int=5), None,
             lambda v: v == uuid.UUID(int=5)),
}


def _with_method_names():
    plain = Plain()
    plain.append, plain.keys, plain.replace = 'text', 3, [1]
    return plain


@pytest.mark.parametrize('path', VALUE_PATHS, ids=repr)
@pytest.mark.parametrize('shape', sorted(ALLOWED))
def test_allowed_value_loads(s, shape, path):
    make, raw, check = ALLOWED[shape]
    path.install(s, make(s))
    path.prepare(s)
    # The other writer's edit (for conflict resolution it is what makes
    # the conflict): the allowed shape itself, or an unrelated field.
    path.plant(s, {'$set': {path.field: raw(s)} if raw is not None
                   else {'edited': True}})
    result, error = attempt(s, lambda: path.run(s))
    assert_nothing_ran(s, [ALIAS])
    assert error is None, describe(error)
    assert check(result), result


@pytest.mark.parametrize('wrapper', sorted(WRAPPERS))
def test_allowed_value_nested_loads(s, wrapper):
    path = LoadPath()
    wrap, keeps = WRAPPERS[wrapper]
    path.install(s)
    path.plant(s, {'$set': {path.field: wrap(
        {'_py_type': 'enum.Enum', 'class': 'tests.test_hostile.Color',
         'name': 'GREEN'})}})
    result, error = attempt(s, lambda: path.run(s))
    assert_nothing_ran(s)
    assert error is None, describe(error)
    if keeps:
        assert _holds(result, Color.GREEN), result


def _holds(value, target, depth=0, limit=5):
    if value is target:
        return True
    if depth > limit:
        return False
    if isinstance(value, collections.abc.Mapping):
        items = list(value.keys()) + list(value.values())
    elif isinstance(value, (list, tuple, set, frozenset,
                            collections.deque)) or hasattr(value, 'data'):
        items = list(getattr(value, 'data', value))
    elif hasattr(value, '__dict__'):
        items = list(vars(value).values())
    else:
        return False
    return any(_holds(item, target, depth + 1, limit) for item in items)


@pytest.mark.parametrize('path', DOCUMENT_PATHS, ids=repr)
def test_allowed_class_of_document_loads(s, path):
    path.install(s)
    s.dm.root['special'] = Special('special')   # the collection is shared
    transaction.commit()
    path.plant(s, {'$set': {
        '_py_persistent_type': 'tests.test_hostile.Special'}})
    result, error = attempt(s, lambda: path.obtain(s))
    assert_nothing_ran(s)
    assert error is None, describe(error)
    assert type(result) is Special


@pytest.mark.parametrize('how', ['root', 'load', 'value'])
def test_allowed_database_loads(s, how):
    """A database the data manager was given is read."""
    vector = foreign_reference()
    RootPath().install(s)
    vector.prepare(s)
    ref = vector.stored(s)
    s.db[ROOT_COLLECTION].insert_one({'name': 'friend', 'ref': ref})
    s.db[PERSON].update_one({'_id': s.holder_id}, {'$set': {FIELD: ref}})
    s.options['allowed_databases'] = (s.other_dbname,)

    def run():
        dm = s.fresh()
        if how == 'root':
            return dm.root['friend']
        if how == 'load':
            return dm.load(ref)
        return getattr(dm.root['holder'], FIELD)
    result, error = attempt(s, run)
    assert_nothing_ran(s)
    assert error is None, describe(error)
    assert result.name == 'foreign'


def test_broken_objects_keep_state_and_run_nothing(s):
    """With ``broken_objects=True`` unknown classes load as placeholders;
    still nothing named runs."""
    from mongopersist import broken
    path = RootPath()
    path.install(s)
    path.plant(s, {'$set': {
        '_py_persistent_type': 'tests.canary.PersistentCanary',
        FIELD: {'_py_type': 'tests.canary.NewCanary', 'x': 1}}})
    before = s.snapshot()
    s.options['broken_objects'] = True
    result, error = attempt(s, lambda: path.obtain(s))
    assert_nothing_ran(s, ['tests.canary.PersistentCanary'])
    assert error is None, describe(error)
    assert not isinstance(result, canary.PersistentCanary)
    assert 'tests.canary.PersistentCanary' in repr(type(result)) + repr(
        getattr(type(result), '__Broken_name__', ''))
    state = broken.stored_state(result)
    assert state['name'] == 'holder'
    assert state[FIELD] == {'_py_type': 'tests.canary.NewCanary', 'x': 1}
    transaction.commit()
    assert s.snapshot() == before
    assert canary.FIRED == []


# -- issue 17: the class's business in stored state ---------------------------
#: Top-level fields that are the class's business, never stored state
#: (``_p_*``: persistence and the library's per-class settings, ``_v_*``:
#: volatile attributes) or the library's own (``_py_*``): a document that
#: has one is refused.  (The values are allowed ones: only the name is
#: wrong.)
TOP_LEVEL_FIELDS = {
    '_p_resolveConflict (launch)': ('_p_resolveConflict', LAUNCH),
    '_p_resolveConflict (Launcher)': ('_p_resolveConflict', LAUNCHER),
    '_p_mongo_doc_object (reference)': (
        '_p_mongo_doc_object', lambda s: DBRef(PERSON, s.state['app'],
                                               s.dbname)),
    '_p_mongo_doc_object (text)': ('_p_mongo_doc_object', PERSON),
    '_p_mongo_collection': ('_p_mongo_collection', 'other'),
    '_p_mongo_database': ('_p_mongo_database', 'admin'),
    '_p_mongo_sub_object': ('_p_mongo_sub_object', True),
    '_p_oid': ('_p_oid', 1),
    '_p_jar': ('_p_jar', 'jar'),
    '_p_changed': ('_p_changed', True),
    '_p_serial': ('_p_serial', b'\x00' * 8),
    '_p_note': ('_p_note', 'note'),
    '_v_cache': ('_v_cache', {'k': 1}),
    '_py_note': ('_py_note', 'note'),
    '_py_type': ('_py_type', 'tests.model.Phone'),
    '_py_factory': ('_py_factory', 'tests.canary.canary_function'),
    '_py_state': ('_py_state', {'name': 'state'}),
    '_py_listitems + append': ('_py_listitems', ['rm -rf /'], {
        'append': LAUNCHER}),
    '_py_dictitems': ('_py_dictitems', [['k', 1]]),
    '_py_new_args': ('_py_new_args', [1]),
}


def _remember_app(s):
    s.state['app'] = s.dm.root['app']._p_oid.id


@pytest.mark.parametrize('path', VALUE_PATHS, ids=repr)
@pytest.mark.parametrize('field', sorted(TOP_LEVEL_FIELDS))
def test_hostile_top_level_field(s, field, path):
    """A stored top-level ``_p_*``, ``_v_*`` or ``_py_*`` field: the
    document is refused (``StoredDataError`` naming it)."""
    name, value, *more = TOP_LEVEL_FIELDS[field]

    def plant():
        _remember_app(s)
        fields = dict(more[0] if more else {})
        fields[name] = value(s) if callable(value) else value
        path.plant(s, {'$set': fields})
    check_refused(s, path, plant, lambda: [path.location(s)], None,
                  (), interfaces.StoredDataError)


class Plainly(persistent.Persistent):
    """A persistent class without a conflict resolver of its own."""
    _p_mongo_collection = 'hostile_plainly'


@pytest.mark.parametrize('stored', ['launch', 'Launcher'])
@pytest.mark.parametrize('cls', [Merging, Plainly], ids=lambda c: c.__name__)
def test_stored_conflict_resolver_is_never_called(s, cls, stored):
    """A document that stores ``_p_resolveConflict``: conflict resolution
    uses the class's own resolver (``Merging``) or none (``Plainly``:
    the conflict is reported), never the stored one.  Loading may instead
    refuse the document."""
    resolving = dict(
        conflict_handler=conflict.ResolvingSerialConflictHandler)
    obj = s.dm.root['obj'] = cls()
    obj.count = 1
    transaction.commit()
    coll = s.db[cls._p_mongo_collection]
    coll.update_one({'_id': obj._p_oid.id}, {'$set': {
        '_p_resolveConflict': LAUNCH if stored == 'launch' else LAUNCHER}})
    location = (s.dbname, cls._p_mongo_collection, obj._p_oid.id)

    def load():
        ours = s.fresh(**resolving).root['obj']
        ours._p_activate()
        return ours
    ours, error = attempt(s, load)
    if error is None:
        ours.count += 1
        # Another writer's change, after ours was loaded.
        coll.update_one({'_id': obj._p_oid.id},
                        {'$inc': {'_py_serial': 1, 'count': 10}})
        _, error = attempt(s, transaction.commit)
    transaction.abort()
    assert_nothing_ran(s)
    if error is None:
        assert cls is Merging, 'the conflict went unnoticed'
        assert coll.find_one({'_id': obj._p_oid.id})['count'] == 12, (
            'the class\'s own resolver did not merge')
    elif not isinstance(error, interfaces.ConflictError):
        assert_error(error, interfaces.StoredDataError, None, [location])


@pytest.mark.parametrize('path', [path for path in VALUE_PATHS
                                  if not isinstance(path, ConflictPath)],
                         ids=repr)
@pytest.mark.parametrize('kind', ['reference', 'text'])
def test_stored_doc_object_field_does_not_swallow_changes(s, kind, path):
    """A stored top-level ``_p_mongo_doc_object`` (today it makes the
    object's changes register with another document, or fail with a bare
    ``AttributeError``): loading refuses the document, or the next commit
    stores the change in the object's own document."""
    path.install(s)
    _remember_app(s)
    app_doc = s.db[PERSON].find_one({'_id': s.state['app']})
    path.plant(s, {'$set': {'_p_mongo_doc_object': DBRef(
        PERSON, s.state['app'], s.dbname) if kind == 'reference'
        else PERSON}})
    holder, error = attempt(s, lambda: path.obtain(s))
    if error is None:
        owner = vars(holder).get('_p_mongo_doc_object')
        if isinstance(owner, persistent.Persistent):
            # The document it names is in use too (today the change then
            # goes to it, silently: nothing is stored).
            owner._p_activate()

        def change():
            holder.edited = 'yes'
            transaction.commit()
        _, error = attempt(s, change)
        assert error is None, describe(error)
        stored = s.db[path.collection].find_one({'_id': s.holder_id})
        assert stored.get('edited') == 'yes', 'the change was not stored'
    else:
        transaction.abort()
        assert_error(error, interfaces.StoredDataError, None,
                     [path.location(s)])
    assert_nothing_ran(s)
    assert s.db[PERSON].find_one({'_id': s.state['app']}) == app_doc


# -- issue 17: reading costs work in proportion to the document ---------------
#: The refused name at the bottom of the nestings.
REFUSED_LEAF = {'_py_type': 'tests.canary.NewCanary'}

#: Nestings: how deep, one level around a value, and the field path of
#: one level.  Each stays within MongoDB's 100 levels in every path.
NESTINGS = {
    'dicts': (40, lambda v: {'a': v}, 'a'),
    'arrays': (40, lambda v: [v], '0'),
    'value objects': (25, lambda v: {'_py_type': 'tests.model.Phone',
                                      'area': v}, 'area'),
    'sub-objects': (25, lambda v: {'_py_persistent_type': 'tests.model.Car',
                                   'year': v}, 'year'),
    'pickle states': (20, lambda v: {'_py_type': 'tests.model.Phone',
                                     '_py_state': {'area': v}},
                      '_py_state.area'),
    'list items': (25, lambda v: {'_py_factory': 'collections.deque',
                                  '_py_factory_args': [],
                                  '_py_listitems': [v]}, '_py_listitems.0'),
    'dict items': (25, lambda v: {'_py_type': 'builtins.dict',
                                  'items': [['k', v]]}, 'items.0.1'),
}

#: Steps (``tests/bounded.py``) loading a deeply nested value may take
#: through any path: ample for linear work (a few thousand steps), and
#: reached at once by work exponential in the depth (today: 2 to 6 times
#: the work of the level below, for each level).
NESTING_BUDGET = 150000


def nested(nesting, leaf):
    depth, wrap, step = NESTINGS[nesting]
    value = leaf
    for _ in range(depth):
        value = wrap(value)
    return value, '.'.join([step] * depth)


@pytest.mark.parametrize('path', VALUE_PATHS, ids=repr)
@pytest.mark.parametrize('nesting', sorted(NESTINGS))
def test_deep_nesting_is_refused_in_linear_work(s, nesting, path):
    """A refused name at the bottom of a deep nesting: ``UnknownTypeError``
    naming the document and the full field path, found in work linear in
    the depth (the budget stops today's exponential search at once)."""
    value, below = nested(nesting, REFUSED_LEAF)
    name = REFUSED_LEAF['_py_type']

    def plant():
        path.plant(s, {'$set': {path.field: value}})
    _, error = check_refused(
        s, path, plant, lambda: [path.location(s)], name, [name],
        interfaces.UnknownTypeError, budget=NESTING_BUDGET)
    assert error.path == '%s.%s' % (path.field, below), describe(error)


@pytest.mark.parametrize('path', VALUE_PATHS, ids=repr)
@pytest.mark.parametrize('nesting', sorted(NESTINGS))
def test_deep_nesting_of_allowed_values_loads(s, nesting, path):
    """The positive control: the same nestings around an allowed value
    load, within the same budget."""
    value, _ = nested(nesting, {'_py_type': 'enum.Enum',
                                'class': 'tests.test_hostile.Color',
                                'name': 'GREEN'})
    path.install(s)
    path.prepare(s)
    path.plant(s, {'$set': {path.field: value}})
    (result, error), _ = bounded.counted(
        lambda: attempt(s, lambda: path.run(s)), NESTING_BUDGET)
    assert_nothing_ran(s)
    assert error is None, describe(error)
    assert _holds(result, Color.GREEN, limit=200), result


# -- issue 17: what a factory builds is bounded by what was stored -------------
def check_refused_bounded(s, path, plant, locations, names=(),
                          error_type=interfaces.StoredDataError):
    """``check_refused``, with the load in a forked child under CPU and
    memory limits (``tests/bounded.py``): it must also stay within the cost
    bound of the holder document's size, in steps and in memory allocated.

    The child plants, loads and compares the stored data; with mongomock
    its changes stay in its own copy of the database.
    """
    path.install(s)
    facts = {}

    def setup():
        s.in_child()
        path.prepare(s)
        plant()
        facts['before'] = s.snapshot()
        database, collection, id = path.location(s)
        facts['size'] = bounded.bson_size(
            s.client[database][collection].find_one({'_id': id}))
        s.guard.recording = True

    def load():
        result = path.run(s)
        return type(result).__name__

    def after(result, error):
        s.guard.recording = False
        changed = s.snapshot() != facts['before']
        transaction.abort()
        return {'result': result, 'size': facts['size'], 'changed': changed,
                'changed by abort': s.snapshot() != facts['before'],
                'databases': sorted(s.databases_asked_for())}

    outcome = bounded.isolated(
        load, setup, after, fired=lambda: canary.FIRED,
        imports=lambda: s.guard.attempts)
    canary.FIRED.extend(outcome.fired)
    s.guard.attempts.extend(outcome.imports)
    assert outcome.stopped is None, 'loading was stopped: %s (%r)' % (
        outcome.stopped, outcome)
    assert_nothing_ran(s, names)
    assert_error(outcome.error, error_type, None, locations(s))
    facts = outcome.value
    assert not facts['changed'], 'loading changed stored data'
    assert not facts['changed by abort'], 'abort changed stored data'
    bounded.assert_within_bounds(outcome, facts['size'])
    return outcome


def _range(n):
    return {'_py_factory': 'builtins.range', '_py_factory_args': [n]}


#: Stored values a few bytes long whose factories would compute for hours
#: or allocate gigabytes (or raise bare ``MemoryError``/``LookupError``).
AMPLIFIERS = {
    "Fraction('1e999999999')": ({
        '_py_factory': 'fractions.Fraction',
        '_py_factory_args': ['1e999999999']}, ()),
    'deque(range(2**62), 1)': ({
        '_py_factory': 'collections.deque',
        '_py_factory_args': [_range(2 ** 62), 1]}, ()),
    'bytes(64 MiB)': ({
        '_py_factory': 'builtins.bytes',
        '_py_factory_args': [64 * 2 ** 20]}, ()),
    'bytearray of data 64 MiB': ({
        '_py_type': 'builtins.bytearray', 'data': 64 * 2 ** 20}, ()),
    'bytes(2**50)': ({
        '_py_factory': 'builtins.bytes', '_py_factory_args': [2 ** 50]}, ()),
    'tuple(range(2**62))': ({
        '_py_factory': 'builtins.tuple',
        '_py_factory_args': [_range(2 ** 62)]}, ()),
    "str(b'x', 'no-such-encoding')": ({
        '_py_factory': 'builtins.str',
        '_py_factory_args': [b'x', 'no-such-encoding']},
        ('encodings.no_such_encoding',)),
}

#: More of the same kind (through fewer paths: what matters is the
#: factory, which every path reads the same way).
MORE_AMPLIFIERS = {
    'bytearray(64 MiB)': ({
        '_py_factory': 'builtins.bytearray',
        '_py_factory_args': [64 * 2 ** 20]}, ()),
    'frozenset(range(2**62))': ({
        '_py_factory': 'builtins.frozenset',
        '_py_factory_args': [_range(2 ** 62)]}, ()),
    'Counter(range(2**62))': ({
        '_py_factory': 'collections.Counter',
        '_py_factory_args': [_range(2 ** 62)]}, ()),
    "str(b'x', 'rot13')": ({
        '_py_factory': 'builtins.str',
        '_py_factory_args': [b'x', 'rot13']}, ('encodings.rot_13',)),
}


@pytest.mark.parametrize('amplifier, path', [
    (amplifier, path) for amplifier in sorted(AMPLIFIERS)
    for path in VALUE_PATHS] + [
    (amplifier, path) for amplifier in sorted(MORE_AMPLIFIERS)
    for path in VALUE_PATHS
    if path.name in ('root', 'conflict-resolution', 'batched')], ids=str)
def test_factories_do_not_amplify(s, amplifier, path):
    """A factory builds nothing far larger than what was stored, computes
    nothing for long, imports nothing: ``StoredDataError`` naming the
    document.  (Run in a child: today's reader computes for hours or
    allocates gigabytes, and the limits stop it.)"""
    value, names = dict(AMPLIFIERS, **MORE_AMPLIFIERS)[amplifier]

    def plant():
        path.plant(s, {'$set': {path.field: value}})
    check_refused_bounded(s, path, plant, lambda s: [path.location(s)],
                          names)
