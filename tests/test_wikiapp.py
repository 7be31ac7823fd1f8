"""The traversal example (``examples/wikiapp.py``) through WebTest, and
``mongopersist.pyramid.root_factory`` that publishes it.

Pages are found by traversal: the URL path is the path of names in the
tree of pages; links are made from the pages' ``__name__`` and
``__parent__``.  The tests request the pages as a browser would and check
the pages served and the documents stored.
"""
import string
import urllib.parse

import persistent
import pytest
import transaction
import webtest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyramid.config import Configurator
from pyramid.response import Response

import mongopersist.pyramid
from mongopersist import container
from mongopersist.store import Store
from tests.test_blogapp import load_example


@pytest.fixture(scope='module')
def wikiapp():
    return load_example('wikiapp')


@pytest.fixture
def store(client, dbname):
    return Store(client, dbname, trusted_modules=('wikimodel',))


@pytest.fixture
def app(wikiapp, store):
    return webtest.TestApp(wikiapp.main(store=store, **wikiapp.settings()))


def pages(db):
    """``{(parent id or None, key): title}`` of the stored pages."""
    return {(doc['parent'].id if doc['parent'].collection == 'pages'
             else None, doc['key']): doc['title']
            for doc in db['pages'].find()}


def test_the_appmaker_makes_the_wiki_on_the_first_request(app, db):
    assert db['pages'].count_documents({}) == 0
    front = app.get('/')
    assert 'A wiki on MongoDB' in front
    assert 'href="http://localhost/FrontPage/"' in front
    assert db['wikis'].count_documents({}) == 1
    stored = db['pages'].find_one()
    assert stored['key'] == 'FrontPage'
    assert stored['parent'].collection == 'wikis'
    # Made once: the second request finds it.
    app.get('/')
    assert db['wikis'].count_documents({}) == 1
    assert db['pages'].count_documents({}) == 1


def test_pages_are_found_by_traversal(app, db):
    page = app.get('/FrontPage/')
    assert '<h1>Front page</h1>' in page
    assert 'href="http://localhost/FrontPage/edit"' in page
    assert 'href="http://localhost/"' in page    # its parent
    app.get('/NoSuchPage', status=404)
    app.get('/FrontPage/NoSuchPage', status=404)
    app.get('/FrontPage/NoSuchPage/edit', status=404)


def test_add_edit_and_delete_pages_in_a_tree(app, db):
    app.get('/')
    added = app.post('/FrontPage/add', {'name': 'Details',
                                        'title': 'More details'})
    assert added.status_int == 303
    assert added.location == 'http://localhost/FrontPage/Details/'
    details = added.follow()
    assert '<h1>More details</h1>' in details
    assert 'href="http://localhost/FrontPage/"' in details  # up
    app.post('/FrontPage/Details/add', {'name': 'Deeper'}).follow()
    deeper = app.get('/FrontPage/Details/Deeper/')
    assert '<h1>Deeper</h1>' in deeper
    front_id = db['pages'].find_one({'key': 'FrontPage'})['_id']
    details_id = db['pages'].find_one({'key': 'Details'})['_id']
    assert pages(db) == {
        (None, 'FrontPage'): 'Front page',
        (front_id, 'Details'): 'More details',
        (details_id, 'Deeper'): 'Deeper'}
    edited = app.post('/FrontPage/Details/edit',
                      {'title': 'Details', 'text': '<b>bold</b>'})
    assert edited.location == 'http://localhost/FrontPage/Details/'
    shown = edited.follow()
    assert '&lt;b&gt;bold&lt;/b&gt;' in shown
    assert 'edits: 1' in shown
    assert db['pages'].find_one({'key': 'Details'})['text'] == '<b>bold</b>'
    form = app.get('/FrontPage/Details/edit')
    assert 'value="Details"' in form
    deleted = app.post('/FrontPage/Details/delete')
    assert deleted.location == 'http://localhost/FrontPage/'
    assert pages(db) == {(None, 'FrontPage'): 'Front page'}
    app.get('/FrontPage/Details/', status=404)


@pytest.mark.parametrize('name', ['', 'edit', 'a b', '-x', 'a/b', 'x' * 61,
                                  '$where', 'über'])
