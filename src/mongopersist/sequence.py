"""Counters: atomic sequences on MongoDB's ``findAndModify``.

``dm.next_sequence(name)`` returns 1, 2, 3, ... for each ``name``: one
``findAndModify`` with ``$inc`` and ``upsert`` on the counter's document in
``persistence_sequences`` of the root database (``{'_id': name, 'value':
n}``).  Two callers (threads, processes) never get the same value.

A counter runs outside the transaction, like a SQL sequence: an aborted
transaction leaves a gap rather than handing a value out twice, and
concurrent transactions do not conflict on the counter document.  Values
suit human-readable ids and ``dm.insert(obj, oid=dm.next_sequence(...))``.
On a sharded cluster the counter collection needs no shard key: each call
names its document by ``_id``.
"""
from typing import Any

import pymongo
from bson.int64 import Int64
from pymongo.errors import DuplicateKeyError, OperationFailure

from mongopersist import interfaces, limits

SEQUENCE_COLLECTION = 'persistence_sequences'


def next_value(jar: Any, name: str, step: int = 1) -> int:
    """Add ``step`` to the counter ``name`` and return its new value."""
    if not isinstance(name, str) or not name:
        raise TypeError('A sequence name must be a non-empty string, not %r'
                        % (name,))
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError('step must be a positive integer, not %r' % (step,))
    coll = jar._raw_collection(jar.root_database, SEQUENCE_COLLECTION)
    for attempt in range(2):
        try:
            doc = coll.find_one_and_update(
                {'_id': name}, {'$inc': {'value': step}}, upsert=True,
                return_document=pymongo.ReturnDocument.AFTER)
            if doc is not None:
                break
            # An upsert answers with the document; a server that lost the
            # race to create it may answer with none (SecantusDB does):
            # ask again (at worst a value is skipped, never shared).
            if attempt:
                raise interfaces.MongoPersistError(
                    'The server returned no document for the counter %s'
                    % limits.quote(name))
        except DuplicateKeyError:
            # Two first calls raced to create the counter: one lost the
            # upsert; the counter exists now, so the retry increments it.
            if attempt:
                raise
        except OperationFailure as error:
            if error.code != 14:        # TypeMismatch: not a number
                raise
            raise _not_a_counter(jar, name, 'a value that is not a number')
    value = doc.get('value')
    if type(value) not in (int, Int64) or isinstance(value, bool):
        raise _not_a_counter(jar, name, type(value).__name__)
    return int(value)


def _not_a_counter(jar, name, what):
    return interfaces.StoredDataError(
        'The counter %s holds %s, not an integer' % (limits.quote(name),
                                                     what),
        database=jar.root_database, collection=SEQUENCE_COLLECTION,
        id=name, path='value')
