"""Clients for tests, examples and benchmarks.

``client()`` returns a real ``pymongo.MongoClient`` when ``MONGODB_URI`` is
set, and otherwise an in-process stand-in (mongomock, the ``embedded``
extra).  The stand-in has no sessions or server transactions and is meant
for tests and demos only.
"""
import functools
import os

URI_VARIABLE = 'MONGODB_URI'


def uses_real_server():
    """Return true if ``MONGODB_URI`` names a real server to use."""
    return bool(os.environ.get(URI_VARIABLE))


def client():
    """Return a client for ``MONGODB_URI``, or the in-process stand-in."""
    uri = os.environ.get(URI_VARIABLE)
    if uri:
        import pymongo
        return pymongo.MongoClient(uri)
    return embedded_client()


def embedded_client():
    """Return a mongomock client that works with the installed PyMongo."""
    import mongomock
    patch_mongomock()
    return mongomock.MongoClient()


def _drop_sort(method):
    # PyMongo >= 4.11 passes ``sort=`` for UpdateOne/ReplaceOne (MongoDB
    # 8.0 can sort the document an update-one picks); mongomock 4.3's bulk
    # builder does not know the keyword and raises TypeError.  The sort is
    # None unless the caller asked for one, so drop it; refuse a real sort
    # rather than silently ignore it.
    @functools.wraps(method)
    def wrapper(self, *args, sort=None, **kwargs):
        if sort is not None:
            raise NotImplementedError('mongomock cannot sort in bulk writes')
        return method(self, *args, **kwargs)
    wrapper._mongopersist_shim = True
    return wrapper


def patch_mongomock():
    """Make mongomock's ``bulk_write`` accept what PyMongo 4.11+ passes."""
    from mongomock.collection import BulkOperationBuilder
    for name in ('add_update', 'add_replace', 'add_delete'):
        method = getattr(BulkOperationBuilder, name)
        if not getattr(method, '_mongopersist_shim', False):
            setattr(BulkOperationBuilder, name, _drop_sort(method))
