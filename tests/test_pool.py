"""The pool of a store's data managers (``mongopersist.pool``).

A data manager whose request or unit of work is over goes back to its
store's pool with its cache; ``Store.open()`` hands the most recently
returned one out again, bound to the caller's transaction manager, and what
its cache holds is validated before use.  Two users never share one; the
pool keeps ``pool_size`` at most; a data manager in a transaction is not
taken back silently.
"""
import logging
import threading

import pytest
import transaction
import webtest

import mongopersist
from mongopersist import interfaces
from mongopersist.store import Store
from tests.model import Simple
from tests.test_blogapp import add_post, load_example, wsgi_app
# A store whose root holds a Counter at 0.
from tests.test_wsgi import store  # noqa: F401 (fixture)


def explicit():
    return transaction.TransactionManager(explicit=True)


def commit_elsewhere(client, dbname, value):
    """Another store (another process, as far as ``store`` knows) sets the
    counter to ``value``."""
    with Store(client, dbname, pool_size=0).transaction() as other:
        other.root['counter'].value = value


# -- reuse ----------------------------------------------------------------------
def test_a_closed_data_manager_is_opened_again_most_recent_first(store):
    first, second = store.open(explicit()), store.open(explicit())
    assert first is not second and len(store.pool) == 0
    first.close()
    second.close()
    assert len(store.pool) == 2
    manager = explicit()
    again = store.open(manager)
    assert again is second                  # the most recently closed
    assert again.transaction_manager is manager
    assert store.open(explicit()) is first
    assert store.open(explicit()) not in (first, second)
    assert len(store.pool) == 0


def test_store_transaction_gives_its_data_manager_back(store, retry_waits):
    with store.transaction() as dm:
        pass
    assert len(store.pool) == 1
    with store.transaction() as again:
        assert again is dm
        with store.transaction() as other:
            # In use above: never handed out twice.
            assert other is not dm
    assert len(store.pool) == 2
    # Attempts of one unit of work keep their data manager; it goes back
    # after the last.
    seen = []
    for attempt in store.transaction(attempts=3):
        with attempt as dm:
            seen.append(dm)
            assert len(store.pool) == 1
            dm.root['counter'].value += 1
            if len(seen) == 1:
                with store.transaction() as other:
                    other.root['counter'].value += 10
    assert len(seen) == 2 and seen[0] is seen[1]
    assert len(store.pool) == 2
    with store.transaction() as dm:
        assert dm.root['counter'].value == 11


def test_the_cache_stays_warm_in_the_pool(store):
    manager = explicit()
    dm = store.open(manager)
    manager.begin()
    counter = dm.root['counter']
    assert counter.value == 0
    manager.commit()
    dm.close()
    manager = explicit()
    manager.begin()
    again = store.open(manager)
    assert again is dm
    # Validated (nobody changed it): still loaded, the same object.
    assert counter._p_status != 'ghost'
    assert again.root['counter'] is counter and counter.value == 0
    manager.abort()
    again.close()


def test_a_second_request_through_the_example_app_reads_less(
        roundtrips, dbname):
    blogapp = load_example('blogapp')

    def reads_of_second_request(pool_size):
        store = Store(roundtrips.client, dbname + str(pool_size),
                      trusted_modules=('blogmodel',), pool_size=pool_size)
        app = webtest.TestApp(wsgi_app(blogapp, store))
        posts = [add_post(app, title='Post %d' % n, author='A%d' % n)
                 for n in range(5)]
        app.get('/')
        app.get('/posts/%s' % posts[0])
        roundtrips.reset()
        page = app.get('/')
        assert page.text.count('<li><a href') == 5
        listing = roundtrips.reads_total
        roundtrips.reset()
        assert 'Post 0' in app.get('/posts/%s' % posts[0]).text
        return listing, roundtrips.reads_total

    try:
        fresh = reads_of_second_request(0)
        pooled = reads_of_second_request(7)
    finally:
        for size in (0, 7):
            roundtrips.client.drop_database(dbname + str(size))
    # A new data manager reads the type map, the root, the blog, and every
    # post, author and counter; the pooled one reads the root entry and
    # validates what it holds, one query per collection (blogs, posts,
    # authors, counters).
    assert pooled[0] <= 1 + 4 < fresh[0], (pooled, fresh)
    # Showing one post queries it by _id (a query always reads), reads the
    # root entry (the blog's title heads every page), and validates all
    # the cache holds: bounded, whatever the number of posts.
    assert pooled[1] <= 2 + 4, (pooled, fresh)


