"""The example application (``examples/blog.py``, run by ``make demo``).

The tests run the demo's ``main`` on the test client and a database of
their own, and check the documents it stored and what it loaded back.
"""
import datetime
import importlib.util
import io
import os

import pytest
from bson.dbref import DBRef
from bson.objectid import ObjectId

EXAMPLES = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'examples')


@pytest.fixture(scope='module')
def blog():
    """The ``examples/blog.py`` module (it puts ``examples/`` on the path)."""
    spec = importlib.util.spec_from_file_location(
        'mongopersist_example_blog', os.path.join(EXAMPLES, 'blog.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def demo(blog, client, dbname):
    """Run the demo; return (summary, returned documents, printed text)."""
    out = io.StringIO()
    summary, documents = blog.main(client=client, dbname=dbname, out=out)
    return summary, documents, out.getvalue()


def without_ids(docs):
    return [{k: v for k, v in doc.items() if k != '_id'} for doc in docs]


def test_authors_are_plain_documents(demo, db):
    authors = sorted(db['authors'].find(), key=lambda doc: doc['name'])
    assert without_ids(authors) == [
        {'name': 'Roy', 'email': 'roy@example.com'},
        {'name': 'Stephan', 'email': 'stephan@example.com'},
    ]
    assert all(isinstance(doc['_id'], ObjectId) for doc in authors)


def test_posts_reference_authors_and_embed_comments(demo, db, dbname):
    author_ids = {doc['name']: doc['_id'] for doc in db['authors'].find()}
    posts = sorted(db['posts'].find(), key=lambda doc: doc['published'])
    assert without_ids(posts) == [
        {'title': 'Objects in MongoDB, the easy way',
         'body': 'Persistent objects, stored as documents.',
         'author': DBRef('authors', author_ids['Stephan'], dbname),
         'tags': ['mongodb', 'python'],
         'published': datetime.datetime(2024, 3, 1, 9, 30),
         'comments': [{'_py_persistent_type': 'blogmodel.Comment',
                       'who': 'Roy',
                       'text': 'Nice! Very readable documents.',
                       'written': datetime.datetime(2024, 3, 1, 11, 5)}]},
        {'title': 'Transactions',
         'body': 'Nothing is written until commit.',
         'author': DBRef('authors', author_ids['Roy'], dbname),
         'tags': ['transactions', 'python'],
         'published': datetime.datetime(2024, 3, 2, 17, 0),
         'comments': [{'_py_persistent_type': 'blogmodel.Comment',
                       'who': 'Stephan', 'text': 'Agreed.',
                       'written': datetime.datetime(2024, 3, 3, 8, 15)}]},
    ]
    # Comments are sub-objects: they have no collection of their own.
    assert 'blogmodel.Comment' not in db.list_collection_names()


def test_blog_is_the_root_and_lists_its_posts(demo, db, dbname):
    posts = sorted(db['posts'].find(), key=lambda doc: doc['published'])
    blogs = list(db['blogs'].find())
    assert len(blogs) == 1
    assert blogs[0]['title'] == 'Notes on persistence'
    assert blogs[0]['posts'] == [
        DBRef('posts', doc['_id'], dbname) for doc in posts]
    root = list(db['persistence_root'].find({}, {'_id': False}))
    assert root == [
        {'name': 'blog', 'ref': DBRef('blogs', blogs[0]['_id'], dbname)}]


def test_returned_documents_are_what_is_stored(demo, db):
    summary, documents, printed = demo
    for name, docs in documents.items():
        assert docs == list(db[name].find().sort('_id')), name
    assert documents['posts'] and documents['authors']


def test_fresh_data_manager_loads_the_edited_blog(demo):
    summary, documents, printed = demo
    assert summary == {
        'title': 'Notes on persistence',
        'posts': [
            {'title': 'Objects in MongoDB, the easy way',
             'author': 'Stephan', 'author_class': 'Author',
             'tags': ['mongodb', 'python'],
             'comments': [('Comment', 'Roy',
                           'Nice! Very readable documents.')]},
            {'title': 'Transactions', 'author': 'Roy',
             'author_class': 'Author',
             'tags': ['transactions', 'python'],
             'comments': [('Comment', 'Stephan', 'Agreed.')]},
        ]}


def test_demo_prints_what_it_loaded_and_stored(demo, dbname):
    summary, documents, printed = demo
    assert ('Objects in MongoDB, the easy way by Stephan '
            '<stephan@example.com> on 2024-03-01') in printed
    assert '    Roy: Nice! Very readable documents.' in printed
    assert '%s.posts:' % dbname in printed
    assert "'_py_persistent_type': 'blogmodel.Comment'" in printed
    assert 'Posts tagged "python" (a plain MongoDB query): 2' in printed


def test_demo_starts_from_an_empty_database(blog, client, dbname, db):
    blog.main(client=client, dbname=dbname, out=io.StringIO())
    blog.main(client=client, dbname=dbname, out=io.StringIO())
    assert db['posts'].count_documents({}) == 2
    assert db['authors'].count_documents({}) == 2
    assert db['persistence_root'].count_documents({}) == 1
