"""Test fixtures: a client per test run and a fresh database per test.

With ``MONGODB_URI`` set the suite runs against that server, with a unique
database per test that is dropped afterwards.  Otherwise it runs against the
in-process stand-in (mongomock).
"""
import os
import uuid

import pytest
import transaction
from hypothesis import settings

from mongopersist import testing, typemap
from mongopersist.datamanager import MongoDataManager
from tests.roundtrips import roundtrips  # noqa: F401 (a fixture for all)


# Property and state-machine tests: CI (``make test``) runs the same
# examples every time, so that whether a change lands does not depend on
# the draw.  ``make explore`` draws new ones (HYPOTHESIS_PROFILE=explore).
settings.register_profile('ci', derandomize=True, database=None)
settings.register_profile('explore', derandomize=False)
# make test-server (tests/run_server.py): the same draw, a share of the
# examples (SERVER_EXAMPLES, see _bound_examples): against a server every
# step of a state machine is a round trip of milliseconds, not
# microseconds.  make test runs them all.
settings.register_profile('server', derandomize=True, database=None)
SERVER_EXAMPLES = 0.25
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'ci'))


def pytest_report_header(config):
    """Which implementation of the hot paths runs (``mongopersist.speedups``:
    ``make test`` runs the compiled one where it was built, ``make
    test-pure`` the Python one)."""
    import mongopersist.datamanager  # noqa: F401 (activates speedups)
    from mongopersist import speedups
    if speedups.enabled():
        return 'mongopersist: compiled accelerator (%s)' % (
            speedups.compiled.__file__)
    why = ('MONGOPERSIST_PURE_PYTHON is set' if speedups.pure_python_forced()
           else 'the accelerator is not built')
    return 'mongopersist: pure Python (%s)' % why


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'requires_real_mongodb(reason): needs a real server '
        '(MONGODB_URI); the stand-in cannot show the behaviour')


def _bound_examples(items):
    """Under the ``server`` profile, run ``SERVER_EXAMPLES`` of each
    property test's and state machine's examples (at least 5).  Their own
    settings name the counts, and a profile does not override those."""
    def bounded(given):
        return settings(given, max_examples=max(
            5, int(given.max_examples * SERVER_EXAMPLES)))
    done = set()
    for item in items:
        test = getattr(item, 'obj', None)
        given = getattr(test, '_hypothesis_internal_use_settings', None)
        if given is not None and id(test) not in done:
            done.add(id(test))
            test._hypothesis_internal_use_settings = bounded(given)
        cls = getattr(item, 'cls', None)
        given = getattr(cls, 'settings', None)
        if isinstance(given, settings) and cls not in done:
            done.add(cls)
            cls.settings = bounded(given)


def pytest_collection_modifyitems(config, items):
    if os.environ.get('HYPOTHESIS_PROFILE') == 'server':
        _bound_examples(items)
    if testing.uses_real_server():
        return
    for item in items:
        marker = item.get_closest_marker('requires_real_mongodb')
        if marker is not None:
            reason = marker.kwargs.get('reason') or (
                marker.args[0] if marker.args else 'needs a real MongoDB')
            item.add_marker(pytest.mark.skip(
                reason='requires MONGODB_URI: %s' % reason))


@pytest.fixture(scope='session')
def client():
    conn = testing.client()
    yield conn
    conn.close()


@pytest.fixture
def dbname(client):
    name = 'mp_test_%s' % uuid.uuid4().hex[:12]
    transaction.abort()
    yield name
    transaction.abort()
    client.drop_database(name)


@pytest.fixture
def db(client, dbname):
    return client[dbname]


@pytest.fixture
def dm(client, dbname):
    """A data manager on a fresh database."""
    return MongoDataManager(client, default_database=dbname)


@pytest.fixture
def make_dm(client, dbname):
    """Make more data managers on the same database (a 'second process')."""
    def make(**kwargs):
        kwargs.setdefault('default_database', dbname)
        # A new process has read no type map yet.
        typemap.forget_process_cache()
        return MongoDataManager(client, **kwargs)
    return make


@pytest.fixture
def retry_waits(monkeypatch):
    """Retries (``Store.transaction``, the web layers) do not wait; the
    list holds the waits they would have made.  (Patching ``time.sleep``
    instead would also stop PyMongo's background threads from sleeping.)"""
    from mongopersist import store
    waits = []
    delay = store.retry_delay

    def recorded(retry):
        waits.append(delay(retry))
        return 0
    monkeypatch.setattr(store, 'retry_delay', recorded)
    return waits
