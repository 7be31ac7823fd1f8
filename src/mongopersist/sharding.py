"""Shard keys: targeted writes and loads, and the global-query guard.

A class declares the shard key of its collection in ``_p_mongo_shard_key``
(``metadata.shard_key`` reads it).  On a sharded cluster ``mongos`` sends an
operation to the shards that can hold the documents it names; an operation
that does not name the shard key goes to every shard.  So, for instances of
a class with a shard key:

* **writes** (updates, replaces, deletes, the conflict-checked upserts and
  the undo of an abort) filter on ``_id`` *and* the shard-key values of the
  document as loaded (``target``); a new document must hold every
  shard-key field; a changed shard-key value is refused outside a server
  transaction (``interfaces.ShardKeyError``) and sent as a write of its own
  inside one, as MongoDB requires;
* **references** to such an object carry its shard-key values as extra
  fields of the stored ``DBRef`` (``reference``), and **loading** by a
  reference queries with them (``route``, ``find_document``); a batch of
  documents is read with one ``$or`` clause per shard-key value
  (``batch_filter``);
* **queries** that do not pin the shard key raise
  ``interfaces.GlobalQueryError`` (``check_query``) unless called with
  ``allow_global=True``; ``global_queries('warn')`` (process) or
  ``dm.global_queries = 'warn'`` (one data manager) turns the error into a
  ``GlobalQueryWarning`` for development.

Shard-key values read from stored references are checked before they are
put in a filter: a value that could act as a query operator (a document
with ``$`` keys, a regular expression, JavaScript, an array) is refused
with ``interfaces.StoredDataError``.  See ``docs/scaling.rst``.
"""
import logging
import os
import re
import sys
import warnings

from typing import Any

import bson
from bson.dbref import DBRef

from mongopersist import interfaces, limits, metadata

LOG = logging.getLogger('mongopersist')

#: What a query that does not pin the shard key does: ``'error'`` raises
#: ``GlobalQueryError``, ``'warn'`` issues a ``GlobalQueryWarning``.
POLICIES = ('error', 'warn')
_policy = 'error'


def global_queries(policy=None):
    """Return the process-wide policy for global queries; set it if given.

    ``'error'`` (the default) raises ``interfaces.GlobalQueryError``;
    ``'warn'`` only warns (``interfaces.GlobalQueryWarning``), for
    development.  A data manager's ``global_queries`` attribute, when set,
    overrides it for that data manager.
    """
    global _policy
    if policy is not None:
        _check_policy(policy)
        _policy = policy
    return _policy


def _check_policy(policy):
    if policy not in POLICIES:
        raise ValueError('global_queries must be one of %s, not %r'
                         % (', '.join(POLICIES), policy))


# -- which key ----------------------------------------------------------------
_by_collection = {}     # (default db, db, collection) -> (generation, key)


def collection_key(jar, database, collection):
    """Return the ``ShardKey`` declared for a collection, or ``None``.

    For code that knows the collection but not the class (a mapping over a
    collection, the undo of a write): the key declared by a class of this
    process stored there.
    """
    cache_key = (jar.default_database, database, collection)
    generation = metadata._generation
    hit = _by_collection.get(cache_key)
    if hit is not None and hit[0] == generation:
        return hit[1]
    found = None
    for cls in metadata.known_classes():
        key = getattr(cls, '_p_mongo_shard_key', None) and \
            metadata.shard_key(cls)
        if key is not None and metadata.collection_name(cls) == collection \
                and metadata.database_name(
                    cls, jar.default_database) == database:
            found = key
            break
    _by_collection[cache_key] = (generation, found)
    return found


