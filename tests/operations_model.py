"""Importable classes for the tests of the command line and of the
original package's formats (tests/test_cli.py, tests/test_legacy.py)."""
import enum

import persistent
import pymongo

from tests.model import Address


class Shape(enum.Enum):
    ROUND = 'round'
    SQUARE = 'square'


class Gadget:
    """A value class, to be renamed to ``Widget``."""

    def __init__(self, size):
        self.size = size

    def __eq__(self, other):
        return type(other) is type(self) and vars(other) == vars(self)


class Widget(Gadget):
    """What ``Gadget`` is renamed to."""


class Part(persistent.Persistent):
    """A sub-object, stored inside its owner."""
    _p_mongo_sub_object = True

    def __init__(self, label):
        self.label = label


class Box(persistent.Persistent):
    """A persistent class in a collection of its own."""
    _p_mongo_collection = 'boxes'

    def __init__(self, name, content=None):
        self.name = name
        self.content = content


class Crate(Box):
    """Shares the ``boxes`` collection (documents name their class)."""


class Indexed(persistent.Persistent):
    """Declares its indexes."""
    _p_mongo_collection = 'indexed'
    _p_mongo_indexes = [
        pymongo.IndexModel([('name', pymongo.ASCENDING)], name='by_name',
                           unique=True),
        pymongo.IndexModel([('when', pymongo.DESCENDING),
                            ('name', pymongo.ASCENDING)], name='recent'),
    ]


class Sharded(persistent.Persistent):
    """Declares a shard key."""
    _p_mongo_collection = 'sharded'
    _p_mongo_shard_key = ('region', 'name')

    def __init__(self, region, name):
        self.region = region
        self.name = name


class Marker:
    """Objects pickled by name: ``__reduce__`` returns the name."""

    def __init__(self, name):
        self.name = name

    def __reduce__(self):
        return self.name

    def __repr__(self):
        return '<Marker %s>' % self.name


DEFAULT = Marker('DEFAULT')


def slugify(text):
    """A module-level function, stored by name."""
    return text.lower().replace(' ', '-')


class Token:
    """Reduces to itself as a factory (``_py_factory``); used only by
    ``test_class_first_stored_as_a_factory_loads_as_a_value``."""

    def __init__(self, text):
        self.text = text

    def __reduce__(self):
        return (Token, (self.text,))


class Annex(Address):
    """Joins the ``address`` collection of a database of the original
    package (tests/test_legacy.py)."""
