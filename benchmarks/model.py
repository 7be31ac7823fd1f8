"""The benchmark's object graph and the data set every system stores.

A ``Person`` has a name, an email, a birthday (``datetime.date``), a list of
tags, a dict of scores, a reference to a persistent ``Address`` (ten people
share one address) and a non-persistent ``Phone`` value object.  The same
persistent classes serve mongopersist and ZODB; the plain-dict and
MongoEngine equivalents are built from the same ``PersonSpec`` records.
"""
import collections
import datetime

import persistent

PERSON_COLLECTION = 'bench_person'
ADDRESS_COLLECTION = 'bench_address'

# One address per this many people.
HOUSEHOLD = 10
# Every MODIFY_STEP-th object is changed by the modify scenarios (10%).
MODIFY_STEP = 10
# One-object requests per run of the one-object scenario (at most N).
REQUESTS = 100
# The warm scenarios: this many transactions, each reading the same held
# objects (every MODIFY_STEP-th person) and changing WARM_CHANGES of them.
WARM_TRANSACTIONS = 10
WARM_CHANGES = 5

CITIES = ('Boston', 'Berlin', 'Lisbon', 'Nairobi', 'Osaka', 'Lima', 'Perth')
TAGS = ('admin', 'beta', 'customer', 'donor', 'editor', 'friend', 'guest',
        'member', 'partner', 'staff', 'vip')
SUBJECTS = ('math', 'art', 'music', 'sport')


class Address(persistent.Persistent):
    """A postal address, stored in its own collection and shared."""
    _p_mongo_collection = ADDRESS_COLLECTION

    def __init__(self, street, city, zip_code):
        self.street = street
        self.city = city
        self.zip_code = zip_code


class Phone:
    """A phone number: a value object stored inside its owner."""

    def __init__(self, country, area, number):
        self.country = country
        self.area = area
        self.number = number


class Person(persistent.Persistent):
    """The top-level object of every scenario."""
    _p_mongo_collection = PERSON_COLLECTION

    def __init__(self, name, email, birthday, tags, scores, address, phone):
        self.name = name
        self.email = email
        self.birthday = birthday
        self.tags = tags
        self.scores = scores
        self.address = address
        self.phone = phone


AddressSpec = collections.namedtuple(
    'AddressSpec', 'street city zip_code')
PersonSpec = collections.namedtuple(
    'PersonSpec', 'name email birthday tags scores address phone')


class Dataset:
    """``n`` people and their addresses, as plain values.

    ``person.address`` is an index into ``addresses``; ``tags`` and
    ``scores`` are tuples (systems copy them into their own containers);
    ``phone`` is a ``(country, area, number)`` tuple.
    """

    def __init__(self, n):
        self.n = n
        self.addresses = [
            AddressSpec('%d Main Street' % i, CITIES[i % len(CITIES)],
                        '%05d' % (10000 + i))
            for i in range(max(1, n // HOUSEHOLD))]
        self.persons = [self._person(i) for i in range(n)]

    def _person(self, i):
        tags = tuple(TAGS[(i * k) % len(TAGS)] for k in range(1, 2 + i % 3))
        scores = tuple((subject, (i * (k + 3)) % 100)
                       for k, subject in enumerate(SUBJECTS))
        return PersonSpec(
            name='Person %d' % i,
            email='person%d@example.com' % i,
            birthday=datetime.date(1950 + i % 50, 1 + i % 12, 1 + i % 28),
            tags=tags,
            scores=scores,
            address=i // HOUSEHOLD % len(self.addresses),
            phone=('+1', '%03d' % (200 + i % 800), '%07d' % i))

    @property
    def request_count(self):
        """How many one-object requests the one-object scenario makes."""
        return min(self.n, REQUESTS)

    def requested(self, run):
        """The indexes of the people the one-object requests of ``run``
        change (spread over the data set)."""
        count = self.request_count
        return [(run * 7 + i * (self.n // count)) % self.n
                for i in range(count)]

    @property
    def modified_count(self):
        """How many objects the modify scenarios change."""
        return len(range(0, self.n, MODIFY_STEP))

    # -- the persistent objects of mongopersist and ZODB --------------------
    def persistent_addresses(self):
        return [Address(*spec) for spec in self.addresses]

    def persistent_people(self, addresses):
        return [Person(s.name, s.email, s.birthday, list(s.tags),
                       dict(s.scores), addresses[s.address], Phone(*s.phone))
                for s in self.persons]


def warm_changes(held, transaction):
    """Which of the ``held`` objects warm transaction ``transaction``
    changes (``WARM_CHANGES`` of them, a different few each time)."""
    count = min(WARM_CHANGES, len(held))
    start = transaction * WARM_CHANGES
    return [held[(start + i) % len(held)] for i in range(count)]


def renamed(name, run):
    """The new name the modify scenarios give in run ``run``."""
    return '%s #%d' % (name.split(' #')[0], run)


def to_datetime(date):
    """A ``date`` as the midnight ``datetime`` plain BSON can store."""
    return datetime.datetime(date.year, date.month, date.day)
