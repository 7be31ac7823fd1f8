"""Default-deny loading: the type registry, the reader and broken objects.

Every refused name asserts that nothing it names ran: canaries record any
call of the hostile classes and factories defined here, and modules that are
not imported stay unimported.  (The full matrix of hostile documents across
every load path is in ``test_hostile.py``.)
"""
import enum
import fractions
import sys
import types
import uuid

import bson
import persistent
import pytest
import transaction

from mongopersist import broken, interfaces, metadata, serialize
from mongopersist.typemap import TYPE_MAP_COLLECTION
from tests.model import Car, Phone, Simple

# Anything hostile that runs appends here.
CANARY = []


def canary(*args):
    CANARY.append(('called', args))
    return 'ran'


@pytest.fixture(autouse=True)
def _no_canary():
    CANARY.clear()
    yield
    assert CANARY == []


def hostile_module(name=None):
    """An imported module that no stored class comes from.

    Its class runs code when created or filled, and its module
    ``__getattr__`` runs when an unknown attribute is looked up.
    """
    name = name or 'mp_hostile_%s' % uuid.uuid4().hex[:8]
    module = types.ModuleType(name)

    class Evil:
        def __new__(cls, *args):
            CANARY.append(('new', cls))
            return super().__new__(cls)

        def __setstate__(self, state):
            CANARY.append(('setstate', state))

    Evil.__module__ = name
    module.Evil = Evil
    module.evil_function = canary
    module.DATA = {'not': 'a class'}

    def __getattr__(attr):
        CANARY.append(('module getattr', attr))
        raise AttributeError(attr)

    module.__getattr__ = __getattr__
    sys.modules[name] = module
    return module


@pytest.fixture
def evil():
    module = hostile_module()
    yield module
    del sys.modules[module.__name__]


class Color(enum.Enum):
    RED = 1


# -- the registry -----------------------------------------------------------
def refused(registry, name, kind='value'):
    with pytest.raises(interfaces.UnknownTypeError) as info:
        registry.resolve(name, kind)
    assert info.value.name == name
    assert name in str(info.value)
    return info.value


def test_known_classes_resolve_by_kind():
    registry = metadata.TypeRegistry(parent=metadata.REGISTRY)
    for cls in (Simple, Car, Phone, Color):
        metadata.get_dotted_name(cls)       # stored by this process
    assert registry.resolve('tests.model.Simple', 'persistent') is Simple
    assert registry.resolve('tests.model.Car', 'sub_object') is Car
    assert registry.resolve('tests.model.Phone', 'value') is Phone
    assert registry.resolve('tests.test_loading.Color', 'enum') is Color
    assert metadata.resolve('tests.model.Simple') is Simple


@pytest.mark.parametrize('name, kind', [
    ('tests.model.Simple', 'sub_object'),     # top-level, not a sub-object
    ('tests.model.Simple', 'value'),
    ('tests.model.Simple', 'enum'),
    ('tests.model.Car', 'persistent'),        # a sub-object class
    ('tests.model.Phone', 'persistent'),
    ('tests.model.Phone', 'enum'),
    ('tests.model.Phone', 'factory'),         # classes are not factories
    ('tests.test_loading.Color', 'value'),
])
def test_wrong_kind_is_refused(name, kind):
    for cls in (Simple, Car, Phone, Color):
        metadata.get_dotted_name(cls)
    refused(metadata.REGISTRY, name, kind)


def test_unimported_module_is_never_imported():
    assert 'this' not in sys.modules
    for kind in metadata.KINDS:
        refused(metadata.REGISTRY, 'this.x', kind)
    refused(metadata.TypeRegistry(trusted_modules=['thisx']), 'this.x')
    assert 'this' not in sys.modules


def test_only_classes_are_reached():
    import os
    import subprocess  # noqa: F401 (imported: the walk still refuses)
    registry = metadata.TypeRegistry(parent=metadata.REGISTRY)
    for name in ['os.environ', 'os.system', 'os.path', 'os.path.join',
                 'subprocess.Popen', 'subprocess.getoutput', 'builtins.exec',
                 'builtins.eval', 'tests.test_loading.CANARY',
                 'tests.test_loading.canary', 'os.__dict__',
                 'tests.model.Simple.__init__', 'tests.model.__builtins__']:
        for kind in metadata.KINDS:
            refused(registry, name, kind)
    assert os.environ  # untouched


