"""``mongopersist.testing``: choosing the client, and the mongomock shim.

The shim tests use the in-process stand-in directly, whatever backend the
rest of the suite runs on.
"""
import inspect
import uuid

import pymongo
import pytest
from pymongo import DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne

from mongopersist import testing

mongomock = pytest.importorskip('mongomock', reason='the embedded stand-in')

SORT_SUPPORTED = 'sort' in inspect.signature(UpdateOne).parameters


@pytest.fixture
def coll():
    client = testing.embedded_client()
    name = 'mp_shim_%s' % uuid.uuid4().hex[:12]
    yield client[name]['things']
    client.drop_database(name)


def test_embedded_client_is_mongomock():
    assert isinstance(testing.embedded_client(), mongomock.MongoClient)


def test_client_follows_mongodb_uri(monkeypatch):
    monkeypatch.delenv(testing.URI_VARIABLE, raising=False)
    assert not testing.uses_real_server()
    assert isinstance(testing.client(), mongomock.MongoClient)
    # No server is contacted until the first operation.
    monkeypatch.setenv(testing.URI_VARIABLE,
                       'mongodb://localhost:1/?serverSelectionTimeoutMS=1')
    assert testing.uses_real_server()
    real = testing.client()
    try:
        assert isinstance(real, pymongo.MongoClient)
    finally:
        real.close()


def test_bulk_write_with_update_and_replace(coll):
    coll.insert_many([{'_id': 1, 'n': 1}, {'_id': 2, 'n': 2},
                      {'_id': 3, 'n': 3}])
    result = coll.bulk_write([
        UpdateOne({'_id': 1}, {'$set': {'n': 10}, '$unset': {'x': ''}}),
        ReplaceOne({'_id': 2}, {'replaced': True}),
        UpdateOne({'_id': 4}, {'$set': {'n': 4}}, upsert=True),
        ReplaceOne({'_id': 5}, {'n': 5}, upsert=True),
        UpdateMany({'n': {'$gte': 3}}, {'$inc': {'n': 100}}),
        InsertOne({'_id': 6, 'n': 6}),
        DeleteOne({'_id': 3}),
    ], ordered=True)
    # (mongomock's matched_count and upserted ids differ from a server's:
    # the outcome is what counts here.)
    assert result.upserted_count == 2
    assert result.inserted_count == 1
    assert result.deleted_count == 1
    assert sorted(coll.find(), key=lambda d: d['_id']) == [
        {'_id': 1, 'n': 110}, {'_id': 2, 'replaced': True},
        {'_id': 4, 'n': 104}, {'_id': 5, 'n': 105}, {'_id': 6, 'n': 6}]


@pytest.mark.skipif(not SORT_SUPPORTED,
                    reason='this PyMongo has no sort= for UpdateOne')
@pytest.mark.parametrize('request_', [
    UpdateOne({}, {'$set': {'n': 0}}, sort={'n': 1}) if SORT_SUPPORTED
    else None,
    ReplaceOne({}, {'n': 0}, sort={'n': -1}) if SORT_SUPPORTED else None,
], ids=['UpdateOne', 'ReplaceOne'])
def test_bulk_write_refuses_a_sort(coll, request_):
    coll.insert_many([{'_id': 1, 'n': 1}, {'_id': 2, 'n': 2}])
    with pytest.raises(NotImplementedError) as info:
        coll.bulk_write([UpdateOne({'_id': 1}, {'$set': {'n': 9}}),
                         request_])
    assert 'sort' in str(info.value)
    # Nothing of the refused bulk was written.
    assert sorted(coll.find(), key=lambda d: d['_id']) == [
        {'_id': 1, 'n': 1}, {'_id': 2, 'n': 2}]


def test_patch_is_applied_once():
    from mongomock.collection import BulkOperationBuilder
    testing.patch_mongomock()
    testing.patch_mongomock()
    for name in ('add_update', 'add_replace', 'add_delete'):
        method = getattr(BulkOperationBuilder, name)
        assert method._mongopersist_shim
        # Wrapped once: the wrapped method is mongomock's own.
        assert not getattr(method.__wrapped__, '_mongopersist_shim', False)


