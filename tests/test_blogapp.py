"""The example web application (``examples/blogapp.py``) through WebTest,
and the Pyramid layer it uses (``config.include('mongopersist.pyramid')``).

Each view is requested as a browser would, and the tests check the pages
and the documents stored.  A request whose commit conflicts is run again
(pyramid_retry) and answers as if nothing happened.
"""
import configparser
import html
import html.parser
import importlib.util
import logging
import os
import re
import sys

import pytest
import transaction
import webtest
from bson.objectid import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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
    for name in ('title', 'author', 'email', 'body', 'tags'):
        assert '<label for="%s">' % name in form.text
        assert 'id="%s" name="%s"' % (name, name) in form.text
    post_id = add_post(app, body='Line one\r\nline two\r\n\r\nNext part')
    (post,) = db['posts'].find()
    author = db['authors'].find_one({'name': 'Ann'})
    assert str(post['_id']) == post_id
    assert post['title'] == 'Hello' and post['tags'] == ['news', 'python']
    assert post['body'] == 'Line one\nline two\n\nNext part'
    assert post['author'].id == author['_id']
    counter = db['counters'].find_one({'_id': post['likes'].id})
    assert counter['value'] == 0 and counter['log'] == []
    (blog,) = db['blogs'].find()
    assert [ref.id for ref in blog['posts']] == [post['_id']]
    # A second post by the same author (the email in any case) refers to
    # the same document.
    add_post(app, title='Again', email='ANN@example.com')
    assert db['authors'].count_documents({}) == 1


def test_a_post_is_dated_when_it_is_written(app, blogapp, db):
    before = blogapp.now()
    add_post(app)
    after = blogapp.now()
    (post,) = db['posts'].find()
    assert before <= post['published'] <= after
    assert post['published'].microsecond % 1000 == 0
    assert 'edited' not in post
    page = app.get('/')
    assert '<time datetime="%sZ">' % post['published'].isoformat(
        timespec='seconds') in page.text


def test_every_refused_input_is_reported_and_nothing_stored(app, db):
    before = snapshot(db)
    page = app.post('/posts/add', {
        'title': ' ', 'author': 'A' * 81, 'email': 'not an address',
        'body': 'fine', 'tags': ' '.join('t%d' % n for n in range(11))},
        status=400)
    assert 'Please correct the 4 fields below.' in page.text
    assert errors(page.text) == {
        'title': 'A post needs a title.',
        'author': 'At most 80 characters (this has 81).',
        'email': 'That is not an email address (name@example.com).',
        'tags': 'At most 10 tags (this has 11).'}
    # What was typed is shown again, to be corrected.
    assert 'value="not an address"' in page.text
    assert '>fine</textarea>' in page.text
    assert snapshot(db) == before


def test_a_name_with_another_email_is_refused(app, db):
    add_post(app)
    before = snapshot(db)
    page = app.post('/posts/add', {'title': 'Mine', 'author': 'Ann',
                                   'email': 'someone@else.example'},
                    status=400)
    assert errors(page.text) == {
        'email': 'Ann already writes here with another email address: give '
                 'that one, or another name.'}
    assert snapshot(db) == before
    assert db['authors'].find_one({'name': 'Ann'})['email'] == (
        'ann@example.com')


def test_show_lists_the_post_and_its_comments(app, db):
    post_id = add_post(app, body='Some <b>text</b>\nand a line\n\nand more')
    app.post('/posts/%s/comments' % post_id,
             {'who': 'Bob', 'text': 'Nice & short\nreally'}, status=303)
    page = app.get('/posts/%s' % post_id)
    assert '<h1>Hello</h1>' in page.text
    assert '&lt;ann@example.com&gt;' in page.text
    # Line breaks and paragraphs kept, markup escaped.
    assert ('<div class="body"><p>Some &lt;b&gt;text&lt;/b&gt;<br>\n'
            'and a line</p><p>and more</p></div>') in page.text
    assert '<b>Bob</b>' in page.text
    assert '<p>Nice &amp; short<br>\nreally</p>' in page.text
    written = db['posts'].find_one()['comments'][0]['written']
    assert '<time datetime="%sZ">' % written.isoformat(
        timespec='seconds') in page.text
    assert '<h2>1 comment</h2>' in page.text and '0 likes' in page.text
    assert '<link rel="stylesheet" href="http://localhost/blog.css">' in (
        page.text)


