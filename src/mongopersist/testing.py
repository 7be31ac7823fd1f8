"""Clients for tests, examples and benchmarks.

``client()`` returns a real ``pymongo.MongoClient`` when ``MONGODB_URI`` is
set, and otherwise an in-process stand-in (mongomock, the ``embedded``
extra).  The stand-in has no sessions or server transactions and is meant
for tests and demos only.
"""
import functools
import os
import threading

import bson

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


# A MongoDB server applies each single-document write atomically; mongomock
# changes documents in place, step by step, so two threads can interleave
# inside one update and lose a write.  One lock around mongomock's write
# paths and its result building restores the server's atomicity.
_STORE_LOCK = threading.RLock()


def _atomic(method, materialize=False):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with _STORE_LOCK:
            result = method(*args, **kwargs)
            return list(result) if materialize else result
    wrapper._mongopersist_shim = True
    return wrapper


def _server_limits(method, update=False):
    # A server refuses documents over 16 MB (PyMongo already, before
    # sending: DocumentTooLarge) and documents nested deeper than 100
    # levels (a write error, code 15); mongomock stores both.
    from collections.abc import Mapping

    from pymongo.errors import DocumentTooLarge, WriteError

    from mongopersist import limits

    def check(doc, is_update):
        size = len(bson.encode(doc))
        if size > limits.MAX_DOCUMENT_SIZE:
            raise DocumentTooLarge(
                'BSON document too large (%d bytes) - the connected server '
                'supports BSON document sizes up to %d bytes.'
                % (size, limits.MAX_DOCUMENT_SIZE))
        depth = limits.nesting_depth(doc, stop=limits.MAX_NESTING + 1)
        if is_update and any(key.startswith('$') for key in doc):
            depth -= 1      # {'$set': {...}}: the operator is no level
        if depth > limits.MAX_NESTING:
            raise WriteError(
                'cannot insert document because it exceeds %d levels of '
                'nesting' % limits.MAX_NESTING, 15)

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if update:
            check(args[1] if len(args) > 1 else kwargs['document'], True)
        elif isinstance(args[0], Mapping):
            check(args[0], False)
        return method(self, *args, **kwargs)
    wrapper._mongopersist_shim = True
    return wrapper


class _Upsert:
    """An upsert of a bulk write, with the index of its operation."""

    def __init__(self, index, doc_id):
        self.index = index
        self.id = doc_id


def _upserts_at_their_index(execute):
    # A server (through PyMongo, which maps indexes back across the
    # commands it sends) reports each upsert of a bulk write at the index
    # of its operation; mongomock 4.3 numbers the upserts 0, 1, ...  Tag
    # each operation's upsert with its index (see ``_aggregate``).
    @functools.wraps(execute)
    def wrapper(self, *args, **kwargs):
        self.executors = [_tagging(func, index)
                          for index, func in enumerate(self.executors)]
        return execute(self, *args, **kwargs)
    wrapper._mongopersist_shim = True
    return wrapper


def _tagging(func, index):
    @functools.wraps(func)      # mongomock looks at the name
    def run():
        result = func()
        if result.get('upserted') is not None:
            result['upserted'] = _Upsert(index, result['upserted'])
        return result
    return run


def _aggregate(method):
    @functools.wraps(method)
    def wrapper(self, total, key, value):
        if key == 'upserted' and isinstance(value, _Upsert):
            total[key].append({'index': value.index, '_id': value.id})
            return None
        return method(self, total, key, value)
    wrapper._mongopersist_shim = True
    return wrapper


def _patch(cls, name, make):
    method = getattr(cls, name)
    if not getattr(method, '_mongopersist_shim', False):
        setattr(cls, name, make(method))


def patch_mongomock():
    """Make mongomock behave like a server where the suite relies on it.

    * ``bulk_write`` accepts the ``sort=None`` PyMongo 4.11+ passes;
    * single-document writes are atomic, and reads see whole documents,
      when several threads share one client;
    * documents over 16 MB or nested deeper than 100 levels are refused,
      as a server refuses them;
    * a bulk write reports each upsert at the index of its operation.
    """
    from mongomock.collection import BulkOperationBuilder, Collection
    for name in ('add_update', 'add_replace', 'add_delete'):
        _patch(BulkOperationBuilder, name, _drop_sort)
    _patch(BulkOperationBuilder, 'execute', _upserts_at_their_index)
    _patch(BulkOperationBuilder,
           '_BulkOperationBuilder__aggregate_operation_result', _aggregate)
    for name in ('_insert', '_update', '_delete', '_find_and_modify',
                 'bulk_write', 'count_documents', 'distinct', 'aggregate'):
        _patch(Collection, name, _atomic)
    _patch(Collection, '_get_dataset',
           lambda method: _atomic(method, materialize=True))
    # Inside the atomic wrappers (patched after them, so they run first).
    for name, update in (('_insert', False), ('_update', True)):
        method = getattr(Collection, name)
        if not getattr(method, '_mongopersist_limits', False):
            wrapped = _server_limits(method, update)
            wrapped._mongopersist_limits = True
            setattr(Collection, name, wrapped)