# -- writes -------------------------------------------------------------------
def target(jar, write):
    """Make the planned ``commit.DocumentWrite`` ``write`` targetable.

    Adds the shard-key values of the document as loaded to ``write.filter``
    (for inserts: checks that the document holds the whole key).  Returns
    true if the write changes a shard-key value (it must then be sent on
    its own, inside the server transaction); raises
    ``interfaces.ShardKeyError`` for such a change without one.
    """
    key = metadata.shard_key(type(write.obj))
    if key is None:
        return False
    doc = write.doc
    if write.filter is None:
        missing = [name for name in key.fields
                   if metadata._field_value(doc, name, metadata.MISSING)
                   is metadata.MISSING]
        if missing:
            raise interfaces.ShardKeyError(
                'Cannot store %s %s: its shard key field(s) %s are not set '
                '(every document of %s must hold its shard key)' % (
                    type(write.obj).__name__, limits.quote(write.oid.id),
                    ', '.join(missing), write.oid.collection),
                write.obj, missing)
        return False
    if write.loaded is not None:
        old = key.values(write.loaded)
    else:
        old = write.oid.routing or (key.values(doc) if doc else None)
    if old:
        write.filter.update(old)
    if doc is None or old is None:
        return False
    new = key.values(doc)
    changed = [name for name in key.fields if not _same(old[name],
                                                          new[name])]
    if not changed:
        return False
    if jar._server_txn is None:
        raise interfaces.ShardKeyError(
            'Cannot change the shard key of %s %s (%s) outside a server '
            'transaction: MongoDB moves the document between shards only '
            'inside a transaction (a replica set or sharded cluster with '
            'transactions=\'auto\' or \'always\'); refused before '
            'writing anything of this flush' % (
                type(write.obj).__name__, limits.quote(write.oid.id),
                ', '.join('%s: %s -> %s' % (
                    name, limits.quote(old[name], 100),
                    limits.quote(new[name], 100)) for name in changed)),
            write.obj, changed)
    return True


