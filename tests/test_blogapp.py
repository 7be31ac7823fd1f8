"""The example web application (``examples/blogapp.py``) through WebTest,
and the Pyramid layer it uses (``config.include('mongopersist.pyramid')``).

Each view is requested as a browser would, and the tests check the pages
and the documents stored.  A request whose commit conflicts is run again
(pyramid_retry) and answers as if nothing happened.
"""
import importlib.util
import os
import sys

import pytest
import transaction
import webtest
from bson.objectid import ObjectId
from pyramid.config import Configurator
from pyramid.response import Response
from pyramid.testing import DummyRequest

import mongopersist
from mongopersist import pyramid as mp_pyramid
from mongopersist import settings as settings_module
from mongopersist.store import Store
from tests.model import Simple

EXAMPLES = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'examples')


def load_example(name):
    """The module ``examples/<name>.py`` (it puts ``examples/`` on the path)."""
    spec = importlib.util.spec_from_file_location(
        'mongopersist_example_' + name, os.path.join(EXAMPLES, name + '.py'))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module     # Pyramid looks its caller up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def blogapp():
    return load_example('blogapp')


def wsgi_app(blogapp, store):
    """The application with the settings of ``blogapp.ini`` on ``store``."""
    return blogapp.main(store=store, **blogapp.settings())


@pytest.fixture
def store(client, dbname):
    return Store(client, dbname, trusted_modules=('blogmodel',))


@pytest.fixture
def app(blogapp, store):
    return webtest.TestApp(wsgi_app(blogapp, store))


def add_post(app, **fields):
    form = {'title': 'Hello', 'author': 'Ann', 'email': 'ann@example.com',
            'body': 'First!', 'tags': 'news, python'}
    form.update(fields)
    response = app.post('/posts/add', form, status=303)
    return response.location.rsplit('/', 1)[1]


def test_an_empty_blog_is_created_and_listed(app, db):
    page = app.get('/')
    assert '<h1>Notes on persistence</h1>' in page.text
    assert 'No posts yet.' in page.text
    assert [doc['title'] for doc in db['blogs'].find()] == [
        'Notes on persistence']


def test_add_stores_the_post_its_author_and_likes(app, db, dbname):
    form = app.get('/posts/add')
    assert '<form method="post">' in form.text
    post_id = add_post(app)
    (post,) = db['posts'].find()
    author = db['authors'].find_one({'name': 'Ann'})
    assert str(post['_id']) == post_id
    assert post['title'] == 'Hello' and post['tags'] == ['news', 'python']
    assert post['author'].id == author['_id']
    counter = db['counters'].find_one({'_id': post['likes'].id})
    assert counter['value'] == 0 and counter['log'] == []
    (blog,) = db['blogs'].find()
    assert [ref.id for ref in blog['posts']] == [post['_id']]
    # A second post by the same author refers to the same document.
    add_post(app, title='Again')
    assert db['authors'].count_documents({}) == 1


def test_add_refuses_a_post_without_title(app, db):
    page = app.post('/posts/add', {'title': ' ', 'author': 'Ann'},
                    status=400)
    assert 'A post needs a title and an author.' in page.text
    assert db['posts'].count_documents({}) == 0


def test_show_lists_the_post_and_its_comments(app):
    post_id = add_post(app, body='Some <b>text</b>')
    app.post('/posts/%s/comments' % post_id,
             {'who': 'Bob', 'text': 'Nice & short'}, status=303)
    page = app.get('/posts/%s' % post_id)
    assert '<h1>Hello</h1>' in page.text
    assert 'by Ann &lt;ann@example.com&gt;' in page.text
    assert 'Some &lt;b&gt;text&lt;/b&gt;' in page.text
    assert '<b>Bob</b>: Nice &amp; short' in page.text
    assert '0 likes' in page.text