def test_imported_module_of_no_stored_class_is_refused(evil):
    name = evil.__name__
    for kind in metadata.KINDS:
        refused(metadata.REGISTRY, name + '.Evil', kind)
        refused(metadata.REGISTRY, name + '.evil_function', kind)
        refused(metadata.REGISTRY, name + '.Missing', kind)
    # Registered factories and classes in other registries do not leak.
    other = metadata.TypeRegistry()
    other.register_type(evil.Evil)
    refused(metadata.REGISTRY, name + '.Evil')


def test_module_getattr_never_runs(evil):
    registry = metadata.TypeRegistry()
    registry.register_type(evil.Evil)      # the module is allowed now
    refused(registry, evil.__name__ + '.Missing')
    refused(registry, evil.__name__ + '.DATA')
    # CANARY (checked by the fixture) saw no module __getattr__ call.


def test_classes_of_the_module_of_a_known_class_are_allowed(evil):
    class Sibling:
        pass
    Sibling.__module__ = evil.__name__
    Sibling.__qualname__ = 'Sibling'
    evil.Sibling = Sibling
    registry = metadata.TypeRegistry()
    refused(registry, evil.__name__ + '.Sibling')
    registry.register_type(Sibling)
    # Evil lives in the same (imported) module: allowed, not instantiated.
    assert registry.resolve(evil.__name__ + '.Evil', 'value') is evil.Evil
    # A child registry allows what its parent allows.
    child = metadata.TypeRegistry(parent=registry)
    assert child.resolve(evil.__name__ + '.Evil', 'value') is evil.Evil


def test_standard_library_modules_are_not_opened_by_one_known_class():
    registry = metadata.TypeRegistry()
    registry.register_type(fractions.Fraction)
    assert registry.resolve('fractions.Fraction', 'value') is (
        fractions.Fraction)
    refused(registry, 'fractions.Decimal')


def test_a_class_re_exported_from_an_allowed_module_is_refused(evil):
    import subprocess
    registry = metadata.TypeRegistry()
    registry.register_type(evil.Evil)
    evil.Popen = subprocess.Popen
    refused(registry, evil.__name__ + '.Popen')


