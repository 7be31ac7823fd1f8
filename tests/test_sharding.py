"""Shard keys: every write and load targeted, and the global-query guard.

The commands the library sends are recorded by a scripted mongos
(tests/scripted_mongos.py: mongomock behind the wire protocol, answering
``hello`` as a mongos and refusing what a mongos refuses).  Every
single-document write and every load of a sharded class must carry
``_id`` and the shard key; the scripted mongos is strict about it (an
``_id``-only write is refused, where a real one would broadcast it).
"""
import logging

import bson
import pymongo
import pytest
import transaction
from bson.dbref import DBRef
from pymongo.errors import OperationFailure

from mongopersist import interfaces, metadata, sharding
from mongopersist.container import MongoContainer
from mongopersist.datamanager import MongoDataManager
from mongopersist.mapping import MongoCollectionMapping
from tests.scripted_mongos import ScriptedMongos
from tests.sharded_model import Account, Blog, Post, Visit

KEY = ('author', 'title')


@pytest.fixture
def mongos():
    transaction.abort()
    server = ScriptedMongos()
    server.shard('db', 'posts', KEY)
    server.shard('db', 'visits', ['user'])
    yield server
    transaction.abort()
    server.stop()


@pytest.fixture
def mongos_client(mongos):
    client = pymongo.MongoClient(mongos.uri, serverSelectionTimeoutMS=3000)
    yield client
    client.close()


def make(mongos_client, **kwargs):
    kwargs.setdefault('default_database', 'db')
    return MongoDataManager(mongos_client, **kwargs)


def commands(mongos, name, collection='posts'):
    return mongos.docs(name, collection)


def filters(mongos, collection='posts'):
    """Every filter a write or read of ``collection`` carried."""
    found = []
    for doc in commands(mongos, 'update', collection):
        found += [('update', item['q'], item.get('upsert', False))
                  for item in doc['updates']]
    for doc in commands(mongos, 'delete', collection):
        found += [('delete', item['q'], False) for item in doc['deletes']]
    for doc in commands(mongos, 'findAndModify', collection):
        # A single update or delete that learns what it replaced.
        found.append(('findAndModify', doc['query'],
                      doc.get('upsert', False)))
    for doc in commands(mongos, 'find', collection):
        found.append(('find', doc.get('filter', {}), False))
    return found


def assert_targeted(query):
    """``query`` pins ``_id`` and the whole shard key (in each ``$or``
    clause, if it has some)."""
    clauses = query['$or'] if set(query) == {'$or'} else [query]
    for clause in clauses:
        assert '_id' in clause, query
        for field in KEY:
            assert field in clause and not isinstance(
                clause[field], dict), query


MODES = [pytest.param('never', False, id='no-txn'),
         pytest.param('never', True, id='no-txn-conflicts'),
         pytest.param('always', False, id='txn'),
         pytest.param('always', True, id='txn-conflicts')]


def life_of_a_blog(mongos_client, transactions, conflicts):
    """Insert, reference, load, update, batch-check, remove posts."""
    dm = make(mongos_client, transactions=transactions,
              detect_conflicts=conflicts)
    posts = [Post('Allan', 'one'), Post('Allan', 'two'), Post('Bo', 'one')]
    dm.root['blog'] = Blog('b', posts)
    transaction.commit()
    # A fresh data manager loads by reference, changes two posts in one
    # commit (one batched read of their versions) and removes the third.
    dm2 = make(mongos_client, transactions=transactions,
               detect_conflicts=conflicts)
    blog = dm2.root['blog']
    first, second, third = blog.posts
    assert [p.title for p in blog.posts] == ['one', 'two', 'one']
    first.body = 'changed'
    second.body = 'changed too'
    dm2.remove(third)
    blog.posts.remove(third)
    transaction.commit()
    # The next transaction: with conflict detection the object cache
    # validates the posts it holds (one read of their serials).
    assert [p.body for p in dm2.root['blog'].posts] == [
        'changed', 'changed too']
    transaction.abort()
    return dm2