def test_comments_are_stored_in_the_post(app, db):
    post_id = add_post(app)
    app.post('/posts/%s/comments' % post_id, {'who': '', 'text': 'Hi'},
             status=303)
    app.post('/posts/%s/comments' % post_id, {'who': 'X', 'text': ' '},
             status=303)
    (post,) = db['posts'].find()
    assert [(c['who'], c['text']) for c in post['comments']] == [
        ('anonymous', 'Hi')]


def test_edit_changes_the_stored_post(app, db):
    post_id = add_post(app)
    form = app.get('/posts/%s/edit' % post_id)
    assert 'value="Hello"' in form.text and 'First!' in form.text
    app.post('/posts/%s/edit' % post_id,
             {'title': 'Hello, again', 'body': 'Edited', 'tags': 'a b'},
             status=303)
    (post,) = db['posts'].find()
    assert (post['title'], post['body'], post['tags']) == (
        'Hello, again', 'Edited', ['a', 'b'])
    page = app.post('/posts/%s/edit' % post_id, {'title': ''}, status=400)
    assert 'A post needs a title.' in page.text
    assert db['posts'].find_one()['title'] == 'Hello, again'


def test_like_counts_and_logs(app, db):
    post_id = add_post(app)
    url = '/posts/%s/like' % post_id
    assert app.post(url, {'who': 'Bob'}, headers={
        'Accept': 'application/json'}).json == {'likes': 1}
    app.post(url, {}, status=303)
    counter = db['counters'].find_one()
    assert counter['value'] == 2 and counter['log'] == ['Bob', 'anonymous']
    assert '2 likes (last: Bob, anonymous)' in app.get(
        '/posts/%s' % post_id).text


def test_authors_lists_who_wrote_what(app):
    add_post(app, author='Zoe', title='Z post')
    add_post(app, author='Ann', title='A post')
    page = app.get('/authors')
    assert page.text.index('Ann &lt;') < page.text.index('Zoe &lt;')
    assert '>Z post</a>' in page.text
    assert '1 comments' not in app.get('/').text
    assert 'A post</a> by Ann, 0 comments, 0 likes' in app.get('/').text


def test_unknown_posts_are_not_found(app):
    app.get('/posts/nonsense', status=404)
    app.get('/posts/%s' % ObjectId(), status=404)
    app.post('/posts/%s/like' % ObjectId(), status=404)


def test_a_conflicting_request_is_retried(blogapp, client, dbname, db):
    """The first attempt's commit conflicts with a like committed by
    somebody else in the meantime; pyramid_retry runs the request again,
    which counts on top of it."""
    outside = Store(client, dbname, trusted_modules=('blogmodel',))
    store = InterferingStore(client, dbname, trusted_modules=('blogmodel',))
    app = webtest.TestApp(wsgi_app(blogapp, store))
    post_id = add_post(app)
    oid = ObjectId(post_id)

    def like_from_outside():
        with outside.transaction() as dm:
            post = dm.find_one_object(blogapp.Post, {'_id': oid})
            post.likes.increment('outside')
    store.interfere = like_from_outside
    store.commits = 0
    response = app.post('/posts/%s/like' % post_id, {'who': 'web'},
                        headers={'Accept': 'application/json'})
    assert response.status_int == 200
    assert response.json == {'likes': 2}
    assert store.commits == 2       # the conflicting one and the retry
    counter = db['counters'].find_one()
    assert counter['value'] == 2 and counter['log'] == ['outside', 'web']


class InterferingStore(Store):
    """Runs ``interfere()`` once, just before a request's commit."""

    interfere = None
    commits = 0

    def open(self, transaction_manager=None):
        dm = super().open(transaction_manager)
        dm.transaction_manager.registerSynch(self)
        return dm

    def beforeCompletion(self, txn):
        if txn.status != 'Active':
            return
        self.commits += 1
        interfere, self.interfere = self.interfere, None
        if interfere is not None:
            interfere()

    def afterCompletion(self, txn):
        pass

    def newTransaction(self, txn):
        pass


