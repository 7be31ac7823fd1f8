"""The commit journal: what a crash in the middle of a transaction left.

Without server transactions a transaction's writes reach MongoDB in several
messages (one per collection and kind of write at commit, one per flush
before a query, one per root entry), and writes made before the commit
are visible at once; a process that dies between two of them, or between
a flush and the commit, leaves part of the transaction written.  Before
the first write of such a transaction, the data manager's ``Journal``
inserts an *intent* into ``persistence_journal`` in the root database: the
transaction, the data manager, the time, and every document about to be
written.  Each later step of writes adds one more intent document for the
same transaction (one ``insert`` message) before its writes.  When the
transaction committed, or its abort took back every write, the intents are
deleted.  An intent that stays is what a crash left behind;
``incomplete()`` lists them for an operator.

A transaction whose only writes are the commit's, in one message, needs
no intent: MongoDB receives a message whole or not at all, and it does not
stop a write command when the client disconnects (only reads are killed
then), so that message is applied to the end or not at all.  Such a
transaction costs no extra round trip.

With a server transaction nothing is journaled: an uncommitted server
transaction is invisible to others and the server aborts it by itself.
"""
import datetime
import logging
import os
import socket

from bson.objectid import ObjectId
from pymongo.errors import PyMongoError

from mongopersist import interfaces, metadata, sharding
from mongopersist.serialize import PY_SERIAL

JOURNAL_COLLECTION = 'persistence_journal'

# PyMongo cuts a write command into several messages beyond these.
MAX_BATCH = 100000
MAX_BYTES = 40 * 1000 * 1000          # below maxMessageSizeBytes (48 MB)
# Writes named per intent document: far below the 16 MB document limit.
ENTRIES_PER_DOCUMENT = 20000

logger = logging.getLogger('mongopersist')


def messages(writes):
    """Return how many messages PyMongo needs for one collection's writes.

    ``writes`` are ``commit.DocumentWrite``s sent in one ordered
    ``bulk_write``: every run of consecutive writes of one kind is a
    command of its own, and a command too large is cut in several.
    Anything above one is only a lower bound: the caller only asks
    "one or more".
    """
    count = 1
    for before, after in zip(writes, writes[1:]):
        if before.kind != after.kind:     # insert, update or delete
            count += 1
    if count == 1 and len(writes) > 2:
        # Two documents of at most 16 MB each always fit one message.
        if len(writes) > MAX_BATCH:
            return 2
        size = 0
        for write in writes:
            # The filter and the $set/$unset (or document) of an update
            # are at most about twice the document (measured by the
            # commit pipeline, ``DocumentWrite.size``).
            size += 200 + 2 * write.size
            if size > MAX_BYTES:
                return 2
    return count


def entry(write):
    """What the journal says about one planned write."""
    oid = write.oid
    item = {'db': oid.database, 'coll': oid.collection, 'id': oid.id,
            'op': write.kind}
    if write.doc is not None and PY_SERIAL in write.doc:
        item['serial'] = write.doc[PY_SERIAL]
    if write.loaded is not None and PY_SERIAL in write.loaded:
        item['was'] = write.loaded[PY_SERIAL]
    key = metadata.shard_key(type(write.obj))
    if key is not None:
        # Where the document is: ``Intent.status`` reads it targeted.
        item['key'] = key.values(write.loaded if write.loaded is not None
                                 else write.doc)
    return item


class Journal:
    """The intents of one data manager's running transaction.

    The data manager calls ``committing`` when the commit starts (its
    writes are the transaction's last), ``before_writes`` before each step
    of writes, ``before_root_write`` before writing a root entry,
    ``before_undo``
    before taking writes back, ``finished`` once the transaction committed
    or its writes were all taken back, and ``forget`` when the transaction
    ends (after ``finished``, or after an abort that could not take
    everything back: then the intent stays for an operator).
    """

    def __init__(self, jar, collection=JOURNAL_COLLECTION):
        self.jar = jar
        self.collection = collection
        self.forget()

    @property
    def _coll(self):
        return self.jar._raw_collection(self.jar.root_database,
                                        self.collection)

    def forget(self):
        """Start afresh for the next transaction (intents are kept)."""
        self.txn = None             # ObjectId of the stored intent
        self._unjournaled = []      # entries written without an intent
        self._committing = False

    def committing(self):
        """The commit starts: no write of this transaction follows it."""
        self._committing = True

    @property
    def _active(self):
        return self.jar._server_txn is None

    def before_writes(self, writes_by_collection):
        """Journal the writes of one step, unless they are all there is.

        Only the commit's writes, in one message, with nothing written
        before them, go without an intent; a flush before the commit is
        journaled even when it is one message, since the transaction goes
        on (and may die) after it.

        ``writes_by_collection`` maps ``(database, collection)`` to the
        ``DocumentWrite``s sent to it, as ``commit.Flush.by_collection``.
        """
        if not self._active or not writes_by_collection:
            return
        entries = [entry(write) for writes in writes_by_collection.values()
                   for write in writes]
        if (self._committing and self.txn is None
                and not self._unjournaled and len(writes_by_collection) == 1
                and messages(next(iter(writes_by_collection.values()))) == 1):
            self._unjournaled = entries
            return
        self._write(entries)

    def before_root_write(self, collection, name):
        """Journal the root entry ``name`` about to be set or deleted."""
        if not self._active:
            return
        self._write([{'db': self.jar.root_database, 'coll': collection,
                      'name': name, 'op': 'root'}])

    def before_undo(self):
        """Taking writes back is more messages: journal what they undo.

        (A commit sent as one message that must be taken back, after a
        conflict it reported, was not the whole transaction after all.)
        """
        if self._active and self.txn is None and self._unjournaled:
            self._write([])

    def _write(self, entries):
        """Insert the intent (or one more part of it) before the writes."""
        first = self.txn is None
        if first:
            self.txn = ObjectId()
            entries = self._unjournaled + entries
            self._unjournaled = []
        now = datetime.datetime.now(datetime.timezone.utc)
        docs = []
        for start in range(0, max(len(entries), 1), ENTRIES_PER_DOCUMENT):
            doc = {'txn': self.txn, 'time': now,
                   'writes': entries[start:start + ENTRIES_PER_DOCUMENT]}
            if first and not docs:
                doc.update(data_manager=repr(self.jar), host=HOST,
                           pid=os.getpid())
            docs.append(doc)
        self._coll.insert_many(docs, ordered=True)
        self.jar._round_trips += 1

    def finished(self):
        """The transaction committed or was taken back: drop the intent.

        Never raises: an intent that cannot be deleted stays, and
        ``incomplete`` lists it (a false alarm the operator can check).
        """
        txn = self.txn
        self.forget()
        if txn is None:
            return
        try:
            self._coll.delete_many({'txn': txn})
            self.jar._round_trips += 1
        except PyMongoError as error:
            logger.warning('Could not delete the journal intent %s of a '
                           'finished transaction: %s', txn, error)

    def __repr__(self):
        return '<Journal %s>' % (self.txn,)


