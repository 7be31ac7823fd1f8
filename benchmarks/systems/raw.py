"""The baseline: raw PyMongo with plain dicts.

What a careful hand-written data layer does: ``insert_many`` per
collection, one ``find`` to read, one ``bulk_write`` of ``$set`` updates to
modify, and a version field in the update filter for conflict detection.
"""
import bson
import pymongo
from bson.objectid import ObjectId

from benchmarks import model
from benchmarks.systems import System


class RawPyMongo(System):
    name = 'pymongo'

    def __init__(self, context):
        super().__init__(context)
        self.db_name = context.database_name(self.name)
        self.db = context.client[self.db_name]
        self.people = self.db[model.PERSON_COLLECTION]
        self.addresses = self.db[model.ADDRESS_COLLECTION]

    def close(self):
        self.context.client.drop_database(self.db_name)

    # -- building documents ------------------------------------------------
    def _address_docs(self):
        return [{'_id': ObjectId(), 'street': a.street, 'city': a.city,
                 'zip_code': a.zip_code} for a in self.dataset.addresses]

    def _person_docs(self, addresses, with_id=False):
        docs = []
        for s in self.dataset.persons:
            doc = {'_id': ObjectId()} if with_id else {}
            doc.update(
                name=s.name, email=s.email,
                birthday=model.to_datetime(s.birthday),
                tags=list(s.tags), scores=dict(s.scores),
                address=addresses[s.address]['_id'],
                phone={'country': s.phone[0], 'area': s.phone[1],
                       'number': s.phone[2]})
            docs.append(doc)
        return docs

    # -- scenarios ---------------------------------------------------------
    def insert(self, measure, run):
        self.people.drop()
        self.addresses.drop()
        with measure:
            addresses = self._address_docs()
            people = self._person_docs(addresses)
            self.addresses.insert_many(addresses)
            self.people.insert_many(people)

    def cold_load(self, measure, run):
        with measure:
            for doc in self.people.find():
                doc['name']

    def cold_walk(self, measure, run):
        # What a careful data layer does: the addresses in one $in query.
        with measure:
            people = list(self.people.find())
            ids = list({doc['address'] for doc in people})
            addresses = {doc['_id']: doc for doc in self.addresses.find(
                {'_id': {'$in': ids}})}
            for doc in people:
                addresses[doc['address']]['city']

    def one_object(self, measure, run):
        ids = [doc['_id'] for doc in self.people.find({}, {'_id': 1})]
        wanted = [ids[i] for i in self.dataset.requested(run)]
        with measure:
            for doc_id in wanted:
                doc = self.people.find_one({'_id': doc_id})
                self.people.update_one(
                    {'_id': doc_id},
                    {'$set': {'name': model.renamed(doc['name'], run)}})

    def modify(self, measure, run):
        docs = list(self.people.find())
        with measure:
            requests = []
            for doc in docs[::model.MODIFY_STEP]:
                doc['name'] = model.renamed(doc['name'], run)
                doc['scores']['math'] = run
                requests.append(pymongo.UpdateOne(
                    {'_id': doc['_id']},
                    {'$set': {'name': doc['name'], 'scores.math': run}}))
            self.people.bulk_write(requests, ordered=True)

    def modify_conflicts(self, measure, run):
        docs = list(self.people.find())
        with measure:
            requests = []
            for doc in docs[::model.MODIFY_STEP]:
                doc['name'] = model.renamed(doc['name'], run)
                doc['scores']['math'] = run
                version = doc.get('_v')
                requests.append(pymongo.UpdateOne(
                    {'_id': doc['_id'], '_v': version},
                    {'$set': {'name': doc['name'], 'scores.math': run,
                              '_v': (version or 0) + 1}}))
            result = self.people.bulk_write(requests, ordered=True)
            if result.matched_count != len(requests):
                raise RuntimeError('conflict: a document changed meanwhile')

    def warm(self, measure, run):
        """Each transaction reads the held documents again (one ``$in``
        query) and updates a few, conditional on a version field."""
        ids = [doc['_id'] for doc in self.people.find(
            {}, {'_id': 1})][::model.MODIFY_STEP]
        with measure:
            for number in range(model.WARM_TRANSACTIONS):
                stamp = run * model.WARM_TRANSACTIONS + number
                docs = list(self.people.find({'_id': {'$in': ids}}))
                for doc in docs:
                    doc['name']
                requests = []
                for doc in model.warm_changes(docs, number):
                    version = doc.get('_v')
                    requests.append(pymongo.UpdateOne(
                        {'_id': doc['_id'], '_v': version},
                        {'$set': {'name': model.renamed(doc['name'], stamp),
                                  '_v': (version or 0) + 1}}))
                result = self.people.bulk_write(requests, ordered=True)
                if result.matched_count != len(requests):
                    raise RuntimeError('conflict: a document changed')

    # No transaction boundaries to tell apart.
    warm_implicit = warm

    def serialize(self, measure, run):
        docs = self._person_docs(self._address_docs(), with_id=True)
        with measure:
            encoded = [bson.encode(doc) for doc in docs]
        return encoded

    def deserialize(self, measure, run):
        data = [bson.encode(doc) for doc in
                self._person_docs(self._address_docs(), with_id=True)]
        with measure:
            decoded = [bson.decode(raw) for raw in data]
        return decoded
