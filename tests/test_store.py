"""The application store: settings, refusals, data managers per thread,
units of work with retries (``mongopersist.store``, ``.settings``)."""
import threading
import warnings

import persistent
import pymongo
import pytest
import transaction
from pymongo import ReadPreference
from pymongo.errors import ConnectionFailure, OperationFailure
from pymongo.write_concern import WriteConcern

import mongopersist
from mongopersist import interfaces, sessions, settings
from mongopersist.datamanager import MongoDataManager
from mongopersist.store import Store, retry_delay
from tests.model import Counter, Simple

# A port nothing listens on: a client to it fails only when it is used.
NOWHERE = 'mongodb://127.0.0.1:9/db?serverSelectionTimeoutMS=200'


@pytest.fixture
def store(client, dbname):
    return Store(client, dbname)


def from_settings(**values):
    """``store_from_settings`` on ``mongopersist.<key>`` strings."""
    return mongopersist.store_from_settings(
        {'mongopersist.' + key: value for key, value in values.items()})


def refused(match):
    """Expect a ConfigurationError matching ``match``."""
    return pytest.raises(mongopersist.ConfigurationError, match=match)


# -- connect and store_from_settings ------------------------------------------
def test_memory_store_says_its_data_is_in_memory_only():
    with pytest.warns(mongopersist.InMemoryStoreWarning,
                      match='memory only'):
        store = mongopersist.connect('memory://', database='app')
    assert store.in_memory and store.database == 'app'
    assert repr(store) == '<Store app in memory>'
    with store.transaction() as dm:
        dm.root['c'] = Counter()
    with store.transaction() as dm:
        assert dm.root['c'].value == 0


def test_no_uri_and_no_variable_means_memory_with_a_warning(monkeypatch):
    monkeypatch.delenv('MONGODB_URI', raising=False)
    with pytest.warns(mongopersist.InMemoryStoreWarning):
        assert mongopersist.connect(database='app').in_memory
    with pytest.warns(mongopersist.InMemoryStoreWarning):
        assert from_settings(database='app').in_memory


def test_no_uri_uses_the_variable(monkeypatch):
    monkeypatch.setenv('MONGODB_URI', NOWHERE)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        store = mongopersist.connect()
    try:
        assert not store.in_memory
        assert isinstance(store.client, pymongo.MongoClient)
        assert store.database == 'db'
    finally:
        store.close()


def test_a_real_uri_makes_a_mongo_client_without_network_io(monkeypatch):
    def asked(client):
        raise AssertionError('the server was asked')
    monkeypatch.setattr(sessions, 'deployment_supports_transactions', asked)
    store = mongopersist.connect(
        'mongodb://127.0.0.1:9/', database='app', write_concern='majority',
        read_preference='secondaryPreferred', serverSelectionTimeoutMS=200)
    try:
        # No server listens there: neither the store nor a data manager
        # asks it anything (PyMongo connects in the background).
        dm = store.open()
        assert dm.default_database == 'app'
        assert store.deployment._has_transactions is None
        assert store.write_concern == WriteConcern(w='majority')
        assert store.read_preference == ReadPreference.SECONDARY_PREFERRED
        assert store.client.options.server_selection_timeout == 0.2
    finally:
        store.close()


def test_connection_failure_is_raised_not_taken_for_no_transactions(
        dbname):
    store = mongopersist.connect(NOWHERE, transactions='auto')
    try:
        dm = store.open()
        for _ in range(2):      # asked again, not remembered as 'no'
            with pytest.raises(ConnectionFailure):
                dm.insert(Simple(x=1))
            transaction.abort()
            assert store.deployment._has_transactions is None
    finally:
        store.close()


