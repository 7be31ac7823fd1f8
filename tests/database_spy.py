"""A client that records every database anything asks it for.

For the command line's tests (``tests/test_cli_reach.py``,
``tests/test_cli_hostile.py``: ``main(argv, client=DatabaseSpy(client))``)
and the hostile matrix's data managers (``tests/test_hostile.py``):
afterwards ``spy.databases`` holds the name of every database the command
or data manager got hold of (by item or attribute access, ``get_database``,
``get_default_database`` or ``drop_database``), whether or not it then
read or wrote there.  Nothing reaches a database without a ``Database``
object, and the library makes those only from the client it was given
(it never goes through a database's ``client``), so a name missing here
was never read or written.  ``contents(client, name)`` is a database's
every document as BSON bytes, for the "left byte-for-byte unchanged"
half of the oracle.
"""
import bson


class DatabaseSpy:
    """Wraps a client (PyMongo's or the stand-in); records database names
    in ``databases`` (a list, in the order asked)."""

    def __init__(self, client):
        self._client = client
        self.databases = []

    def __getitem__(self, name):
        self.databases.append(name)
        return self._client[name]

    def get_database(self, name=None, *args, **kwargs):
        db = self._client.get_database(name, *args, **kwargs)
        self.databases.append(db.name)
        return db

    def get_default_database(self, *args, **kwargs):
        db = self._client.get_default_database(*args, **kwargs)
        self.databases.append(db.name)
        return db

    def drop_database(self, name, *args, **kwargs):
        self.databases.append(getattr(name, 'name', name))
        return self._client.drop_database(name, *args, **kwargs)

    def __getattr__(self, name):
        value = getattr(self._client, name)
        if type(value).__name__ == 'Database':
            self.databases.append(name)
        return value


def contents(client, name):
    """``{collection: sorted BSON bytes of its documents}`` of database
    ``name`` (system collections left out)."""
    db = client[name]
    found = {}
    for coll in sorted(db.list_collection_names()):
        if coll.startswith('system.'):
            continue
        found[coll] = sorted(bson.encode(doc) for doc in db[coll].find())
    return found
