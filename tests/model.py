"""Importable classes used by the tests."""
import persistent


class Person(persistent.Persistent):
    def __init__(self, name, phone=None, address=None, friends=None,
                 visited=(), birthday=None):
        self.name = name
        self.address = address
        self.friends = friends or {}
        self.visited = visited
        self.phone = phone
        self.birthday = birthday

    def __repr__(self):
        return '<%s %s>' % (self.__class__.__name__, self.name)


class Address(persistent.Persistent):
    _p_mongo_collection = 'address'

    def __init__(self, city, zip):
        self.city = city
        self.zip = zip

    def __repr__(self):
        return '<%s %s (%s)>' % (self.__class__.__name__, self.city, self.zip)


class ExtendedAddress(Address):
    def __init__(self, city, zip, country):
        super().__init__(city, zip)
        self.country = country


class Phone:
    def __init__(self, country, area, number):
        self.country = country
        self.area = area
        self.number = number

    def __eq__(self, other):
        return isinstance(other, Phone) and vars(self) == vars(other)


class Car(persistent.Persistent):
    _p_mongo_sub_object = True

    def __init__(self, year, make, model):
        self.year = year
        self.make = make
        self.model = model


class Counter(persistent.Persistent):
    _p_mongo_collection = 'counter'

    def __init__(self, value=0):
        self.value = value


class Simple(persistent.Persistent):
    """A bag of attributes."""

    def __init__(self, **kw):
        self.__dict__.update(kw)
