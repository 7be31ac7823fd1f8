"""What a type checker infers for the public API (``make typecheck``).

mypy checks this module (pyproject.toml, ``[tool.mypy]``): each
``assert_type`` fails the check when the inferred type differs, an
inferred ``Any`` included.  pytest runs it too, so that the examples are
also true at run time; there ``assert_type`` returns its argument.
"""
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Optional

import persistent
import transaction

import mongopersist
from mongopersist import metadata
from mongopersist.collection import MongoCollection
from mongopersist.container import MongoContainer
from mongopersist.datamanager import MongoDataManager
from mongopersist.mapping import MongoCollectionMapping
from mongopersist.root import Root

if TYPE_CHECKING:
    from typing_extensions import assert_type
else:
    def assert_type(value, _type):
        return value


class Person(persistent.Persistent):
    _p_mongo_collection = 'typed_people'

    def __init__(self, name: str) -> None:
        self.name = name


class Folder(MongoContainer):
    _m_collection = 'typed_people'


class PeopleByName(MongoCollectionMapping):
    __mongo_collection__ = 'typed_people'
    __mongo_mapping_key__ = 'name'


def test_queries_give_objects_of_the_class_asked_for(
        client: object, dbname: str) -> None:
    dm = MongoDataManager(client, default_database=dbname)
    dm.root['alice'] = Person('Alice')
    transaction.commit()

    people = dm.find_objects(Person, {'name': 'Alice'})
    assert_type(people, Iterator[Person])
    found = dm.find_one_object(Person, {'name': 'Alice'})
    assert_type(found, Optional[Person])
    assert found is not None
    assert_type(found.name, str)
    assert [p.name for p in people] == ['Alice']
    assert dm.find_one_object(Person, {'name': 'Bob'}) is None
    assert_type(dm.count(Person), int)
    transaction.abort()


def test_store_and_its_data_managers(client: object, dbname: str) -> None:
    store = mongopersist.Store(client, database=dbname)
    assert_type(store, mongopersist.Store)
    with store.transaction() as dm:
        assert_type(dm, MongoDataManager)
        dm.root['bob'] = Person('Bob')
    for attempt in store.transaction():
        with attempt as dm:
            assert_type(dm.find_one_object(Person, {'name': 'Bob'}),
                        Optional[Person])
    dm = store.open()
    try:
        assert_type(dm.root, Root)
        assert dm.root['bob'].name == 'Bob'
    finally:
        store.give_back(dm)
    store.close()


def test_containers_and_mapping(client: object, dbname: str) -> None:
    dm = MongoDataManager(client, default_database=dbname)
    people = PeopleByName(dm)
    people['carol'] = Person('Carol')
    assert_type(people.keys(), list[Any])
    assert_type(len(people), int)
    folder = Folder()
    dm.root['folder'] = folder
    folder['dave'] = Person('Dave')
    assert_type(folder.keys(), list[Any])
    assert_type(folder.get_collection(), Optional[MongoCollection])
    assert [p.name for p in folder.find({'name': 'Dave'})] == ['Dave']
    assert people.keys() == ['Dave', 'carol']   # every named Person
    transaction.abort()


def test_registry_and_version() -> None:
    assert_type(metadata.register_type(Person), type[Person])
    assert_type(mongopersist.__version__, str)
