"""A server that cannot be reached (issue 18).

It used to end, after PyMongo's 30 s, in a ``ServerSelectionTimeoutError``
whose message is a topology dump several hundred characters long.  Where
an application meets it (``Store.transaction()``, ``ensure_indexes``, a
Pyramid request, ``TransactionMiddleware``, the command line) it is one
``ServerUnreachableError`` (still a ``ServerSelectionTimeoutError``)
naming the hosts, what they answered, the wait, and the setting that
controls the wait (``serverSelectionTimeoutMS``), with no password.

The wait is a client option: ``connect(uri, serverSelectionTimeoutMS=...)``,
``mongopersist.client.serverSelectionTimeoutMS`` in settings, or the URI.
The tests use a loopback port nothing listens on and a short wait.
"""
import io
import math
import socket
import warnings

import pytest
import transaction
from hypothesis import given, settings
from hypothesis import strategies as st
from pymongo.errors import ServerSelectionTimeoutError

import mongopersist
from mongopersist import cli, interfaces
from tests.model import Simple
from tests.operations_model import Indexed

PASSWORD = 's3cr3t-pa55'


def unused_port():
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture
def nowhere():
    """``(uri with a password, 'host:port')`` of a server that is not
    there."""
    port = unused_port()
    return ('mongodb://operator:%s@127.0.0.1:%d/app' % (PASSWORD, port),
            '127.0.0.1:%d' % port)


def assert_clear(error, host, wait_ms):
    message = str(error)
    assert isinstance(error, interfaces.ServerUnreachableError)
    assert isinstance(error, ServerSelectionTimeoutError)
    assert message.startswith('No MongoDB server answered within %g s '
                              '(serverSelectionTimeoutMS=%d) at %s: ' % (
                                  wait_ms / 1000.0, wait_ms, host))
    assert 'Connection refused' in message or 'connect' in message.lower()
    for where in ('connect(uri, serverSelectionTimeoutMS=',
                  'mongopersist.client.serverSelectionTimeoutMS',
                  '?serverSelectionTimeoutMS='):
        assert where in message
    assert PASSWORD not in message and 'Topology' not in message
    assert len(message) < 800
    assert isinstance(error.cause, ServerSelectionTimeoutError)
    assert error.__suppress_context__


def test_store_transaction_says_which_host_and_which_setting(nowhere):
    uri, host = nowhere
    store = mongopersist.connect(uri, serverSelectionTimeoutMS=200)
    try:
        with pytest.raises(interfaces.ServerUnreachableError) as raised:
            with store.transaction() as dm:
                dm.root['x'] = Simple(x=1)
        assert_clear(raised.value, host, 200)
        with pytest.raises(interfaces.ServerUnreachableError) as raised:
            for attempt in store.transaction():
                with attempt as dm:
                    'x' in dm.root
        assert_clear(raised.value, host, 200)
        with pytest.raises(interfaces.ServerUnreachableError) as raised:
            store.ensure_indexes(Indexed)
        assert_clear(raised.value, host, 200)
    finally:
        store.close()


def test_the_wait_from_settings_and_from_the_uri(nowhere):
    uri, host = nowhere
    store = mongopersist.store_from_settings({
        'mongopersist.uri': uri,
        'mongopersist.client.serverSelectionTimeoutMS': '150'})
    try:
        assert store.client.options.server_selection_timeout == 0.15
        with pytest.raises(interfaces.ServerUnreachableError) as raised:
            with store.transaction() as dm:
                dm.root.get('x')
        assert_clear(raised.value, host, 150)
    finally:
        store.close()
    store = mongopersist.connect(uri + '?serverSelectionTimeoutMS=120')
    try:
        with pytest.raises(interfaces.ServerUnreachableError) as raised:
            with store.transaction() as dm:
                dm.root.get('x')
        assert_clear(raised.value, host, 120)
    finally:
        store.close()


def test_the_web_layers_raise_the_clear_error(nowhere):
    from mongopersist.wsgi import TransactionMiddleware
    webtest = pytest.importorskip('webtest')
    uri, host = nowhere
    store = mongopersist.connect(uri, serverSelectionTimeoutMS=100)

    def app(environ, start_response):
        environ['mongopersist.dm'].root.get('x')
        start_response('200 OK', [])
        return [b'']
    try:
        with pytest.raises(interfaces.ServerUnreachableError) as raised:
            webtest.TestApp(TransactionMiddleware(app, store)).get('/')
        assert_clear(raised.value, host, 100)
        transaction.abort()
        pyramid_app = pyramid_application(store)
        with pytest.raises(interfaces.ServerUnreachableError) as raised:
            webtest.TestApp(pyramid_app).get('/')
        assert_clear(raised.value, host, 100)
    finally:
        store.close()


