"""The example web application under concurrent load, over real HTTP.

The blog app (``examples/blogapp.py``) is served by waitress on 127.0.0.1
(a free port, 8 worker threads) in this process; client threads like one
post at the same time.  With conflict detection (the store's default) and
pyramid_retry, every request is answered 2xx and no like is lost: the
counter is exactly the number of requests, and so is its log.

Without conflict detection, two requests that read the counter before
either commits both write "one more than what I read": one like is lost
and both clients were told it counted.  That is why
``detect_conflicts=False`` is unsafe with more than one writer; the second
test makes the two requests meet deterministically to show it.

The server stops by itself (every wait is bounded) and the load is small
enough to take a few seconds.  With ``MONGODB_URI`` set it runs against
that server.
"""
import contextlib
import http.client
import json
import socket
import threading
import urllib.parse

import pytest
from bson.objectid import ObjectId
from webtest.http import StopableWSGIServer

from mongopersist.store import Store
from tests.test_blogapp import load_example, wsgi_app

CLIENTS = 8
LIKES_PER_CLIENT = 50
TIMEOUT = 60        # seconds, for any one request and for a client thread


@pytest.fixture(scope='module')
def blogapp():
    return load_example('blogapp')


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serving(app):
    """Serve ``app`` with waitress on 127.0.0.1; yield (host, port)."""
    port = free_port()
    server = StopableWSGIServer.create(app, host='127.0.0.1', port=port,
                                       threads=CLIENTS)
    try:
        assert server.wait(), 'the server did not start'
        yield '127.0.0.1', port
    finally:
        server.shutdown()


def like(address, post_id, who):
    """POST one like; return (status, JSON answer or text)."""
    connection = http.client.HTTPConnection(*address, timeout=TIMEOUT)
    try:
        connection.request(
            'POST', '/posts/%s/like' % post_id,
            body=urllib.parse.urlencode({'who': who}),
            headers={'Content-Type': 'application/x-www-form-urlencoded',
                     'Accept': 'application/json'})
        response = connection.getresponse()
        body = response.read().decode('utf-8', 'replace')
        try:
            return response.status, json.loads(body)
        except ValueError:
            return response.status, body
    finally:
        connection.close()


def run_clients(count, work):
    """Run ``work(i)`` in ``count`` threads; return their results."""
    results = [None] * count
    errors = []

    def client(i):
        try:
            results[i] = work(i)
        except BaseException as error:     # reported below, never lost
            errors.append(error)

    threads = [threading.Thread(target=client, args=(i,), daemon=True)
               for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), 'clients hang'
    assert not errors, errors
    return results


def new_post(blogapp, store):
    """Store a post with a like counter; return its id."""
    with store.transaction() as dm:
        author = blogapp.Author('Ann', 'ann@example.com')
        post = blogapp.Post('Busy', 'Everybody likes this.', author)
        post.likes = blogapp.Counter()
        dm.insert(post)
        dm.root['blog'].publish(post)
        return str(post._p_oid.id)


def test_no_like_is_lost_under_load(blogapp, client, dbname, db):
    store = Store(client, dbname, trusted_modules=('blogmodel',))
    app = wsgi_app(blogapp, store)
    post_id = new_post(blogapp, store)
    with serving(app) as address:
        answers = run_clients(CLIENTS, lambda i: [
            like(address, post_id, 'client%d-%d' % (i, n))
            for n in range(LIKES_PER_CLIENT)])
    statuses = [status for answer in answers for status, _ in answer]
    assert len(statuses) == CLIENTS * LIKES_PER_CLIENT
    # The requests were served by pooled data managers, given back after
    # each request and handed to the next (their caches validated).
    assert 1 <= len(store.pool) <= store.pool_size
    assert all(200 <= status < 300 for status in statuses), sorted(
        set(statuses))
    # Every answer was a different count: no two requests counted as one.
    counts = sorted(body['likes'] for answer in answers for _, body in answer)
    assert counts == list(range(1, CLIENTS * LIKES_PER_CLIENT + 1))
    post = db['posts'].find_one({'_id': ObjectId(post_id)})
    counter = db['counters'].find_one({'_id': post['likes'].id})
    assert counter['value'] == CLIENTS * LIKES_PER_CLIENT
    assert sorted(counter['log']) == sorted(
        'client%d-%d' % (i, n)
        for i in range(CLIENTS) for n in range(LIKES_PER_CLIENT))


class MeetingStore(Store):
    """Holds the next ``expected`` commits until all of them are ready:
    those requests have all read the counter before any of them writes."""

    meeting = None

    def expect(self, requests):
        self.meeting = threading.Barrier(requests, timeout=TIMEOUT)
        self._lock = threading.Lock()
        self._left = requests

    def open(self, transaction_manager=None):
        dm = super().open(transaction_manager)
        dm.transaction_manager.registerSynch(self)
        return dm

    def beforeCompletion(self, txn):
        if self.meeting is None or txn.status != 'Active':
            return
        with self._lock:
            if self._left == 0:
                return
            self._left -= 1
        self.meeting.wait()

    def afterCompletion(self, txn):
        pass

    def newTransaction(self, txn):
        pass


@pytest.mark.parametrize('detect_conflicts, stored', [
    (True, 2),      # the second commit conflicts and is run again
    (False, 1),     # the second commit overwrites the first: a lost like
])
def test_without_conflict_detection_a_like_is_lost(
        blogapp, client, dbname, db, detect_conflicts, stored):
    # transactions='never' keeps the meeting deterministic on a replica
    # set too (there, the server may refuse the second write itself).
    store = MeetingStore(client, dbname, trusted_modules=('blogmodel',),
                         detect_conflicts=detect_conflicts,
                         transactions='never')
    app = wsgi_app(blogapp, store)
    post_id = new_post(blogapp, store)
    store.expect(2)
    with serving(app) as address:
        answers = run_clients(2, lambda i: like(address, post_id, 'c%d' % i))
    assert [status for status, _ in answers] == [200, 200]
    post = db['posts'].find_one({'_id': ObjectId(post_id)})
    counter = db['counters'].find_one({'_id': post['likes'].id})
    assert counter['value'] == stored
    assert len(counter['log']) == stored
    if not detect_conflicts:
        # Both clients were told theirs was the first like.
        assert [body for _, body in answers] == [{'likes': 1}] * 2
