"""Declared indexes (``ensure_indexes``) and unique-index violations.

A commit that breaks a unique index raises ``UniqueIndexError`` naming the
index, the collection and the duplicate values; without server
transactions an abort takes back what the commit wrote, with them nothing
of the commit is written (wire level, through the scripted mongos).
"""
import datetime

import persistent
import pymongo
import pytest
import transaction
from pymongo import IndexModel

from mongopersist import indexes, interfaces
from mongopersist.datamanager import MongoDataManager
from tests.scripted_mongos import ScriptedMongos
from tests.sharded_model import Account, Blog, Post


class Place(persistent.Persistent):
    _p_mongo_collection = 'places'
    _p_mongo_indexes = [
        IndexModel([('where', pymongo.GEOSPHERE)]),
        IndexModel([('name', 1), ('city', -1)], name='name_city'),
        IndexModel('seen', expireAfterSeconds=3600),
        IndexModel('code', unique=True, sparse=True),
    ]


def index_keys(db, collection):
    return {name: list(info['key']) for name, info in
            db[collection].index_information().items()}


def test_ensure_indexes_creates_what_is_declared(dm, db):
    created = dm.ensure_indexes(Place, Post)
    assert sorted((c.collection, c.name) for c in created) == [
        ('places', 'code_1'), ('places', 'name_city'),
        ('places', 'seen_1'), ('places', 'where_2dsphere'),
        ('posts', 'author_1_title_1')]
    assert created[0] == indexes.CreatedIndex(
        dm.default_database, 'places', 'where_2dsphere',
        [('where', '2dsphere')])
    keys = index_keys(db, 'places')
    assert keys['name_city'] == [('name', 1), ('city', -1)]
    info = db['places'].index_information()
    assert info['seen_1']['expireAfterSeconds'] == 3600
    assert info['code_1']['unique'] and info['code_1']['sparse']
    assert db['posts'].index_information()['author_1_title_1']['unique']


def test_ensure_indexes_is_idempotent(dm, db):
    dm.ensure_indexes(Place)
    before = db['places'].index_information()
    assert dm.ensure_indexes(Place) == []
    assert dm.ensure_indexes(Place, Place, Blog) == []
    assert db['places'].index_information() == before


def test_an_index_of_the_same_keys_under_another_name_counts(dm, db):
    db['places'].create_index([('name', 1), ('city', -1)], name='other')
    created = dm.ensure_indexes(Place)
    assert 'name_city' not in [c.name for c in created]
    assert 'name_city' not in db['places'].index_information()


def test_ensure_indexes_never_drops_or_changes_an_index(dm, db):
    db['accounts'].create_index('email')          # not unique
    before = db['accounts'].index_information()
    with pytest.raises(interfaces.IndexConflictError) as info:
        dm.ensure_indexes(Account)
    assert 'email_1' in str(info.value) and 'accounts' in str(info.value)
    assert 'never drops' in str(info.value)
    assert db['accounts'].index_information() == before
    assert not before['email_1'].get('unique')
    db['places'].create_index('seen', expireAfterSeconds=60)
    with pytest.raises(interfaces.IndexConflictError, match='seen_1'):
        dm.ensure_indexes(Place)
    assert db['places'].index_information()['seen_1'][
        'expireAfterSeconds'] == 60


def test_a_flag_declared_false_is_the_flag_left_out(dm, db):
    """MongoDB reads ``unique``, ``sparse`` and ``hidden`` as flags that
    are false unless set, and lists one only where it was given (some
    servers list ``unique: false`` anyway): an index made without one is
    the index declared with it false, and neither is told as an option."""
    class Code(persistent.Persistent):
        _p_mongo_collection = 'codes'
        _p_mongo_indexes = [IndexModel('code', unique=False, sparse=False)]

    db['codes'].create_index('code')
    assert indexes.missing_indexes(dm, Code) == []
    assert dm.ensure_indexes(Code) == []
    db['codes'].drop_index('code_1')
    db['codes'].create_index('code', unique=True)
    with pytest.raises(interfaces.IndexConflictError) as info:
        dm.ensure_indexes(Code)
    assert ('declared as {code: 1}, but MongoDB has code_1 as {code: 1} '
            'unique=True;' in str(info.value))


