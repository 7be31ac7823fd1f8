"""ZODB, the object database mongopersist takes its semantics from.

The same persistent classes (``benchmarks.model``) are stored in an
``IOBTree`` under the root, on ``MappingStorage`` (in memory) or on
``FileStorage`` in a temporary directory.  Scenario runs after ``insert``
open a new ``DB`` on the storage, so they start with an empty object cache
and always see the latest data.  ZODB always detects conflicts, so its
``modify-conflicts`` runs are ordinary modify runs.  It does not talk to
MongoDB: its round trips are not counted.
"""
import glob
import os

import transaction
import ZODB
from BTrees.IOBTree import IOBTree
from ZODB.FileStorage import FileStorage
from ZODB.MappingStorage import MappingStorage
from ZODB.serialize import ObjectWriter

from benchmarks import model
from benchmarks.systems import System


class _ZODB(System):
    uses_mongodb = False

    def __init__(self, context):
        super().__init__(context)
        self.tm = transaction.TransactionManager()
        self.storage = None

    def _new_storage(self):
        raise NotImplementedError

    def close(self):
        self.tm.abort()
        if self.storage is not None:
            self.storage.close()
            self.storage = None

    def _open(self):
        """A connection of a new DB on the storage: an empty cache."""
        return ZODB.DB(self.storage).open(self.tm)

    def _loaded_people(self, conn):
        people = list(conn.root()['people'].values())
        for person in people:
            person.name
        return people

    # -- scenarios ---------------------------------------------------------
    def insert(self, measure, run):
        self.close()
        self.storage = self._new_storage()
        conn = self._open()
        root = conn.root()
        with measure:
            addresses = self.dataset.persistent_addresses()
            people = IOBTree()
            for index, person in enumerate(
                    self.dataset.persistent_people(addresses)):
                people[index] = person
            root['people'] = people
            self.tm.commit()
        conn.close()

    def cold_load(self, measure, run):
        with measure:
            conn = self._open()
            for person in conn.root()['people'].values():
                person.name
        self.tm.abort()
        conn.close()

    def cold_walk(self, measure, run):
        with measure:
            conn = self._open()
            for person in conn.root()['people'].values():
                person.address.city
        self.tm.abort()
        conn.close()

    def one_object(self, measure, run):
        db = ZODB.DB(self.storage)
        wanted = self.dataset.requested(run)
        with measure:
            for index in wanted:
                # A request: a connection (its cache warm, as a ZODB
                # application's pool keeps it), one object, one commit.
                conn = db.open(self.tm)
                person = conn.root()['people'][index]
                person.name = model.renamed(person.name, run)
                self.tm.commit()
                conn.close()

    def modify(self, measure, run):
        conn = self._open()
        people = self._loaded_people(conn)
        with measure:
            for person in people[::model.MODIFY_STEP]:
                person.name = model.renamed(person.name, run)
                person.scores['math'] = run
            self.tm.commit()
        conn.close()

    # ZODB always checks for conflicts at commit.
    modify_conflicts = modify

    def warm(self, measure, run):
        """One long-lived connection; held objects stay in its cache."""
        conn = self._open()
        held = self._loaded_people(conn)[::model.MODIFY_STEP]
        self.tm.commit()
        with measure:
            for number in range(model.WARM_TRANSACTIONS):
                stamp = run * model.WARM_TRANSACTIONS + number
                self.tm.begin()
                for person in held:
                    person.name
                for person in model.warm_changes(held, number):
                    person.name = model.renamed(person.name, stamp)
                self.tm.commit()
        conn.close()

    # The connection applies invalidations at every boundary either way.
    warm_implicit = warm

    def serialize(self, measure, run):
        conn = self._open()
        people = self._loaded_people(conn)
        with measure:
            encoded = [ObjectWriter(person).serialize(person)
                       for person in people]
        conn.close()
        return encoded

    def deserialize(self, measure, run):
        conn = self._open()
        data = [(person._p_oid, ObjectWriter(person).serialize(person))
                for person in self._loaded_people(conn)]
        conn.close()
        # What Connection.get() and setstate() do, minus the storage read.
        conn = self._open()
        reader, cache = conn._reader, conn._cache
        with measure:
            objects = []
            for oid, pickle in data:
                obj = reader.getGhost(pickle)
                reader.setGhostState(obj, pickle)
                obj._p_jar = conn
                obj._p_oid = oid
                cache[oid] = obj
                objects.append(obj)
        conn.close()
        return objects


class ZODBMapping(_ZODB):
    name = 'zodb-mapping'

    def _new_storage(self):
        return MappingStorage()


class ZODBFile(_ZODB):
    name = 'zodb-file'

    def _new_storage(self):
        path = os.path.join(self.context.tmpdir, 'bench.fs')
        for name in glob.glob(path + '*'):
            os.remove(name)
        return FileStorage(path)
