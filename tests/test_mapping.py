"""MongoCollectionMapping: a collection as a mapping keyed by an attribute.

Starts with the seed's ``People`` walk-through ("Containers and
Collections"), then the rest of the mapping protocol.
"""
import pytest
import transaction

from mongopersist import mapping
from mongopersist.serialize import get_dotted_name
from tests.model import Address, Person, Simple

PERSON = get_dotted_name(Person)


class People(mapping.MongoCollectionMapping):
    __mongo_collection__ = PERSON
    __mongo_mapping_key__ = 'short_name'


class Germans(People):
    """Only people whose document says they are from Germany."""

    def __mongo_filter__(self):
        return {'country': 'Germany'}


class Boston(mapping.MongoCollectionMapping):
    __mongo_collection__ = 'address'
    __mongo_filter__ = {'city': 'Boston'}


@pytest.fixture
def stephan(dm):
    """The seed's Stephan, with his friend Roy."""
    dm.root['stephan'] = Person('Stephan Richter')
    dm.root['stephan'].friends = {'roy': Person('Roy Mathew')}
    transaction.commit()
    return dm.root['stephan']


def test_seed_people_walk_through(dm, stephan):
    assert People(dm).keys() == []
    People(dm)['stephan'] = dm.root['stephan']
    transaction.commit()
    assert People(dm).keys() == ['stephan']
    assert People(dm)['stephan'] is dm.root['stephan']
    assert repr(People(dm)['stephan']) == '<Person Stephan Richter>'
    # Setting the attribute anywhere else adds the object to the mapping.
    dm.root['stephan'].friends['roy'].short_name = 'roy'
    transaction.commit()
    assert People(dm).keys() == ['roy', 'stephan']


def test_setting_an_item_sets_the_key_attribute(dm, db, stephan):
    People(dm)['stephan'] = stephan
    assert stephan.short_name == 'stephan'
    transaction.commit()
    doc = db[PERSON].find_one({'name': 'Stephan Richter'})
    assert doc['short_name'] == 'stephan'


def test_mapping_sees_changes_of_this_transaction(dm, stephan):
    people = People(dm)
    people['stephan'] = stephan
    stephan.friends['roy'].short_name = 'roy'
    assert people.keys() == ['roy', 'stephan']
    assert 'roy' in people
    assert people['roy'] is stephan.friends['roy']
    transaction.abort()
    assert people.keys() == []


def test_setting_a_new_object_stores_it(dm, db):
    roger = Person('Roger')
    People(dm)['roger'] = roger
    assert roger._p_jar is dm
    transaction.commit()
    assert db[PERSON].find_one({'short_name': 'roger'})['name'] == 'Roger'
    assert People(dm)['roger'].name == 'Roger'


def test_mapping_protocol(dm, stephan):
    people = People(dm)
    roy = stephan.friends['roy']
    people['stephan'] = stephan
    people['roy'] = roy
    transaction.commit()
    people = People(dm)
    assert len(people) == 2
    assert 'roy' in people
    assert 'nobody' not in people
    assert None not in people
    assert list(people) == ['roy', 'stephan']
    assert people.values() == [roy, stephan]
    assert people.items() == [('roy', roy), ('stephan', stephan)]
    assert people.get('roy') is roy
    assert people.get('nobody') is None
    assert people.get('nobody', 42) == 42
    with pytest.raises(KeyError):
        people['nobody']


def test_values_cost_one_query(roundtrips, dbname):
    from mongopersist.datamanager import MongoDataManager
    dm = MongoDataManager(roundtrips.client, default_database=dbname)
    for index in range(20):
        People(dm)['p%02d' % index] = Person('P%d' % index)
    transaction.commit()
    other = MongoDataManager(roundtrips.client, default_database=dbname)
    other.count(Person)     # reads the type map
    roundtrips.reset()
    values = People(other).values()
    assert len(values) == 20
    assert [p.short_name for p in values][:3] == ['p00', 'p01', 'p02']
    assert roundtrips.reads_total == 1, roundtrips