def test_comments_are_stored_in_the_post(app, db):
    post_id = add_post(app)
    app.post('/posts/%s/comments' % post_id, {'who': '', 'text': 'Hi'},
             status=303)
    (post,) = db['posts'].find()
    assert [(c['who'], c['text']) for c in post['comments']] == [
        ('anonymous', 'Hi')]


def test_an_empty_comment_is_refused_and_reported(app, db):
    post_id = add_post(app)
    before = snapshot(db)
    page = app.post('/posts/%s/comments' % post_id,
                    {'who': 'Xavier', 'text': ' \r\n '}, status=400)
    assert errors(page.text) == {'text': 'A comment needs some text.'}
    assert 'id="comment-who" name="who" value="Xavier"' in page.text
    assert '<h1>Hello</h1>' in page.text      # the post, and its forms
    assert snapshot(db) == before


def test_the_stylesheet_is_served(app):
    css = app.get('/blog.css')
    assert css.content_type == 'text/css'
    assert 'header.site' in css.text and '.error' in css.text


def test_edit_changes_the_stored_post(app, db):
    post_id = add_post(app)
    form = app.get('/posts/%s/edit' % post_id).forms[0]
    assert form['title'].value == 'Hello' and form['body'].value == 'First!'
    assert int(form['serial'].value) == db['posts'].find_one()['_py_serial']
    form['title'] = 'Hello, again'
    form['body'] = 'Edited'
    form['tags'] = 'a b'
    form.submit(status=303)
    (post,) = db['posts'].find()
    assert (post['title'], post['body'], post['tags']) == (
        'Hello, again', 'Edited', ['a', 'b'])
    assert post['edited'] >= post['published']
    form = app.get('/posts/%s/edit' % post_id).forms[0]
    form['title'] = ''
    page = form.submit(status=400)
    assert errors(page.text) == {'title': 'A post needs a title.'}
    assert db['posts'].find_one()['title'] == 'Hello, again'


def test_two_tabs_editing_one_post_see_the_conflict(app, db):
    """The second save would overwrite the first: it shows both versions
    and asks, and overwrites only when told to."""
    post_id = add_post(app)
    url = '/posts/%s/edit' % post_id
    first, second = app.get(url).forms[0], app.get(url).forms[0]
    first['title'] = 'Title of the first tab'
    first.submit(status=303)
    second['title'] = 'Title of the second tab'
    second['body'] = 'Body of the second tab'
    page = second.submit(status=409)
    assert db['posts'].find_one()['title'] == 'Title of the first tab'
    assert 'Somebody else changed this post' in page.text
    theirs = page.text[page.text.index('class="theirs"'):
                       page.text.index('class="mine"')]
    assert 'Title of the first tab' in theirs and 'First!' in theirs
    mine = page.forms[0]
    assert mine['title'].value == 'Title of the second tab'
    assert mine['body'].value == 'Body of the second tab'
    # Keeping theirs is a link back to the post.
    assert 'href="http://localhost/posts/%s">Keep theirs' % post_id in (
        page.text)
    mine.submit(status=303)
    post = db['posts'].find_one()
    assert (post['title'], post['body']) == (
        'Title of the second tab', 'Body of the second tab')


def test_the_conflict_page_asks_again_if_it_changed_again(app, db):
    post_id = add_post(app)
    url = '/posts/%s/edit' % post_id
    first, second = app.get(url).forms[0], app.get(url).forms[0]
    first['title'] = 'One'
    first.submit(status=303)
    second['title'] = 'Two'
    mine = second.submit(status=409).forms[0]
    third = app.get(url).forms[0]
    third['title'] = 'Three'
    third.submit(status=303)
    mine.submit(status=409)
    assert db['posts'].find_one()['title'] == 'Three'


def test_a_comment_meanwhile_does_not_stop_an_edit(app, db):
    """A comment changes the post's document, not what the editor edits:
    the save goes through, and keeps the comment."""
    post_id = add_post(app)
    form = app.get('/posts/%s/edit' % post_id).forms[0]
    app.post('/posts/%s/comments' % post_id, {'text': 'Meanwhile'},
             status=303)
    assert db['posts'].find_one()['_py_serial'] > int(form['serial'].value)
    form['title'] = 'Edited'
    form.submit(status=303)
    post = db['posts'].find_one()
    assert post['title'] == 'Edited'
    assert [c['text'] for c in post['comments']] == ['Meanwhile']