@pytest.mark.parametrize('transactions, conflicts', MODES)
def test_every_write_and_load_carries_the_shard_key(
        mongos, mongos_client, transactions, conflicts):
    life_of_a_blog(mongos_client, transactions, conflicts)
    assert mongos.refused == []
    # Inserts: each document holds the whole shard key.
    inserted = [doc for command in commands(mongos, 'insert')
                for doc in command['documents']]
    assert len(inserted) == 3
    assert all(doc['author'] and doc['title'] for doc in inserted)
    # References carry it as extra DBRef fields.
    blog = mongos.store['db']['blogs'].find_one()
    for ref, doc in zip(blog['posts'], inserted):
        assert ref.as_doc() == {'$ref': 'posts', '$id': doc['_id'],
                                '$db': 'db', 'author': doc['author'],
                                'title': doc['title']}
    # Loads, updates (conflict-checked upserts with detection), deletes
    # and the batched read of stored versions: _id and the shard key.
    sent = filters(mongos)
    kinds = {kind for kind, _, _ in sent}
    assert {'find', 'update', 'delete'} <= kinds
    for kind, query, upsert in sent:
        assert_targeted(query)
    assert any(upsert for _, _, upsert in sent) == conflicts
    loads = [q for kind, q, _ in sent if kind == 'find']
    assert len(loads) >= 3
    # The stored versions of the two changed posts and the removed one
    # were read in one batch, grouped by shard-key value.
    assert any(set(q) == {'$or'} and len(q['$or']) == 3 for q in loads)
    # So were the serials the object cache validates.
    validations = [doc['filter'] for doc in commands(mongos, 'find')
                   if '_py_serial' in (doc.get('projection') or {})]
    if conflicts:
        assert any(set(q) == {'$or'} and len(q['$or']) == 2
                   for q in validations), validations


@pytest.mark.parametrize('transactions, conflicts', MODES[:2])
def test_abort_takes_writes_back_targeted(mongos, mongos_client,
                                         transactions, conflicts):
    dm = make(mongos_client, transactions=transactions,
              detect_conflicts=conflicts)
    dm.root['blog'] = blog = Blog('b', [Post('Allan', 'one')])
    transaction.commit()
    blog.posts[0].body = 'flushed'
    blog.posts.append(Post('Allan', 'new'))
    dm.flush()
    transaction.abort()
    stored = list(mongos.store['db']['posts'].find({}, {'_id': 0}))
    # (An abort with conflict detection puts the version back under a new
    # serial, marked as put back: ``_py_restored``; ``_py_write`` is the
    # id of the write that stored the version.)
    assert [{k: v for k, v in d.items()
             if k not in ('_py_serial', '_py_restored', '_py_write')}
            for d in stored] == [{'author': 'Allan', 'title': 'one',
                                  'body': ''}]
    assert mongos.refused == []
    for kind, query, _ in filters(mongos):
        assert_targeted(query)
    # The undo: a replace and a delete, both targeted.
    undo_deletes = [item['q'] for doc in commands(mongos, 'delete')
                    for item in doc['deletes']]
    assert len(undo_deletes) == 1


def test_a_write_sent_alone_is_targeted(mongos, mongos_client):
    # Without conflict detection a lone update (or delete) is one
    # findAndModify that learns the version it replaces.
    dm = make(mongos_client, transactions='never')
    dm.root['blog'] = blog = Blog('b', [Post('Allan', 'one')])
    transaction.commit()
    blog.posts[0].body = 'changed'
    transaction.commit()
    dm.remove(blog.posts[0])
    transaction.commit()
    alone = commands(mongos, 'findAndModify')
    assert len(alone) == 2 and alone[1].get('remove')
    for doc in alone:
        assert_targeted(doc['query'])
    assert mongos.refused == []
    assert mongos.store['db']['posts'].count_documents({}) == 0


def test_scripted_mongos_refuses_untargeted_writes(mongos, mongos_client):
    coll = mongos_client['db']['posts']
    coll.insert_one({'_id': 1, 'author': 'a', 'title': 't'})
    with pytest.raises(OperationFailure) as info:
        coll.update_one({'_id': 1}, {'$set': {'x': 1}}, upsert=True)
    assert info.value.code == 61
    with pytest.raises(OperationFailure) as info:
        coll.delete_one({'_id': 1})
    assert info.value.code == 72
    coll.update_one({'_id': 1, 'author': 'a', 'title': 't'},
                    {'$set': {'x': 1}}, upsert=True)
    assert coll.find_one({'_id': 1, 'author': 'a', 'title': 't'})['x'] == 1


