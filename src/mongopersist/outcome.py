"""What a write did when its acknowledgement was lost: read back to know.

A commit can fail after its writes reached MongoDB: the reply to a write
or to ``commitTransaction`` is lost with the connection (the server was
killed, a network fault), PyMongo's retry of a write reaches a server that
does not remember the first one (so a conditional update applied by the
first matches nothing the second time), or a retried ``commitTransaction``
finds no transaction (the server lost it, after committing it or not).
Retrying the unit of work then could apply it twice; reporting a conflict
would report one with ourselves.

So the commit pipeline reads the documents back before it decides.  With
conflict detection every document a flush writes carries the serial
written (``_py_serial``) and an id new for that flush (``_py_write``,
``PY_WRITE``); a stored document with both is this write, applied.  A
stored document that is still exactly the version the write replaced (its
serial and write id) shows the write was not applied: serials only grow,
and an abort puts a version back under a new serial.  A document this
transaction inserted that is absent was not inserted (nobody else knows
its ``_id`` before it is).  Anything else (a later version by somebody
else, a deleted document) tells nothing: the outcome stays unknown.

Reads go to the primary, outside any session (a server transaction that
failed is aborted; its snapshot would not show what was committed), with
its default read concern: what the primary holds, also what a majority
may not have yet (a version read there as not applied is not merely on
its way).  A failure read back as not applied stays retryable only where
it was a server's reply (``NoSuchTransaction``: the server holds no such
transaction, so no commit of it is still on its way); after a network
error it is reported, not retried.
"""
from pymongo import ReadPreference
from pymongo.errors import PyMongoError

from mongopersist import metadata, sharding
from mongopersist.serialize import PY_SERIAL, PY_WRITE

#: The write is stored: it was applied.
APPLIED = 'applied'
#: The version it replaced is still stored: it was not applied.
NOT_APPLIED = 'not applied'

INSERT = 'insert'
DELETE = 'delete'


def committed_collection(coll):
    """``coll`` reading what is committed: from the primary."""
    try:
        return coll.with_options(read_preference=ReadPreference.PRIMARY)
    except (TypeError, NotImplementedError):
        return coll


def verdict(write, stored):
    """``APPLIED``, ``NOT_APPLIED`` or ``None`` (cannot tell) for a
    ``commit.DocumentWrite`` given the document ``stored`` now for it
    (``None``: there is none)."""
    doc = write.doc
    if stored is not None and not isinstance(stored, dict):
        return None
    if write.kind != DELETE and doc is not None and PY_WRITE in doc and \
            stored is not None and _same_version(stored, doc):
        return APPLIED
    if write.kind == INSERT and stored is None:
        return NOT_APPLIED
    before = write.before
    if isinstance(before, dict) and PY_SERIAL in before and \
            stored is not None and _same_version(stored, before):
        return NOT_APPLIED
    return None


def _same_version(stored, version):
    """Whether ``stored`` holds the serial and write id of ``version``
    (compared with their types: ``True`` is not the serial 1)."""
    return (_same(stored.get(PY_SERIAL, _NONE), version.get(PY_SERIAL))
            and _same(stored.get(PY_WRITE), version.get(PY_WRITE)))


_NONE = object()


def _same(stored, value):
    if isinstance(value, bool) or isinstance(stored, bool):
        return False
    if isinstance(value, int):
        return isinstance(stored, int) and stored == value
    return type(stored) is type(value) and stored == value


def stored_versions(client, writes):
    """What is committed now for ``writes`` (``commit.DocumentWrite``s):
    a dict from ``id(write)`` to the stored document or ``None``.  One
    read per collection; raises PyMongo's errors."""
    groups = {}
    for write in writes:
        oid = write.oid
        groups.setdefault((oid.database, oid.collection), []).append(write)
    found = {}
    for (database, collection), group in groups.items():
        coll = committed_collection(client[database][collection])
        query = sharding.batch_filter(
            (write.oid.id, target_key(write)) for write in group)
        docs = {doc['_id']: doc for doc in coll.find(
            query, {PY_SERIAL: 1, PY_WRITE: 1}, batch_size=len(group) + 1)}
        for write in group:
            found[id(write)] = docs.get(write.oid.id)
    return found


def target_key(write):
    """The shard-key values that find the document of ``write`` (``None``
    for an unsharded class)."""
    key = metadata.shard_key(type(write.obj))
    if key is None:
        return None
    for version in (write.loaded, write.doc):
        if isinstance(version, dict):
            return key.values(version)
    return write.oid.routing


def verdicts(client, writes):
    """``verdict`` of each of ``writes``, in order, from one read per
    collection (raises PyMongo's errors)."""
    stored = stored_versions(client, writes)
    return [verdict(write, stored[id(write)]) for write in writes]


def transaction_outcome(client, writes):
    """Whether a server transaction that wrote ``writes`` committed:
    ``APPLIED``, ``NOT_APPLIED`` or ``None`` (cannot tell; also when the
    documents cannot be read).  All or nothing of a transaction is
    committed, so one write seen applied (or seen not applied) tells."""
    if not writes:
        return None
    try:
        seen = set(verdicts(client, writes))
    except PyMongoError:
        return None
    if APPLIED in seen:
        return None if NOT_APPLIED in seen else APPLIED
    if NOT_APPLIED in seen:
        return NOT_APPLIED
    return None