def test_deleting_clears_the_key_but_keeps_the_object(dm, db, stephan):
    People(dm)['stephan'] = stephan
    transaction.commit()
    del People(dm)['stephan']
    assert 'stephan' not in People(dm)
    transaction.commit()
    assert People(dm).keys() == []
    doc = db[PERSON].find_one({'name': 'Stephan Richter'})
    assert 'short_name' not in doc
    assert dm.root['stephan'].name == 'Stephan Richter'
    with pytest.raises(KeyError):
        del People(dm)['stephan']


def test_replacing_an_item_clears_the_key_of_the_old_one(dm, stephan):
    roy = stephan.friends['roy']
    People(dm)['boss'] = stephan
    transaction.commit()
    People(dm)['boss'] = roy
    transaction.commit()
    assert People(dm)['boss'] is roy
    assert People(dm).keys() == ['boss']
    assert getattr(dm.root['stephan'], 'short_name', None) is None


def test_filter_method(dm, db):
    hans = Person('Hans')
    hans.country = 'Germany'
    People(dm)['hans'] = hans
    People(dm)['joe'] = Person('Joe')
    transaction.commit()
    assert People(dm).keys() == ['hans', 'joe']
    assert Germans(dm).keys() == ['hans']
    assert 'joe' not in Germans(dm)
    assert len(Germans(dm)) == 1
    with pytest.raises(KeyError):
        Germans(dm)['joe']


def test_filter_dict_and_default_key(dm):
    boston = Address('Boston', '02101')
    boston.key = 'home'
    maynard = Address('Maynard', '01754')
    maynard.key = 'work'
    dm.insert(boston)
    dm.insert(maynard)
    assert Boston(dm).keys() == ['home']
    assert Boston(dm)['home'] is boston
    assert 'work' not in Boston(dm)


def test_other_database(client, dbname, dm):
    class Remote(People):
        __mongo_database__ = dbname + '_other'

    try:
        assert Remote(dm).keys() == []
        with pytest.raises(ValueError, match='stored in'):
            Remote(dm)['x'] = Person('X')
    finally:
        client.drop_database(dbname + '_other')


def test_object_of_another_collection_is_refused(dm, db):
    address = Address('Boston', '02101')
    with pytest.raises(ValueError, match=r"Address.*stored in .*address"):
        People(dm)['boston'] = address
    assert not hasattr(address, 'short_name')
    assert address._p_jar is None
    transaction.commit()
    assert db[PERSON].count_documents({}) == 0
    assert db['address'].count_documents({}) == 0


@pytest.mark.parametrize('value', [object(), {'name': 'x'}])
def test_non_persistent_value_is_refused(dm, db, value):
    with pytest.raises(TypeError, match='persistent objects'):
        People(dm)['x'] = value
    transaction.commit()
    assert db[PERSON].count_documents({}) == 0


def test_none_key_is_refused(dm, db):
    roger = Person('Roger')
    with pytest.raises(KeyError, match='None cannot be a key'):
        People(dm)[None] = roger
    assert roger._p_jar is None
    transaction.commit()
    assert db[PERSON].count_documents({}) == 0


def test_mapping_needs_a_collection(dm):
    class Nothing(mapping.MongoCollectionMapping):
        pass
    with pytest.raises(TypeError, match='__mongo_collection__'):
        Nothing(dm)


def test_object_of_another_data_manager_is_refused(dm, make_dm, db):
    other = make_dm()
    roger = Person('Roger')
    other.insert(roger)
    with pytest.raises(ValueError, match='another data manager'):
        People(dm)['roger'] = roger
    assert not hasattr(roger, 'short_name')


def test_simple_objects_in_their_own_collection(dm):
    class Things(mapping.MongoCollectionMapping):
        __mongo_collection__ = get_dotted_name(Simple)
        __mongo_mapping_key__ = 'name'

    Things(dm)['a'] = Simple(size=1)
    Things(dm)['b'] = Simple(size=2)
    transaction.commit()
    assert [(k, v.size) for k, v in Things(dm).items()] == [('a', 1), ('b', 2)]
    assert repr(Things(dm)).startswith('<Things ')