class UndeclaredPost(Post):
    """Stored in the sharded collection but declaring no shard key: what
    a library that does not know the key sends is refused."""
    _p_mongo_shard_key = None


def test_without_the_declaration_mongos_refuses_the_commit(
        mongos, mongos_client):
    dm = make(mongos_client, transactions='never', detect_conflicts=True)
    post = UndeclaredPost('Allan', 'one')
    dm.insert(post)
    transaction.commit()
    post.body = 'x'
    with pytest.raises(interfaces.CommitError) as info:
        transaction.commit()
    transaction.abort()
    assert info.value.cause.code == 61
    assert 'could not extract exact shard key' in str(info.value)
    assert mongos.refused


def test_changing_the_shard_key_outside_a_transaction_is_refused(
        mongos, mongos_client):
    dm = make(mongos_client, transactions='never', detect_conflicts=True)
    dm.root['blog'] = blog = Blog('b', [Post('Allan', 'one')])
    transaction.commit()
    before = list(mongos.store['db']['posts'].find())
    blog.posts[0].title = 'renamed'
    blog.posts[0].body = 'and changed'
    with pytest.raises(interfaces.ShardKeyError) as info:
        transaction.commit()
    transaction.abort()
    assert info.value.fields == ('title',)
    assert "title: 'one' -> 'renamed'" in str(info.value)
    assert 'refused before writing anything' in str(info.value)
    assert list(mongos.store['db']['posts'].find()) == before
    assert mongos.refused == []


def test_changing_the_shard_key_inside_a_transaction(mongos, mongos_client):
    dm = make(mongos_client, transactions='always', detect_conflicts=True)
    dm.root['blog'] = blog = Blog('b', [Post('Allan', 'one'),
                                        Post('Allan', 'two')])
    transaction.commit()
    blog.posts[0].title = 'renamed'
    blog.posts[1].body = 'changed'
    blog._p_changed = True          # its reference is written anew
    transaction.commit()
    assert mongos.refused == []
    stored = {d['title']: d for d in mongos.store['db']['posts'].find()}
    assert set(stored) == {'renamed', 'two'}
    # The move went in a batch of its own, filtered on the old key.
    updates = [doc['updates'] for doc in commands(mongos, 'update')
               if 'txnNumber' in doc]
    moves = [batch for batch in updates if any(
        item['u'].get('$set', {}).get('title') == 'renamed'
        for item in batch)]
    assert len(moves) == 1 and len(moves[0]) == 1
    assert moves[0][0]['q']['title'] == 'one'
    # The blog's reference now carries the new key; a fresh data manager
    # loads the moved post targeted.
    refs = mongos.store['db']['blogs'].find_one()['posts']
    assert refs[0].as_doc()['title'] == 'renamed'
    dm2 = make(mongos_client, transactions='never')
    assert dm2.root['blog'].posts[0].title == 'renamed'
    last = commands(mongos, 'find')[-1]['filter']
    assert_targeted(last)
    clauses = last['$or'] if '$or' in last else [last]
    assert ('Allan', 'renamed') in [(c['author'], c['title'])
                                    for c in clauses]


def test_a_stale_reference_is_followed_by_id(mongos, mongos_client, caplog):
    dm = make(mongos_client, transactions='always')
    dm.root['blog'] = blog = Blog('b', [Post('Allan', 'one')])
    transaction.commit()
    blog.posts[0].title = 'renamed'       # the blog is not written again
    transaction.commit()
    dm2 = make(mongos_client, transactions='never')
    with caplog.at_level(logging.WARNING, logger='mongopersist'):
        post = dm2.root['blog'].posts[0]
        assert post.title == 'renamed'
    assert 'are not the document' in caplog.text
    assert post._p_oid.routing == {'author': 'Allan', 'title': 'renamed'}


def test_batched_read_groups_ids_by_shard_key():
    oids = []
    for author, title, doc_id in [('a', 't', 1), ('a', 't', 2),
                                  ('b', 't', 3), (None, None, 4)]:
        oid = metadata.OID('posts', doc_id, 'db')
        if author:
            oid.routing = {'author': author, 'title': title}
        oids.append(oid)
    query = sharding.refs_filter(oids)
    assert query == {'$or': [
        {'_id': {'$in': [1, 2]}, 'author': 'a', 'title': 't'},
        {'_id': 3, 'author': 'b', 'title': 't'},
        {'_id': {'$in': [4]}}]}
    assert sharding.batch_filter([(1, {'author': 'a'})]) == {
        '_id': 1, 'author': 'a'}