def test_a_damaged_edit_form_is_refused(app, db):
    post_id = add_post(app)
    before = snapshot(db)
    for damaged in ({'serial': 'x'}, {'base': 'nonsense'}, {'serial': ''}):
        form = {'title': 'New', 'body': 'b', 'tags': '', 'serial': '1',
                'base': '0' * 64}
        form.update(damaged)
        page = app.post('/posts/%s/edit' % post_id, form, status=400)
        assert 'This form is damaged or out of date' in page.text
    assert snapshot(db) == before


def test_an_edit_racing_another_commit_asks(blogapp, client, dbname, db):
    """Another edit commits between this request's read and its commit:
    the library's ConflictError, the request runs again (pyramid_retry)
    and, seeing the other version, asks instead of overwriting it."""
    outside = Store(client, dbname, trusted_modules=('blogmodel',))
    store = InterferingStore(client, dbname, trusted_modules=('blogmodel',))
    app = webtest.TestApp(wsgi_app(blogapp, store))
    post_id = add_post(app)
    form = app.get('/posts/%s/edit' % post_id).forms[0]

    def edit_from_outside():
        with outside.transaction() as dm:
            post = dm.find_one_object(blogapp.Post,
                                      {'_id': ObjectId(post_id)})
            post.title = 'Saved from outside'
    store.interfere = edit_from_outside
    store.commits = 0
    form['title'] = 'Saved from the form'
    page = form.submit(status=409)
    assert store.commits == 2       # the one that conflicted, and the retry
    assert db['posts'].find_one()['title'] == 'Saved from outside'
    assert 'Saved from outside' in page.text
    assert page.forms[0]['title'].value == 'Saved from the form'


def test_like_counts_and_logs(app, db):
    post_id = add_post(app)
    url = '/posts/%s/like' % post_id
    assert app.post(url, {'who': 'Bob'}, headers={
        'Accept': 'application/json'}).json == {'likes': 1}
    assert '<p class="likes">1 like (last: Bob)</p>' in app.get(
        '/posts/%s' % post_id).text
    app.post(url, {}, status=303)
    counter = db['counters'].find_one()
    assert counter['value'] == 2 and counter['log'] == ['Bob', 'anonymous']
    assert '2 likes (last: Bob, anonymous)' in app.get(
        '/posts/%s' % post_id).text


def test_a_refused_like_is_reported(app, db):
    post_id = add_post(app)
    before = snapshot(db)
    url = '/posts/%s/like' % post_id
    page = app.post(url, {'who': 'B' * 81}, status=400)
    assert errors(page.text) == {'who': 'At most 80 characters (this has '
                                        '81).'}
    assert app.post(url, {'who': 'a\x07b'}, status=400, headers={
        'Accept': 'application/json'}).json == {'refused': {
            'who': 'Control characters are not allowed here.'}}
    assert snapshot(db) == before


def test_counts_are_singular_and_plural(app):
    post_id = add_post(app)
    assert '0 comments &middot; 0 likes' in app.get('/').text
    app.post('/posts/%s/comments' % post_id, {'text': 'One'}, status=303)
    app.post('/posts/%s/like' % post_id, {}, status=303)
    assert '1 comment &middot; 1 like<' in app.get('/').text
    app.post('/posts/%s/comments' % post_id, {'text': 'Two'}, status=303)
    app.post('/posts/%s/like' % post_id, {}, status=303)
    assert '2 comments &middot; 2 likes' in app.get('/').text


def test_authors_lists_who_wrote_what(app):
    add_post(app, author='Zoe', email='zoe@example.com', title='Z post')
    add_post(app, author='Ann', title='A post')
    page = app.get('/authors')
    assert page.text.index('<b>Ann</b>') < page.text.index('<b>Zoe</b>')
    assert '>Z post</a>' in page.text
    assert '1 post: ' in page.text
    assert 'A post</a><p class="meta">by Ann' in app.get('/').text


def test_the_newest_post_is_listed_first(app):
    add_post(app, title='Older')
    add_post(app, title='Newer')
    text = app.get('/').text
    assert text.index('>Newer</a>') < text.index('>Older</a>')


def test_unknown_posts_are_a_page_with_a_way_back(app):
    for url in ('/posts/nonsense', '/posts/%s' % ObjectId(), '/nowhere',
                '/posts/%s/edit' % ObjectId()):
        page = app.get(url, status=404)
        assert '<h1>Not found</h1>' in page.text
        assert 'href="http://localhost/blog.css"' in page.text
        assert 'class="button" href="http://localhost/">All posts' in (
            page.text)
    app.post('/posts/%s/like' % ObjectId(), status=404)
    app.post('/posts/%s/comments' % ObjectId(), {'text': 'x'}, status=404)


