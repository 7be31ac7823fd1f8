"""``python -m benchmarks.cache``: what validating the object cache costs
in Python, by how many collections it holds.

An ``ObjectCache`` (no data manager, no backend: serials are read from a
stand-in that answers at once) holds ``--objects`` loaded objects with
their documents in each of 1 and ``--collections`` collections.
Measured, best of ``--repeat``: validating one collection (what the first
use of a collection in a transaction costs besides the read), turning
the objects a transaction loaded (those of one collection) into ghosts at
its end (what an implicit transaction manager's boundary costs), and
applying one pushed invalidation (a boundary with ``watch_changes``).
Then, with a data manager on the stand-in holding the same objects: a
savepoint and its rollback in a transaction that changed one object,
with the round trips they make (none: nothing was flushed).  Printed
with the ratio of many collections held to one: the cost should follow
what is validated or changed, not what is held.
"""
import argparse
import time

import persistent
import transaction
from bson.objectid import ObjectId

from benchmarks.counting import counting, listen
from mongopersist import metadata, testing
from mongopersist.cache import ObjectCache
from mongopersist.datamanager import MongoDataManager


class Item(persistent.Persistent):
    pass


class _Jar:
    """What the objects need of a data manager: activation marks use."""

    def __init__(self, cache):
        self.cache = cache

    def setstate(self, obj):
        self.cache.used(obj._p_oid, obj)

    def register(self, obj):
        pass


def _filled(collections, objects):
    """A cache holding ``objects`` loaded objects in each of
    ``collections`` collections; the objects of the first collection."""
    cache = ObjectCache(size=collections * objects)
    jar = _Jar(cache)
    held = []
    for number in range(collections):
        for _ in range(objects):
            ref = metadata.OID('coll%d' % number, ObjectId(), 'bench')
            obj = Item()
            obj._p_jar = jar
            obj._p_oid = ref
            cache[ref] = obj
            cache.docs[ref] = {'_id': ref.id, '_py_serial': 1}
            held.append(obj)
    cache.end_transaction()
    return cache, held, held[:objects]


def _current(database, collection, ids):
    return {doc_id: 1 for doc_id in ids}


def _best(repeat, prepare, run):
    """Best seconds of ``run()`` over ``repeat`` runs, ``prepare()``
    (not timed) before each."""
    best = float('inf')
    for _ in range(repeat):
        prepare()
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def measure(collections, objects, repeat):
    """Best seconds of ``(validating one collection, turning the objects
    of one collection used in a transaction into ghosts, applying one
    pushed invalidation)``."""
    cache, held, first = _filled(collections, objects)
    validate = _best(repeat, lambda: None, lambda: cache.validate(
        _current, [('bench', 'coll0')]))
    cache.deactivate_all()

    def use_first():
        for obj in first:
            obj._p_activate()
        cache.end_transaction()

    ghosts = _best(repeat, use_first, cache.deactivate_all)
    assert all(obj._p_status == 'ghost' for obj in held)
    ref = first[0]._p_oid

    def load_first():
        first[0]._p_activate()
        cache.docs[ref] = {'_id': ref.id, '_py_serial': 1}

    invalidate = _best(repeat, load_first,
                       lambda: cache.invalidate([(ref, 2)]))
    assert ref not in cache.docs
    return validate, ghosts, invalidate


class Held(persistent.Persistent):
    _p_mongo_collection = 'held'

    def __init__(self, number):
        self.number = number


def measure_savepoint(count, repeat):
    """Best seconds of ``(a savepoint, its rollback)`` in a transaction
    that changed one of ``count`` held objects, and the round trips of
    one savepoint and rollback."""
    real_server = testing.uses_real_server()
    if real_server:
        listen()        # before the client: it reports to ``counting``
    client = testing.client()
    database = 'mongopersist_bench_savepoint'
    client.drop_database(database)
    tm = transaction.TransactionManager(explicit=True)
    dm = MongoDataManager(client, default_database=database,
                          detect_conflicts=True, transaction_manager=tm,
                          cache_size=count)
    tm.begin()
    for number in range(count):
        dm.insert(Held(number))
    tm.commit()
    tm.begin()
    objects = list(dm.find_objects(Held, {}, allow_global=True))
    objects[0].number = -1
    savepoints = []
    savepoint = _best(repeat, lambda: None,
                      lambda: savepoints.append(tm.savepoint()))
    rollback = _best(repeat, lambda: None, savepoints[0].rollback)
    with counting(real_server) as trips:
        tm.savepoint().rollback()
    assert objects[0].number == -1
    tm.abort()
    dm.close()
    client.drop_database(database)
    return savepoint, rollback, trips.reads + trips.writes


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m benchmarks.cache',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--objects', type=int, default=400)
    parser.add_argument('--collections', type=int, default=10)
    parser.add_argument('--repeat', type=int, default=50)
    args = parser.parse_args(argv)
    one = measure(1, args.objects, args.repeat)
    many = measure(args.collections, args.objects, args.repeat)
    held = args.collections * args.objects
    one_sp = measure_savepoint(args.objects, args.repeat)
    many_sp = measure_savepoint(held, args.repeat)
    print('%d loaded objects per collection, best of %d' % (
        args.objects, args.repeat))
    print('%-44s %12s %12s %8s' % (
        '', '1 held', '%d held' % args.collections, 'ratio'))
    for label, a, b in (('validate one collection (ms)', one[0], many[0]),
                        ('ghosts after using one collection (ms)',
                         one[1], many[1]),
                        ('apply one pushed invalidation (ms)',
                         one[2], many[2]),
                        ('savepoint, one object changed (ms)',
                         one_sp[0], many_sp[0]),
                        ('rollback to it (ms)', one_sp[1], many_sp[1])):
        print('%-44s %12.3f %12.3f %7.2fx' % (label, a * 1e3, b * 1e3,
                                             b / a))
    print('%-44s %12d %12d' % ('round trips of savepoint and rollback',
                               one_sp[2], many_sp[2]))
    return one + one_sp, many + many_sp


if __name__ == '__main__':
    main()
