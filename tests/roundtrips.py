"""Counting round trips to MongoDB, per collection, for tests.

``RoundTrips`` counts the reads and writes a client sends, per collection
name:

* reads: ``find`` (and ``getMore``), ``find_one``, ``aggregate``,
  ``count_documents``/``count``, ``estimated_document_count``, ``distinct``;
* writes: inserts, updates, replaces, deletes, ``bulk_write`` and
  ``find_one_and_*`` (findAndModify);
* anything else (index creation, transactions, ...) in ``others``, by
  command name.

With ``MONGODB_URI`` set, ``counting_client()`` opens a new client to that
server with command monitoring: every command sent is counted, including
``getMore`` for further batches of a cursor.  On the stand-in (mongomock)
it wraps the given client so that each call of a collection method counts
once (a cursor is one read however it is iterated).

Use the ``roundtrips`` fixture (import it into a test module)::

    from tests.roundtrips import roundtrips  # noqa: F401 (fixture)

    def test_listing(roundtrips, dbname):
        dm = MongoDataManager(roundtrips.client, default_database=dbname)
        ...
        roundtrips.reset()
        list(container.keys())
        assert roundtrips.reads_total <= 2
"""
import collections
import os

import pytest

from mongopersist import testing

READ_COMMANDS = frozenset(['find', 'getMore', 'aggregate', 'count',
                           'distinct'])
WRITE_COMMANDS = frozenset(['insert', 'update', 'delete', 'findAndModify'])

READ_METHODS = frozenset([
    'find', 'find_one', 'find_raw_batches', 'aggregate', 'count_documents',
    'estimated_document_count', 'distinct'])
WRITE_METHODS = frozenset([
    'insert_one', 'insert_many', 'update_one', 'update_many', 'replace_one',
    'delete_one', 'delete_many', 'bulk_write', 'find_one_and_delete',
    'find_one_and_replace', 'find_one_and_update'])
OTHER_METHODS = frozenset([
    'create_index', 'create_indexes', 'drop_index', 'drop_indexes', 'drop',
    'rename', 'index_information', 'list_indexes', 'options'])


class RoundTrips:
    """Counts of reads and writes sent to MongoDB, per collection name."""

    def __init__(self):
        self.client = None
        self._own_client = False
        self.reset()

    def reset(self):
        """Start counting from zero."""
        self.reads = collections.Counter()
        self.writes = collections.Counter()
        self.others = collections.Counter()
        self.log = []

    def record(self, kind, database, collection, name):
        """Count one ``kind`` ('read', 'write', 'other') round trip."""
        self.log.append((kind, database, collection, name))
        if kind == 'read':
            self.reads[collection] += 1
        elif kind == 'write':
            self.writes[collection] += 1
        else:
            self.others[name] += 1

    @property
    def reads_total(self):
        return sum(self.reads.values())

    @property
    def writes_total(self):
        return sum(self.writes.values())

    @property
    def total(self):
        return self.reads_total + self.writes_total + sum(
            self.others.values())

    def __repr__(self):
        return '<RoundTrips reads=%s writes=%s others=%s>' % (
            dict(self.reads), dict(self.writes), dict(self.others))

    # pymongo.monitoring.CommandListener (real server) --------------------
    def started(self, event):
        name = event.command_name
        if name in READ_COMMANDS:
            kind = 'read'
        elif name in WRITE_COMMANDS:
            kind = 'write'
        else:
            kind = 'other'
        if name == 'getMore':
            collection = event.command.get('collection')
        else:
            collection = event.command.get(name)
        if not isinstance(collection, str):
            collection = None
        self.record(kind, event.database_name, collection, name)

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass

    def close(self):
        if self._own_client and self.client is not None:
            self.client.close()
        self.client = None


def counting_client(base=None):
    """Return a ``RoundTrips`` whose ``client`` counts what it sends.

    On a real server (``MONGODB_URI``) the client is new (close it with
    ``close()``); on the stand-in it wraps ``base`` (default: a new
    stand-in client).
    """
    trips = RoundTrips()
    uri = os.environ.get(testing.URI_VARIABLE)
    if uri:
        import pymongo
        from pymongo import monitoring

        class Listener(monitoring.CommandListener):
            started = staticmethod(trips.started)
            succeeded = staticmethod(trips.succeeded)
            failed = staticmethod(trips.failed)

        trips.client = pymongo.MongoClient(uri, event_listeners=[Listener()])
        trips._own_client = True
    else:
        trips.client = _CountingClient(base or testing.client(), trips)
    return trips


class _Proxy:
    def __init__(self, target, trips):
        self._target = target
        self._trips = trips

    def __getattr__(self, name):
        if name in ('_target', '_trips'):
            raise AttributeError(name)
        return self._wrap(getattr(self._target, name))

    def __getitem__(self, name):
        return self._wrap(self._target[name])

    def _wrap(self, value):
        return value

    def __eq__(self, other):
        if isinstance(other, _Proxy):
            other = other._target
        return self._target == other

    def __hash__(self):
        return hash(self._target)

    def __repr__(self):
        return 'Counting(%r)' % (self._target,)


class _CountingClient(_Proxy):
    def _wrap(self, value):
        import mongomock
        if isinstance(value, mongomock.database.Database):
            return _CountingDatabase(value, self._trips)
        return value

    def get_database(self, *args, **kwargs):
        return self._wrap(self._target.get_database(*args, **kwargs))

    def get_default_database(self, *args, **kwargs):
        return self._wrap(self._target.get_default_database(*args, **kwargs))


class _CountingDatabase(_Proxy):
    def _wrap(self, value):
        import mongomock
        if isinstance(value, mongomock.collection.Collection):
            return _CountingCollection(value, self._trips)
        return value

    def get_collection(self, *args, **kwargs):
        return self._wrap(self._target.get_collection(*args, **kwargs))


class _CountingCollection(_Proxy):
    def _wrap(self, value):
        import mongomock
        if isinstance(value, mongomock.collection.Collection):
            return _CountingCollection(value, self._trips)
        return value

    def __getattr__(self, name):
        value = super().__getattr__(name)
        if name in READ_METHODS:
            kind = 'read'
        elif name in WRITE_METHODS:
            kind = 'write'
        elif name in OTHER_METHODS:
            kind = 'other'
        else:
            return value
        target, trips = self._target, self._trips

        def counted(*args, **kwargs):
            trips.record(kind, target.database.name, target.name, name)
            return value(*args, **kwargs)
        return counted


@pytest.fixture
def roundtrips(client):
    """A ``RoundTrips`` with a counting ``client`` (see module docstring)."""
    trips = counting_client(client)
    yield trips
    trips.close()
