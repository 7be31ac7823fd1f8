"""Units of work of one store, interleaved: a model-based test.

Several workers (each a ``Store.transaction()`` with its own transaction
manager and data manager) increment one counter and log their name, their
steps interleaved in every order hypothesis picks: begin an attempt (read
the counter), change it, commit, or fail with an error.  The model says
which commits must conflict (somebody committed since this attempt read)
and checks that a conflicting attempt is retried until the attempts run
out, that failed attempts leave nothing, and that the stored counter always
equals the number of increments that were committed, and so does its log.

A unit of work that ends gives its data manager back to the store's pool
(two at most wait there), and the next unit of work that begins takes it,
its cache warm: what it held must have been validated (a unit of work
reads the counter every other worker committed), and no two running
workers ever share a data manager.
"""

import pytest
import transaction
from hypothesis import settings
from hypothesis.stateful import (
    RuleBasedStateMachine, invariant, precondition, rule)
from hypothesis.strategies import sampled_from

from mongopersist import interfaces
from mongopersist.store import Store
from tests.model import Simple

SETUP = {}
WORKERS = ('w0', 'w1', 'w2')
ATTEMPTS = 3


class Worker:
    """A worker's unit of work in progress."""

    def __init__(self, store):
        self.attempts = iter(store.transaction(attempts=ATTEMPTS))
        self.number = 0         # attempts begun
        self.attempt = None     # the attempt running, if any
        self.dm = None
        self.read = None        # the version read by this attempt
        self.changes = 0        # increments made by this attempt
        self.counter = None     # held, as a unit of work holds its objects


class StoreUnitsOfWork(RuleBasedStateMachine):

    def __init__(self):
        super().__init__()
        # The suite's client and a database of the test's own (a class
        # attribute would be taken for a rule by hypothesis).
        self.client, self.dbname = SETUP['client'], SETUP['dbname']
        self.client.drop_database(self.dbname)
        self.store = Store(self.client, self.dbname, pool_size=2)
        with self.store.transaction() as dm:
            dm.root['counter'] = Simple(value=0, log=[])
        self.version = 0        # committed increments (the model)
        self.log = []
        self.workers = {}

    def teardown(self):
        for worker in self.workers.values():
            if worker.attempt is not None:
                worker.attempt.transaction_manager.abort()
        self.client.drop_database(self.dbname)
        transaction.abort()

    def running(self, name):
        worker = self.workers.get(name)
        return worker is not None and worker.attempt is not None

    @rule(name=sampled_from(WORKERS))
    def begin(self, name):
        """Begin a unit of work, or the next attempt of one that
        conflicted; read the counter."""
        if self.running(name):
            return
        worker = self.workers.get(name)
        if worker is None:
            worker = self.workers[name] = Worker(self.store)
        try:
            worker.attempt = next(worker.attempts)
        except StopIteration:
            # The last attempt ended (committed, failed or gave up).
            worker = self.workers[name] = Worker(self.store)
            worker.attempt = next(worker.attempts)
        worker.number += 1
        worker.dm = worker.attempt.__enter__()
        counter = worker.counter = worker.dm.root['counter']
        assert counter.value == self.version
        assert list(counter.log) == self.log
        worker.read = self.version
        worker.changes = 0

    @precondition(lambda self: any(map(self.running, WORKERS)))
    @rule(name=sampled_from(WORKERS))
    def change(self, name):
        if not self.running(name):
            return
        worker = self.workers[name]
        counter = worker.counter
        counter.value += 1
        counter.log = list(counter.log) + [name]
        worker.changes += 1

    @precondition(lambda self: any(map(self.running, WORKERS)))
    @rule(name=sampled_from(WORKERS))
    def commit(self, name):
        if not self.running(name):
            return
        worker = self.workers[name]
        attempt, worker.attempt = worker.attempt, None
        conflicts = bool(worker.changes) and worker.read != self.version
        if conflicts and worker.number == ATTEMPTS:
            with pytest.raises(interfaces.ConflictError):
                attempt.__exit__(None, None, None)
            self.workers.pop(name)
            return
        assert attempt.__exit__(None, None, None) is False
        assert attempt.retry is conflicts
        if conflicts:
            assert isinstance(attempt.error, interfaces.ConflictError)
        else:
            self.workers.pop(name)
            self.version += worker.changes
            self.log.extend([name] * worker.changes)

    @precondition(lambda self: any(map(self.running, WORKERS)))
    @rule(name=sampled_from(WORKERS))
    def fail(self, name):
        """The unit of work raises: aborted, not retried, raised."""
        if not self.running(name):
            return
        worker = self.workers.pop(name)
        error = KeyError('in the unit of work')
        suppressed = worker.attempt.__exit__(KeyError, error, None)
        assert not suppressed and not worker.attempt.retry

    @invariant()
    def running_workers_never_share_a_data_manager(self):
        running = [self.workers[name].dm for name in WORKERS
                   if self.running(name)]
        assert len(set(map(id, running))) == len(running)
        waiting = list(self.store.pool._available)
        assert len(waiting) <= 2
        assert not any(dm is w for dm in running for w in waiting)

    @invariant()
    def stored_counter_is_the_committed_increments(self):
        doc = self.client[self.dbname]['tests.model.Simple'].find_one()
        assert doc['value'] == self.version
        assert doc['log'] == self.log


def test_units_of_work_of_one_store(client, dbname, retry_waits,
                                    monkeypatch):
    monkeypatch.setitem(SETUP, 'client', client)
    monkeypatch.setitem(SETUP, 'dbname', dbname)
    state = settings(max_examples=40, stateful_step_count=25,
                     deadline=None)
    state(StoreUnitsOfWork).TestCase().runTest()
