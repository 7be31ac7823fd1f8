"""MongoEngine with ``Document`` classes equivalent to the object graph.

MongoEngine uses the very client of the other MongoDB systems (passed as
``mongo_client_class``), so it runs on the same backend: mongomock, or the
server of ``MONGODB_URI``.  (MongoEngine 0.27 removed its ``mongomock://``
URLs in favour of ``mongo_client_class``.)
"""
import time

import bson
import mongoengine as me
from bson.objectid import ObjectId

from benchmarks import model
from benchmarks.systems import System

ALIAS = 'mongopersist-benchmarks'


class MEAddress(me.Document):
    street = me.StringField()
    city = me.StringField()
    zip_code = me.StringField()
    meta = {'collection': model.ADDRESS_COLLECTION, 'db_alias': ALIAS}


class MEPhone(me.EmbeddedDocument):
    country = me.StringField()
    area = me.StringField()
    number = me.StringField()


class MEPerson(me.Document):
    name = me.StringField()
    email = me.StringField()
    birthday = me.DateField()
    tags = me.ListField(me.StringField())
    scores = me.DictField()
    address = me.ReferenceField(MEAddress)
    phone = me.EmbeddedDocumentField(MEPhone)
    # Only set by the conflict-detecting modify (a save condition).
    version = me.IntField()
    meta = {'collection': model.PERSON_COLLECTION, 'db_alias': ALIAS}


class _Shared:
    """The shared client, as MongoEngine gets it: ``disconnect()`` closes
    the client it holds, and the other systems still need this one."""

    def __init__(self, client):
        self._client = client

    def __getattr__(self, name):
        return getattr(self._client, name)

    def __getitem__(self, name):
        return self._client[name]

    def close(self):
        pass


class MongoEngine(System):
    name = 'mongoengine'

    def __init__(self, context):
        super().__init__(context)
        self.db_name = context.database_name(self.name)
        client = _Shared(context.client)
        me.connect(db=self.db_name, alias=ALIAS, uuidRepresentation='standard',
                   mongo_client_class=lambda **settings: client)

    def close(self):
        me.disconnect(ALIAS)
        self.context.client.drop_database(self.db_name)

    def _documents(self, with_ids=False):
        addresses = [MEAddress(id=ObjectId(), street=a.street, city=a.city,
                               zip_code=a.zip_code)
                     for a in self.dataset.addresses]
        people = []
        for s in self.dataset.persons:
            person = MEPerson(
                name=s.name, email=s.email, birthday=s.birthday,
                tags=list(s.tags), scores=dict(s.scores),
                address=addresses[s.address],
                phone=MEPhone(country=s.phone[0], area=s.phone[1],
                              number=s.phone[2]))
            if with_ids:
                person.id = ObjectId()
            people.append(person)
        return addresses, people

    # -- scenarios ---------------------------------------------------------
    def insert(self, measure, run):
        MEPerson.drop_collection()
        MEAddress.drop_collection()
        with measure:
            addresses, people = self._documents()
            MEAddress.objects.insert(addresses, load_bulk=False)
            MEPerson.objects.insert(people, load_bulk=False)

    def cold_load(self, measure, run):
        with measure:
            for person in MEPerson.objects:
                person.name

    def cold_walk(self, measure, run):
        with measure:
            for person in MEPerson.objects:
                person.address.city

    def one_object(self, measure, run):
        ids = [person.id for person in MEPerson.objects.only('id')]
        wanted = [ids[i] for i in self.dataset.requested(run)]
        with measure:
            for doc_id in wanted:
                person = MEPerson.objects.get(id=doc_id)
                person.name = model.renamed(person.name, run)
                person.save()

    def modify(self, measure, run):
        people = list(MEPerson.objects)
        with measure:
            for person in people[::model.MODIFY_STEP]:
                person.name = model.renamed(person.name, run)
                person.scores['math'] = run
                person.save()

    def modify_conflicts(self, measure, run):
        people = list(MEPerson.objects)
        with measure:
            for person in people[::model.MODIFY_STEP]:
                person.name = model.renamed(person.name, run)
                person.scores['math'] = run
                version = person.version
                person.version = (version or 0) + 1
                # Raises SaveConditionError if someone else saved meanwhile.
                person.save(save_condition={'version': version})

    def warm(self, measure, run):
        """No cache: each transaction queries the held documents again."""
        ids = [p.id for p in MEPerson.objects.only('id')][::model.MODIFY_STEP]
        with measure:
            for number in range(model.WARM_TRANSACTIONS):
                stamp = run * model.WARM_TRANSACTIONS + number
                people = list(MEPerson.objects(id__in=ids))
                for person in people:
                    person.name
                for person in model.warm_changes(people, number):
                    person.name = model.renamed(person.name, stamp)
                    version = person.version
                    person.version = (version or 0) + 1
                    person.save(save_condition={'version': version})

    warm_implicit = warm

    def serialize(self, measure, run):
        people = self._documents(with_ids=True)[1]
        with measure:
            start = time.perf_counter()
            docs = [person.to_mongo() for person in people]
            measure.part('documents', time.perf_counter() - start)
            encoded = [bson.encode(doc) for doc in docs]
        return encoded

    def deserialize(self, measure, run):
        data = [bson.encode(person.to_mongo())
                for person in self._documents(with_ids=True)[1]]
        with measure:
            docs = [bson.decode(raw) for raw in data]
            start = time.perf_counter()
            objects = [MEPerson._from_son(doc) for doc in docs]
            measure.part('objects', time.perf_counter() - start)
        return objects