# -- duplicate keys and geospatial queries, as a server does them ------------
def test_duplicate_key_errors_are_worded_as_a_server_words_them(coll):
    from pymongo.errors import BulkWriteError, DuplicateKeyError
    coll.create_index([('a', 1), ('b', 1)], unique=True, name='ab')
    coll.insert_one({'_id': 1, 'a': 1, 'b': 'x'})
    db = coll.database.name
    message = ('E11000 duplicate key error collection: %s.things index: ab '
               'dup key: { a: 1, b: "x" }' % db)
    with pytest.raises(DuplicateKeyError) as info:
        coll.insert_one({'_id': 2, 'a': 1, 'b': 'x'})
    assert str(info.value) == message
    assert info.value.details['keyPattern'] == {'a': 1, 'b': 1}
    assert info.value.details['keyValue'] == {'a': 1, 'b': 'x'}
    with pytest.raises(BulkWriteError) as info:
        coll.bulk_write([UpdateOne({'_id': 3}, {'$set': {'a': 1, 'b': 'x'}},
                                   upsert=True)])
    entry, = info.value.details['writeErrors']
    assert entry['errmsg'] == message
    assert entry['keyValue'] == {'a': 1, 'b': 'x'}
    with pytest.raises(BulkWriteError) as info:
        coll.insert_many([{'_id': 1}])
    entry, = info.value.details['writeErrors']
    assert 'index: _id_ dup key: { _id: 1 }' in entry['errmsg']
    assert entry['keyPattern'] == {'_id': 1}
    assert coll.count_documents({}) == 1


CITIES = {'berlin': (13.40, 52.52), 'potsdam': (13.06, 52.39),
          'paris': (2.35, 48.86), 'london': (-0.12, 51.50)}


@pytest.fixture
def cities(coll):
    for name, where in CITIES.items():
        coll.insert_one({'_id': name, 'loc': {'type': 'Point',
                                              'coordinates': list(where)}})
    return coll


def test_near_sorts_by_spherical_distance(cities):
    cities.create_index([('loc', pymongo.GEOSPHERE)])
    near = {'$geometry': {'type': 'Point', 'coordinates': [13.40, 52.52]}}
    assert [d['_id'] for d in cities.find({'loc': {'$near': near}})] == [
        'berlin', 'potsdam', 'paris', 'london']   # 878 km, 930 km
    within = dict(near, **{'$maxDistance': 30000})      # meters
    assert [d['_id'] for d in cities.find(
        {'loc': {'$nearSphere': within}})] == ['berlin', 'potsdam']


def test_near_needs_a_2dsphere_index(cities):
    near = {'$geometry': {'type': 'Point', 'coordinates': [0, 0]}}
    with pytest.raises(pymongo.errors.OperationFailure,
                       match='unable to find index for \\$geoNear'):
        list(cities.find({'loc': {'$near': near}}))


def test_geo_within_center_sphere(cities):
    # 100 km around Berlin, in radians of the earth's radius.
    query = {'loc': {'$geoWithin': {'$centerSphere': [[13.40, 52.52],
                                                      100 / 6378.1]}}}
    assert sorted(d['_id'] for d in cities.find(query)) == [
        'berlin', 'potsdam']


def test_bulk_write_reports_upserts_at_the_index_of_their_operation(coll):
    # As a server does (PyMongo maps the indexes back across the commands
    # it sends for the runs of one kind); mongomock 4.3 numbered the
    # upserts 0, 1, ...: the commit pipeline takes the index as the write
    # that lost a race.
    result = coll.bulk_write([
        InsertOne({'_id': 1}),
        UpdateOne({'_id': 2, 'v': 1}, {'$set': {'a': 1}}, upsert=True),
        UpdateOne({'_id': 1}, {'$set': {'a': 1}}, upsert=True),
        UpdateOne({'_id': 3, 'v': 1}, {'$set': {'a': 1}}, upsert=True)])
    assert result.upserted_ids == {1: 2, 3: 3}
    assert (result.inserted_count, result.matched_count) == (1, 1)