# -- staleness: what others committed meanwhile is seen ---------------------
@pytest.mark.parametrize('how', ['begun before open', 'begun after open',
                                 'thread manager'])
def test_a_pooled_data_manager_sees_what_others_committed(
        store, client, dbname, how):
    def run(work):
        if how == 'thread manager':
            dm = store.open()
            result = work(dm)
            transaction.commit()
        else:
            manager = explicit()
            if how == 'begun before open':
                manager.begin()
            dm = store.open(manager)
            if how == 'begun after open':
                manager.begin()
            result = work(dm)
            manager.commit()
        dm.close()
        return dm, result

    first, (counter, value) = run(
        lambda dm: (dm.root['counter'], dm.root['counter'].value))
    assert value == 0
    commit_elsewhere(client, dbname, 5)

    # The object held from the last use is current, read through the data
    # manager or not.
    second, value = run(lambda dm: counter.value)
    assert second is first and value == 5
    commit_elsewhere(client, dbname, 6)

    def increment(dm):
        dm.root['counter'].value += 1
        return dm.root['counter']
    third, again = run(increment)
    assert third is first and again is counter
    assert client[dbname]['counter'].find_one()['value'] == 7


# -- two users never share one ------------------------------------------------
def test_two_threads_never_share_a_data_manager(store):
    holders = {}
    lock = threading.Lock()
    errors = []
    start = threading.Barrier(4, timeout=30)

    def work(name):
        try:
            start.wait()
            for _ in range(25):
                manager = explicit()
                dm = store.open(manager)
                with lock:
                    assert id(dm) not in holders, 'shared'
                    holders[id(dm)] = name
                manager.begin()
                dm.root['counter'].value   # use it
                manager.abort()
                with lock:
                    del holders[id(dm)]
                dm.close()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors
    assert 1 <= len(store.pool) <= 4


def test_the_pool_keeps_pool_size_data_managers_at_most(client, dbname):
    store = Store(client, dbname, pool_size=2)
    opened = [store.open(explicit()) for _ in range(4)]
    shut = []
    for dm in opened:
        dm._shut_down = (lambda dm=dm: shut.append(dm))
    for dm in opened:
        dm.close()
    # The least recently returned went (and were shut down).
    assert shut == opened[:2]
    assert [store.open(explicit()) for _ in range(2)] == opened[:1:-1]
    assert store.open(explicit()) not in opened


def test_pool_size_zero_makes_a_new_data_manager_each_time(client, dbname):
    store = Store(client, dbname, pool_size=0)
    dm = store.open()
    dm.close()
    assert len(store.pool) == 0 and store.open() is not dm


def test_store_close_shuts_the_waiting_data_managers_down(store):
    dm = store.open()
    shut = []
    dm._shut_down = lambda: shut.append(dm)
    dm.close()
    store.close()
    assert shut == [dm] and len(store.pool) == 0


# -- threads and transaction managers after rebinding ---------------------------
def test_rebinding_moves_the_thread_check_and_the_synchronizer(store):
    opened = {}

    def in_thread():
        dm = opened['dm'] = store.open()     # the thread's manager
        dm.root['counter'].value
        transaction.abort()
        opened['manager'] = transaction.manager.manager
        dm.close()

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(30)
    dm = store.open()
    assert dm is opened['dm']
    # Now this thread's: usable here, and hears this thread's boundaries.
    assert dm.root['counter'].value == 0
    assert dm in transaction.manager.manager._synchs
    assert dm not in opened['manager']._synchs
    errors = []

    def use():
        try:
            dm.root['counter'].value
        except BaseException as error:
            errors.append(error)
    thread = threading.Thread(target=use)
    thread.start()
    thread.join(30)
    assert len(errors) == 1
    assert isinstance(errors[0], interfaces.WrongThreadError)
    transaction.abort()
    dm.close()
    assert dm not in transaction.manager.manager._synchs
    # Bound to an explicit manager, it works from any thread.
    manager = explicit()
    dm = store.open(manager)
    assert dm is opened['dm']

    def use_explicitly():
        try:
            manager.begin()
            dm.root['counter'].value += 1
            manager.commit()
        except BaseException as error:
            errors.append(error)
    thread = threading.Thread(target=use_explicitly)
    thread.start()
    thread.join(30)
    assert len(errors) == 1, errors
    dm.close()
    with store.transaction() as dm:
        assert dm.root['counter'].value == 1


