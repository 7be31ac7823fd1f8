"""mongopersist: persistent objects written at ``transaction`` commit."""
import time

import bson
import transaction

from benchmarks import SCENARIOS, model
from benchmarks.systems import System
from mongopersist import speedups
from mongopersist.datamanager import MongoDataManager


def object_from_document(dm, db_name, coll_name, doc):
    """The object of a query result document (what queries use)."""
    return dm._object_from_document(db_name, coll_name, doc)


def query_all(dm, cls):
    """Every stored instance of ``cls``, as objects of ``dm``."""
    find_objects = getattr(dm, 'find_objects', None)
    if find_objects is not None:
        return find_objects(cls)
    # Until the data manager can query: its documents-to-objects seam.
    db_name, coll_name = dm._collection_name_of(cls)
    coll = dm._raw_collection(db_name, coll_name)
    return (object_from_document(dm, db_name, coll_name, doc)
            for doc in coll.find({}, session=dm._session))


class MongoPersist(System):
    name = 'mongopersist'

    def __init__(self, context):
        super().__init__(context)
        self.db_name = context.database_name(self.name)
        self.tm = transaction.TransactionManager()

    def close(self):
        self.tm.abort()
        self.context.client.drop_database(self.db_name)

    def _dm(self, **kwargs):
        return MongoDataManager(self.context.client,
                                default_database=self.db_name,
                                transaction_manager=self.tm, **kwargs)

    def _new_objects(self, dm):
        """The data set as new objects of ``dm`` (inserted, not written)."""
        addresses = self.dataset.persistent_addresses()
        people = self.dataset.persistent_people(addresses)
        for obj in addresses + people:
            dm.insert(obj)
        return people

    # -- scenarios ---------------------------------------------------------
    def insert(self, measure, run):
        self.tm.abort()
        self.context.client.drop_database(self.db_name)
        dm = self._dm()
        with measure:
            addresses = self.dataset.persistent_addresses()
            for person in self.dataset.persistent_people(addresses):
                dm.insert(person)
            self.tm.commit()

    def cold_load(self, measure, run):
        self.tm.abort()
        with measure:
            dm = self._dm()
            for person in query_all(dm, model.Person):
                person.name
        self.tm.abort()

    def cold_walk(self, measure, run):
        self.tm.abort()
        with measure:
            dm = self._dm(detect_conflicts=True)
            for person in query_all(dm, model.Person):
                person.address.city
        self.tm.abort()

    def one_object(self, measure, run):
        self.tm.abort()
        coll = self.context.client[self.db_name][model.PERSON_COLLECTION]
        ids = [doc['_id'] for doc in coll.find({}, {'_id': 1})]
        wanted = [ids[i] for i in self.dataset.requested(run)]
        with measure:
            for doc_id in wanted:
                # A request: a new data manager, one object, one commit.
                dm = self._dm(detect_conflicts=True)
                person = dm.find_one_object(model.Person, {'_id': doc_id})
                person.name = model.renamed(person.name, run)
                self.tm.commit()

    def _modify(self, measure, run, **kwargs):
        self.tm.abort()
        dm = self._dm(**kwargs)
        people = list(query_all(dm, model.Person))
        with measure:
            for person in people[::model.MODIFY_STEP]:
                person.name = model.renamed(person.name, run)
                person.scores['math'] = run
            self.tm.commit()

    def modify(self, measure, run):
        self._modify(measure, run)

    def modify_conflicts(self, measure, run):
        self._modify(measure, run, detect_conflicts=True)

    def _warm(self, measure, run, explicit):
        """One long-lived data manager with conflict detection; the
        transactions read held objects (see ``docs/cache.rst``)."""
        self.tm.abort()
        # Stored without conflict detection by the insert scenario: give
        # the documents the serial that detection would have written.
        self.context.client[self.db_name][model.PERSON_COLLECTION].update_many(
            {'_py_serial': {'$exists': False}}, {'$set': {'_py_serial': 1}})
        tm = transaction.TransactionManager(explicit=explicit)
        dm = MongoDataManager(self.context.client,
                              default_database=self.db_name,
                              transaction_manager=tm, detect_conflicts=True)
        if explicit:
            tm.begin()
        held = list(query_all(dm, model.Person))[::model.MODIFY_STEP]
        for person in held:
            person.name
        tm.commit()
        with measure:
            for number in range(model.WARM_TRANSACTIONS):
                stamp = run * model.WARM_TRANSACTIONS + number
                if explicit:
                    tm.begin()
                for person in held:
                    person.name
                for person in model.warm_changes(held, number):
                    person.name = model.renamed(person.name, stamp)
                tm.commit()

    def warm(self, measure, run):
        """``begin()`` starts each transaction: held objects stay loaded,
        validated by one read of serials."""
        self._warm(measure, run, explicit=True)

    def warm_implicit(self, measure, run):
        """Transactions start implicitly: held objects become ghosts at
        each boundary and reload from their validated documents."""
        self._warm(measure, run, explicit=False)

    def serialize(self, measure, run):
        self.tm.abort()
        dm = self._dm()
        people = self._new_objects(dm)
        writer = dm._writer
        with measure:
            start = time.perf_counter()
            docs = [writer.get_document(person) for person in people]
            measure.part('documents', time.perf_counter() - start)
            encoded = [bson.encode(doc) for doc in docs]
        self.tm.abort()
        return encoded

    def deserialize(self, measure, run):
        # Documents as the writer makes them; the stored data set has
        # registered the collections' classes (as a query would need).
        self.tm.abort()
        dm = self._dm()
        data = [bson.encode(dm._writer.get_document(person))
                for person in self._new_objects(dm)]
        self.tm.abort()
        dm = self._dm()
        db_name = self.db_name
        coll_name = model.PERSON_COLLECTION
        with measure:
            docs = [bson.decode(raw) for raw in data]
            start = time.perf_counter()
            objects = [object_from_document(dm, db_name, coll_name, doc)
                       for doc in docs]
            measure.part('objects', time.perf_counter() - start)
        return objects


class MongoPersistPure(MongoPersist):
    """mongopersist on its pure-Python code (``speedups.use_compiled(False)``
    around each scenario): the reference of the compiled accelerator, and
    what runs where it is not built, measured in the same run."""
    name = 'mongopersist-pure'


def _on_python(method):
    def run(self, measure, stamp):
        before = speedups.use_compiled(False)
        try:
            return method(self, measure, stamp)
        finally:
            if before:
                speedups.use_compiled(True)
    run.__name__ = method.__name__
    run.__doc__ = method.__doc__
    return run


for _scenario in SCENARIOS:
    _name = _scenario.replace('-', '_')
    setattr(MongoPersistPure, _name, _on_python(getattr(MongoPersist, _name)))
