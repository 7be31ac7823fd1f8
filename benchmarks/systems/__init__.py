"""The persistence layers under test, one module each.

Every system implements one method per scenario (``insert``, ``cold_load``,
``modify``, ``modify_conflicts``, ``serialize``, ``deserialize``), called
with a ``Measure`` and a run stamp (a number unique to the run, which the
modify scenarios write so that every run changes the data).  A method does
its set-up, runs the measured work inside ``with measure:``, and cleans up
after itself.  ``insert`` leaves the data set stored for the scenarios
after it.
"""


class Context:
    """What every system shares: the data, the client, names, a temp dir."""

    def __init__(self, dataset, client, db_prefix, tmpdir, counts):
        self.dataset = dataset
        self.client = client
        self.db_prefix = db_prefix
        self.tmpdir = tmpdir
        self.counts = counts

    def database_name(self, system):
        return '%s_%s' % (self.db_prefix, system.replace('-', '_'))


class System:
    """Base class: a named system and what it talks to."""

    name = None
    # Whether the system talks to MongoDB (its round trips are counted).
    uses_mongodb = True

    def __init__(self, context):
        self.context = context
        self.dataset = context.dataset

    @property
    def counts(self):
        return self.context.counts if self.uses_mongodb else None

    def close(self):
        """Release what the system holds (databases, files, connections)."""


def all_systems():
    """Return the system classes in table order."""
    from benchmarks.systems import engine, persist, raw, zodb
    return [raw.RawPyMongo, persist.MongoPersist, persist.MongoPersistPure,
            engine.MongoEngine, zodb.ZODBMapping, zodb.ZODBFile]
