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
from pymongo.errors import DuplicateKeyError

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


def _shell(value):
    """A value as the server's error messages show it (near enough)."""
    if isinstance(value, str):
        return '"%s"' % value.replace('"', '\\"')
    if isinstance(value, dict):
        return '{ %s }' % ', '.join('%s: %s' % (k, _shell(v))
                                    for k, v in value.items())
    if value is None:
        return 'null'
    return repr(value)


def duplicate_key_error(database, collection, index, values):
    """The ``DuplicateKeyError`` a server raises for a unique ``index``:
    its message names collection, index and values, and its details
    hold ``keyPattern`` and ``keyValue``."""
    message = ('E11000 duplicate key error collection: %s.%s index: %s '
               'dup key: %s' % (database, collection, index, _shell(values)))
    details = {'code': 11000, 'errmsg': message,
               'keyPattern': {key: 1 for key in values},
               'keyValue': dict(values)}
    with _STORE_LOCK:
        if len(_DUPLICATES) > 1000:
            _DUPLICATES.clear()
        _DUPLICATES[message] = details
    return _ServerDuplicateKeyError(message, 11000, details)


# Details of the duplicate key errors raised, by message: mongomock's bulk
# writes keep only the message in ``writeErrors``; a server's entries have
# ``keyPattern`` and ``keyValue`` too (``_bulk_details`` puts them back).
_DUPLICATES = {}


class _ServerDuplicateKeyError(DuplicateKeyError):
    """mongomock's duplicate key error, as a server words it."""

    def __str__(self):
        # A server's message, without PyMongo's ", full error: ...".
        return self.details['errmsg']


def _bulk_details(method):
    from pymongo.errors import BulkWriteError

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except BulkWriteError as error:
            for entry in error.details.get('writeErrors', ()):
                details = _DUPLICATES.get(entry.get('errmsg'))
                if details is not None:
                    entry.setdefault('keyPattern', details['keyPattern'])
                    entry.setdefault('keyValue', details['keyValue'])
            raise
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


def _ensure_uniques(method):
    # mongomock checks unique indexes but raises a bare "E11000 Duplicate
    # Key Error"; a server names the collection, the index and the values.
    from mongomock import helpers

    @functools.wraps(method)
    def wrapper(self, new_data):
        for name, index in self._store.indexes.items():
            if not index.get('unique'):
                continue
            values = {}
            for key, _ in index.get('key'):
                try:
                    values[key] = helpers.get_value_by_dot(new_data, key)
                except KeyError:
                    values[key] = None
            if index.get('sparse') and all(
                    value is None for value in values.values()):
                continue
            query = dict(values)
            partial = index.get('partialFilterExpression')
            if partial is not None:
                query = {'$and': [partial, query]}
            if len(list(self._iter_documents(query))) > 1:
                raise duplicate_key_error(self.database.name, self.name,
                                          name, values)
    wrapper._mongopersist_shim = True
    return wrapper


def _duplicate_id(method):
    # An ``_id`` taken: the server's message names the ``_id_`` index.
    from collections.abc import Mapping

    @functools.wraps(method)
    def wrapper(self, data, *args, **kwargs):
        try:
            return method(self, data, *args, **kwargs)
        except DuplicateKeyError as error:
            if error.details or not isinstance(data, Mapping):
                raise
            raise duplicate_key_error(self.database.name, self.name, '_id_',
                                      {'_id': data.get('_id')}) from None
    wrapper._mongopersist_shim = True
    return wrapper


# -- geospatial queries over 2dsphere indexes ------------------------------
#: The earth radius MongoDB uses for spherical distances, in meters.
EARTH_RADIUS = 6378100.0


def _point(value):
    """``(longitude, latitude)`` of a GeoJSON point or legacy pair."""
    if isinstance(value, dict) and value.get('type') == 'Point':
        value = value.get('coordinates')
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, (int, float)) for v in value):
        return float(value[0]), float(value[1])
    return None


def _angle(a, b):
    """The angle between two points on the sphere, in radians."""
    import math
    lng1, lat1, lng2, lat2 = map(math.radians, a + b)
    h = (math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2)
         * math.sin((lng2 - lng1) / 2) ** 2)
    return 2 * math.asin(min(1.0, math.sqrt(h)))


def _geo_within(value, shape):
    if not isinstance(shape, dict) or set(shape) != {'$centerSphere'}:
        raise NotImplementedError(
            'The stand-in runs $geoWithin with $centerSphere only: %r'
            % (shape,))
    center, radius = shape['$centerSphere']
    point = _point(value)
    return point is not None and _angle(point, _point(center)) <= radius


