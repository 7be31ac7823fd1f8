"""Memory held per loaded object: mongopersist, raw PyMongo and ZODB.

``python -m benchmarks.memory [--n 20000]`` (and ``make bench``, after
the timed scenarios) loads ``n`` benchmark people and touches
``person.address.city`` of each, holding them, then reports the bytes
still allocated per person after a garbage collection (``tracemalloc``:
what the loading allocated and did not free):

* mongopersist: a new data manager (conflict detection on, as a cache
  that lives across transactions has it), ``dm.find_objects(Person)``:
  the objects, their addresses, and what the data manager keeps for them
  (the identity map, the documents loaded);
* raw PyMongo: the documents of one ``find()``, and the addresses of
  one ``$in`` query;
* ZODB (FileStorage): a new ``DB`` on the storage, the people of the
  tree (their addresses, and the connection's cache).

Everything is in the process (the stand-in, or a server's documents once
received); the figure is the client's memory per object.
"""
import argparse
import gc
import os
import shutil
import tempfile
import tracemalloc
import uuid

import transaction

from benchmarks import model

SYSTEMS = ('pymongo', 'mongopersist', 'zodb-file')


def _measure(load):
    """Bytes allocated by ``load()`` and still held (with what it
    returns) after a collection."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = load()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del held
    return after - before


def mongopersist_bytes(client, database, dataset):
    from mongopersist.datamanager import MongoDataManager
    tm = transaction.TransactionManager()
    dm = MongoDataManager(client, default_database=database,
                          transaction_manager=tm)
    addresses = dataset.persistent_addresses()
    for person in dataset.persistent_people(addresses):
        dm.insert(person)
    tm.commit()
    del dm, addresses

    def load():
        loader = MongoDataManager(client, default_database=database,
                                  transaction_manager=tm,
                                  detect_conflicts=True)
        people = list(loader.find_objects(model.Person))
        for person in people:
            person.address.city
        return loader, people
    try:
        return _measure(load)
    finally:
        tm.abort()
        client.drop_database(database)


def pymongo_bytes(client, database, dataset):
    from benchmarks.systems.raw import RawPyMongo
    db = client[database]
    raw = RawPyMongo.__new__(RawPyMongo)
    raw.dataset = dataset
    addresses = raw._address_docs()
    db[model.ADDRESS_COLLECTION].insert_many(addresses)
    db[model.PERSON_COLLECTION].insert_many(raw._person_docs(addresses))
    del addresses

    def load():
        people = list(db[model.PERSON_COLLECTION].find())
        ids = list({doc['address'] for doc in people})
        found = {doc['_id']: doc for doc in db[model.ADDRESS_COLLECTION].find(
            {'_id': {'$in': ids}})}
        for doc in people:
            found[doc['address']]['city']
        return people, found
    try:
        return _measure(load)
    finally:
        client.drop_database(database)


def zodb_bytes(dataset):
    import ZODB
    from BTrees.IOBTree import IOBTree
    from ZODB.FileStorage import FileStorage
    tmpdir = tempfile.mkdtemp(prefix='mp-memory-')
    try:
        storage = FileStorage(os.path.join(tmpdir, 'memory.fs'))
        tm = transaction.TransactionManager()
        db = ZODB.DB(storage)
        conn = db.open(tm)
        addresses = dataset.persistent_addresses()
        people = IOBTree()
        for index, person in enumerate(dataset.persistent_people(addresses)):
            people[index] = person
        conn.root()['people'] = people
        tm.commit()
        conn.close()
        db.close()
        del people, addresses, conn, db
        storage = FileStorage(os.path.join(tmpdir, 'memory.fs'))

        def load():
            # A cache large enough to hold them all, as mongopersist's
            # identity map does.
            db = ZODB.DB(storage, cache_size=2 * len(dataset.persons) + 100)
            conn = db.open(tm)
            loaded = list(conn.root()['people'].values())
            for person in loaded:
                person.address.city
            return db, conn, loaded
        try:
            return _measure(load)
        finally:
            tm.abort()
            storage.close()
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def measure(client, n, systems=SYSTEMS):
    """``{system: bytes per person}`` for ``n`` people."""
    dataset = model.Dataset(n)
    results = {}
    prefix = 'mp_memory_%s' % uuid.uuid4().hex[:8]
    for system in systems:
        if system == 'mongopersist':
            total = mongopersist_bytes(client, prefix + '_mp', dataset)
        elif system == 'pymongo':
            total = pymongo_bytes(client, prefix + '_raw', dataset)
        elif system == 'zodb-file':
            total = zodb_bytes(dataset)
        else:
            continue
        results[system] = total / n
    return results


def format_memory(results, n):
    """Lines of the report, with the goal of issue 20 (at most ZODB's
    figure plus 25%)."""
    lines = ['Memory held per loaded person (%d people, tracemalloc after '
             'a collection):' % n]
    for system, per in results.items():
        lines.append('  %-13s %7s bytes' % (system, '{:,.0f}'.format(per)))
    ours, zodb = results.get('mongopersist'), results.get('zodb-file')
    if ours is not None and zodb:
        lines.append('  mongopersist holds %.2f x what ZODB holds; goal '
                     '<= 1.25 x' % (ours / zodb))
    return lines


def main(argv=None):
    from mongopersist import testing
    parser = argparse.ArgumentParser(prog='python -m benchmarks.memory')
    parser.add_argument('--n', type=int, default=20000)
    args = parser.parse_args(argv)
    client = testing.client()
    try:
        results = measure(client, args.n)
    finally:
        client.close()
    for line in format_memory(results, args.n):
        print(line)


if __name__ == '__main__':
    main()