def test_bad_page_names_are_refused(app, db, name):
    app.get('/')
    app.post('/FrontPage/add', {'name': name}, status=400)
    assert pages(db) == {(None, 'FrontPage'): 'Front page'}


def test_a_name_taken_is_refused(app, db):
    app.post('/add', {'name': 'FrontPage', 'title': 'Again'}, status=409)
    assert pages(db) == {(None, 'FrontPage'): 'Front page'}


class Spot(container.MongoContained, persistent.Persistent):
    """Knows its location when the root resource hands it out."""
    _p_mongo_collection = 'spots'


def test_root_factory_without_an_appmaker_publishes_dm_root(store, db):
    def show(context, request):
        return Response('%s at %s' % (type(context).__name__,
                                      request.resource_url(context)))

    config = Configurator(root_factory=mongopersist.pyramid.root_factory)
    config.registry['mongopersist.store'] = store
    config.include('mongopersist.pyramid')
    config.add_view(show)
    app = webtest.TestApp(config.make_wsgi_app())
    for attempt in store.transaction():
        with attempt as dm:
            dm.root['thing'] = Spot()
    assert app.get('/').text == 'RootResource at http://localhost/'
    assert app.get('/thing/').text == 'Spot at http://localhost/thing/'
    app.get('/nothing/more', status=404)


# -- names from URLs: a door for outside data ---------------------------------
SEGMENT = st.text(alphabet=st.characters(
    blacklist_categories=('Cs',), max_codepoint=0x2FFF), max_size=40)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.lists(SEGMENT, min_size=1, max_size=4),
       view=st.sampled_from(['', 'edit', 'add', 'delete']))
def test_any_url_path_is_looked_up_never_run(app, db, path, view):
    """Any path (names of any text, operators and all) finds a page or
    answers 404/405; nothing is written by a GET, nothing fails."""
    app.get('/')
    before = sorted(db['pages'].find(), key=lambda doc: doc['_id'])
    url = '/' + '/'.join(urllib.parse.quote(part, safe='') for part in path)
    if view:
        url += '/' + view
    response = app.get(url, expect_errors=True)
    assert response.status_int in (200, 404), (url, response.status)
    if response.status_int == 200:
        # Only real pages (and their views) are found.
        names = [part for part in path if part]
        assert names[:1] == ['FrontPage'] or names == [] or names == [view]
    after = sorted(db['pages'].find(), key=lambda doc: doc['_id'])
    assert after == before
    transaction.abort()


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.one_of(SEGMENT, st.text(string.ascii_letters + '-_$.',
                                       max_size=70)))
def test_any_posted_name_is_added_as_a_value_or_refused(app, db, name):
    """A name from a form either is a valid page name (stored as it is,
    as the key of a new page) or is refused with 400 and nothing stored."""
    app.get('/')
    before = db['pages'].count_documents({})
    taken = db['pages'].count_documents({'key': name}) > 0
    response = app.post('/add', {'name': name}, expect_errors=True)
    valid = bool(re_name(name)) and name not in ('edit', 'add', 'delete')
    if not valid:
        assert response.status_int == 400
        assert db['pages'].count_documents({}) == before
    elif taken:
        assert response.status_int == 409
    else:
        assert response.status_int == 303
        assert db['pages'].count_documents({'key': name}) == 1
        assert db['pages'].count_documents({}) == before + 1


def re_name(name):
    import re
    return re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9_-]{0,59}', name)



@pytest.mark.filterwarnings(
    'ignore::mongopersist.store.InMemoryStoreWarning')
def test_the_ini_settings_make_the_store_and_the_appmaker(wikiapp, dbname,
                                                          client):
    # Before: mongopersist.appmaker went to the store's settings, which
    # refuse a setting they do not know.
    settings = dict(wikiapp.settings(), **{
        'mongopersist.uri': 'memory://', 'mongopersist.database': dbname})
    app = webtest.TestApp(wikiapp.main(**settings))
    assert 'href="http://localhost/FrontPage/"' in app.get('/')
    from wikimodel import appmaker
    assert app.app.registry['mongopersist.appmaker'] is appmaker
