"""Savepoints: roll back part of a transaction, in memory and in MongoDB."""
import transaction
from transaction.interfaces import ISavepointDataManager
from zope.interface.verify import verifyObject

from tests.model import Address, Person

PERSON = 'tests.model.Person'


def test_data_manager_provides_savepoints(dm):
    assert verifyObject(ISavepointDataManager, dm)


def test_rollback_restores_memory_and_commit_writes_that(dm, db):
    dm.root['p'] = Person('A', visited=['USA'])
    transaction.commit()
    person = dm.root['p']
    person.name = 'B'
    savepoint = transaction.savepoint()
    person.name = 'C'
    person.visited.append('France')
    person.friends['x'] = 1
    savepoint.rollback()
    assert person.name == 'B'
    assert list(person.visited) == ['USA']
    assert dict(person.friends) == {}
    transaction.commit()
    doc = db[PERSON].find_one()
    assert (doc['name'], doc['visited'], doc['friends']) == ('B', ['USA'], {})


def test_changes_first_made_after_the_savepoint_are_discarded(dm, db):
    dm.root['a'] = Person('A')
    dm.root['b'] = Person('B')
    transaction.commit()
    dm.root['a'].name = 'A2'
    savepoint = transaction.savepoint()
    dm.root['b'].name = 'B2'
    savepoint.rollback()
    assert dm.root['b'].name == 'B'
    transaction.commit()
    assert sorted(d['name'] for d in db[PERSON].find()) == ['A2', 'B']


def test_objects_added_after_the_savepoint_are_not_written(dm, db):
    dm.root['a'] = Person('A')
    transaction.commit()
    savepoint = transaction.savepoint()
    person = dm.root['a']
    person.address = Address('Maynard', '01754')
    dm.insert(Person('new'))
    savepoint.rollback()
    assert person.address is None
    transaction.commit()
    assert db['address'].count_documents({}) == 0
    assert [d['name'] for d in db[PERSON].find()] == ['A']


def test_rollback_takes_back_writes_made_since(dm, db):
    dm.root['a'] = Person('A')
    transaction.commit()
    savepoint = transaction.savepoint()
    dm.root['b'] = Person('B')          # written at once
    assert db[PERSON].count_documents({}) == 2
    savepoint.rollback()
    assert db[PERSON].count_documents({}) == 1
    assert 'b' not in dm.root
    transaction.commit()
    assert list(dm.root.keys()) == ['a']


def test_rollback_twice_to_the_same_savepoint(dm, db):
    dm.root['a'] = Person('A')
    transaction.commit()
    person = dm.root['a']
    person.name = 'B'
    savepoint = transaction.savepoint()
    person.name = 'C'
    savepoint.rollback()
    person.name = 'D'
    savepoint.rollback()
    assert person.name == 'B'
    transaction.commit()
    assert db[PERSON].find_one()['name'] == 'B'


def test_rollback_keeps_references_to_other_persistent_objects(dm, db):
    address = Address('Maynard', '01754')
    dm.root['a'] = Person('A', address=address)
    transaction.commit()
    person = dm.root['a']
    person.name = 'B'
    savepoint = transaction.savepoint()
    person.name = 'C'
    savepoint.rollback()
    assert person.address is dm.root['a'].address
    transaction.commit()
    assert db['address'].count_documents({}) == 1


def test_changes_flushed_after_the_savepoint_are_discarded_in_memory(dm, db):
    """Found by the stateful test: an object first changed after the
    savepoint and written by a flush (a query) since kept its changed
    state after the rollback, although its write was taken back."""
    dm.root['a'] = Address('Maynard', '01754')
    transaction.commit()
    address = dm.root['a']
    dm.insert(Person('joined before the savepoint'))
    savepoint = transaction.savepoint()
    address.city = 'Boston'
    assert dm.count(Address) == 1                 # flushes the change
    assert db['address'].find_one()['city'] == 'Boston'
    savepoint.rollback()
    assert db['address'].find_one()['city'] == 'Maynard'
    assert address.city == 'Maynard'
    transaction.commit()
    assert db['address'].find_one()['city'] == 'Maynard'
    assert db[PERSON].count_documents({}) == 1


