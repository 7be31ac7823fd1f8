"""Validation per collection: a transaction reads the serials of the held
objects of the collections it uses, at their first use, and never serves
a held object of a collection it has not validated.

Two data managers: ``mine`` holds a person (collection
``tests.model.Person``, with a ``Car`` sub-object), the person's address
(collection ``address``) and a counter (collection ``counter``);
``theirs`` commits changes.  Whatever path ``mine`` takes to an object, it
never sees a state older than what ``theirs`` committed before ``mine``'s
transaction began.  See ``docs/cache.rst``.
"""
import pytest
import transaction

from mongopersist import interfaces
from mongopersist.datamanager import MongoDataManager
from tests.model import Address, Car, Counter, Person
from tests.roundtrips import roundtrips  # noqa: F401 (fixture)

PERSON = 'tests.model.Person'


def own_dm(client, dbname, explicit):
    tm = transaction.TransactionManager(explicit=explicit)
    dm = MongoDataManager(client, default_database=dbname,
                          detect_conflicts=True, transaction_manager=tm)
    return dm, tm


def begin(tm):
    if tm.explicit:
        tm.begin()


def commit_graph(dm, tm):
    begin(tm)
    person = Person('ann', address=Address('Paris', '75001'))
    person.car = Car(2020, 'VW', 'Golf')
    dm.root['ann'] = person
    dm.root['address'] = person.address
    dm.root['counter'] = Counter(1)
    tm.commit()


def load_graph(dm, tm):
    """Load every object in one transaction: ``(person, address,
    counter)``, held by the caller."""
    begin(tm)
    person, counter = dm.root['ann'], dm.root['counter']
    address = person.address
    assert (person.name, person.car.model, address.city, counter.value) == (
        'ann', 'Golf', 'Paris', 1)
    tm.commit()
    return person, address, counter


def use_people_only(dm, tm, person):
    """A transaction that uses the person's collection only (through the
    data manager: a root entry)."""
    begin(tm)
    assert dm.root['ann'] is person and person.name
    tm.commit()


@pytest.fixture(params=[True, False], ids=['explicit', 'implicit'])
def explicit(request):
    return request.param


@pytest.fixture(params=['all used', 'people used'])
def graph(request, client, dbname, explicit):
    """``(mine, my_tm, theirs, their_tm, (person, address, counter))``:
    ``mine`` holds the three objects; its last transaction used every
    collection, or only the people (an explicit manager validates the
    collections the last transaction used at ``begin()``: the others
    lazily)."""
    mine, my_tm = own_dm(client, dbname, explicit)
    commit_graph(mine, my_tm)
    objects = load_graph(mine, my_tm)
    if request.param == 'people used':
        use_people_only(mine, my_tm, objects[0])
    theirs, their_tm = own_dm(client, dbname, explicit=False)
    yield mine, my_tm, theirs, their_tm, objects
    for manager in (my_tm, their_tm):
        try:
            manager.abort()
        except transaction.interfaces.NoTransaction:
            pass


def move_address(theirs, their_tm, city='Lyon'):
    theirs.root['address'].city = city
    their_tm.commit()


# -- round trips -------------------------------------------------------------
def test_a_transaction_validates_only_the_collections_it_uses(
        roundtrips, dbname):
    dm, tm = own_dm(roundtrips.client, dbname, explicit=False)
    commit_graph(dm, tm)
    person, address, counter = load_graph(dm, tm)
    roundtrips.reset()
    assert person.name == 'ann'
    assert counter.value == 1
    tm.commit()
    # The serials of the held people and counters; nothing of addresses.
    assert roundtrips.reads[PERSON] == 1
    assert roundtrips.reads['counter'] == 1
    assert roundtrips.reads['address'] == 0
    assert roundtrips.reads_total == 2


def test_explicit_begin_validates_what_the_last_transaction_used(
        roundtrips, dbname):
    dm, tm = own_dm(roundtrips.client, dbname, explicit=True)
    commit_graph(dm, tm)
    person, address, counter = load_graph(dm, tm)
    use_people_only(dm, tm, person)
    roundtrips.reset()
    tm.begin()
    # The people (used last time) are validated now and stay loaded; the
    # objects of the other collections are ghosts until they are used.
    assert roundtrips.reads_total == 1
    assert person._p_status == 'saved'
    assert address._p_status == counter._p_status == 'ghost'
    assert person.name == 'ann'
    tm.commit()
    assert roundtrips.reads_total == 1
    # Used again: validated at its first use (one read), from its document.
    tm.begin()
    assert counter.value == 1
    tm.commit()
    assert roundtrips.reads['counter'] == 1
    assert roundtrips.reads['address'] == 0