def pyramid_application(store, unavailable=None):
    from pyramid.config import Configurator

    def view(request):
        return {'seen': 'x' in request.dm.root}
    with Configurator(settings={}) as config:
        config.registry['mongopersist.store'] = store
        config.include('mongopersist.pyramid')
        config.add_route('home', '/')
        config.add_view(view, route_name='home', renderer='json')
        if unavailable is not None:
            config.add_exception_view(
                unavailable, context=interfaces.ServerUnreachableError)
        return config.make_wsgi_app()


def test_a_pyramid_exception_view_answers_it(nowhere):
    webtest = pytest.importorskip('webtest')
    uri, host = nowhere
    store = mongopersist.connect(uri, serverSelectionTimeoutMS=100)

    seen = []

    def unavailable(error, request):
        seen.append(error)
        request.response.status = 503
        request.response.text = str(error)
        return request.response
    try:
        app = webtest.TestApp(pyramid_application(store, unavailable))
        answer = app.get('/', status=503)
        [error] = seen
        assert_clear(error, host, 100)
        assert answer.text == str(error)
    finally:
        store.close()


def test_the_command_line_says_it_in_one_line(nowhere):
    uri, host = nowhere
    err = io.StringIO()
    code = cli.main(
        ['inspect', '--uri', uri + '?serverSelectionTimeoutMS=100'],
        out=io.StringIO(), err=err)
    assert code == 2
    [line] = err.getvalue().splitlines()
    assert line.startswith(
        'mongopersist: error: No MongoDB server answered within 0.1 s '
        '(serverSelectionTimeoutMS=100) at %s: ' % host)
    assert PASSWORD not in line
    assert '--uri' in line


# -- the wait, as a setting (a door for outside data) -------------------------
WAIT = 'serverSelectionTimeoutMS'


def accepted_wait(value):
    """Whether PyMongo's rule accepts ``value`` as the wait (0, or more
    than 0 and less than one billion milliseconds); a bool is refused."""
    if isinstance(value, bool) or value is None:
        return False
    if value in (0, '0'):
        return True
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return 0 < number < 1e9


waits = st.one_of(
    st.integers(-10, 2 * 10 ** 9), st.booleans(), st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(['0', '0.0', '250', ' 250 ', '1e3', '-5', 'nan', 'inf',
                     '1e9', 'soon', '']),
    st.text(max_size=6))


@settings(max_examples=60, deadline=None)
@given(value=waits, how=st.sampled_from(['connect', 'settings']))
def test_the_wait_is_checked_where_it_is_given(value, how):
    """Refused with a ``ConfigurationError`` naming the setting, or
    accepted and given to the client as it is; nothing is sent."""
    if how == 'settings' and not isinstance(value, str):
        value = repr(value)
    uri = 'mongodb://127.0.0.1:%d/app' % unused_port()
    try:
        if how == 'connect':
            store = mongopersist.connect(uri, connect=False, **{WAIT: value})
        else:
            store = mongopersist.store_from_settings({
                'mongopersist.uri': uri, 'mongopersist.client.connect':
                'false', 'mongopersist.client.' + WAIT: value})
    except interfaces.ConfigurationError as error:
        assert not accepted_wait(value), (value, error)
        assert error.setting == (WAIT if how == 'connect'
                                 else 'mongopersist.client.' + WAIT)
        assert WAIT in str(error)
        return
    try:
        assert accepted_wait(value), value
        seconds = store.client.options.server_selection_timeout
        expected = 0 if value in (0, '0') else float(value) / 1000.0
        assert math.isclose(seconds, expected)
    finally:
        store.close()


def test_a_flag_is_not_a_wait():
    """``serverSelectionTimeoutMS=True`` was taken for 1 ms."""
    for value in (True, False):
        with pytest.raises(interfaces.ConfigurationError, match=WAIT):
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                mongopersist.connect('mongodb://127.0.0.1:9/app',
                                     **{WAIT: value})