# -- the Pyramid layer itself ----------------------------------------------------
def test_the_ini_file_configures_a_store(blogapp, monkeypatch):
    monkeypatch.delenv('MONGODB_URI', raising=False)
    settings = blogapp.settings()
    assert settings['retry.attempts'] == '40'
    # The posts live in var/data of the source tree (a file:// store);
    # reading the settings starts no server.
    found = settings_module.from_text(settings)
    assert found.directory == os.path.join(
        os.path.dirname(EXAMPLES), 'var', 'data')
    # The same settings on the stand-in, to see the store they make.
    settings['mongopersist.uri'] = 'memory://'
    with pytest.warns(mongopersist.InMemoryStoreWarning):
        store = mongopersist.store_from_settings(settings)
    assert store.database == 'mongopersist_blog_app'
    assert store.trusted_modules == ('blogmodel',)
    assert store.detect_conflicts is True


def test_include_makes_the_store_from_the_settings():
    config = Configurator(settings={'mongopersist.uri': 'memory://',
                                    'mongopersist.database': 'site',
                                    'mongopersist.detect_conflicts': 'true'})
    with pytest.warns(mongopersist.InMemoryStoreWarning):
        config.include('mongopersist.pyramid')
    store = config.registry['mongopersist.store']
    assert isinstance(store, Store)
    assert store.database == 'site' and store.in_memory


def test_include_refuses_bad_settings():
    config = Configurator(settings={'mongopersist.database': 'site',
                                    'mongopersist.retries': '3'})
    with pytest.raises(mongopersist.ConfigurationError,
                       match='unknown setting mongopersist.retries'):
        config.include('mongopersist.pyramid')


def test_request_dm_is_bound_to_request_tm_and_made_once(store, db):
    seen = []
    managers = []

    def view(request):
        dm = request.dm
        seen.append(dm)
        managers.append(request.tm)
        assert dm is request.dm
        assert dm.transaction_manager is request.tm
        assert request.tm is not transaction.manager
        dm.root[request.params['name']] = Simple(x=1)
        if 'fail' in request.params:
            raise RuntimeError('the view failed')
        return Response('ok')

    config = Configurator(settings={
        'tm.manager_hook': 'pyramid_tm.explicit_manager'})
    config.registry['mongopersist.store'] = store
    config.include('mongopersist.pyramid')
    config.add_route('view', '/')
    config.add_view(view, route_name='view')
    app = webtest.TestApp(config.make_wsgi_app())
    app.get('/', {'name': 'a'})
    app.get('/', {'name': 'b'})
    with pytest.raises(RuntimeError):
        app.get('/', {'name': 'c', 'fail': '1'})
    # One request at a time: each got the data manager the one before
    # gave back to the pool, bound to its own request.tm.
    assert len(set(map(id, seen))) == 1
    assert len(set(map(id, managers))) == 3
    assert len(store.pool) == 1
    # Committed by pyramid_tm; the failed request's write taken back.
    assert sorted(doc['name'] for doc in db['persistence_root'].find()) == [
        'a', 'b']


def test_a_store_in_the_environ_wins(blogapp, store, client, dbname):
    registered = Store(client, dbname + '_other',
                       trusted_modules=('blogmodel',))
    try:
        blogapp.create_blog(store, title='The environ blog')
        app = webtest.TestApp(wsgi_app(blogapp, registered),
                              extra_environ={'mongopersist.store': store})
        assert '<h1>The environ blog</h1>' in app.get('/').text
        request = DummyRequest(environ={'mongopersist.store': store})
        assert mp_pyramid.get_store(request) is store
    finally:
        client.drop_database(dbname + '_other')


def test_no_store_is_a_clear_error():
    request = DummyRequest()
    request.registry = Configurator().registry
    with pytest.raises(LookupError, match="config.include"):
        mp_pyramid.get_store(request)