def _same(a, b):
    return type(a) is type(b) and a == b or (
        isinstance(a, (int, float)) and isinstance(b, (int, float))
        and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


def undo_filter(jar, ref, condition, written):
    """Add the shard-key values of ``written`` (the document a write
    stored) to the undo ``condition`` of that write."""
    key = collection_key(jar, ref.database, ref.collection)
    if key is not None and written is not None:
        condition.update(key.values(written))
    return condition


def remember(ref, cls, doc):
    """Keep the shard-key values of ``doc`` (as loaded or written) in the
    oid ``ref``: later loads of the document query with them."""
    key = metadata.shard_key(cls)
    if key is not None and isinstance(ref, metadata.OID):
        ref.routing = key.values(doc)


# -- references and loads ---------------------------------------------------
def reference(obj: Any) -> DBRef:
    """Return the reference that stores a pointer to ``obj``.

    Its oid, or for a class with a shard key a ``DBRef`` that also holds
    the shard-key values (as the object holds them now; for a ghost, as
    last loaded).
    """
    oid = obj._p_oid
    key = metadata.shard_key(type(obj))
    if key is None:
        return oid
    if obj._p_changed is None:          # a ghost: do not load it
        values = oid.routing
    else:
        values = key.values(_top_fields(obj, key))
    if not values:
        return oid
    return DBRef(oid.collection, oid.id, oid.database, **values)


def _top_fields(obj, key):
    """The stored values of the fields of ``obj`` the shard key reads."""
    state = type(obj).__getstate__(obj)
    writer = obj._p_jar._writer
    doc = {}
    for name in key.fields:
        top = name.split('.', 1)[0]
        if top in state and top not in doc:
            value = state[top]
            if type(value) not in _SCALARS:
                # The writer may be in the middle of another document.
                saved = writer.deepest, writer.untracked
                try:
                    value = writer.get_state(value)
                finally:
                    writer.deepest, writer.untracked = saved
            doc[top] = value
    return doc


_SCALARS = frozenset([str, int, float, bool, type(None), bson.ObjectId,
                      bson.Int64, bson.Decimal128])


def extras(dbref):
    """The fields of a stored ``DBRef`` besides ``$ref``/``$id``/``$db``."""
    return getattr(dbref, '_DBRef__kwargs', None) or {}


def route(jar, oid, dbref, cls):
    """Give ``oid`` the shard-key values the stored reference ``dbref``
    carries, checked, if ``cls`` (or its collection) has a shard key.

    Other extra fields are ignored.  A shard-key value that could act as
    a query operator raises ``interfaces.StoredDataError``.
    """
    stored = extras(dbref)
    if not stored:
        return
    key = (metadata.shard_key(cls) if cls is not None
           else collection_key(jar, oid.database, oid.collection))
    if key is None:
        return
    values = {}
    try:
        for name in key.fields:
            if name in stored:
                values[name] = checked_value(stored[name], name)
    except interfaces.StoredDataError as error:
        if not jar._documents_read:
            # Loaded directly, not found in a document: name the target.
            error.locate(oid.database, oid.collection, oid.id)
        raise
    if len(values) == len(key.fields):
        oid.routing = values


# Stored values that a filter would not take as an equality.
_OPERATOR_LIKE = (list, tuple, bson.Regex, re.Pattern, bson.Code,
                  bson.MinKey, bson.MaxKey)


def checked_value(value, name):
    """Return ``value`` if it is a shard-key value safe to filter on."""
    if isinstance(value, _OPERATOR_LIKE) or (
            isinstance(value, dict) and any(
                not isinstance(k, str) or k.startswith('$') for k in value)):
        raise interfaces.StoredDataError(
            'A stored reference holds the shard-key value %s of kind %s, '
            'which MongoDB would not take as an equality (refused)'
            % (limits.excerpt(name, 64), type(value).__name__))
    return value


def load_filter(oid):
    """The filter that reads the document of ``oid``: ``_id`` and, when
    known, its shard-key values."""
    routing = getattr(oid, 'routing', None)
    query = {'_id': oid.id}
    if routing:
        query.update(routing)
    return query


def find_document(coll, oid, session=None):
    """Read the document of ``oid``, targeted by its shard key if known.

    A document whose shard key changed since the reference was written is
    not found by the targeted read: it is then read by ``_id`` alone (sent
    to every shard), with a warning, and the oid learns the new values.
    """
    query = load_filter(oid)
    doc = coll.find_one(query, session=session)
    if doc is None and len(query) > 1:
        doc = coll.find_one({'_id': oid.id}, session=session)
        if doc is not None:
            LOG.warning(
                'The reference to %s.%s _id=%s holds shard-key values that '
                'are not the document\'s (a reference stored before the '
                'document moved, or a move that was aborted); it was read '
                'from every shard.  Store the objects referencing it again '
                'to update their references.', limits.excerpt(oid.database),
                limits.excerpt(oid.collection), limits.quote(oid.id))
            oid.routing = {name: doc.get(name) for name in oid.routing}
    return doc


def batch_filter(items):
    """One filter for several documents: ``items`` are ``(_id, values)``
    pairs, ``values`` the shard-key values (or ``None``).

    Ids are grouped by shard-key value: one ``{'_id': {'$in': [...]},
    <key>: <value>}`` clause per group (``$or`` of them if more than one),
    which ``mongos`` sends only to the shards that hold them.
    """
    groups = {}
    for doc_id, values in items:
        values = values or {}
        try:
            group = tuple(sorted(values.items()))
            hash(group)
        except TypeError:
            group = repr(sorted(values.items()))
        groups.setdefault(group, (values, []))[1].append(doc_id)
    clauses = []
    for values, ids in groups.values():
        if values:
            clause = {'_id': ids[0] if len(ids) == 1 else {'$in': ids}}
            clause.update(values)
        else:
            clause = {'_id': {'$in': ids}}
        clauses.append(clause)
    if not clauses:
        return {'_id': {'$in': []}}
    return clauses[0] if len(clauses) == 1 else {'$or': clauses}


def routed_ids(oids):
    """``(_id, shard-key values)`` of oids, for ``batch_filter``."""
    return [(oid.id, getattr(oid, 'routing', None)) for oid in oids]


def refs_filter(oids):
    """One filter reading the documents of ``oids`` (of one collection),
    grouped by the shard-key values they know (``batch_filter``): what a
    batched load of references sends."""
    return batch_filter(routed_ids(oids))


def held_filter(jar, database, collection, ids):
    """The filter reading documents ``ids`` that ``jar``'s object cache
    holds: grouped by the shard-key values of the documents it holds (for
    the cache's validation reads)."""
    key = collection_key(jar, database, collection)
    if key is None:
        return {'_id': {'$in': list(ids)}}
    docs = jar._cache.docs
    items = []
    for doc_id in ids:
        doc = docs.get(metadata.OID(collection, doc_id, database))
        items.append((doc_id, key.values(doc) if doc is not None else None))
    return batch_filter(items)


# -- the global-query guard ---------------------------------------------------
def pinned(query):
    """The fields ``query`` pins to one value or a list of values (equality
    or ``$in``), as ``mongos`` uses them to pick shards."""
    found = set()
    for field, condition in query.items():
        if field == '$and' and isinstance(condition, list):
            for clause in condition:
                if isinstance(clause, dict):
                    found |= pinned(clause)
        elif field == '$or' and isinstance(condition, list) and condition:
            clauses = [pinned(c) if isinstance(c, dict) else set()
                       for c in condition]
            found |= set.intersection(*clauses)
        elif not field.startswith('$') and _is_equality(condition):
            found.add(field)
    return found


def _is_equality(condition):
    if isinstance(condition, dict):
        if condition and all(isinstance(k, str) and k.startswith('$')
                             for k in condition):
            if '$eq' in condition:
                return _is_equality(condition['$eq'])
            values = condition.get('$in')
            return (isinstance(values, list) and bool(values) and all(
                _is_equality(v) for v in values))
        return True     # a whole sub-document
    return not isinstance(condition, _OPERATOR_LIKE)


def missing_fields(key, query):
    """The shard-key fields ``query`` leaves open, or ``()`` if ``mongos``
    can target it: every field pinned, or a prefix of the key (``mongos``
    routes a prefix to the chunks of its range; with a hashed first field
    that field must be pinned)."""
    found = pinned(query)
    if key.fields[0] in found:
        return ()
    return tuple(name for name in key.fields if name not in found)


def check_query(jar, key, query, allow_global, what):
    """Refuse (or warn about) ``query`` of a sharded collection if it does
    not pin the shard ``key``; ``what`` names the class or collection."""
    if key is None or allow_global:
        return
    missing = missing_fields(key, query or {})
    if not missing:
        return
    message = (
        'Some or all of the shard key of %s was not specified, so MongoDB '
        'would send the query to every shard.  Missing fields were %s '
        '(pass allow_global=True to send it anyway)' % (
            what, ', '.join(missing)))
    policy = getattr(jar, 'global_queries', None) or _policy
    _check_policy(policy)
    if policy == 'warn':
        warnings.warn(message, interfaces.GlobalQueryWarning,
                      stacklevel=_callers_level())
        return
    raise interfaces.GlobalQueryError(message, what, missing)


def _callers_level():
    """The ``stacklevel`` naming the application's line that queried
    (the first frame outside this package), for ``check_query``."""
    frame = sys._getframe(2)
    level = 2
    while frame is not None and frame.f_code.co_filename.startswith(_HERE):
        frame = frame.f_back
        level += 1
    return level


_HERE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def check_class_query(jar, cls, query, allow_global):
    """``check_query`` for a query of the instances of ``cls``."""
    check_query(jar, metadata.shard_key(cls), query, allow_global,
                cls.__name__)


def check_collection_query(jar, database, collection, query, allow_global):
    """``check_query`` for a query of a collection (no class known)."""
    if allow_global:
        return
    check_query(jar, collection_key(jar, database, collection), query,
                allow_global, '%s.%s' % (database, collection))
