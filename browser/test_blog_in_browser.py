"""The example blog (``examples/blogapp.py``) in a real browser:
``make test-browser``.

Headless Chromium (Debian's ``chromium``, ``/usr/bin/chromium``; no
browser is downloaded) driven by Playwright.  The blog is served as
``make serve`` serves it (``pserve`` with the settings and logging of
``examples/blogapp.ini``), on a free port, its posts in a ``file://``
store in a temporary directory (SecantusDB in a process of its own).  A
person writes a post, comments, likes, edits it in two tabs and meets the
conflict page; the server is stopped (its SecantusDB too) and started again
(``python examples/blogapp.py``) and the post is still there.  Everything
started is stopped at the end, SecantusDB included.

Set ``BLOG_SCREENSHOTS=DIR`` to keep a screenshot of each page seen.

Not part of ``make test`` (it needs the browser): it lives outside
``tests/``.
"""
import configparser
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from bson.objectid import ObjectId
# make test-browser installs it (browser/requirements.txt).
from playwright import sync_api as playwright_api

from mongopersist import fileserver

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, 'examples')
CHROMIUM = os.environ.get('CHROMIUM', '/usr/bin/chromium')
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
         '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync']
#: Seconds for the server to say where it serves (a first start of
#: SecantusDB in a new directory included).
START = 90
SCREENSHOTS = os.environ.get('BLOG_SCREENSHOTS')