def test_journal_intents_name_the_shard_key(dm):
    from mongopersist import journal
    dm.insert(Post('Allan', 'one'))
    dm.flush()                    # a flush before the commit is journaled
    intent, = journal.incomplete(dm._client, dm.root_database)
    write, = [w for w in intent.writes if w['coll'] == 'posts']
    assert write['key'] == {'author': 'Allan', 'title': 'one'}
    assert [state for _, state in intent.status(dm._client)] == ['written']
    transaction.commit()


# -- loading by references with shard-key fields -------------------------------
def stored_post(dm, db):
    dm.root['blog'] = Blog('b', [Post('Allan', 'one')])
    transaction.commit()
    return db['blogs'].find_one()


def store_reference(db, blog, ref):
    """Replace the blog's stored references by ``ref`` (a replacement
    may hold ``$`` field names on MongoDB 5.0+; ``$set`` may not)."""
    doc = dict(blog, posts=[ref])
    db['blogs'].replace_one({'_id': blog['_id']}, doc)


def test_references_carry_the_shard_key(dm, db):
    blog = stored_post(dm, db)
    ref = blog['posts'][0]
    assert ref.as_doc() == {'$ref': 'posts', '$id': ref.id,
                            '$db': dm.default_database, 'author': 'Allan',
                            'title': 'one'}
    # References to unsharded classes stay plain.
    root = db['persistence_root'].find_one({'name': 'blog'})
    assert root['ref'].as_doc() == {'$ref': 'blogs', '$id': blog['_id'],
                                    '$db': dm.default_database}


@pytest.mark.parametrize('value', [
    {'$ne': None}, {'$where': 'sleep(1000)'}, bson.Regex('.*'), ['Allan'],
    bson.Code('function () { return true; }'), bson.MinKey()],
    ids=['operator', 'where', 'regex', 'array', 'code', 'minkey'])
def test_hostile_shard_key_value_in_a_reference_is_refused(
        make_dm, dm, db, value):
    blog = stored_post(dm, db)
    ref = blog['posts'][0]
    store_reference(db, blog, DBRef('posts', ref.id, ref.database,
                                    author=value, title='one'))
    before = list(db['posts'].find())
    with pytest.raises(interfaces.StoredDataError) as info:
        make_dm().root['blog'].posts
    assert 'shard-key value author' in str(info.value)
    assert 'blogs' in str(info.value) and repr(blog['_id']) in str(
        info.value)
    assert list(db['posts'].find()) == before


def test_extra_reference_fields_that_are_no_shard_key_are_ignored(
        make_dm, dm, db):
    blog = stored_post(dm, db)
    ref = blog['posts'][0]
    store_reference(db, blog, DBRef(
        'posts', ref.id, ref.database, author='Allan', title='one',
        **{'$where': 'sleep(1000)', 'other': {'$ne': 1}}))
    post = make_dm().root['blog'].posts[0]
    assert post._p_oid.routing == {'author': 'Allan', 'title': 'one'}
    assert post.title == 'one'


def test_reference_loads_use_the_shard_key(make_dm, dm, db, monkeypatch):
    stored_post(dm, db)
    sent = []
    find_one = pymongo.collection.Collection.find_one

    def recording(self, *args, **kwargs):
        sent.append((self.name, args[0] if args else kwargs.get('filter')))
        return find_one(self, *args, **kwargs)
    dm2 = make_dm()
    blog = dm2.root['blog']
    coll = type(dm2._raw_collection(dm2.default_database, 'posts'))
    monkeypatch.setattr(coll, 'find_one', recording)
    assert blog.posts[0].title == 'one'
    assert [q for name, q in sent if name == 'posts'] == [
        {'_id': blog.posts[0]._p_oid.id, 'author': 'Allan', 'title': 'one'}]