def test_settings_are_read_from_text():
    store = from_settings(
        uri='mongodb://127.0.0.1:9/', database='blog',
        detect_conflicts='false', transactions='never',
        **{'write_concern.w': '2', 'write_concern.wtimeout': '5000',
           'write_concern.j': 'yes', 'client.serverSelectionTimeoutMS': '250',
           'client.appname': 'blog'},
        read_preference='secondary_preferred',
        trusted_modules='blogmodel, myapp.models  other',
        allowed_databases='logs', broken_objects='on', cache_size='500',
        attempts='7', global_queries=' warn ')
    try:
        assert store.database == 'blog'
        assert store.detect_conflicts is False
        assert store.transactions == 'never'
        assert store.write_concern == WriteConcern(w=2, wtimeout=5000, j=True)
        assert store.read_preference == ReadPreference.SECONDARY_PREFERRED
        assert store.trusted_modules == ('blogmodel', 'myapp.models', 'other')
        assert store.allowed_databases == ('logs',)
        assert store.broken_objects is True
        assert store.cache_size == 500
        assert store.attempts == 7
        assert store.global_queries == 'warn'
        assert store.client.options.server_selection_timeout == 0.25
        dm = store.open()
        assert dm.detect_conflicts is False
        assert dm.broken_objects is True
        assert 'logs' in dm.allowed_databases
        assert dm.global_queries == 'warn'
    finally:
        store.close()


def test_settings_of_others_are_ignored_and_a_prefix_can_be_chosen():
    with pytest.warns(mongopersist.InMemoryStoreWarning):
        store = mongopersist.store_from_settings({
            'pyramid.reload_templates': 'true', 'tm.manager_hook': 'x',
            'logs.uri': 'memory://', 'logs.database': 'logs'},
            prefix='logs.')
    assert store.database == 'logs' and store.in_memory


def test_detect_conflicts_is_on_by_default(store):
    assert store.detect_conflicts is True
    assert store.open().detect_conflicts is True
    with pytest.warns(mongopersist.InMemoryStoreWarning):
        assert mongopersist.connect('memory://',
                                    database='x').detect_conflicts


@pytest.mark.parametrize('values, match', [
    ({'detect_conflict': 'true'},
     'unknown setting mongopersist.detect_conflict; known settings are'),
    ({'write_concern.wtimeoutMS': '5'},
     'unknown setting mongopersist.write_concern.wtimeoutMS'),
    ({'detect_conflicts': 'maybe'},
     'mongopersist.detect_conflicts: .*true or false'),
    ({'cache_size': 'big'}, 'mongopersist.cache_size: .*whole number'),
    ({'cache_size': '-1'}, 'mongopersist.cache_size: .*at least 0'),
    ({'attempts': '0'}, 'mongopersist.attempts: .*at least 1'),
    ({'transactions': 'sometimes'},
     "mongopersist.transactions: .*auto, always, never"),
    ({'read_preference': 'secondaries'},
     'mongopersist.read_preference: .*secondaryPreferred'),
    ({'write_concern.w': '0'}, 'mongopersist.write_concern: w=0 '
     r'\(unacknowledged writes\) is refused'),
    ({'write_concern.wtimeout': 'soon'},
     'mongopersist.write_concern.wtimeout: .*whole number'),
    ({'client.w': '1'}, 'mongopersist.client.w: give w as write_concern'),
    ({'client.serverSelectionTimeout': '5'},
     'mongopersist.client.serverSelectionTimeout: bad MongoClient option'),
    ({'database': 'a/b'}, "mongopersist.database: database name 'a/b'"),
    ({'uri': 'http://example.com/db'},
     'mongopersist.uri: uri must start with mongodb://'),
    ({'database': None}, 'mongopersist.database: name the database'),
    ({'global_queries': 'ignore'},
     "mongopersist.global_queries: global_queries must be one of error, "
     "warn, not 'ignore'"),
])
def test_bad_settings_are_refused_naming_the_setting(values, match):
    given = {'uri': 'mongodb://127.0.0.1:9/', 'database': 'db'}
    given.update(values)
    with refused(match) as info:
        from_settings(**{key: value for key, value in given.items()
                         if value is not None})
    assert info.value.setting.startswith('mongopersist.')


@pytest.mark.parametrize('concern', [
    0, {'w': 0}, WriteConcern(w=0), {'w': 0, 'j': False}])
def test_w0_is_refused_at_construction_with_the_reason(concern):
    with refused('w=0 .*unacknowledged.* conflicts'):
        mongopersist.connect('mongodb://127.0.0.1:9/', database='db',
                             write_concern=concern)