def test_missing_indexes_tells_what_would_be_created(dm, db):
    db['places'].create_index([('name', 1), ('city', -1)], name='name_city')
    missing = indexes.missing_indexes(dm, Place, Post)
    assert sorted((c.collection, c.name) for c in missing) == [
        ('places', 'code_1'), ('places', 'seen_1'),
        ('places', 'where_2dsphere'), ('posts', 'author_1_title_1')]
    assert 'posts' not in db.list_collection_names()
    assert sorted(db['places'].index_information()) == ['_id_', 'name_city']
    assert sorted(missing) == sorted(dm.ensure_indexes(Place, Post))
    assert indexes.missing_indexes(dm, Place, Post) == []
    db['accounts'].create_index('email')          # not unique
    with pytest.raises(interfaces.IndexConflictError, match='email_1'):
        indexes.missing_indexes(dm, Account)


def test_a_conflict_anywhere_creates_nothing(dm, db):
    db['accounts'].create_index('email')          # not unique
    with pytest.raises(interfaces.IndexConflictError):
        dm.ensure_indexes(Place, Account)
    assert 'places' not in db.list_collection_names()


def test_declared_indexes_must_be_index_models(dm):
    class Bad(persistent.Persistent):
        _p_mongo_indexes = [{'key': [('a', 1)]}]

    class Single(persistent.Persistent):
        _p_mongo_indexes = IndexModel('a')

    for cls in (Bad, Single):
        with pytest.raises(TypeError, match='IndexModel'):
            dm.ensure_indexes(cls)


# -- unique-index violations --------------------------------------------------
@pytest.mark.parametrize('conflicts', [False, True])
def test_unique_violation_on_insert_names_index_and_values(make_dm, db,
                                                           conflicts):
    dm = make_dm(detect_conflicts=conflicts)
    dm.ensure_indexes(Account)
    dm.insert(Account('a@example.com'))
    transaction.commit()
    dm.insert(Blog('written before the failure'))
    dm.flush()
    dm.insert(Account('b@example.com'))
    dm.insert(Account('a@example.com'))
    with pytest.raises(interfaces.UniqueIndexError) as info:
        transaction.commit()
    error = info.value
    assert (error.index, error.collection) == ('email_1', 'accounts')
    assert error.database == dm.default_database
    assert error.key == {'email': 'a@example.com'}
    assert "unique index email_1 of %s.accounts" % dm.default_database in \
        str(error)
    assert "{'email': 'a@example.com'}" in str(error)
    assert not dm.should_retry(error)
    assert isinstance(error, interfaces.CommitError)
    transaction.abort()
    # The abort took back everything the transaction wrote.
    assert [d['email'] for d in db['accounts'].find()] == ['a@example.com']
    assert db['blogs'].count_documents({}) == 0


@pytest.mark.parametrize('conflicts', [False, True])
def test_unique_violation_on_update_is_no_conflict(make_dm, db, conflicts):
    dm = make_dm(detect_conflicts=conflicts)
    dm.ensure_indexes(Account)
    first, second = Account('a@example.com'), Account('b@example.com')
    dm.insert(first)
    dm.insert(second)
    transaction.commit()
    second.email = 'a@example.com'
    with pytest.raises(interfaces.UniqueIndexError) as info:
        transaction.commit()
    transaction.abort()
    assert not isinstance(info.value, interfaces.ConflictError)
    assert info.value.oid == second._p_oid
    assert sorted(d['email'] for d in db['accounts'].find()) == [
        'a@example.com', 'b@example.com']


def test_inserting_a_taken_id_names_the_id_index(dm, db, make_dm):
    make_dm().insert(Account('a'), oid='fixed')
    transaction.commit()
    dm.insert(Account('b'), oid='fixed')
    with pytest.raises(interfaces.UniqueIndexError) as info:
        transaction.commit()
    transaction.abort()
    assert info.value.index == '_id_'
    assert info.value.key == {'_id': 'fixed'}


@pytest.fixture
def mongos():
    transaction.abort()
    server = ScriptedMongos()
    server.shard('db', 'posts', ['author', 'title'])
    yield server
    transaction.abort()
    server.stop()