_NEAR = ('$near', '$nearSphere')


def _near_clause(query):
    for field, condition in query.items():
        if isinstance(condition, dict) and any(
                op in condition for op in _NEAR):
            return field, condition
    return None


def _geo_near(method):
    # ``$near``/``$nearSphere`` with a GeoJSON ``$geometry``: the documents
    # within ``$minDistance``..``$maxDistance`` meters, nearest first.  Like
    # a server, it needs a 2dsphere index on the field.
    from pymongo.errors import OperationFailure

    @functools.wraps(method)
    def wrapper(self, filter):
        clause = _near_clause(filter) if isinstance(filter, dict) else None
        if clause is None:
            return method(self, filter)
        field, condition = clause
        spec = condition.get('$near', condition.get('$nearSphere'))
        if not isinstance(spec, dict) or '$geometry' not in spec:
            raise NotImplementedError(
                'The stand-in runs $near with a GeoJSON $geometry only')
        indexed = any(
            (field, '2dsphere') in list(info.get('key'))
            for info in self._store.indexes.values())
        if not indexed:
            raise OperationFailure(
                'error processing query: planner returned error :: caused '
                'by :: unable to find index for $geoNear query', 291)
        center = _point(spec['$geometry'])
        low = spec.get('$minDistance', condition.get('$minDistance', 0))
        high = spec.get('$maxDistance', condition.get('$maxDistance'))
        rest = {key: value for key, value in condition.items()
                if key not in _NEAR + ('$minDistance', '$maxDistance')}
        others = {key: value for key, value in filter.items()
                  if key != field}
        if rest:
            others[field] = rest
        found = []
        for doc in method(self, others):
            point = _point(doc.get(field))
            if point is None:
                continue
            distance = _angle(point, center) * EARTH_RADIUS
            if distance >= low and (high is None or distance <= high):
                found.append((distance, doc))
        found.sort(key=lambda pair: pair[0])
        return iter([doc for _, doc in found])
    wrapper._mongopersist_shim = True
    return wrapper


# ``_id`` types whose Python equality and hashing agree with how MongoDB
# matches an ``_id`` (and with mongomock's store, a dict by ``_id``).
_INDEXED_ID_TYPES = (bson.ObjectId, str, int)


def _indexed_ids(filter):
    """The ids an ``_id`` equality or ``{'_id': {'$in': [...]}}`` filter
    asks for (a list), or ``None`` for any other filter."""
    if type(filter) is not dict:
        return None
    key = filter.get('_id')
    if type(key) in _INDEXED_ID_TYPES:
        return [key]
    if type(key) is dict and list(key) == ['$in']:
        ids = key['$in']
        if type(ids) in (list, tuple) and all(
                type(doc_id) in _INDEXED_ID_TYPES for doc_id in ids):
            return ids
    return None


def _id_index_order(doc):
    # The ``_id`` index's order: numbers, then strings, then ObjectIds.
    doc_id = doc['_id']
    if isinstance(doc_id, bson.ObjectId):
        return 2, doc_id.binary
    if isinstance(doc_id, str):
        return 1, doc_id
    return 0, doc_id


def _id_index(method):
    # mongomock scans the whole collection for every filter: a read, update
    # or delete by ``_id`` costs O(documents), and ``$in`` compares every
    # document with every id, where a server uses its ``_id`` index.  Such
    # filters find their documents in the store (a dict by ``_id``: equal
    # ids, as MongoDB compares them, but for ``True``, which Python takes
    # for 1); the rest of the filter is checked by mongomock's matcher.
    # The documents are those a server finds (the scan's, less a boolean
    # ``_id`` the scan matches with 1), in the ``_id`` index's order (as a
    # server returns them).
    from mongomock.filtering import filter_applies

    @functools.wraps(method)
    def wrapper(self, filter):
        ids = _indexed_ids(filter)
        if ids is None:
            return method(self, filter)
        rest = {key: value for key, value in filter.items() if key != '_id'}
        store = self._store
        found = []
        seen = set()
        for doc_id in ids:
            if doc_id in seen:
                continue
            seen.add(doc_id)
            try:
                doc = store[doc_id]
            except KeyError:
                continue
            if type(doc['_id']) is bool or (
                    rest and not filter_applies(rest, doc)):
                continue
            found.append(doc)
        if len(found) > 1:
            found.sort(key=_id_index_order)
        return iter(found)
    wrapper._mongopersist_shim = True
    return wrapper