def test_w0_in_the_uri_or_client_is_refused():
    with refused('w=0 .*refused'):
        mongopersist.connect('mongodb://127.0.0.1:9/db?w=0')
    unacknowledged = pymongo.MongoClient('mongodb://127.0.0.1:9/db', w=0)
    try:
        with refused('w=0 .*refused'):
            Store(unacknowledged)
        with refused('w=0 .*refused'):
            MongoDataManager(unacknowledged, default_database='db')
    finally:
        unacknowledged.close()


@pytest.mark.parametrize('options, match', [
    ({'detect_conflicts': 'yes'}, 'detect_conflicts must be True or False'),
    ({'attempts': 0}, 'attempts must be a whole number of at least 1'),
    ({'cache_size': 1.5}, 'cache_size must be a whole number'),
    ({'trusted_modules': [1]}, 'trusted_modules must be a sequence'),
    ({'write_concern': {'w': 1, 'fsync': True}},
     'unknown write concern setting fsync'),
    ({'write_concern': [1]}, 'write_concern must be a WriteConcern'),
    ({'read_preference': 3}, 'read_preference must be one of'),
    ({'transactions': True}, 'transactions must be one of'),
    ({'detect_conflict': True}, 'bad MongoClient option detect_conflict'),
    ({'database': ''}, 'database must be a non-empty string'),
    ({'global_queries': 'warning'},
     "global_queries must be one of error, warn, not 'warning'"),
    ({'global_queries': True}, 'global_queries must be one of error, warn'),
])
def test_bad_options_are_refused(options, match):
    options.setdefault('database', 'db')
    with refused(match):
        mongopersist.connect('mongodb://127.0.0.1:9/', **options)


def test_global_queries_is_a_store_setting(client, dbname):
    from tests.sharded_model import Post
    store = Store(client, dbname)
    assert store.global_queries is None
    with pytest.raises(interfaces.GlobalQueryError):
        store.open(transaction.TransactionManager()).count(Post, {})
    with refused('global_queries must be one of error, warn'):
        Store(client, dbname, global_queries='off')
    with refused('global_queries must be one of error, warn'):
        store.global_queries = 'off'
    assert store.global_queries is None

    store = Store(client, dbname, global_queries='warn', pool_size=1)
    dm = store.open(transaction.TransactionManager())
    assert dm.global_queries == 'warn'
    with pytest.warns(interfaces.GlobalQueryWarning):
        assert dm.count(Post, {}) == 0
    dm.close()
    # A pooled data manager follows the store's setting when reopened.
    store.global_queries = 'error'
    again = store.open(transaction.TransactionManager())
    assert again is dm
    with pytest.raises(interfaces.GlobalQueryError):
        again.count(Post, {})


def test_global_queries_is_read_from_settings_and_connect():
    with pytest.warns(mongopersist.InMemoryStoreWarning):
        store = from_settings(uri='memory://', database='db',
                              global_queries='warn')
    assert store.global_queries == 'warn'
    assert store.open(transaction.TransactionManager()).global_queries \
        == 'warn'
    with pytest.warns(mongopersist.InMemoryStoreWarning):
        store = mongopersist.connect('memory://', database='db',
                                     global_queries='error')
    assert store.global_queries == 'error'


def test_memory_store_needs_a_database_name():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', mongopersist.InMemoryStoreWarning)
        with refused('name the database'):
            mongopersist.connect('memory://')


# -- the data manager: no I/O when made, deployment asked once -----------------
def test_the_deployment_is_asked_once_for_all_data_managers(
        store, monkeypatch):
    asked = []

    def supports(client):
        asked.append(client)
        return False
    monkeypatch.setattr(sessions, 'deployment_supports_transactions',
                        supports)
    first, second = store.open(), store.open()
    assert asked == []
    first.root['a'] = Simple(x=1)
    second.root['b'] = Simple(x=2)
    transaction.commit()
    assert asked == [store.client]


class FlakyDeployment(sessions.Deployment):
    """Cannot reach the server the first time it is asked."""

    failures = 1

    @property
    def has_transactions(self):
        if self.failures:
            self.failures -= 1
            raise ConnectionFailure('no server answered')
        return False


def test_a_failure_to_learn_the_deployment_forgets_the_change(
        client, dbname, db):
    dm = MongoDataManager(client, default_database=dbname,
                          transactions='auto',
                          deployment=FlakyDeployment(client))
    lost = Simple(x='lost')
    with pytest.raises(ConnectionFailure):
        dm.insert(lost)
    transaction.abort()
    assert lost._p_jar is None
    dm.insert(Simple(x='kept'))
    transaction.commit()
    assert [doc['x'] for doc in db['tests.model.Simple'].find()] == ['kept']