def test_trusted_prefix_imports_only_under_it(tmp_path, monkeypatch):
    package = 'mp_trusted_%s' % uuid.uuid4().hex[:8]
    (tmp_path / package).mkdir()
    (tmp_path / package / '__init__.py').write_text('')
    (tmp_path / package / 'models.py').write_text(
        'class Thing:\n    pass\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    name = package + '.models.Thing'
    refused(metadata.REGISTRY, name)
    refused(metadata.TypeRegistry(trusted_modules=[package + 'x']), name)
    assert package not in sys.modules
    registry = metadata.TypeRegistry(trusted_modules=[package],
                                     parent=metadata.REGISTRY)
    try:
        thing = registry.resolve(name, 'value')
        assert thing.__name__ == 'Thing'
        assert package + '.models' in sys.modules
        assert registry.trusted_modules == (package,)
        # Trust is per registry: the process-wide one still refuses.
        refused(metadata.REGISTRY, name)
    finally:
        for module in [package + '.models', package]:
            sys.modules.pop(module, None)


def test_trust_prefix_must_be_a_module_name():
    with pytest.raises(ValueError):
        metadata.TypeRegistry(trusted_modules=[''])
    with pytest.raises(ValueError):
        metadata.TypeRegistry().trust_modules('a..b')


def test_alias_loads_old_name_and_writes_the_new_one():
    class Renamed(persistent.Persistent):
        pass
    registry = metadata.TypeRegistry()
    registry.register_type(Renamed, 'old.module.OldName')
    assert registry.resolve('old.module.OldName', 'persistent') is Renamed
    assert registry.resolve(metadata.get_dotted_name(Renamed)) is Renamed
    assert metadata.get_dotted_name(Renamed).endswith('.Renamed')
    assert 'old' not in sys.modules


def test_register_type_takes_classes_only():
    with pytest.raises(TypeError):
        metadata.TypeRegistry().register_type(canary)
    with pytest.raises(TypeError):
        metadata.TypeRegistry().register_factory('os.system')


def test_factories():
    registry = metadata.TypeRegistry(parent=metadata.REGISTRY)
    refused(registry, 'os.system', 'factory')
    refused(registry, 'tests.test_loading.canary', 'factory')
    import collections
    assert registry.resolve('collections.OrderedDict', 'factory') is (
        collections.OrderedDict)
    assert registry.resolve('fractions.Fraction', 'factory') is (
        fractions.Fraction)
    registry.register_factory(canary)
    assert registry.resolve('tests.test_loading.canary', 'factory') is canary
    registry.register_factory(canary, 'old.place.make')
    assert registry.resolve('old.place.make', 'factory') is canary
    refused(metadata.REGISTRY, 'tests.test_loading.canary', 'factory')


def test_factories_this_process_writes_are_allowed():
    def made_here(x):
        return x
    name = metadata.factory_name(made_here)
    assert metadata.resolve(name, 'factory') is made_here

    def function_named(x):
        return x
    name = metadata.get_dotted_name(function_named)
    assert metadata.resolve(name, 'factory') is function_named


def test_non_string_names_are_malformed():
    with pytest.raises(interfaces.StoredDataError):
        metadata.REGISTRY.resolve(['os', 'system'], 'value')
    with pytest.raises(ValueError):
        metadata.REGISTRY.resolve('tests.model.Simple', 'anything')


# -- the reader -------------------------------------------------------------
def store_value(dm, db, value):
    """Store a Simple whose ``value`` is set to the raw ``value``."""
    obj = Simple(value='placeholder')
    dm.root['obj'] = obj
    transaction.commit()
    ref = obj._p_oid
    db[ref.collection].update_one({'_id': ref.id}, {'$set': {'value': value}})
    return ref


def load_value(make_dm, **kwargs):
    return make_dm(**kwargs).root['obj'].value


@pytest.mark.parametrize('value, name', [
    ({'_py_type': 'this.x'}, 'this.x'),
    ({'_py_type': 'subprocess.Popen', 'args': 'echo'}, 'subprocess.Popen'),
    ({'_py_factory': 'os.system', '_py_factory_args': ['echo hi']},
     'os.system'),
    ({'_py_factory': 'builtins.exec', '_py_factory_args': ['1']},
     'builtins.exec'),
    ({'_py_factory': 'tests.test_loading.canary', '_py_factory_args': []},
     'tests.test_loading.canary'),
    ({'_py_type': 'enum.Enum', 'class': 'os.environ', 'name': 'HOME'},
     'os.environ'),
    ({'_py_type': 'enum.Enum', 'class': 'tests.model.Phone', 'name': 'x'},
     'tests.model.Phone'),
    ({'_py_persistent_type': 'tests.model.Simple'}, 'tests.model.Simple'),
    ({'_py_persistent_type': 'tests.model.Phone'}, 'tests.model.Phone'),
    ({'_py_type': 'tests.model.Simple'}, 'tests.model.Simple'),
], ids=repr)
def test_refused_names_in_documents(dm, db, make_dm, value, name):
    metadata.get_dotted_name(Phone)
    ref = store_value(dm, db, {'nested': [value]})
    with pytest.raises(interfaces.UnknownTypeError) as info:
        load_value(make_dm)
    error = info.value
    assert error.name == name
    assert (error.database, error.collection, error.id) == (
        ref.database, ref.collection, ref.id)
    assert error.path == 'value.nested.0'
    assert 'this' not in sys.modules


def test_hostile_class_in_imported_module_is_not_created(dm, db, make_dm,
                                                         evil):
    store_value(dm, db, {'_py_type': evil.__name__ + '.Evil', 'a': 1})
    with pytest.raises(interfaces.UnknownTypeError):
        load_value(make_dm)


@pytest.mark.parametrize('value, path', [
    ({'_py_type': 'builtins.dict'}, 'value'),
    ({'_py_type': 'builtins.dict', 'items': 3}, 'value.items'),
    ({'_py_type': 'builtins.dict', 'items': [[1]]}, 'value.items.0'),
    ({'_py_type': 'builtins.dict', 'items': [[[{}], 1]]}, 'value'),
    ({'_py_type': 'builtins.set'}, 'value'),
    ({'_py_type': 'builtins.set', 'items': 5}, 'value'),
    ({'_py_factory': 'collections.OrderedDict'}, 'value'),
    ({'_py_factory': 'collections.OrderedDict', '_py_factory_args': 'x'},
     'value._py_factory_args'),
    ({'_py_factory': 'collections.OrderedDict', '_py_factory_args': [],
      '_py_dictitems': [[1, 2, 3]]}, 'value._py_dictitems.0'),
    ({'_py_type': 'enum.Enum'}, 'value'),
    ({'_py_type': 'enum.Enum', 'class': 'tests.test_loading.Color'}, 'value'),
    ({'_py_type': 'enum.Enum', 'class': 'tests.test_loading.Color',
      'name': 'BLUE'}, 'value'),
    ({'_py_type': 'enum.Enum', 'class': 'tests.test_loading.Color',
      'value': 7}, 'value'),
    ({'_py_type': 'datetime.date', 'iso': 'not a date'}, 'value'),
    ({'_py_type': 'datetime.timedelta'}, 'value'),
    ({'_py_type': 'decimal.Decimal', 'value': 'x'}, 'value'),
    ({'_py_type': 'uuid.UUID', 'value': 'x'}, 'value'),
    ({'_py_type': 'builtins.int', 'value': 'x'}, 'value'),
    ({'_py_type': 7}, 'value'),
    ({'_py_type': ['builtins', 'dict']}, 'value'),
    ({'_py_type': 'tests.model.Phone', '_py_new_args': 3},
     'value._py_new_args'),
    ({'_py_type': 'tests.model.Phone', '_py_listitems': [1]},
     'value._py_listitems'),
    ({'a': [{'b': {'_py_type': 'builtins.set'}}]}, 'value.a.0.b'),
], ids=repr)
def test_malformed_values_raise_stored_data_error(dm, db, make_dm, value,
                                                  path):
    metadata.get_dotted_name(Color)
    metadata.get_dotted_name(Phone)
    ref = store_value(dm, db, value)
    with pytest.raises(interfaces.StoredDataError) as info:
        load_value(make_dm)
    error = info.value
    assert type(error) in (interfaces.StoredDataError,
                           interfaces.UnknownTypeError)
    assert error.path == path
    assert (error.database, error.collection, error.id) == (
        ref.database, ref.collection, ref.id)
    assert str(ref.id) in str(error)


def test_error_messages_never_hold_the_content(dm, db, make_dm):
    secret = 'secret-%s' % uuid.uuid4().hex
    store_value(dm, db, {'_py_type': 'datetime.date', 'iso': secret})
    with pytest.raises(interfaces.StoredDataError) as info:
        load_value(make_dm)
    assert secret not in str(info.value)


def test_allowed_values_still_load(dm, db, make_dm):
    metadata.get_dotted_name(Color)
    store_value(dm, db, {
        'color': {'_py_type': 'enum.Enum', 'class': 'tests.test_loading.Color',
                  'name': 'RED'},
        'car': {'_py_persistent_type': 'tests.model.Car', 'year': 2005},
        'odict': {'_py_factory': 'collections.OrderedDict',
                  '_py_factory_args': [], '_py_dictitems': [['b', 1]]}})
    value = load_value(make_dm)
    assert value['color'] is Color.RED
    assert type(value['car']) is Car and value['car'].year == 2005
    assert list(value['odict'].items()) == [('b', 1)]


def test_data_manager_registry_is_consulted(dm, db, make_dm, evil):
    store_value(dm, db, {'_py_type': evil.__name__ + '.Plain'})

    class LocalPlain:
        pass
    with pytest.raises(interfaces.UnknownTypeError):
        load_value(make_dm)
    reader_dm = make_dm()
    reader_dm.type_registry.register_type(LocalPlain, evil.__name__ + '.Plain')
    assert type(reader_dm.root['obj'].value) is LocalPlain
    # Only that data manager.
    with pytest.raises(interfaces.UnknownTypeError):
        load_value(make_dm)


def test_oid_written_in_this_transaction_reads_as_reference(dm):
    target = Simple(name='target')
    ref = dm.insert(target)
    assert type(ref) is metadata.OID
    reader = dm._reader
    assert reader.get_object(ref, None) is target
    assert reader.get_state({'_id': 1, 'ref': ref, 'refs': [ref]}, None) == {
        'ref': target, 'refs': [target]}


def test_oid_in_written_document_loads_as_object(dm, make_dm):
    target = Simple(name='target')
    holder = Simple(target=target)
    dm.root['holder'] = holder
    # The document written in this transaction holds OIDs; reading it
    # gives the objects.
    state = dm._reader.get_state(dm._writer.get_document(holder), None)
    assert state['target'] is target
    transaction.commit()


# -- broken objects ----------------------------------------------------------
def test_broken_value_keeps_name_and_state(dm, db, make_dm):
    stored = {'_py_type': 'gone.module.Thing', 'a': 1,
              'ref': {'$ref': 'x', '$id': 2}}
    store_value(dm, db, {'list': [stored]})
    assert 'gone' not in sys.modules
    value = load_value(make_dm, broken_objects=True)
    placeholder = value['list'][0]
    assert type(placeholder) is broken.Broken
    assert broken.is_broken(placeholder)
    assert placeholder.__Broken_name__ == 'gone.module.Thing'
    assert broken.stored_state(placeholder) == db[
        'tests.model.Simple'].find_one()['value']['list'][0]
    assert repr(placeholder) == '<Broken gone.module.Thing>'
    with pytest.raises(broken.BrokenModified):
        placeholder.a = 2
    with pytest.raises(broken.BrokenModified):
        del placeholder.a
    assert 'gone' not in sys.modules


@pytest.mark.parametrize('value, name', [
    ({'_py_factory': 'os.system', '_py_factory_args': ['echo']}, 'os.system'),
    ({'_py_type': 'enum.Enum', 'class': 'os.environ', 'name': 'HOME'},
     'os.environ'),
    ({'_py_persistent_type': 'tests.model.Simple', 'x': 1},
     'tests.model.Simple'),
], ids=repr)
def test_refused_names_load_broken_when_asked(dm, db, make_dm, value, name):
    store_value(dm, db, value)
    placeholder = load_value(make_dm, broken_objects=True)
    assert type(placeholder) is broken.Broken
    assert placeholder.__Broken_name__ == name


def test_malformed_is_not_broken(dm, db, make_dm):
    store_value(dm, db, {'_py_type': 'builtins.dict'})
    with pytest.raises(interfaces.StoredDataError):
        load_value(make_dm, broken_objects=True)


def test_writing_the_owner_of_a_broken_value_keeps_it(dm, db, make_dm):
    stored = {'_py_type': 'gone.module.Thing', 'a': [1, {'b': 2}]}
    ref = store_value(dm, db, {'list': [stored]})
    other = make_dm(broken_objects=True)
    obj = other.root['obj']
    obj.other = 'changed'
    transaction.commit()
    doc = db[ref.collection].find_one({'_id': ref.id})
    assert doc['other'] == 'changed'
    assert doc['value'] == {'list': [stored]}


def test_persistent_broken_class():
    cls = broken.persistent_broken_class('gone.module.Top')
    assert broken.persistent_broken_class('gone.module.Top') is cls
    assert issubclass(cls, broken.PersistentBroken)
    assert metadata.get_dotted_name(cls) == 'gone.module.Top'
    assert 'gone.module.Top' not in metadata._known_types
    obj = cls.__new__(cls)
    obj.__setstate__({'name': 'kept', 'ref': {'$ref': 'x', '$id': 1}})
    assert broken.stored_state(obj) == {
        'name': 'kept', 'ref': {'$ref': 'x', '$id': 1}}
    assert broken.is_broken(obj)
    with pytest.raises(broken.BrokenModified):
        obj.name = 'changed'
    with pytest.raises(broken.BrokenModified):
        obj._p_changed = True
    obj._v_cache = 1       # volatile attributes are fine


def test_reader_keeps_persistent_broken_state_raw(dm):
    cls = broken.persistent_broken_class('gone.module.Top')
    obj = cls.__new__(cls)
    doc = {'_id': 1, '_py_serial': 3, '_py_persistent_type': 'gone.module.Top',
           'x': {'_py_type': 'os.system'}}
    dm._reader.set_ghost_state(obj, doc)
    assert broken.stored_state(obj) == {'x': {'_py_type': 'os.system'}}


# -- the type map ------------------------------------------------------------
class Tagged(persistent.Persistent):
    _p_mongo_collection = 'shared_tagged'
    _p_mongo_store_type = True


class TaggedOther(persistent.Persistent):
    _p_mongo_collection = 'shared_tagged'


def test_store_type_classes_are_recorded_in_the_type_map(dm, db, make_dm):
    dm.insert(Tagged())
    transaction.commit()
    entry = db[TYPE_MAP_COLLECTION].find_one({'collection': 'shared_tagged'})
    assert entry['types'] == ['tests.test_loading.Tagged']
    dm.insert(TaggedOther())
    transaction.commit()
    fresh = make_dm()
    assert [type(o) for o in fresh.find_objects(TaggedOther)] == [TaggedOther]
    assert fresh.count(TaggedOther) == 1
    assert fresh.count(Tagged) == 1


@pytest.mark.parametrize('entry', [
    {}, {'types': 'tests.model.Simple'}, {'types': [1]}, {'types': None}])
def test_malformed_type_map_entry(dm, db, make_dm, dbname, entry):
    ref = dm.insert(Simple(x=1))
    transaction.commit()
    key = '%s.%s' % (dbname, ref.collection)
    db[TYPE_MAP_COLLECTION].delete_one({'_id': key})
    db[TYPE_MAP_COLLECTION].insert_one(dict(entry, _id=key))
    with pytest.raises(interfaces.StoredDataError) as info:
        make_dm().load(ref)._p_activate()
    error = info.value
    assert (error.database, error.collection, error.id) == (
        dbname, TYPE_MAP_COLLECTION, key)
    assert TYPE_MAP_COLLECTION in str(error)


def test_type_map_resolves_through_the_given_registry(client, dbname, db):
    from mongopersist.typemap import CollectionTypeMap
    db[TYPE_MAP_COLLECTION].insert_one({
        '_id': '%s.things' % dbname, 'database': dbname,
        'collection': 'things', 'types': ['tests.model.Phone']})
    types = CollectionTypeMap(client, dbname,
                              registry=metadata.TypeRegistry())
    with pytest.raises(interfaces.UnknownTypeError):
        types.class_for(dbname, 'things')   # not a persistent class


def test_reader_resolve_uses_the_jar_registry(dm):
    assert dm._reader.registry is dm.type_registry
    reader = serialize.ObjectReader(object())
    assert reader.registry is metadata.REGISTRY


# -- top-level broken objects and factories written by this process ----------
class ReducesToItself:
    """Reduces to its own class as the factory: ``(cls, args)``."""

    def __init__(self, a):
        self.a = a

    def __reduce__(self):
        return (ReducesToItself, (self.a,))


def test_class_factory_written_by_this_process_loads(dm, make_dm):
    dm.root['obj'] = Simple(value=ReducesToItself(3))
    transaction.commit()
    loaded = make_dm().root['obj'].value
    assert type(loaded) is ReducesToItself and loaded.a == 3


def test_unknown_top_level_class(dm, db, make_dm, dbname):
    ref = dm.insert(Simple(name='x'))
    transaction.commit()
    db[TYPE_MAP_COLLECTION].update_one(
        {'_id': '%s.%s' % (dbname, ref.collection)},
        {'$set': {'types': ['gone.module.Top']}})
    with pytest.raises(interfaces.UnknownTypeError) as info:
        make_dm().load(ref)
    assert info.value.name == 'gone.module.Top'
    obj = make_dm(broken_objects=True).load(ref)
    assert isinstance(obj, broken.PersistentBroken)
    assert broken.stored_state(obj) == {'name': 'x'}
    with pytest.raises(broken.BrokenModified):
        obj.name = 'y'
    assert 'gone' not in sys.modules


@pytest.mark.parametrize('database', ['db', None])
def test_oid_equals_and_hashes_like_its_dbref(database):
    # Oids and the plain DBRefs read from BSON find each other in dicts.
    oid = metadata.OID('coll', bson.ObjectId(), database)
    plain = bson.DBRef(oid.collection, oid.id, database)
    assert oid == plain and plain == oid
    assert hash(oid) == hash(plain)
    assert {plain: 1}[oid] == 1 and {oid: 1}[plain] == 1


def test_loading_a_plain_dbref_gives_the_object_of_its_oid(dm, make_dm):
    target = Simple(name='target')
    dm.root['target'] = target
    transaction.commit()
    reader = make_dm()
    obj = reader.root['target']
    ref = obj._p_oid
    for given in (bson.DBRef(ref.collection, ref.id, ref.database),
                  bson.DBRef(ref.collection, ref.id),
                  bson.DBRef(ref.collection, ref.id, ref.database, extra=1)):
        assert reader.load(given) is obj
    assert type(obj._p_oid) is metadata.OID