def test_a_collection_is_validated_once_per_transaction(
        roundtrips, dbname):
    dm, tm = own_dm(roundtrips.client, dbname, explicit=False)
    commit_graph(dm, tm)
    person, address, counter = load_graph(dm, tm)
    roundtrips.reset()
    assert address.city == 'Paris'
    assert person.address.zip == '75001'
    assert dm.root['address'] is address
    assert dm.find_one_object(Address, {'city': 'Paris'}) is address
    tm.commit()
    # One validation read and the query; the root entry; the person
    # (another collection: validated at its first use).
    assert roundtrips.reads['address'] == 2
    assert roundtrips.reads_total == 4


# -- staleness: every path to an object of a collection used late ------------
PATHS = {
    'held reference': lambda dm, person, address: address.city,
    'reference from a validated object': (
        lambda dm, person, address: person.address.city),
    'root entry': lambda dm, person, address: dm.root['address'].city,
    'load': lambda dm, person, address: dm.load(address._p_oid).city,
    'query': lambda dm, person, address: dm.find_one_object(
        Address, {'zip': '75001'}).city,
    'query of many': lambda dm, person, address: [
        a.city for a in dm.find_objects(Address)][0],
}


@pytest.mark.parametrize('path', sorted(PATHS))
def test_a_change_in_another_collection_is_seen(graph, path):
    mine, my_tm, theirs, their_tm, (person, address, counter) = graph
    move_address(theirs, their_tm)
    begin(my_tm)
    # The people are used (and validated) first; the addresses later.
    assert person.name == 'ann'
    assert PATHS[path](mine, person, address) == 'Lyon'
    assert address.city == 'Lyon'
    my_tm.commit()


@pytest.mark.parametrize('path', sorted(PATHS))
def test_a_change_is_seen_whatever_is_used_first(graph, path):
    mine, my_tm, theirs, their_tm, (person, address, counter) = graph
    move_address(theirs, their_tm)
    begin(my_tm)
    assert PATHS[path](mine, person, address) == 'Lyon'
    my_tm.commit()


def test_a_sub_object_change_is_seen(graph):
    mine, my_tm, theirs, their_tm, (person, address, counter) = graph
    theirs.root['ann'].car.model = 'Polo'
    their_tm.commit()
    begin(my_tm)
    assert address.city == 'Paris'      # another collection first
    assert person.car.model == 'Polo'
    my_tm.commit()


def test_a_removed_document_is_not_served(graph, client, dbname):
    mine, my_tm, theirs, their_tm, (person, address, counter) = graph
    theirs.remove(theirs.root['counter'])
    their_tm.commit()
    begin(my_tm)
    assert person.name == 'ann'
    with pytest.raises(interfaces.DocumentNotFoundError):
        counter.value
    my_tm.abort()


def test_a_change_to_an_object_found_stale_loses_no_update(graph, db):
    mine, my_tm, theirs, their_tm, (person, address, counter) = graph
    theirs.root['counter'].value = 10
    their_tm.commit()
    begin(my_tm)
    assert person.name == 'ann'
    counter.value += 1
    my_tm.commit()
    assert db['counter'].find_one()['value'] == 11


def test_a_write_of_a_stale_object_in_another_collection_conflicts(
        graph, db):
    """Changed in memory before its collection was validated (an explicit
    manager's object kept loaded): the conditional write refuses."""
    mine, my_tm, theirs, their_tm, (person, address, counter) = graph
    begin(my_tm)
    assert person.name == 'ann'
    address.city = 'Nice'
    theirs.root['address'].city = 'Lyon'
    their_tm.commit()
    with pytest.raises(interfaces.ConflictError):
        my_tm.commit()
    my_tm.abort()
    assert db['address'].find_one()['city'] == 'Lyon'


