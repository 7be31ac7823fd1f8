"""``mongopersist.wsgi.TransactionMiddleware``: a transaction per request
for any WSGI application."""
import json

import pytest
import webtest

from mongopersist import interfaces
from mongopersist.store import Store
from mongopersist.wsgi import TransactionMiddleware
from tests.model import Counter


@pytest.fixture
def store(client, dbname):
    store = Store(client, dbname)
    with store.transaction() as dm:
        dm.root['counter'] = Counter()
    return store


def counter_app(interfere=None):
    """Adds the request body's number to the counter; the status is the
    query string (default 200)."""
    calls = []
    managers = []

    def app(environ, start_response):
        dm = environ['mongopersist.dm']
        calls.append(dm)
        managers.append(environ['mongopersist.tm'])
        assert dm.transaction_manager is environ['mongopersist.tm']
        counter = dm.root['counter']
        body = environ['wsgi.input'].read(
            int(environ.get('CONTENT_LENGTH') or 0))
        counter.value += int(body or 1)
        if interfere is not None and len(calls) <= interfere.times:
            interfere()
        if environ.get('QUERY_STRING') == 'boom':
            raise ValueError('boom')
        status = environ.get('QUERY_STRING') or '200'
        start_response('%s Whatever' % status,
                       [('Content-Type', 'application/json')])
        return [json.dumps({'value': counter.value}).encode()]
    app.calls = calls
    app.managers = managers
    return app


def outside_increments(store, times):
    """Somebody else adds 100 to the counter, the first ``times`` times."""
    def interfere():
        with store.transaction() as other:
            other.root['counter'].value += 100
    interfere.times = times
    return interfere


def stored(store):
    with store.transaction() as dm:
        return dm.root['counter'].value


@pytest.mark.parametrize('status', ['200', '201', '302'])
def test_commits_on_2xx_and_3xx(store, status):
    app = webtest.TestApp(TransactionMiddleware(counter_app(), store))
    app.post('/?' + status, '5', status=int(status))
    assert stored(store) == 5


@pytest.mark.parametrize('status', ['400', '404', '500'])
def test_aborts_otherwise(store, status):
    app = webtest.TestApp(TransactionMiddleware(counter_app(), store))
    app.post('/?' + status, '5', status=int(status))
    assert stored(store) == 0


def test_an_error_aborts_and_propagates(store):
    app = webtest.TestApp(TransactionMiddleware(counter_app(), store))
    with pytest.raises(ValueError, match='boom'):
        app.post('/?boom', '5')
    assert stored(store) == 0


def test_conflicts_are_retried_with_the_same_body(store, retry_waits):
    inner = counter_app(outside_increments(store, 2))
    app = webtest.TestApp(TransactionMiddleware(inner, store, attempts=3))
    response = app.post('/', '5')
    assert response.json == {'value': 205}
    assert len(inner.calls) == 3 and len(retry_waits) == 2
    assert stored(store) == 205


def test_a_request_that_keeps_conflicting_fails(store, retry_waits):
    inner = counter_app(outside_increments(store, 10))
    app = webtest.TestApp(TransactionMiddleware(inner, store, attempts=2))
    with pytest.raises(interfaces.ConflictError):
        app.post('/', '5')
    assert len(inner.calls) == 2
    assert stored(store) == 200


def test_each_request_has_its_own_transaction_and_a_pooled_data_manager(
        store):
    inner = counter_app()
    app = webtest.TestApp(TransactionMiddleware(inner, store))
    app.get('/')
    app.get('/')
    first, second = inner.calls
    # The second request got the first one's data manager from the pool,
    # bound to its own transaction manager.
    assert first is second
    assert inner.managers[0] is not inner.managers[1]
    assert len(store.pool) == 1
    assert stored(store) == 2
