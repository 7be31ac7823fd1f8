"""Concurrency evidence: threads incrementing one counter lose nothing.

Eight threads, each with its own data manager over one shared client,
increment the same counter 100 times, retrying conflicts.  The stored value
must be exactly 800.  Runs on the stand-in and, with MONGODB_URI, on a real
server.
"""
import threading

import transaction

from mongopersist.datamanager import MongoDataManager
from tests.model import Counter

THREADS = 8
INCREMENTS = 100


def test_concurrent_increments_lose_nothing(client, dbname, db):
    setup = MongoDataManager(client, default_database=dbname,
                             detect_conflicts=True)
    setup.root['counter'] = Counter(0)
    transaction.commit()
    errors = []
    attempts = []

    def work():
        try:
            manager = transaction.TransactionManager()
            dm = MongoDataManager(client, default_database=dbname,
                                  detect_conflicts=True,
                                  transaction_manager=manager)
            for _ in range(INCREMENTS):
                for attempt in manager.attempts(1000):
                    with attempt:
                        attempts.append(1)
                        dm.root['counter'].value += 1
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    doc = db['counter'].find_one()
    assert doc['value'] == THREADS * INCREMENTS
    assert doc['_py_serial'] == THREADS * INCREMENTS + 1
    assert len(attempts) >= THREADS * INCREMENTS