def test_root_entries_of_sharded_objects_carry_the_key(dm, db, make_dm):
    dm.root['post'] = post = Post('Allan', 'one')
    entry = db['persistence_root'].find_one({'name': 'post'})
    assert entry['ref'].as_doc() == {
        '$ref': 'posts', '$id': post._p_oid.id, '$db': dm.default_database,
        'author': 'Allan', 'title': 'one'}
    transaction.commit()
    loaded = make_dm().root['post']
    assert loaded._p_oid.routing == {'author': 'Allan', 'title': 'one'}
    assert loaded.title == 'one'
    # Setting the entry again, then aborting, puts the entry back.
    dm.root['post'] = Post('Bo', 'two')
    transaction.abort()
    assert db['persistence_root'].find_one({'name': 'post'})['ref'] == \
        entry['ref']
    assert db['posts'].count_documents({}) == 1


def test_load_by_a_reference_with_the_key(dm, db, make_dm):
    blog = stored_post(dm, db)
    other = make_dm()
    post = other.load(blog['posts'][0])
    assert post._p_oid.routing == {'author': 'Allan', 'title': 'one'}
    assert other.load(blog['posts'][0]) is post
    assert other.load(DBRef('posts', post._p_oid.id, dm.default_database)) \
        is post


def test_a_new_document_must_hold_its_shard_key(dm, db):
    post = Post('Allan', 'one')
    del post.title
    dm.insert(post)
    with pytest.raises(interfaces.ShardKeyError) as info:
        transaction.commit()
    transaction.abort()
    assert info.value.fields == ('title',)
    assert 'posts' not in db.list_collection_names() or \
        db['posts'].count_documents({}) == 0


# -- the global-query guard ---------------------------------------------------
@pytest.fixture
def posts(dm):
    for author, title in [('Allan', 'one'), ('Allan', 'two'), ('Bo', 'one')]:
        dm.insert(Post(author, title))
    transaction.commit()
    return dm


@pytest.mark.parametrize('query, found', [
    ({'author': 'Allan', 'title': 'one'}, 1),
    ({'author': 'Allan', 'title': {'$eq': 'one'}}, 1),
    ({'author': {'$in': ['Allan', 'Bo']}, 'title': 'one'}, 2),
    ({'author': 'Allan'}, 2),                    # a prefix of a range key
    ({'author': 'Allan', 'title': {'$gt': 'a'}}, 2),
    ({'$and': [{'author': 'Allan'}, {'title': 'two'}]}, 1),
    ({'$or': [{'author': 'Allan', 'title': 'one'},
              {'author': 'Bo', 'title': 'one'}]}, 2),
], ids=['full', 'eq', 'in', 'prefix', 'prefix-range', 'and', 'or'])
def test_targeted_queries_pass(posts, query, found):
    assert len(list(posts.find_objects(Post, query))) == found
    assert posts.count(Post, query) == found
    assert posts.find_one_object(Post, query) is not None


@pytest.mark.parametrize('query, missing', [
    ({}, ('author', 'title')),
    (None, ('author', 'title')),
    ({'title': 'one'}, ('author',)),
    ({'author': {'$gt': 'A'}, 'title': 'one'}, ('author',)),
    ({'author': {'$regex': '^A'}}, ('author', 'title')),
    ({'author': bson.Regex('^A')}, ('author', 'title')),
    ({'$or': [{'author': 'Allan'}, {'title': 'one'}]}, ('author', 'title')),
    ({'_id': 1}, ('author', 'title')),
], ids=['empty', 'none', 'not-a-prefix', 'range', 'regex-op', 'regex',
        'or-open', 'id-only'])
def test_global_queries_are_refused(posts, query, missing):
    for run in (lambda: list(posts.find_objects(Post, query)),
                lambda: posts.find_one_object(Post, query),
                lambda: posts.count(Post, query)):
        with pytest.raises(interfaces.GlobalQueryError) as info:
            run()
        assert info.value.missing == missing
        assert 'Missing fields were %s' % ', '.join(missing) in str(
            info.value)
    assert len(list(posts.find_objects(Post, query, allow_global=True))) \
        >= 0
    assert posts.count(Post, query, allow_global=True) >= 0


def test_allow_global(posts):
    assert posts.count(Post, {'title': 'one'}, allow_global=True) == 2
    found = posts.find_one_object(Post, {'title': 'two'}, allow_global=True)
    assert (found.author, found.title) == ('Allan', 'two')
    assert len(list(posts.find_objects(Post, allow_global=True))) == 3