def test_other_methods_are_not_allowed(app):
    post_id = add_post(app)
    for url in ('/posts/%s/like' % post_id, '/posts/%s/comments' % post_id):
        page = app.get(url, status=405)
        assert page.headers['Allow'] == 'POST'
        assert 'href="http://localhost/posts/%s">Back' % post_id in page.text
    assert app.post('/posts/%s' % post_id, status=405).headers[
        'Allow'] == 'GET'
    assert app.delete('/posts/%s/edit' % post_id, status=405).headers[
        'Allow'] == 'GET, POST'
    app.head('/posts/%s' % post_id, status=200)


def test_access_log_has_a_line_per_request(app, caplog):
    post_id = add_post(app)
    with caplog.at_level(logging.INFO, logger='blogapp.access'):
        app.get('/posts/%s' % post_id)
        app.get('/posts/%s/like' % post_id, status=405)
        app.get('/a%0Aforged line', status=404)
    lines = [r.getMessage() for r in caplog.records
             if r.name == 'blogapp.access']
    assert len(lines) == 3
    assert re.fullmatch(r'\S+ GET /posts/%s 200 \d+ \d+\.\d ms'
                        % post_id, lines[0]), lines[0]
    assert ' 405 ' in lines[1]
    # A line break in the path stays quoted: one line per request.
    assert re.fullmatch(r'\S+ GET /a%0Aforged%20line 404 \d+ \S+ ms',
                        lines[2]), lines[2]


def test_the_ini_file_configures_logging():
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(os.path.join(EXAMPLES, 'blogapp.ini'))
    loggers = {parser['logger_' + key.strip()].get('qualname', ''):
               parser['logger_' + key.strip()]['level']
               for key in parser['loggers']['keys'].split(',')}
    assert loggers == {'': 'WARNING', 'mongopersist': 'INFO',
                       'blogapp': 'INFO', 'waitress': 'INFO'}
    assert parser['app:main']['blogapp.access_log'] == 'true'
    assert parser['app:main']['tm.commit_veto'] == (
        'pyramid_tm.default_commit_veto')


# -- form input from outside, generated --------------------------------------
# Each field gets empty, blank, ordinary, hostile and over-long values; the
# oracle restates the rules: what is refused, the status, every refused
# field named on the page, nothing stored on refusal, what was stored or
# shown back equal to what was typed (so nothing was read as markup).
HOSTILE = ['<script>alert(1)</script>', '"><img src=x onerror=alert(1)>',
           "' onmouseover='alert(1)", '</textarea><b>x</b>', '&amp; &lt;',
           '{"$gt": ""}', 'a\x00b', 'line\nbreak', 'tab\there', '\x85',
           '\u2028', 'Ann', 'ann@example.com', 'Zoë', '名前', '\r\n\r\n']


def around(limit):
    """Strings of ``limit - 1`` to ``limit + 1`` characters."""
    return st.builds(lambda c, n: c * n, st.sampled_from('ab<é'),
                     st.integers(limit - 1, limit + 1))


def values(limit):
    return st.one_of(st.just(''), st.just('  '), st.text(max_size=12),
                     st.sampled_from(HOSTILE), around(limit),
                     st.lists(st.sampled_from(HOSTILE), max_size=3).map(
                         ' '.join))


def control(text, allowed=''):
    return any((ord(c) < 32 or 127 <= ord(c) < 160) and c not in allowed
               for c in text)


def oracle_line(value, limit, required):
    value = value.strip()
    if not value:
        return value, required
    return value, len(value) > limit or control(value)


def oracle_text(value, limit, required):
    value = value.replace('\r\n', '\n').replace('\r', '\n').strip()
    if not value:
        return value, required
    return value, len(value) > limit or control(value, '\n\t')


def oracle_tags(value):
    tags = list(dict.fromkeys(value.replace(',', ' ').split()))
    refused = (control(value, '\t\r\n') or len(tags) > 10
               or any(len(tag) > 30 for tag in tags))
    return tags, refused


