"""``dm.register(obj)`` called by hand (issue 17).

persistent calls ``register`` for objects of the data manager that
changed.  Called by hand with a new object (no data manager, no oid), it
was accepted, and every later flush and commit of the data manager
raised ``AttributeError`` until an abort.  As in the original
mongopersist, a new object is now registered for insertion: the next
flush (or the commit) writes it.  An object of another data manager, or
anything that is not a persistent object, is refused at once.
"""
import persistent
import pytest
import transaction

from mongopersist.serialize import get_dotted_name
from tests.model import Car, Person

PERSON = get_dotted_name(Person)


def test_registering_a_new_object_inserts_it_at_commit(dm, db):
    person = Person('new')
    dm.register(person)
    assert person._p_jar is dm and person._p_oid is not None
    transaction.commit()
    assert db[PERSON].find_one({'_id': person._p_oid.id})['name'] == 'new'


def test_registering_a_new_object_inserts_it_at_the_next_flush(dm, db):
    person = Person('new')
    dm.register(person)
    dm.flush()
    assert db[PERSON].count_documents({'name': 'new'}) == 1
    dm.root['other'] = Person('other')
    transaction.commit()
    assert db[PERSON].count_documents({}) == 2


def test_registering_a_new_object_then_aborting_forgets_it(dm, db):
    person = Person('new')
    dm.register(person)
    transaction.abort()
    assert person._p_jar is None
    dm.root['later'] = Person('later')
    transaction.commit()
    assert db[PERSON].count_documents({'name': 'new'}) == 0


def test_registering_twice_or_after_insert_writes_once(dm, db):
    person = Person('new')
    dm.insert(person)
    dm.register(person)
    dm.register(person)
    transaction.commit()
    assert db[PERSON].count_documents({'name': 'new'}) == 1


def test_registering_an_object_of_another_data_manager_is_refused(
        dm, make_dm, db):
    other = make_dm()
    person = Person('theirs')
    other.insert(person)
    with pytest.raises(ValueError, match='already stored by'):
        dm.register(person)
    transaction.commit()
    assert db[PERSON].count_documents({'name': 'theirs'}) == 1


@pytest.mark.parametrize('value', [object(), 'text', {'a': 1}],
                         ids=['object', 'str', 'dict'])
def test_registering_what_is_not_persistent_is_refused(dm, value):
    with pytest.raises(TypeError, match='persistent'):
        dm.register(value)
    transaction.commit()


def test_registering_a_sub_object_without_its_owner_is_refused(dm, db):
    car = Car(2005, 'Ford', 'Explorer')
    with pytest.raises(TypeError, match='_p_mongo_sub_object'):
        dm.register(car)
    dm.root['p'] = Person('p')
    transaction.commit()
    assert db[PERSON].count_documents({}) == 1


def test_the_data_manager_stays_usable_after_a_refused_register(dm, db):
    with pytest.raises(TypeError):
        dm.register(persistent.Persistent.__new__(Car))
    dm.root['p'] = Person('p')
    dm.flush()
    transaction.commit()
    assert db[PERSON].count_documents({}) == 1