def test_a_savepoint_rollback_does_not_bring_back_a_stale_document(
        graph, db):
    mine, my_tm, theirs, their_tm, (person, address, counter) = graph
    move_address(theirs, their_tm)
    begin(my_tm)
    person.name = 'anne'        # joins: the savepoint includes mine
    savepoint = my_tm.savepoint()
    assert address.city == 'Lyon'   # validates the addresses since
    savepoint.rollback()
    assert address.city == 'Lyon'
    assert mine.root['address'].city == 'Lyon'
    # What the write is checked against is what was reloaded, too.
    address.city = 'Nice'
    my_tm.commit()
    assert db['address'].find_one()['city'] == 'Nice'


def test_an_object_inserted_and_flushed_before_validation_stays(
        graph, db):
    mine, my_tm, theirs, their_tm, (person, address, counter) = graph
    move_address(theirs, their_tm)
    begin(my_tm)
    new = Address('Rome', '00100')
    mine.insert(new)
    mine.flush()
    assert address.city == 'Lyon'       # validates the addresses
    assert new._p_status != 'ghost' and new.city == 'Rome'
    my_tm.commit()
    assert db['address'].count_documents({}) == 2


# -- query results need no validation ---------------------------------------
@pytest.fixture
def two_people(client, dbname, explicit):
    """``(mine, my_tm, theirs, their_tm, (p0, p1))``: ``mine`` holds two
    people; its last transaction used them through queries only."""
    mine, my_tm = own_dm(client, dbname, explicit)
    begin(my_tm)
    mine.root['p0'] = Person('p0')
    mine.root['p1'] = Person('p1')
    my_tm.commit()
    begin(my_tm)
    people = tuple(sorted(mine.find_objects(Person), key=lambda p: p.name))
    my_tm.commit()
    theirs, their_tm = own_dm(client, dbname, explicit=False)
    yield mine, my_tm, theirs, their_tm, people
    for manager in (my_tm, their_tm):
        try:
            manager.abort()
        except transaction.interfaces.NoTransaction:
            pass


def test_a_query_result_is_not_validated_again(roundtrips, dbname,
                                               explicit):
    mine, my_tm = own_dm(roundtrips.client, dbname, explicit)
    begin(my_tm)
    mine.root['p0'] = Person('p0')
    mine.root['p1'] = Person('p1')
    my_tm.commit()
    begin(my_tm)
    p0, p1 = sorted(mine.find_objects(Person), key=lambda p: p.name)
    my_tm.commit()
    roundtrips.reset()
    begin(my_tm)
    # The query reads the document: no validation read for it.
    assert mine.find_one_object(Person, {'name': 'p0'}) is p0
    assert p0.name == 'p0'
    assert roundtrips.reads_total == 1
    # Another held person: its collection is validated now.
    assert p1.name == 'p1'
    assert roundtrips.reads_total == 2
    my_tm.commit()


def test_query_results_then_other_held_objects_are_current(two_people):
    mine, my_tm, theirs, their_tm, (p0, p1) = two_people
    theirs.root['p0'].name = 'p0 new'
    theirs.root['p1'].name = 'p1 new'
    their_tm.commit()
    begin(my_tm)
    assert mine.find_one_object(Person, {'name': 'p0 new'}) is p0
    assert p0.name == 'p0 new'
    # Another held person of the collection: validated at its first use.
    assert p1.name == 'p1 new'
    assert p0._p_status != 'ghost' and p0.name == 'p0 new'
    my_tm.commit()


def test_a_query_result_in_use_is_not_dropped_by_a_later_validation(
        two_people, db):
    mine, my_tm, theirs, their_tm, (p0, p1) = two_people
    begin(my_tm)
    found = mine.find_one_object(Person, {'name': 'p0'})
    theirs.root['p0'].name = 'theirs'
    their_tm.commit()
    # Validating the people now (p1 is used) leaves the query result as
    # the query returned it: it is in use in this transaction.
    assert p1.name == 'p1'
    assert found._p_status != 'ghost' and found.name == 'p0'
    found.name = 'mine'
    # The commit's conditional write finds the conflict.
    with pytest.raises(interfaces.ConflictError):
        my_tm.commit()
    my_tm.abort()
    assert db[PERSON].find_one({'name': 'theirs'}) is not None