# -- closing: a closed data manager refuses; one in a transaction is kept -------
def test_a_closed_data_manager_refuses_use(store):
    dm = store.open()
    counter = dm.root['counter']
    transaction.abort()
    dm.close()
    dm.close()                      # twice: nothing more
    assert len(store.pool) == 1
    with pytest.raises(interfaces.DataManagerStateError, match='closed'):
        dm.root['counter']
    with pytest.raises(interfaces.DataManagerStateError, match='closed'):
        counter.value               # a ghost: it would load through dm


def test_closing_in_a_transaction_is_refused(store, db):
    dm = store.open()
    dm.root['counter'].value = 3
    with pytest.raises(interfaces.DataManagerStateError,
                       match='commit or abort'):
        dm.close()
    assert len(store.pool) == 0
    # Still open and usable: the work can be finished.
    transaction.commit()
    dm.close()
    assert len(store.pool) == 1
    assert db['counter'].find_one()['value'] == 3


def test_given_back_in_a_transaction_the_changes_are_aborted(
        store, db, caplog):
    dm = store.open()
    dm.root['counter'].value = 3
    dm.insert(Simple(x=1))
    with caplog.at_level(logging.WARNING, logger='mongopersist'):
        store.give_back(dm)
    assert 'not committed' in caplog.text and 'aborted' in caplog.text
    assert len(store.pool) == 1
    transaction.commit()            # nothing of it is left to commit
    assert db['counter'].find_one()['value'] == 0
    assert db['tests.model.Simple'].count_documents({}) == 0
    again = store.open()
    assert again is dm and again.root['counter'].value == 0


# -- the setting ------------------------------------------------------------------
def test_pool_size_setting(client, dbname):
    assert Store(client, dbname).pool_size == 7
    assert Store(client, dbname).pool.size == 7
    for bad in (-1, 'many', 1.5, True):
        with pytest.raises(mongopersist.ConfigurationError,
                           match='pool_size must be a whole number'):
            Store(client, dbname, pool_size=bad)


def test_pool_size_from_settings_text(recwarn):
    store = mongopersist.store_from_settings({
        'mongopersist.uri': 'memory://', 'mongopersist.database': 'app',
        'mongopersist.pool_size': '3'})
    assert store.pool_size == 3 and store.pool.size == 3
    with pytest.raises(mongopersist.ConfigurationError,
                       match='mongopersist.pool_size: pool_size must be a '
                             'whole number, not'):
        mongopersist.store_from_settings({
            'mongopersist.uri': 'memory://', 'mongopersist.database': 'app',
            'mongopersist.pool_size': 'few'})


def test_request_dm_on_the_thread_manager_moves_between_server_threads(
        store):
    """pyramid_tm's default manager is the thread's: a pooled data manager
    serves a request in one thread, then in another."""
    from pyramid.config import Configurator
    from pyramid.response import Response
    seen = []

    def view(request):
        dm = request.dm
        seen.append((dm, dm._thread, threading.get_ident()))
        dm.root['counter'].value += 1
        return Response(str(dm.root['counter'].value))

    config = Configurator()
    config.registry['mongopersist.store'] = store
    config.include('mongopersist.pyramid')
    config.add_route('view', '/')
    config.add_view(view, route_name='view')
    app = webtest.TestApp(config.make_wsgi_app())
    answers = []
    done = threading.Event()

    def request(wait):
        answers.append(app.get('/').text)
        if wait:
            done.wait(30)     # alive: the next thread has another ident
    first_thread = threading.Thread(target=request, args=(True,))
    first_thread.start()
    while not answers and first_thread.is_alive():
        first_thread.join(0.01)
    second_thread = threading.Thread(target=request, args=(False,))
    second_thread.start()
    second_thread.join(30)
    done.set()
    first_thread.join(30)
    assert answers == ['1', '2']
    (first, thread1, ident1), (second, thread2, ident2) = seen
    assert first is second
    assert (thread1, thread2) == (ident1, ident2) and ident1 != ident2
    assert len(store.pool) == 1