def test_unique_violation_in_a_server_transaction_writes_nothing(mongos):
    client = pymongo.MongoClient(mongos.uri, serverSelectionTimeoutMS=3000)
    try:
        dm = MongoDataManager(client, default_database='db',
                              transactions='always')
        assert dm.ensure_indexes(Account, Post)
        dm.insert(Account('a@example.com'))
        transaction.commit()
        stored = {name: list(mongos.store['db'][name].find())
                  for name in ('accounts', 'blogs', 'posts')}
        dm.insert(Blog('b', [Post('Allan', 'one')]))
        dm.flush()                  # written inside the transaction
        dm.insert(Account('a@example.com'))
        with pytest.raises(interfaces.UniqueIndexError) as info:
            transaction.commit()
        transaction.abort()
        assert info.value.index == 'email_1'
        assert info.value.key == {'email': 'a@example.com'}
        assert 'nothing was committed' in str(info.value)
        assert {name: list(mongos.store['db'][name].find())
                for name in stored} == stored
        names = [name for name, doc in mongos.sent if 'txnNumber' in doc
                 and doc.get('autocommit') is False]
        assert names.count('commitTransaction') == 1     # the first commit
        assert names[-1] == 'abortTransaction'
        # The write error carried the server's keyPattern and keyValue.
        assert mongos.refused == []
    finally:
        client.close()


def test_unique_violation_without_key_details_reads_the_index(dm, db):
    """Servers that send no ``keyPattern``/``keyValue``: the index named
    in the message and the document written tell the values."""
    dm.ensure_indexes(Account)
    account = Account('a@example.com')
    dm.insert(account)
    dm.flush()
    from mongopersist import commit
    write = commit.DocumentWrite(commit.INSERT, account, account._p_oid,
                                 {'_id': 1, 'email': 'a@example.com'})
    entry = {'code': 11000, 'errmsg': 'E11000 duplicate key error '
             'collection: x.accounts index: email_1 dup key: { : "a" }'}
    found = indexes.duplicate(entry, write, db['accounts'])
    assert (found.index, found.keys, found.values) == (
        'email_1', ['email'], {'email': 'a@example.com'})
    assert not found.on_id
    unknown = indexes.duplicate({'code': 11000, 'errmsg': 'E11000'}, write,
                                db['accounts'])
    assert unknown.on_id and 'E11000' in unknown.message()
    transaction.abort()


def test_a_ttl_index_reads_the_stored_date(dm, db):
    dm.ensure_indexes(Place)
    place = Place()
    # Recent (a server's TTL monitor would remove an old one), and in
    # whole milliseconds: a BSON date, which a TTL index reads.
    place.seen = datetime.datetime.now(datetime.timezone.utc).replace(
        microsecond=0, tzinfo=None)
    dm.insert(place)
    transaction.commit()
    assert db['places'].index_information()['seen_1'][
        'expireAfterSeconds'] == 3600
    assert db['places'].find_one()['seen'] == place.seen


def test_near_queries_on_a_declared_2dsphere_index(dm, geospatial_queries):
    dm.ensure_indexes(Place)
    place = Place()
    place.where = {'type': 'Point', 'coordinates': [13.40, 52.52]}
    dm.insert(place)
    transaction.commit()
    near = {'where': {'$near': {'$geometry': {
        'type': 'Point', 'coordinates': [13.38, 52.51]},
        '$maxDistance': 5000}}}
    assert list(dm.find_objects(Place, near)) == [place]
    far = {'where': {'$near': {'$geometry': {
        'type': 'Point', 'coordinates': [2.35, 48.86]},
        '$maxDistance': 5000}}}
    assert list(dm.find_objects(Place, far)) == []


def test_the_store_ensures_indexes(client, dbname, db):
    from mongopersist.store import Store
    store = Store(client, dbname, transactions='never')
    created = store.ensure_indexes(Account, Post)
    assert sorted(c.name for c in created) == ['author_1_title_1',
                                               'email_1']
    assert store.ensure_indexes(Account, Post) == []
    assert db['accounts'].index_information()['email_1']['unique']