class Page(html.parser.HTMLParser):
    """The elements of a page, to see that only the application's markup
    is there and what the fields hold."""

    TAGS = {'html', 'head', 'meta', 'title', 'link', 'body', 'header', 'a',
            'nav', 'main', 'h1', 'h2', 'h3', 'footer', 'p', 'form', 'input',
            'textarea', 'label', 'small', 'span', 'div', 'button', 'ol',
            'ul', 'li', 'b', 'br', 'article', 'section', 'time'}
    ATTRIBUTES = {'lang', 'charset', 'name', 'content', 'rel', 'href',
                  'class', 'method', 'action', 'id', 'type', 'value', 'for',
                  'rows', 'novalidate', 'aria-invalid', 'aria-describedby',
                  'role', 'datetime'}

    def __init__(self, text):
        super().__init__()
        self.fields, self.texts, self.stack = {}, {}, []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        assert tag in self.TAGS, tag
        attrs = dict(attrs)
        assert set(attrs) <= self.ATTRIBUTES, attrs
        if tag == 'input' and 'id' in attrs:
            self.fields[attrs['id']] = attrs.get('value', '')
        if tag not in ('input', 'meta', 'link', 'br'):
            self.stack.append((tag, attrs.get('id') or attrs.get('class')))
            self.texts.setdefault(self.stack[-1], '')

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1][0] == tag, (self.stack, tag)
        self.stack.pop()

    def handle_data(self, data):
        for element in self.stack:
            self.texts[element] += data

    def value(self, ident):
        """What the input or textarea ``ident`` holds."""
        if ident in self.fields:
            return self.fields[ident]
        text = self.texts[('textarea', ident)]
        return text[1:] if text.startswith('\n') else text


def snapshot(db):
    return {name: sorted(map(repr, db[name].find()))
            for name in ('posts', 'authors', 'counters', 'blogs')}


def errors(text):
    """The refusals shown on a page: ``{field: message}``."""
    return {ident.split('-')[-1]: html.unescape(message)
            for ident, message in re.findall(
                r'<span class="error" id="([\w-]+)-error">([^<]*)</span>',
                text)}