def test_cache_size_reaches_the_data_managers(client, dbname):
    assert Store(client, dbname, cache_size=7).open()._cache.size == 7
    default = MongoDataManager(client, default_database=dbname)._cache.size
    assert Store(client, dbname).open()._cache.size == default


def test_cache_size_reaches_data_managers_that_take_it(client, dbname):
    made = []

    class SizedDataManager(MongoDataManager):
        def __init__(self, *args, cache_size=None, **kwargs):
            made.append(cache_size)
            super().__init__(*args, **kwargs)

    class SizedStore(Store):
        data_manager_class = SizedDataManager

    assert isinstance(SizedStore(client, dbname, cache_size=500).open(),
                      SizedDataManager)
    SizedStore(client, dbname).open()
    assert made == [500, None]


def test_cache_size_is_accepted_by_any_data_manager(client, dbname):
    class PlainDataManager(MongoDataManager):
        def __init__(self, client, default_database=None, **kwargs):
            assert 'cache_size' not in kwargs
            super().__init__(client, default_database, **kwargs)

    class PlainStore(Store):
        data_manager_class = PlainDataManager

    assert PlainStore(client, dbname, cache_size=500).open()


# -- several databases --------------------------------------------------------------
class AuditEntry(persistent.Persistent):
    """Lives in a database of its own (``_p_mongo_database``, per test)."""
    _p_mongo_collection = 'audit'

    def __init__(self, text):
        self.text = text


def test_classes_spread_over_databases_through_one_store(
        client, dbname, monkeypatch):
    audit = dbname + '_audit'
    monkeypatch.setattr(AuditEntry, '_p_mongo_database', audit,
                        raising=False)
    store = Store(client, dbname)
    try:
        with store.transaction() as dm:
            dm.root['entry'] = AuditEntry('opened')
        assert client[audit]['audit'].find_one()['text'] == 'opened'
        (root,) = client[dbname]['persistence_root'].find()
        assert root['ref'].database == audit
        with store.transaction() as dm:
            assert dm.root['entry'].text == 'opened'
    finally:
        client.drop_database(audit)


def test_two_stores_in_one_process_keep_apart(client, dbname):
    one, two = Store(client, dbname), Store(client, dbname + '_two')
    try:
        with one.transaction() as dm:
            dm.root['x'] = Simple(x=1)
        with two.transaction() as dm:
            assert 'x' not in dm.root
            dm.root['x'] = Simple(x=2)
        with one.transaction() as dm:
            assert dm.root['x'].x == 1
        with two.transaction() as dm:
            assert dm.root['x'].x == 2
    finally:
        client.drop_database(dbname + '_two')