HOST = socket.gethostname()


class Intent:
    """A transaction that may be partly written, as the journal names it.

    ``txn`` (an ``ObjectId``), ``started`` (``datetime``, UTC),
    ``data_manager``, ``host``, ``pid``, and ``writes``: one dict per
    document the transaction wrote or was about to write, with ``db``,
    ``coll``, ``op`` (``'insert'``, ``'update'``, ``'delete'`` or
    ``'root'``), ``id`` (the ``_id``; for ``'root'`` entries ``name``),
    and with conflict detection ``serial`` (the ``_py_serial`` written)
    and ``was`` (the one loaded).
    """

    def __init__(self, docs):
        docs = sorted(docs, key=lambda doc: doc['_id'])
        head = next((doc for doc in docs if 'pid' in doc), docs[0])
        self.txn = head['txn']
        self.started = head['time']
        self.data_manager = head.get('data_manager')
        self.host = head.get('host')
        self.pid = head.get('pid')
        self.writes = [item for doc in docs for item in doc['writes']]
        self._ids = [doc['_id'] for doc in docs]

    def __repr__(self):
        return '<Intent %s of %s (pid %s on %s) at %s: %d writes>' % (
            self.txn, self.data_manager, self.pid, self.host,
            self.started, len(self.writes))

    def status(self, client):
        """Return ``(write, state)`` pairs telling what reached MongoDB.

        ``state`` is ``'written'``, ``'not written'``, ``'changed since'``
        (somebody wrote the document later), or ``'unknown'`` (an update
        without conflict detection: nothing tells the versions apart).
        One read per collection.
        """
        ids = {}
        for write in self.writes:
            if write['op'] != 'root':
                ids.setdefault((write['db'], write['coll']), []).append(
                    (write['id'], _stored_key(write.get('key'))))
        found = {}
        for (db, coll), wanted in ids.items():
            for doc in client[db][coll].find(sharding.batch_filter(wanted)):
                found[(db, coll, doc['_id'])] = doc
        return [(write, _state(write, found)) for write in self.writes]

    def discard(self, client, database):
        """Delete this intent (after the operator dealt with it)."""
        client[database][JOURNAL_COLLECTION].delete_many(
            {'_id': {'$in': self._ids}})


def _stored_key(key):
    """The shard-key values an intent names, if safe to filter on."""
    if not isinstance(key, dict):
        return None
    try:
        return {name: sharding.checked_value(value, name)
                for name, value in key.items()
                if isinstance(name, str) and not name.startswith('$')}
    except interfaces.StoredDataError:
        return None


def _state(write, found):
    if write['op'] == 'root':
        return 'unknown'            # the entry itself tells nothing
    doc = found.get((write['db'], write['coll'], write['id']))
    serial = None if doc is None else doc.get(PY_SERIAL)
    op = write['op']
    if op == 'insert':
        if doc is None:
            return 'not written'
        if 'serial' in write and serial != write['serial']:
            return 'changed since'
        return 'written'
    if op == 'delete':
        if doc is None:
            return 'written'
        if 'was' in write and serial != write['was']:
            return 'changed since'
        return 'not written'
    if doc is None:
        return 'changed since'      # somebody removed it
    if 'serial' not in write:
        return 'unknown'
    if serial == write['serial']:
        return 'written'
    if serial == write.get('was'):
        return 'not written'
    return 'changed since'


def incomplete(client, database, older_than=None):
    """List the intents left in ``database`` (the root database), oldest first.

    A running commit has an intent too; ``older_than`` (a
    ``datetime.timedelta``) leaves out intents younger than that.
    """
    docs = {}
    for doc in client[database][JOURNAL_COLLECTION].find():
        docs.setdefault(doc['txn'], []).append(doc)
    intents = sorted((Intent(parts) for parts in docs.values()),
                     key=lambda intent: intent.txn)
    if older_than is not None:
        limit = datetime.datetime.now(datetime.timezone.utc) - older_than
        intents = [intent for intent in intents
                   if _aware(intent.started) <= limit]
    return intents


def _aware(moment):
    """MongoDB returns naive UTC datetimes unless asked otherwise."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.timezone.utc)
    return moment