class Server:
    """The blog served in a subprocess, its output followed: the address
    it serves, and its log (stderr)."""

    def __init__(self, command, env, log_path):
        self.log_path = log_path
        self.log = open(log_path, 'a', encoding='utf-8')
        self.lines = queue.Queue()
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.follower = threading.Thread(target=self._follow, daemon=True)
        self.follower.start()
        self.url = self._wait_for_address()

    def _follow(self):
        for line in self.process.stdout:
            self.log.write(line)
            self.log.flush()
            self.lines.put(line)
        self.lines.put(None)

    def _wait_for_address(self):
        deadline = time.monotonic() + START
        while True:
            try:
                line = self.lines.get(timeout=max(
                    0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.stop()
                raise AssertionError('the blog did not start:\n' + self.text())
            found = re.match(r'(?:.*\[waitress\] )?Serving (?:the blog )?on '
                             r'(http://[\d.]+:\d+)', line)
            if found:
                return found.group(1) + '/'

    def text(self):
        with open(self.log_path, encoding='utf-8') as f:
            return f.read()

    def stop(self):
        """Stop it as Ctrl-C does; kill it if it does not end."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.follower.join(timeout=10)      # the last lines of the log
        self.log.close()


def stop_store(directory):
    """Stop the SecantusDB of ``directory`` (and its watcher) now; check
    that nothing of it runs on."""
    record = fileserver.read_record(directory) or {}
    fileserver.stop(directory)
    pids = [record.get('pid'), record.get('watcher')]
    assert not any(fileserver._alive(pid) for pid in pids), record


class Blog:
    """The blog's processes and directory: start, restart, stop."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.store = os.path.join(tmp, 'data')
        self.uri = 'file://' + self.store
        self.log_path = os.path.join(tmp, 'server.log')
        self.env = dict(os.environ)
        self.env['PYTHONPATH'] = os.pathsep.join(
            [EXAMPLES] + [p for p in [os.environ.get('PYTHONPATH')] if p])
        self.env.pop('MONGODB_URI', None)
        self.server = None

    def serve_with_pserve(self):
        """As ``make serve``: pserve, examples/blogapp.ini (its store made
        a temporary directory), a free port."""
        parser = configparser.ConfigParser(interpolation=None)
        parser.optionxform = str
        parser.read(os.path.join(EXAMPLES, 'blogapp.ini'))
        parser['app:main']['mongopersist.uri'] = self.uri
        ini = os.path.join(self.tmp, 'blogapp.ini')
        with open(ini, 'w') as f:
            parser.write(f)
        self.server = Server([sys.executable, '-m', 'pyramid.scripts.pserve',
                              ini, 'http_port=0'], self.env, self.log_path)
        return self.server

    def serve_with_script(self):
        """As ``python examples/blogapp.py --uri ... --port 0``."""
        self.server = Server([sys.executable, '-u', 'examples/blogapp.py',
                              '--port', '0', '--uri', self.uri], self.env,
                             self.log_path)
        return self.server

    def stop(self):
        if self.server is not None:
            self.server.stop()
        if os.path.isdir(self.store):
            stop_store(self.store)


@pytest.fixture(scope='module')
def blog(tmp_path_factory):
    blog = Blog(str(tmp_path_factory.mktemp('blog')))
    try:
        blog.serve_with_pserve()
        yield blog
    finally:
        blog.stop()


@pytest.fixture(scope='module')
def browser(tmp_path_factory):
    profile = str(tmp_path_factory.mktemp('chromium-profile'))
    with playwright_api.sync_playwright() as playwright:
        # A fresh profile: Playwright passes it as --user-data-dir.
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS)
        context.set_default_timeout(20000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    yield page
    page.close()


def shot(page, name):
    if SCREENSHOTS:
        os.makedirs(SCREENSHOTS, exist_ok=True)
        page.screenshot(path=os.path.join(SCREENSHOTS, name + '.png'),
                        full_page=True)


def write_post(page, blog, title, body='First line\nsecond line\n\nNext.'):
    page.goto(blog.server.url)
    page.get_by_role('link', name='Write a post').first.click()
    page.get_by_label('Title').fill(title)
    page.get_by_label('Your name').fill('Ann')
    page.get_by_label('Email').fill('ann@example.com')
    page.get_by_label('Text').fill(body)
    page.get_by_label('Tags').fill('news, python')
    page.get_by_role('button', name='Publish').click()
    page.wait_for_url(re.compile(r'/posts/[0-9a-f]{24}$'))
    return page.url


def test_the_pages_are_styled(page, blog):
    response = page.goto(blog.server.url)
    assert response.status == 200
    header = page.locator('header.site')
    assert header.evaluate('e => getComputedStyle(e).backgroundColor') == (
        'rgb(47, 111, 79)')
    assert page.locator('main').evaluate(
        'e => getComputedStyle(e).maxWidth') != 'none'
    shot(page, '01-empty-list')


def test_a_refused_post_names_each_field(page, blog):
    page.goto(blog.server.url + 'posts/add')
    page.get_by_label('Title').fill('   ')
    page.get_by_label('Your name').fill('Ann')
    page.get_by_label('Email').fill('not an address')
    page.get_by_label('Text').fill('<script>document.title="x"</script>')
    with page.expect_response(blog.server.url + 'posts/add') as answer:
        page.get_by_role('button', name='Publish').click()
    assert answer.value.status == 400
    assert page.locator('.error-summary').inner_text() == (
        'Please correct the 2 fields below.')
    assert page.locator('#title-error').inner_text() == (
        'A post needs a title.')
    assert page.locator('#email-error').inner_text() == (
        'That is not an email address (name@example.com).')
    # What was typed is back in the form, as text.
    assert page.get_by_label('Text').input_value() == (
        '<script>document.title="x"</script>')
    assert page.title() == 'Write a post'
    shot(page, '02-refused-post')


def test_write_comment_and_like(page, blog):
    url = write_post(page, blog, 'A post from the browser')
    assert page.locator('h1').inner_text() == 'A post from the browser'
    # The line break and the paragraph are kept.
    body = page.locator('article .body')
    assert body.locator('p').count() == 2
    assert body.locator('p').first.inner_text() == 'First line\nsecond line'
    assert re.search(r'\d{4}, \d\d:\d\d UTC', page.locator(
        'article .meta').inner_text())
    shot(page, '02-post')

    # An empty comment is refused, and said so next to the field.
    comments = page.locator('#comment-form')
    comments.get_by_label('Your name').fill('Bea')
    comments.get_by_role('button', name='Comment').click()
    error = page.locator('#comment-text-error')
    assert error.inner_text() == 'A comment needs some text.'
    assert page.locator('#comment-who').input_value() == 'Bea'
    shot(page, '03-empty-comment')
    page.locator('#comment-form').get_by_label('Comment').fill(
        'Nice <b>post</b>!')
    page.locator('#comment-form').get_by_role(
        'button', name='Comment').click()
    page.wait_for_url(url + '#comments')
    assert page.locator('.comments h2').inner_text() == '1 comment'
    assert page.locator('.comments .text').inner_text() == (
        'Nice <b>post</b>!')

    like = page.locator('form.like')
    like.get_by_label('Your name').fill('Bea')
    like.get_by_role('button', name='Like').click()
    page.wait_for_url(url)
    assert page.locator('p.likes').inner_text() == '1 like (last: Bea)'
    shot(page, '04-commented-and-liked')

    page.goto(blog.server.url)
    item = page.locator('ol.posts > li').first
    assert 'A post from the browser' in item.inner_text()
    assert '1 comment · 1 like' in item.inner_text()
    shot(page, '05-list')


def test_two_tabs_editing_one_post(browser, blog):
    first, second = browser.new_page(), browser.new_page()
    try:
        url = write_post(first, blog, 'Edited in two tabs')
        for tab in (first, second):
            tab.goto(url)
            tab.get_by_role('link', name='Edit').click()
            tab.wait_for_url(url + '/edit')
        first.get_by_label('Title').fill('The first tab was quicker')
        first.get_by_role('button', name='Save').click()
        first.wait_for_url(url)
        assert first.locator('h1').inner_text() == (
            'The first tab was quicker')

        second.get_by_label('Title').fill('The second tab has more to say')
        second.get_by_label('Text').fill('A longer text\nfrom the second '
                                         'tab.')
        with second.expect_response(url + '/edit') as answer:
            second.get_by_role('button', name='Save').click()
        assert answer.value.status == 409
        assert second.locator('h1').inner_text() == (
            'Somebody else changed this post')
        assert 'The first tab was quicker' in second.locator(
            '.theirs').inner_text()
        mine = second.locator('.mine')
        assert mine.get_by_label('Title').input_value() == (
            'The second tab has more to say')
        shot(second, '06-conflict')
        mine.get_by_role('button', name='Save mine over theirs').click()
        second.wait_for_url(url)
        assert second.locator('h1').inner_text() == (
            'The second tab has more to say')
        first.reload()
        assert first.locator('h1').inner_text() == (
            'The second tab has more to say')
    finally:
        first.close()
        second.close()


def test_a_missing_post_and_a_wrong_method(page, blog):
    response = page.goto(blog.server.url + 'posts/%s' % ObjectId())
    assert response.status == 404
    assert page.locator('h1').inner_text() == 'Not found'
    assert page.locator('header.site').evaluate(
        'e => getComputedStyle(e).backgroundColor') == 'rgb(47, 111, 79)'
    shot(page, '07-not-found')
    page.get_by_role('link', name='All posts').click()
    page.wait_for_url(blog.server.url)

    url = write_post(page, blog, 'Liked by address')
    response = page.goto(url + '/like')
    assert response.status == 405
    assert response.headers['allow'] == 'POST'
    page.get_by_role('link', name='Back').click()
    page.wait_for_url(url)


def test_the_server_logs_its_address_and_each_request(blog):
    # pserve with the logging of blogapp.ini: waitress says where it
    # serves, and every request has its line.
    assert re.search(r'\[waitress\] Serving on http://127\.0\.0\.1:\d+',
                     blog.server.text())
    with urllib.request.urlopen(blog.server.url + 'authors') as answer:
        assert answer.status == 200
    try:
        urllib.request.urlopen(blog.server.url + 'posts/%s/like'
                               % ObjectId())
    except urllib.error.HTTPError as error:
        assert error.code == 405
    lines = [r'\[blogapp\.access\] 127\.0\.0\.1 GET /authors 200 \d+ '
             r'[\d.]+ ms$',
             r'\[blogapp\.access\] 127\.0\.0\.1 GET /posts/[0-9a-f]{24}/'
             r'like 405 \d+ [\d.]+ ms$']
    deadline = time.monotonic() + 10
    while not all(re.search(line, blog.server.text(), re.M)
                  for line in lines):
        assert time.monotonic() < deadline, blog.server.text()
        time.sleep(0.05)


def test_a_restarted_server_finds_the_post(page, blog):
    url = write_post(page, blog, 'Still here after a restart',
                     body='Kept in a directory.')
    page.locator('#comment-form').get_by_label('Comment').fill('Before')
    page.locator('#comment-form').get_by_role(
        'button', name='Comment').click()
    page.wait_for_url(url + '#comments')
    path = url[len(blog.server.url) - 1:]

    # Stop the server and its SecantusDB: the next start reads the
    # directory.
    blog.stop()
    blog.serve_with_script()
    page.goto(blog.server.url.rstrip('/') + path)
    assert page.locator('h1').inner_text() == 'Still here after a restart'
    assert page.locator('article .body').inner_text() == (
        'Kept in a directory.')
    assert page.locator('.comments .text').inner_text() == 'Before'
    page.goto(blog.server.url)
    assert page.locator('ol.posts > li a.title').first.inner_text() == (
        'Still here after a restart')
    shot(page, '08-after-restart')