def test_hashed_keys_need_the_field(dm):
    dm.insert(Visit('u1', '/'))
    transaction.commit()
    assert dm.count(Visit, {'user': 'u1'}) == 1
    assert dm.count(Visit, {'user': {'$in': ['u1', 'u2']}}) == 1
    with pytest.raises(interfaces.GlobalQueryError):
        dm.count(Visit, {'user': {'$gt': 'u'}})
    with pytest.raises(interfaces.GlobalQueryError):
        dm.count(Visit, {'page': '/'})


def test_unsharded_classes_are_not_guarded(dm):
    assert dm.count(Account, {}) == 0
    assert dm.count(Blog) == 0


def test_the_guard_can_warn_per_data_manager(posts):
    posts.global_queries = 'warn'
    with pytest.warns(interfaces.GlobalQueryWarning, match='title') as got:
        assert posts.count(Post, {'author': {'$exists': True}}) == 3
    # The warning names the line that queried.
    assert got[0].filename == __file__
    mapping = PostsByTitle(posts)
    with pytest.warns(interfaces.GlobalQueryWarning) as got:
        assert len(mapping) == 3
    assert got[0].filename == __file__
    posts.global_queries = 'error'
    with pytest.raises(interfaces.GlobalQueryError):
        posts.count(Post, {})


def test_the_guard_can_warn_process_wide(posts):
    assert sharding.global_queries() == 'error'
    try:
        sharding.global_queries('warn')
        with pytest.warns(interfaces.GlobalQueryWarning):
            assert posts.count(Post, {}) == 3
    finally:
        sharding.global_queries('error')
    with pytest.raises(ValueError):
        sharding.global_queries('ignore')


class PostsByTitle(MongoCollectionMapping):
    __mongo_collection__ = 'posts'
    __mongo_mapping_key__ = 'title'


def test_mapping_over_a_sharded_collection_is_guarded(posts):
    with pytest.raises(interfaces.GlobalQueryError, match='author'):
        PostsByTitle(posts)['one']
    with pytest.raises(interfaces.GlobalQueryError):
        len(PostsByTitle(posts))
    mapping = PostsByTitle(posts, allow_global=True)
    assert sorted(mapping.keys()) == ['one', 'one', 'two']
    assert len(mapping) == 3


class PostsByTitleIn(MongoContainer):
    _m_item_class = Post
    _m_mapping_key = 'title'


def test_container_of_sharded_items_is_guarded(dm):
    container = PostsByTitleIn()
    dm.root['c'] = container
    # Items are found by their parent reference and name: author is open.
    with pytest.raises(interfaces.GlobalQueryError, match='author'):
        container['one'] = Post('Allan', None)
    with pytest.raises(interfaces.GlobalQueryError, match='author'):
        container.keys()
    with pytest.raises(interfaces.GlobalQueryError, match='author'):
        len(container)
    with pytest.raises(interfaces.GlobalQueryError, match='author'):
        list(container.find({'body': ''}))
    assert len(list(container.find({'author': 'Allan'}))) == 0
    allowed = PostsByTitleIn(allow_global=True)
    dm.root['d'] = allowed
    allowed['two'] = Post('Allan', None)
    transaction.commit()
    assert allowed.keys() == ['two']
    assert len(allowed) == 1
    assert allowed['two'].author == 'Allan'
    assert list(container.find(allow_global=True)) == []


# -- declarations -------------------------------------------------------------
def test_shard_key_declarations():
    assert metadata.shard_key(Post).fields == KEY
    assert metadata.shard_key(Visit).hashed == frozenset(['user'])
    assert metadata.shard_key(Visit).spec == [('user', 'hashed')]
    assert metadata.shard_key(Blog) is None
    for bad in ['author', (), ('a', 'a'), (('a', 'hashed'), ('b', 'hashed')),
                (('a', -1),), ('$a',), 5]:
        cls = type('Bad', (Post,), {'_p_mongo_shard_key': bad})
        with pytest.raises(TypeError):
            metadata.shard_key(cls)


def test_the_store_can_make_the_guard_warn(client, dbname):
    from mongopersist.store import Store
    store = Store(client, dbname, transactions='never')
    dm = store.open(transaction.TransactionManager())
    with pytest.raises(interfaces.GlobalQueryError):
        dm.count(Post, {})
    store.global_queries = 'warn'
    dm = store.open(transaction.TransactionManager())
    with pytest.warns(interfaces.GlobalQueryWarning):
        assert dm.count(Post, {}) == 0