GENERATED = settings(max_examples=40, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@GENERATED
@given(title=values(200), author=values(80), email=values(254),
       body=values(50000), tags=values(300))
def test_generated_posts(app, db, title, author, email, body, tags):
    existing = {doc['name']: doc['email'] for doc in db['authors'].find()}
    expected = {}
    kept = {}
    for name, value, check in (
            ('title', title, lambda v: oracle_line(v, 200, True)),
            ('author', author, lambda v: oracle_line(v, 80, True)),
            ('email', email, lambda v: oracle_line(v, 254, True)),
            ('body', body, lambda v: oracle_text(v, 50000, False)),
            ('tags', tags, oracle_tags)):
        kept[name], refused = check(value)
        if refused:
            expected[name] = True
    if 'email' not in expected and not re.fullmatch(
            r'[^@\s]+@[^@\s]+\.[^@\s]+', kept['email']):
        expected['email'] = True
    if ('author' not in expected and 'email' not in expected
            and kept['author'] in existing and existing[kept[
                'author']].lower() != kept['email'].lower()):
        expected['email'] = True
    before = snapshot(db)
    response = app.post('/posts/add', {
        'title': title, 'author': author, 'email': email, 'body': body,
        'tags': tags}, status='*')
    if expected:
        assert response.status_int == 400
        assert set(errors(response.text)) == set(expected)
        assert snapshot(db) == before
        page = Page(response.text)
        for name in ('title', 'author', 'email'):
            assert page.value(name) == kept[name]
        assert page.value('body') == kept['body']
        return
    assert response.status_int == 303, response.text
    post = db['posts'].find_one({'_id': ObjectId(
        response.location.rsplit('/', 1)[1])})
    assert (post['title'], post['body'], post['tags']) == (
        kept['title'], kept['body'], kept['tags'])
    assert db['authors'].find_one({'_id': post['author'].id})['name'] == (
        kept['author'])
    page = Page(app.get(response.location).text)
    assert page.texts[('h1', None)] == kept['title']
    shown = page.texts[('div', 'body')]
    assert ''.join(shown.split()) == ''.join(kept['body'].split())
    Page(app.get('/').text)
    Page(app.get('/authors').text)


@pytest.fixture
def one_post(app):
    return add_post(app)


@GENERATED
@given(who=values(80), text=values(5000))
def test_generated_comments(app, db, one_post, who, text):
    who_kept, who_refused = oracle_line(who, 80, False)
    text_kept, text_refused = oracle_text(text, 5000, True)
    before = snapshot(db)
    response = app.post('/posts/%s/comments' % one_post,
                        {'who': who, 'text': text}, status='*')
    expected = {name for name, refused in (('who', who_refused),
                                           ('text', text_refused))
                if refused}
    if expected:
        assert response.status_int == 400
        assert set(errors(response.text)) == expected
        assert snapshot(db) == before
        page = Page(response.text)
        assert page.value('comment-who') == who_kept
        assert page.value('comment-text') == text_kept
        return
    assert response.status_int == 303
    comment = db['posts'].find_one()['comments'][-1]
    assert (comment['who'], comment['text']) == (
        who_kept or 'anonymous', text_kept)
    Page(app.get('/posts/%s' % one_post).text)


@GENERATED
@given(who=values(80))
def test_generated_likes(app, db, one_post, who):
    kept, refused = oracle_line(who, 80, False)
    before = db['counters'].find_one()
    response = app.post('/posts/%s/like' % one_post, {'who': who},
                        status='*')
    after = db['counters'].find_one()
    if refused:
        assert response.status_int == 400
        assert set(errors(response.text)) == {'who'}
        assert after == before
        assert Page(response.text).value('like-who') == kept
        return
    assert response.status_int == 303
    assert after['value'] == before['value'] + 1
    assert after['log'][-1] == (kept or 'anonymous')
    Page(app.get('/posts/%s' % one_post).text)


MALFORMED = ['', 'x', '-1', '1' * 25, '\x00', 'g' * 64, '0' * 63]


@GENERATED
@given(title=values(200), body=values(50000), tags=values(300),
       serial=st.one_of(st.just('as opened'), st.just('older'),
                        st.sampled_from(MALFORMED)),
       base=st.one_of(st.just('as opened'), st.just('another'),
                      st.sampled_from(MALFORMED)))
def test_generated_edits(app, db, one_post, title, body, tags, serial,
                         base):
    """The edit form, its hidden fields (the version it was opened on and
    the digest of what it showed) included: well-formed but stale ones
    make a conflict when what the form showed changed since."""
    url = '/posts/%s/edit' % one_post
    form = app.get(url).forms[0]
    fields = {'title': title, 'body': body, 'tags': tags,
              'serial': {'as opened': form['serial'].value,
                         'older': '0'}.get(serial, serial),
              'base': {'as opened': form['base'].value,
                       'another': 'f' * 64}.get(base, base)}
    expected = set()
    kept = {}
    for name, value, check in (
            ('title', title, lambda v: oracle_line(v, 200, True)),
            ('body', body, lambda v: oracle_text(v, 50000, False)),
            ('tags', tags, oracle_tags)):
        kept[name], refused = check(value)
        if refused:
            expected.add(name)
    damaged = serial in MALFORMED or base in MALFORMED
    stored = db['posts'].find_one()
    unchanged = (kept['title'], kept['body'], kept['tags']) == (
        stored['title'], stored['body'], stored['tags'])
    before = snapshot(db)
    response = app.post(url, fields, status='*')
    if expected or damaged:
        assert response.status_int == 400
        assert set(errors(response.text)) == expected
        assert ('This form is damaged' in response.text) == damaged
        assert snapshot(db) == before
        page = Page(response.text)
        assert page.value('title') == kept['title']
        assert page.value('body') == kept['body']
        return
    if serial == 'older' and base == 'another' and not unchanged:
        # Its version is not the stored one, nor is what it showed.
        assert response.status_int == 409
        assert snapshot(db) == before
        page = Page(response.text)
        assert page.value('title') == kept['title']
        assert page.value('body') == kept['body']
        assert page.value('serial') == str(stored['_py_serial'])
        return
    assert response.status_int == 303
    post = db['posts'].find_one()
    assert (post['title'], post['body'], post['tags']) == (
        kept['title'], kept['body'], kept['tags'])
    assert snapshot(db) == before if unchanged else snapshot(db) != before
    Page(app.get('/posts/%s' % one_post).text)


def test_a_form_that_is_not_utf8_or_not_a_form(app, db):
    """Bytes that are not UTF-8 arrive as U+FFFD (WebOb), never as
    surrogates that MongoDB could not store; a body that is not a form
    has no fields, and is refused as such."""
    app.post('/posts/add', b'title=%FF%FE&author=A&email=a%40b.example',
             content_type='application/x-www-form-urlencoded', status=303)
    assert db['posts'].find_one()['title'] == '\ufffd\ufffd'
    before = snapshot(db)
    page = app.post('/posts/add', b'{"title": "json"}',
                    content_type='application/json', status=400)
    assert set(errors(page.text)) == {'title', 'author', 'email'}
    assert snapshot(db) == before


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