# -- Store.open: a data manager per thread --------------------------------------
def test_open_in_two_threads_gives_independent_data_managers(store):
    with store.transaction() as dm:
        dm.root['counter'] = Counter()
    opened = {}
    errors = []
    b_committed = threading.Event()
    a_checked = threading.Event()

    def thread_a():
        try:
            dm = opened['a'] = store.open()
            counter = dm.root['counter']
            assert counter.value == 0
            b_committed.wait(10)
            # Same transaction: what this thread read stays as it was.
            assert counter.value == 0
            transaction.abort()
            # Next transaction: B's commit is seen.
            assert counter.value == 1
            counter.value += 1
            transaction.commit()
        except BaseException as error:
            errors.append(error)
        finally:
            a_checked.set()

    def thread_b():
        try:
            dm = opened['b'] = store.open()
            counter = dm.root['counter']
            counter.value += 1
            transaction.commit()
            b_committed.set()
            a_checked.wait(10)
            transaction.abort()
            assert counter.value == 2
        except BaseException as error:
            errors.append(error)
        finally:
            b_committed.set()

    threads = [threading.Thread(target=t) for t in (thread_a, thread_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert opened['a'] is not opened['b']
    # From this (a third) thread, a thread's data manager refuses.
    with pytest.raises(interfaces.WrongThreadError):
        opened["a"].root["counter"].value
    with store.transaction() as dm:
        assert dm.root['counter'].value == 2


def test_open_binds_to_the_given_transaction_manager(store):
    manager = transaction.TransactionManager(explicit=True)
    dm = store.open(manager)
    assert dm.transaction_manager is manager
    manager.begin()
    dm.root['s'] = Simple(x=1)
    manager.commit()
    fresh = store.open()
    assert fresh.root['s'].x == 1


# -- Store.transaction -----------------------------------------------------------
def test_transaction_commits_or_aborts(store, db):
    with store.transaction() as dm:
        dm.root['s'] = Simple(x=1)
    with pytest.raises(ZeroDivisionError):
        with store.transaction() as dm:
            dm.root['s'].x = 2
            dm.insert(Simple(x=3))
            1 / 0
    assert [doc['x'] for doc in db['tests.model.Simple'].find()] == [1]


def test_transaction_retries_conflicts_until_they_stop(store, retry_waits):
    with store.transaction() as dm:
        dm.root['counter'] = Counter()
    runs = []
    for attempt in store.transaction(attempts=4):
        with attempt as dm:
            counter = dm.root['counter']
            counter.value += 10
            runs.append(counter.value)
            if len(runs) < 3:
                # Somebody else commits first: this commit conflicts.
                with store.transaction() as other:
                    other.root['counter'].value += 1
    assert runs == [10, 11, 12]
    assert len(retry_waits) == 2
    assert all(0 <= w <= 0.02 for w in retry_waits)
    with store.transaction() as dm:
        assert dm.root['counter'].value == 12


def test_transaction_gives_up_after_its_attempts(store, retry_waits):
    with store.transaction() as dm:
        dm.root['counter'] = Counter()
    runs = []
    with pytest.raises(interfaces.ConflictError):
        for attempt in store.transaction(attempts=2):
            with attempt as dm:
                runs.append(1)
                dm.root['counter'].value += 10
                with store.transaction() as other:
                    other.root['counter'].value += 1
    assert len(runs) == 2
    with store.transaction() as dm:
        assert dm.root['counter'].value == 2


def test_transaction_does_not_retry_other_errors(store):
    runs = []
    with pytest.raises(KeyError):
        for attempt in store.transaction(attempts=5):
            with attempt as dm:
                runs.append(1)
                dm.root['missing']
    assert runs == [1]


def test_a_doomed_transaction_is_aborted(store, db):
    with store.transaction() as dm:
        dm.insert(Simple(x=1))
        dm.transaction_manager.doom()
    assert db['tests.model.Simple'].count_documents({}) == 0


def test_retry_delays_grow_with_jitter():
    for retry in range(1, 12):
        cap = min(1.0, 0.01 * 2 ** (retry - 1))
        delays = [retry_delay(retry) for _ in range(50)]
        assert all(0 <= d <= cap for d in delays)
        assert len(set(delays)) > 1


def test_settings_module_refuses_unacknowledged_clients_only():
    settings.refuse_unacknowledged(object())    # no write concern: fine


class FakeAdmin:
    """Answers ``hello`` with ``error`` (if any), ``isMaster`` with a
    replica-set member's reply."""

    def __init__(self, error=None):
        self.error = error
        self.asked = []

    def command(self, name):
        self.asked.append(name)
        if name == 'hello' and self.error is not None:
            raise self.error
        return {'ismaster': True, 'setName': 'rs0', 'maxWireVersion': 8}


class FakeClient:
    def __init__(self, error=None):
        self.admin = FakeAdmin(error)


def test_a_server_without_hello_is_asked_with_is_master():
    client = FakeClient(OperationFailure('no such command: hello', 59))
    assert sessions.deployment_supports_transactions(client) is True
    assert client.admin.asked == ['hello', 'isMaster']


def test_other_server_errors_are_raised_not_taken_for_no_transactions():
    client = FakeClient(OperationFailure('Authentication failed.', 18))
    with pytest.raises(OperationFailure, match='Authentication failed'):
        sessions.deployment_supports_transactions(client)


def test_memory_without_mongomock_says_what_to_install(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, 'mongomock', None)
    with pytest.warns(mongopersist.InMemoryStoreWarning):
        with refused(r'needs mongomock: pip install mongopersist\[embedded\]'):
            mongopersist.connect('memory://', database='x')
