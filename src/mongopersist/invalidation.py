"""Pushed invalidations: a change stream tells the cache what changed.

Without it, a data manager validates its object cache at the start of each
transaction with one read of serials per collection
(``mongopersist.cache``).  Where the deployment has change streams (a
replica set or a sharded cluster), ``MongoDataManager(...,
watch_changes=True)`` keeps a ``ChangeWatcher``: one change stream per
database of the data manager, projected to what identifies a change (the
``documentKey``, the namespace, the new ``_py_serial``), read by a
background thread into a queue.  The data manager applies the queue at
transaction boundaries, as a ZEO client applies the invalidations its
server pushed: the objects of changed documents become ghosts, without a
query.

Whenever the watcher may have missed a change it says so, and the data
manager falls back to validating by serials once: when a stream is
(re)opened (the first time, after an error its automatic resume could not
recover from, after a lost resume token, and when a database joins), and
after an ``invalidate``, ``drop``, ``rename`` or ``dropDatabase`` event.

On a standalone server, which has no change streams, the watcher gives
up after the first refusal (one warning in the log) and the data manager
validates by serials at every transaction, as without ``watch_changes``.

A change reaches the watcher shortly *after* it is committed (change
streams report majority-committed writes, then the network and the
thread take their time): a transaction that begins right after another
process committed may not see that commit yet, as with ZEO.  The
conditional writes of conflict detection still refuse to overwrite it.
"""
import logging
import threading
import time

from pymongo.errors import PyMongoError

from mongopersist import metadata, sessions
from mongopersist.serialize import PY_SERIAL

LOG = logging.getLogger('mongopersist')

#: Events that name one changed document.
DOCUMENT_EVENTS = ('insert', 'update', 'replace', 'delete')

#: Only what identifies a change travels (the resume token ``_id`` stays).
PIPELINE = [
    {'$match': {'operationType': {'$nin': ['createIndexes', 'dropIndexes',
                                           'create', 'modify',
                                           'shardCollection']}}},
    {'$project': {'operationType': 1, 'ns': 1, 'documentKey': 1,
                  'updateDescription.updatedFields.' + PY_SERIAL: 1,
                  'fullDocument.' + PY_SERIAL: 1}},
]


def change_of(event):
    """``(ref, serial)`` for an event naming one document, else ``None``.

    ``serial`` is the document's new ``_py_serial`` where the event carries
    it (``None`` otherwise, e.g. for a removal).
    """
    if event.get('operationType') not in DOCUMENT_EVENTS:
        return None
    ns = event.get('ns') or {}
    key = event.get('documentKey') or {}
    if '_id' not in key or 'coll' not in ns:
        return None
    serial = ((event.get('updateDescription') or {}).get(
        'updatedFields') or {}).get(PY_SERIAL)
    if serial is None:
        serial = (event.get('fullDocument') or {}).get(PY_SERIAL)
    return metadata.OID(ns['coll'], key['_id'], ns.get('db')), serial


class ChangeWatcher:
    """Watches the databases ``databases()`` names for changed documents.

    :param client: the data manager's ``MongoClient``.
    :param databases: a callable returning the names of the databases to
        watch (asked again at every ``changes()``: databases join).
    :param max_await_ms: how long one ``getMore`` waits for changes.
    :param retry_seconds: pause before reopening a stream that failed.
    """

    def __init__(self, client, databases, max_await_ms=500,
                 retry_seconds=1.0):
        self._client = client
        self._databases = databases
        self._max_await_ms = max_await_ms
        self._retry_seconds = retry_seconds
        self._lock = threading.Lock()
        self._queue = []
        self._threads = {}      # database -> thread
        self._open = set()      # databases whose stream is open
        self._lost = True       # a change may have been missed
        self._closed = False
        self._started()

    def __repr__(self):
        return '<ChangeWatcher %s>' % ', '.join(sorted(self._threads))

    def _started(self):
        """Start a stream for every database not watched yet."""
        for database in sorted(self._databases()):
            if database not in self._threads:
                thread = threading.Thread(
                    target=self._run, args=(database,), daemon=True,
                    name='mongopersist-watch-%s' % database)
                self._threads[database] = thread
                thread.start()

    def changes(self):
        """The ``(ref, serial)`` changes heard since the last call, or
        ``None`` if some may have been missed: then validate by serials
        (everything changed after this call is heard again)."""
        with self._lock:
            complete = (not self._lost and not self._closed
                        and self._open.issuperset(self._threads))
            queue, self._queue = self._queue, []
            if complete and self._databases() <= set(self._threads):
                return queue
            if self._open.issuperset(self._threads):
                # The validation that follows covers what was missed.
                self._lost = False
        self._started()
        return None

    def wait_open(self, timeout=10.0):
        """Wait until every stream is open (for tests and start-up);
        return whether they are."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._open.issuperset(self._threads):
                    return True
            time.sleep(0.01)
        return False

    def close(self):
        """Stop watching (the threads end within ``max_await_ms``)."""
        self._closed = True

    # -- the background threads -------------------------------------------
    def _run(self, database):
        while not self._closed:
            opened = False
            try:
                with self._client[database].watch(
                        PIPELINE, max_await_time_ms=self._max_await_ms
                ) as stream:
                    opened = True
                    with self._lock:
                        # Opened now: what changed before is validated.
                        self._open.add(database)
                        self._lost = True
                    self._follow(database, stream)
            except PyMongoError as error:
                if not opened and self._standalone():
                    # Refused for good: asking again every second would
                    # only fill the log.
                    self._give_up(database, error,
                                  'a standalone server has no change streams')
                    return
                LOG.warning('Change stream on %s failed (%s: %s); the cache '
                            'is validated by serials until it reopens',
                            database, type(error).__name__, error)
            except Exception as error:      # a client without streams
                self._give_up(database, error,
                              'not a server error, retrying will not help')
                return
            with self._lock:
                self._open.discard(database)
                self._lost = True
            if not self._closed:
                time.sleep(self._retry_seconds)

    def _standalone(self):
        """True if the deployment surely has no change streams."""
        try:
            return not sessions.deployment_has_change_streams(self._client)
        except PyMongoError:
            return False        # cannot tell now: try again

    def _give_up(self, database, error, why):
        LOG.warning('Cannot watch %s: %s (%s: %s); the cache is validated '
                    'by serials', database, why, type(error).__name__, error)
        with self._lock:
            self._open.discard(database)
            self._lost = True

    def _follow(self, database, stream):
        while not self._closed and stream.alive:
            event = stream.try_next()
            if event is None:
                continue
            change = change_of(event)
            with self._lock:
                if change is None:
                    # A collection or database dropped or renamed, or the
                    # stream invalidated: whatever it held may be gone.
                    self._lost = True
                else:
                    self._queue.append(change)
            if event.get('operationType') == 'invalidate':
                return
