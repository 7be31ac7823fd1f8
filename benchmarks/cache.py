"""``python -m benchmarks.cache``: what validating the object cache costs
in Python, by how many collections it holds.

An ``ObjectCache`` (no data manager, no backend: serials are read from a
stand-in that answers at once) holds ``--objects`` loaded objects with
their documents in each of 1 and ``--collections`` collections.
Measured, best of ``--repeat``: validating one collection (what the first
use of a collection in a transaction costs besides the read), and turning
the objects a transaction loaded (those of one collection) into ghosts at
its end (what an implicit transaction manager's boundary costs).  Printed
with the ratio of many collections held to one: the cost should follow
what is validated, not what is held.
"""
import argparse
import time

import persistent
from bson.objectid import ObjectId

from mongopersist import metadata
from mongopersist.cache import ObjectCache


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


def measure(collections, objects, repeat):
    """Best seconds of ``(validating one collection, turning the objects
    of one collection used in a transaction into ghosts)``."""
    cache, held, first = _filled(collections, objects)
    validate = float('inf')
    for _ in range(repeat):
        start = time.perf_counter()
        cache.validate(_current, [('bench', 'coll0')])
        validate = min(validate, time.perf_counter() - start)
    cache.deactivate_all()
    ghosts = float('inf')
    for _ in range(repeat):
        for obj in first:
            obj._p_activate()
        cache.end_transaction()
        start = time.perf_counter()
        cache.deactivate_all()
        ghosts = min(ghosts, time.perf_counter() - start)
    assert all(obj._p_status == 'ghost' for obj in held)
    return validate, ghosts


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m benchmarks.cache',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--objects', type=int, default=400)
    parser.add_argument('--collections', type=int, default=10)
    parser.add_argument('--repeat', type=int, default=50)
    args = parser.parse_args(argv)
    one = measure(1, args.objects, args.repeat)
    many = measure(args.collections, args.objects, args.repeat)
    print('%d loaded objects per collection, best of %d' % (
        args.objects, args.repeat))
    print('%-44s %12s %12s %8s' % (
        '', '1 held', '%d held' % args.collections, 'ratio'))
    for label, a, b in (('validate one collection (ms)', one[0], many[0]),
                        ('ghosts after using one collection (ms)',
                         one[1], many[1])):
        print('%-44s %12.3f %12.3f %7.2fx' % (label, a * 1e3, b * 1e3,
                                             b / a))
    return one, many


if __name__ == '__main__':
    main()