def _cursor_next(method):
    # mongomock 4.3's ``Cursor.__next__`` slices its whole result list
    # (``results[skip:]``) for every document it returns: O(N²) per query,
    # where a server streams.  The same document, found by its index.
    @functools.wraps(method)
    def wrapper(self):
        results = self._compute_results()
        if self._limit and self._emitted >= abs(self._limit):
            raise StopIteration()
        index = self._skip + self._emitted
        if index >= len(results):
            raise StopIteration()
        self._emitted += 1
        return results[index]
    wrapper._mongopersist_shim = True
    return wrapper


def _included_fields(fields):
    """The top-level field names of a projection that only includes them
    (``{'a': 1, 'b': True}``, ``_id`` included or not named), else
    ``None``."""
    if type(fields) is not dict or not fields or \
            fields.get('_id', 1) not in (1, True):
        return None
    names = []
    for name, value in fields.items():
        if type(name) is not str or '.' in name or name.startswith('$') \
                or type(value) not in (int, bool) or value != 1:
            return None
        if name != '_id':
            names.append(name)
    return names or None


def _simple_projection(method):
    # mongomock projects every document through a general spec walk (about
    # 40 µs a document here), where a server projects a few top-level
    # fields at next to no cost: the serial reads of the object cache's
    # validation (``{'_py_serial': 1}``) paid it for every document held.
    # An inclusion of top-level fields copies just those (and ``_id``
    # last, as mongomock places it); everything else goes to mongomock.
    from mongomock.collection import _copy_field

    @functools.wraps(method)
    def wrapper(self, doc, fields, container):
        names = _included_fields(fields)
        if names is None:
            return method(self, doc, fields, container)
        projected = container()
        for name, value in doc.items():
            if name in names:
                projected[name] = _copy_field(value, container)
        if '_id' in doc:
            projected['_id'] = doc['_id']
        return projected
    wrapper._mongopersist_shim = True
    return wrapper


def _type_mismatch(method):
    # ``$inc`` of a string and the like: mongomock raises a bare TypeError;
    # a server answers with a write error, code 14 (TypeMismatch).
    from pymongo.errors import WriteError

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except TypeError as error:
            raise WriteError('Cannot apply the update: %s' % error,
                             14) from None
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
    * a duplicate key names the collection, index and values, as a
      server's error does (``duplicate_key_error``); an update of a value
      of the wrong type (``$inc`` of a string) is a write error (code 14);
    * ``$geoWithin`` with ``$centerSphere``, and ``$near``/``$nearSphere``
      with a GeoJSON point (nearest first, needing a 2dsphere index) work
      on GeoJSON points, with MongoDB's spherical distances.
    * a bulk write reports each upsert at the index of its operation;
    * a filter on ``_id`` (equality or ``$in``, of ObjectIds, strings or
      integers) finds its documents without scanning the collection, and
      returns them in ``_id`` order, as a server's ``_id`` index does;
    * a cursor returns each document without copying its result list
      (mongomock's costs O(N²) per query);
    * a projection that includes top-level fields copies just those,
      without mongomock's general walk of the document.
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
    _patch(Collection, '_ensure_uniques', _ensure_uniques)
    for name in ('update_one', 'update_many', 'find_one_and_update'):
        _patch(Collection, name, _type_mismatch)
    execute = BulkOperationBuilder.execute
    if not getattr(execute, '_mongopersist_details', False):
        wrapped = _bulk_details(execute)
        wrapped._mongopersist_details = True
        BulkOperationBuilder.execute = wrapped
    # ``$near`` finds its documents through the ``_id`` lookup (outside
    # it: it takes its clause out of the filter first).
    _patch(Collection, '_iter_documents',
           lambda method: _geo_near(_id_index(method)))
    _patch(Collection, '_copy_only_fields', _simple_projection)
    from mongomock.collection import Cursor
    _patch(Cursor, '__next__', _cursor_next)
    Cursor.next = Cursor.__next__
    from mongomock import filtering
    filtering._filterer_inst._operator_map.setdefault(
        '$geoWithin', _geo_within)
    for name, update in (('_insert', False), ('_update', True)):
        method = getattr(Collection, name)
        if not getattr(method, '_mongopersist_limits', False):
            wrapped = _server_limits(method, update)
            wrapped._mongopersist_limits = True
            setattr(Collection, name, wrapped)
    method = Collection._insert
    if not getattr(method, '_mongopersist_duplicates', False):
        wrapped = _bulk_details(_duplicate_id(method))
        wrapped._mongopersist_duplicates = True
        Collection._insert = wrapped
