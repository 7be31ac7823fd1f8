"""What the server behind the tests can do, found out by trying it.

Every test must pass on a real MongoDB, the in-process stand-in and any
server ``MONGODB_URI`` names, but a deployment may lack a feature: a
standalone server has no change streams, and a wire-protocol server such
as mongoeco (``make test-wire``) runs no geospatial queries.  Each probe
here tries the feature as the tests use it, in a database of its own that
it drops, and returns ``None`` when the server does what MongoDB does, or
why not.  The session fixtures of ``conftest.py`` (``geospatial_queries``,
``change_streams``) skip a test, or a doctest from where it asks, with
that reason.
"""
import uuid

from pymongo.errors import PyMongoError

# Two cafés 880 km apart (GeoJSON: longitude first).
_BERLIN = {'type': 'Point', 'coordinates': [13.40, 52.52]}
_PARIS = {'type': 'Point', 'coordinates': [2.35, 48.86]}
_NEAR_PARIS = {'type': 'Point', 'coordinates': [2.34, 48.85]}


def _scratch(client, what):
    return client['mp_probe_%s_%s' % (what, uuid.uuid4().hex[:8])]


def geospatial_gap(client):
    """``None`` if the server answers ``$near`` (nearest first, within
    ``$maxDistance`` meters) and ``$geoWithin`` ``$centerSphere`` on a
    ``2dsphere`` index as MongoDB does; else what it did instead."""
    db = _scratch(client, 'geo')
    queries = [
        ('$near with $maxDistance 5000 (meters)',
         {'$near': {'$geometry': _NEAR_PARIS, '$maxDistance': 5000}},
         ['paris']),
        ('$near (nearest first)', {'$near': {'$geometry': _NEAR_PARIS}},
         ['paris', 'berlin']),
        ('$geoWithin $centerSphere of 5 km',
         {'$geoWithin': {'$centerSphere': [_NEAR_PARIS['coordinates'],
                                           5 / 6378.1]}},
         ['paris']),
    ]
    try:
        places = db['places']
        places.create_index([('where', '2dsphere')])
        places.insert_many([{'_id': 'berlin', 'where': _BERLIN},
                            {'_id': 'paris', 'where': _PARIS}])
        for name, query, expected in queries:
            try:
                found = [doc['_id'] for doc in places.find({'where': query})]
            except PyMongoError as error:
                return ('the server runs no geospatial %s on a 2dsphere '
                        'index: %s' % (name, error))
            if found != expected:
                return ('the server answers a geospatial %s on a 2dsphere '
                        'index unlike MongoDB: %r instead of %r'
                        % (name, found, expected))
        return None
    finally:
        client.drop_database(db.name)


def change_stream_gap(client):
    """``None`` if the deployment opens a change stream on a database (a
    replica set or sharded cluster does; a standalone server and the
    stand-in do not); else why not."""
    db = _scratch(client, 'watch')
    try:
        with db.watch(max_await_time_ms=50) as stream:
            stream.try_next()
        return None
    except PyMongoError as error:
        return ('the deployment opens no change stream on a database (they '
                'need a replica set or sharded cluster): %s' % error)
    except (NotImplementedError, AttributeError, TypeError):
        # The stand-in: no ``watch`` (mongomock takes it for a collection).
        return '%s.%s has no change streams' % (type(client).__module__,
                                                type(client).__name__)
    finally:
        client.drop_database(db.name)


def concurrent_upsert_gap(client, threads=4, rounds=3):
    """``None`` if ``findAndModify`` with ``upsert`` and the new document
    returns that document (or a duplicate key error) to every one of
    several callers racing to create it, as MongoDB does; else what it
    returned instead (SecantusDB 0.7.0b3 returns no document to all but
    one, although their increments are applied)."""
    import threading

    from pymongo import ReturnDocument
    from pymongo.errors import DuplicateKeyError
    db = _scratch(client, 'upsert')
    missing = []
    try:
        for number in range(rounds):
            coll = db['race%d' % number]
            start = threading.Barrier(threads)

            def call():
                start.wait(timeout=30)
                try:
                    found = coll.find_one_and_update(
                        {'_id': 'counter'}, {'$inc': {'value': 1}},
                        upsert=True, return_document=ReturnDocument.AFTER)
                except DuplicateKeyError:
                    return
                if found is None:
                    missing.append(number)
            workers = [threading.Thread(target=call) for _ in range(threads)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        if missing:
            return ('the server returns no document to %d of %d callers '
                    'racing to upsert one with findAndModify (MongoDB '
                    'returns it, or a duplicate key error)'
                    % (len(missing), threads * rounds))
        return None
    finally:
        client.drop_database(db.name)
