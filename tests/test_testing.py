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


# -- the _id lookup and the cursor ------------------------------------------
from bson import Int64, ObjectId  # noqa: E402
from hypothesis import given, settings, strategies as st  # noqa: E402

from mongomock.collection import Collection as _MockCollection  # noqa: E402

_OIDS = [ObjectId('%024x' % n) for n in (7, 3, 11)]
# Ids of the types the lookup handles, and stored ids of other types that
# a server (and mongomock's matcher) may still match or must not match.
_STORED_IDS = _OIDS + ['b', 'a', 'A', 1, 2, 3, Int64(5), 6.0, True, 2.5,
                      None, (('k', 1),)]
_ASKED_IDS = _OIDS + ['b', 'a', 'zz', 1, 2, 5, 6, 9]


def _scan(coll, filter):
    """What a server finds, as a sorted list of _id reprs: mongomock's own
    scan (unpatched), less the boolean ids it matches with 1 or 0 (Python
    equality; a server never matches a boolean with a number, and no
    boolean is asked for here)."""
    scan = _MockCollection._iter_documents.__wrapped__.__wrapped__
    return sorted(repr(doc['_id']) for doc in scan(coll, filter)
                  if type(doc['_id']) is not bool)


def _store(coll, ids):
    for doc_id in ids:
        doc = {'_id': dict(doc_id) if isinstance(doc_id, tuple) else doc_id,
               'v': len(repr(doc_id)) % 3}
        try:
            coll.insert_one(doc)
        except pymongo.errors.DuplicateKeyError:
            pass        # True and 1 are one key in mongomock's store


@settings(max_examples=60, deadline=None)
@given(stored=st.lists(st.sampled_from(_STORED_IDS), unique_by=repr),
       asked=st.lists(st.sampled_from(_ASKED_IDS), max_size=6),
       one=st.booleans(), extra=st.sampled_from([None, 0, 1]))
def test_id_lookup_finds_what_the_scan_finds_in_id_order(
        stored, asked, one, extra):
    coll = testing.embedded_client()['mp_shim_lookup']['things']
    coll.drop()
    _store(coll, stored)
    if one:
        filter = {'_id': asked[0] if asked else 'b'}
    else:
        filter = {'_id': {'$in': asked}}
    if extra is not None:
        filter['v'] = extra
    found = list(coll.find(filter))
    assert sorted(repr(doc['_id']) for doc in found) == _scan(coll, filter)
    assert found == sorted(found, key=testing._id_index_order)


def test_id_lookup_leaves_other_filters_to_the_scan(coll):
    coll.insert_many([{'_id': 1, 'v': 1}, {'_id': 2, 'v': 2}])
    assert testing._indexed_ids({'_id': {'$gt': 1}}) is None
    assert testing._indexed_ids({'_id': {'$in': [1, 2.0]}}) is None
    assert testing._indexed_ids({'v': 1}) is None
    assert [d['_id'] for d in coll.find({'_id': {'$gt': 1}})] == [2]
    assert [d['_id'] for d in coll.find({'_id': {'$in': [2.0]}})] == [2]


@pytest.mark.parametrize('skip,limit', [(0, 0), (2, 0), (0, 3), (2, 3),
                                        (9, 0), (0, -2), (4, 10)])
def test_cursor_returns_what_slicing_the_results_returns(coll, skip, limit):
    coll.insert_many([{'_id': n} for n in range(8)])
    cursor = coll.find({}, sort=[('_id', -1)]).skip(skip).limit(limit)
    expected = list(range(7, -1, -1))[skip:]
    if limit:
        expected = expected[:abs(limit)]
    assert [doc['_id'] for doc in cursor] == expected
    cursor.rewind()
    assert [doc['_id'] for doc in cursor] == expected
    cursor = coll.find({}).skip(skip).limit(limit)
    expected = list(range(8))[skip:]
    if limit:
        expected = expected[:abs(limit)]
    assert [cursor.next()['_id'] for _ in expected] == expected
    with pytest.raises(StopIteration):
        cursor.next()


# -- projections ------------------------------------------------------------
_DOCS = st.fixed_dictionaries(
    {'_id': st.integers(0, 5)},
    optional={'a': st.integers(), 'b': st.lists(st.integers(), max_size=3),
              'c': st.fixed_dictionaries({'d': st.integers()}),
              '_py_serial': st.integers(1, 9)})
_PROJECTIONS = st.one_of(
    st.dictionaries(st.sampled_from(['a', 'b', 'c', '_py_serial', '_id']),
                    st.sampled_from([1, True]), min_size=1),
    st.dictionaries(st.sampled_from(['a', 'b', 'c.d', '_id']),
                    st.sampled_from([0, 1, True, False]), min_size=1),
    st.just({'a': 1, '_id': 0}), st.just({}), st.none())


@settings(max_examples=100, deadline=None)
@given(doc=_DOCS, projection=_PROJECTIONS)
def test_projections_are_what_mongomock_projects(doc, projection):
    # The shim's copy of top-level inclusions, and everything it leaves to
    # mongomock, give mongomock's own result (an independent copy).
    coll = testing.embedded_client()['mp_shim_projection']['things']
    original = _MockCollection._copy_only_fields.__wrapped__
    expected = error = None
    try:
        expected = original(coll, doc, dict(projection)
                            if projection is not None else None, dict)
    except Exception as raised:  # mongomock refuses mixed projections
        error = type(raised)
    if error is not None:
        with pytest.raises(error):
            coll._copy_only_fields(doc, projection, dict)
        return
    found = coll._copy_only_fields(
        doc, dict(projection) if projection is not None else None, dict)
    assert found == expected
    for key, value in found.items():
        if isinstance(value, (list, dict)):
            assert value is not doc[key]