def test_second_rollback_to_a_savepoint_taken_before_joining(dm, db):
    # Found by the sharded state machine: a data manager that joined after
    # the savepoint is aborted by the first rollback (``transaction`` does
    # that) and called again by every later rollback to the same savepoint.
    # Not joined any more, it has nothing to forget: what it loaded since
    # stays loaded, as after any rollback.
    dm.root['p'] = Person('A')
    transaction.commit()
    person = dm.root['p']
    person.name                 # loaded; the data manager has not joined
    savepoint = transaction.savepoint()
    person.name = 'B'           # joins after the savepoint
    savepoint.rollback()        # aborts the data manager: reloads 'A'
    assert person.name == 'A'
    assert person._p_status != 'ghost'
    savepoint.rollback()        # again: nothing joined, nothing to forget
    assert person._p_status != 'ghost'
    assert person.name == 'A'
    person.name = 'C'
    transaction.commit()
    assert db[PERSON].find_one()['name'] == 'C'


def test_rollback_puts_back_a_new_object_removed_since(dm, db):
    # Removing an object never written takes its insert back (no jar, no
    # oid); rolling back to a savepoint taken before must insert it again,
    # not leave a registered object without an oid for the commit.
    person = Person('A', visited=['x'])
    dm.insert(person)
    oid = person._p_oid
    savepoint = transaction.savepoint()
    dm.remove(person)
    person.name = 'changed while not stored'
    savepoint.rollback()
    assert (person._p_jar, person._p_oid) == (dm, oid)
    assert dm.load(oid) is person
    assert person.name == 'A'
    person.visited.append('y')
    transaction.commit()
    doc = db[PERSON].find_one()
    assert (doc['_id'], doc['name'], doc['visited']) == (
        oid.id, 'A', ['x', 'y'])


def test_rollback_leaves_a_new_object_removed_and_stored_elsewhere(
        dm, make_dm, db):
    # Removed (so free to store again), then inserted by a data manager of
    # another transaction: it is that one's now; the rollback forgets it
    # here and leaves its state alone.
    other_tm = transaction.TransactionManager()
    other = make_dm(transaction_manager=other_tm)
    person = Person('A')
    dm.insert(person)
    dm.root['keep'] = Person('kept')
    savepoint = transaction.savepoint()
    dm.remove(person)
    other.insert(person)
    person.name = 'B'
    savepoint.rollback()
    assert person._p_jar is other
    assert person.name == 'B'
    transaction.commit()
    assert [d['name'] for d in db[PERSON].find()] == ['kept']
    other_tm.commit()
    assert sorted(d['name'] for d in db[PERSON].find()) == ['B', 'kept']


def test_rollback_keeps_references_to_objects_not_stored_yet(dm, db):
    # A persistent object referenced before it is stored (it is inserted
    # when its referrer is written) is an object of its own, as a stored
    # one is: the rollback puts back a reference to it, not a copy.
    dm.root['p'] = Person('A')
    transaction.commit()
    person = dm.root['p']
    address = Address('Berlin', '10115')
    person.address = address
    savepoint = transaction.savepoint()
    person.name = 'B'
    savepoint.rollback()
    assert person.address is address and person.name == 'A'
    address.city = 'Potsdam'
    transaction.commit()
    assert db['address'].find_one()['city'] == 'Potsdam'


def test_a_state_pickle_cannot_copy_is_deep_copied(dm, db, monkeypatch):
    # The savepoint copies states with pickle (in memory); a state it
    # cannot pickle is deep-copied, sharing the same persistent objects.
    from mongopersist import savepoint as savepoint_module

    class Refusing(savepoint_module.pickle.Pickler):
        def dump(self, obj):
            raise savepoint_module.pickle.PicklingError('refused')

    monkeypatch.setattr(savepoint_module.pickle, 'Pickler', Refusing)
    dm.root['p'] = Person('A', visited=['x'])
    transaction.commit()
    person = dm.root['p']
    address = Address('Berlin', '10115')
    person.address = address
    person.friends['best'] = {'address': address, 'tags': ['a']}
    savepoint = transaction.savepoint()
    person.friends['best']['tags'].append('b')
    person.visited.append('y')
    savepoint.rollback()
    assert person.address is address
    assert person.friends['best']['address'] is address
    assert person.friends['best']['tags'] == ['a']
    assert list(person.visited) == ['x']
    transaction.commit()
    doc = db[PERSON].find_one()
    assert doc['visited'] == ['x'] and doc['friends']['best']['tags'] == ['a']
