"""The application store: one per application, data managers from it.

``mongopersist.connect()`` (or ``store_from_settings``) makes a ``Store``
once per process and application, like ZODB's ``DB``: it owns the
``MongoClient`` and the settings.  Each thread, request or unit of work
gets a data manager of its own from ``Store.open()``, or runs in
``Store.transaction()``, which commits, aborts and retries conflicts.
Data managers that are done go back to the store's pool
(``mongopersist.pool``) with their caches, for the next ``open()``.
See ``docs/applications.rst``.
"""
import functools
import inspect
import os
import random
import time
import warnings

import transaction
from pymongo.errors import ServerSelectionTimeoutError

from mongopersist import logs, reachability, sessions, settings, testing
from mongopersist.datamanager import MongoDataManager
from mongopersist.interfaces import ConfigurationError
from mongopersist.pool import DataManagerPool

LOG = logs.TRANSACTION

#: Where ``connect()`` finds the URI when it is given none.
URI_VARIABLE = testing.URI_VARIABLE

#: First retry waits up to this many seconds, doubling for each further
#: retry up to ``MAX_RETRY_DELAY`` (each wait a random part of that: jitter).
RETRY_DELAY = 0.01
MAX_RETRY_DELAY = 1.0


class InMemoryStoreWarning(UserWarning):
    """The store keeps its data in this process's memory only."""


def retry_delay(retry, base=RETRY_DELAY, cap=MAX_RETRY_DELAY):
    """Seconds to wait before the ``retry``-th retry (1 for the first).

    Exponential backoff with full jitter: a random time up to
    ``base * 2 ** (retry - 1)`` (at most ``cap``), so that writers who
    conflicted with each other do not meet again at once.
    """
    return random.uniform(0, min(cap, base * 2 ** max(retry - 1, 0)))


def connect(uri=None, **options):
    """Return the ``Store`` of an application.

    :param uri: a MongoDB URI (``mongodb://...``, ``mongodb+srv://...``);
        ``'file:///abs/dir'`` or ``'file://relative/dir'`` for a directory
        served by SecantusDB in a process of its own (the ``server`` extra;
        see ``mongopersist.fileserver``); ``'memory://'`` for the
        in-process stand-in (data in memory only, said with an
        ``InMemoryStoreWarning``).  Without one, ``$MONGODB_URI``, else the
        stand-in.
    :param options: the store's settings (``database``,
        ``detect_conflicts``, ``transactions``, ``write_concern``,
        ``read_preference``, ``trusted_modules``, ``allowed_databases``,
        ``broken_objects``, ``cache_size``, ``pool_size``, ``attempts``,
        ``global_queries``: see ``Store``);
        any other keyword is an option of ``pymongo.MongoClient``
        (``serverSelectionTimeoutMS=5000``, ...).

    Nothing is sent to the server here: the client connects in the
    background and the deployment is asked what it supports on first use.
    Bad settings raise ``mongopersist.ConfigurationError``.
    """
    if uri is None:
        uri = os.environ.get(URI_VARIABLE) or settings.MEMORY_URI
    return Store.from_settings(settings.check_options(uri, **options))


def store_from_settings(settings_map, prefix=settings.PREFIX):
    """Return a ``Store`` from a flat settings mapping (a ``.ini`` file).

    Reads the keys starting with ``prefix``: ``uri``, ``database``,
    ``detect_conflicts``, ``transactions``, ``write_concern.w``,
    ``write_concern.wtimeout``, ``write_concern.j``, ``read_preference``,
    ``trusted_modules`` and ``allowed_databases`` (names separated by
    spaces or commas), ``broken_objects``, ``cache_size``, ``pool_size``,
    ``attempts``, ``global_queries`` (``error`` or ``warn``),
    and ``client.<name>`` for options of ``pymongo.MongoClient``.  An
    unknown key or a bad value raises ``ConfigurationError`` naming it.
    Without ``<prefix>uri``: ``$MONGODB_URI``, else the stand-in.
    """
    found = settings.from_text(
        settings_map, prefix,
        default_uri=os.environ.get(URI_VARIABLE) or settings.MEMORY_URI)
    return Store.from_settings(found)


class Store:
    """A MongoDB client and the settings of one application.

    Make it once (``mongopersist.connect``) and share it between threads;
    get a data manager per thread, request or unit of work from ``open``
    or ``transaction``.

    :param client: a ``pymongo.MongoClient`` (or the stand-in's); the
        store uses its write concern (``w=0`` is refused) and read
        preference.
    :param database: the default database of the data managers (classes
        with ``_p_mongo_database`` live in theirs); default: the client's
        default database (the URI's path).
    :param detect_conflicts: refuse to overwrite documents others changed
        since they were loaded (``ConflictError``, retried by
        ``transaction``).  True by default; False is unsafe with several
        writers: updates are lost silently (see docs/applications.rst).
    :param transactions: ``'auto'``, ``'always'`` or ``'never'`` (see
        ``MongoDataManager``); the deployment is asked once, on first use.
    :param trusted_modules: module name prefixes whose classes loading may
        use, besides the process-wide ones.
    :param allowed_databases: databases stored references may point into.
    :param broken_objects: load unknown classes as broken placeholders.
    :param cache_size: passed to the data managers as ``cache_size`` where
        they take it (``None``: their default).
    :param pool_size: how many closed data managers (with their caches)
        wait for reuse by ``open``, at most (``0``: none; see
        ``mongopersist.pool``).
    :param attempts: how many times ``transaction()`` (and the web layers)
        run a unit of work that keeps conflicting, at most.
    :param global_queries: what a query of a sharded class that does not
        pin its shard key does in this store's data managers (new and
        pooled): ``'error'`` (``GlobalQueryError``), ``'warn'``
        (``GlobalQueryWarning``, for development), or ``None`` for the
        process-wide policy (``mongopersist.sharding.global_queries``).
        Also settable later as the ``global_queries`` attribute.
    :param owns_client: close the client in ``close()``.
    :param in_memory: the client is the in-process stand-in (found out
        for mongomock clients).

    ``data_manager_class`` (an attribute) is the class ``open`` makes
    data managers of: ``MongoDataManager`` or a subclass.
    """

    data_manager_class = MongoDataManager
    #: The ``fileserver.Lease`` of a ``file://`` store (given back by
    #: ``close``).
    _lease = None
    #: The URI the store was made from (``from_settings``), if any: its
    #: credentials are scrubbed from messages.
    _uri = None

    def __init__(self, client, database=None, detect_conflicts=True,
                 transactions='auto', trusted_modules=(),
                 allowed_databases=(), broken_objects=False, cache_size=None,
                 attempts=3, owns_client=False, in_memory=False,
                 pool_size=settings.StoreSettings.pool_size,
                 global_queries=None):
        settings.refuse_unacknowledged(client)
        checked = settings.check_options(
            database=database, detect_conflicts=detect_conflicts,
            transactions=transactions, trusted_modules=trusted_modules,
            allowed_databases=allowed_databases,
            broken_objects=broken_objects, cache_size=cache_size,
            pool_size=pool_size, attempts=attempts,
            global_queries=global_queries)
        if checked.database is None:
            checked.database = _default_database(client)
        self.client = client
        self.database = checked.database
        self.detect_conflicts = checked.detect_conflicts
        self.transactions = checked.transactions
        self.trusted_modules = checked.trusted_modules
        self.allowed_databases = checked.allowed_databases
        self.broken_objects = checked.broken_objects
        self.cache_size = checked.cache_size
        self.pool_size = checked.pool_size
        #: Closed data managers waiting for reuse by ``open``.
        self.pool = DataManagerPool(self.pool_size)
        self.attempts = checked.attempts
        self.global_queries = checked.global_queries
        self.in_memory = in_memory or type(client).__module__.startswith(
            'mongomock')
        self._owns_client = owns_client
        #: What the deployment supports, asked once for all data managers.
        self.deployment = sessions.Deployment(client)

    @classmethod
    def from_settings(cls, found):
        """Make the client ``found`` (``settings.StoreSettings``) names,
        and the store around it."""
        lease = None
        if found.in_memory:
            client = _memory_client(found)
        elif found.directory is not None:
            # Imported here: ``python -m mongopersist.fileserver`` runs it.
            from mongopersist import fileserver
            lease = fileserver.lease(found.directory)
            try:
                client = _mongo_client(found, lease.uri)
            except BaseException:
                lease.close()
                raise
        else:
            client = _mongo_client(found)
        try:
            store = cls(
                client, found.database, detect_conflicts=found.detect_conflicts,
                transactions=found.transactions,
                trusted_modules=found.trusted_modules,
                allowed_databases=found.allowed_databases,
                broken_objects=found.broken_objects,
                cache_size=found.cache_size, pool_size=found.pool_size,
                attempts=found.attempts, global_queries=found.global_queries,
                owns_client=True, in_memory=found.in_memory)
        except BaseException:
            client.close()
            if lease is not None:
                lease.close()
            raise
        store._lease = lease
        store._uri = found.uri
        return store

    def __repr__(self):
        where = 'in memory' if self.in_memory else 'on MongoDB'
        if self._lease is not None:
            where = 'in %s' % self._lease.path
        return '<Store %s %s>' % (self.database, where)

    @property
    def write_concern(self):
        """The write concern of every write and transaction commit."""
        return getattr(self.client, 'write_concern', None)

    @property
    def read_preference(self):
        """Where reads outside a server transaction go."""
        return getattr(self.client, 'read_preference', None)

    def open(self, transaction_manager=None):
        """Return a data manager for the calling thread or request.

        It follows the transactions of ``transaction_manager``; the default,
        ``transaction.manager``, is thread-local, so the data manager
        belongs to the calling thread (used from another it raises
        ``WrongThreadError``).  Give each request its own manager
        (``request.tm`` with pyramid_tm) to use it from any thread, one at
        a time.

        The data manager comes from the pool when one waits there (the
        most recently closed, its cache warm; what it holds is validated
        before use), else it is new.  ``dm.close()`` (or ``give_back``)
        returns it when the work is done.
        """
        manager = transaction_manager or transaction.manager
        dm = self.pool.take()
        if dm is not None:
            dm._reopen(manager)
            return self._configured(dm)
        options = dict(
            default_database=self.database,
            detect_conflicts=self.detect_conflicts,
            transactions=self.transactions,
            trusted_modules=self.trusted_modules,
            allowed_databases=self.allowed_databases,
            broken_objects=self.broken_objects,
            transaction_manager=manager,
            deployment=self.deployment)
        if self.cache_size is not None and _takes(self.data_manager_class,
                                                  'cache_size'):
            options['cache_size'] = self.cache_size
        dm = self.data_manager_class(self.client, **options)
        dm._release = self.pool.give_back
        return self._configured(dm)

    @property
    def global_queries(self):
        """What a query of a sharded class that does not pin its shard key
        does in this store's data managers: ``'error'``, ``'warn'`` (for
        development), or ``None`` for the process-wide policy
        (``mongopersist.sharding.global_queries``).  A change reaches the
        data managers opened after it."""
        return self._global_queries

    @global_queries.setter
    def global_queries(self, policy):
        self._global_queries = settings.global_queries(policy)

    def _configured(self, dm):
        # Store-wide settings a data manager has as attributes.
        dm.global_queries = self.global_queries
        return dm

    def ensure_indexes(self, *classes):
        """Create the indexes ``classes`` declare (``_p_mongo_indexes``)
        that MongoDB lacks; return what was created (see
        ``MongoDataManager.ensure_indexes``).  Run it at deployment or
        application start; it never drops an index."""
        with self.translate_unreachable():
            dm = self.open(transaction.TransactionManager())
            try:
                return dm.ensure_indexes(*classes)
            finally:
                self.give_back(dm)

    def translate_unreachable(self):
        """A context manager: PyMongo's ``ServerSelectionTimeoutError``
        raised in it (no server answered within ``serverSelectionTimeoutMS``)
        is raised as ``ServerUnreachableError``, one line naming this
        store's hosts, what they answered, the wait and where to set it
        (see ``mongopersist.reachability``).  ``transaction()``,
        ``ensure_indexes()`` and the web layers use it."""
        what = ''
        if self._lease is not None:
            what = 'the file:// store in %s' % self._lease.path
        return reachability.translated(self.client, self._uri, what)

    def give_back(self, dm):
        """Return ``dm`` to the pool: its request or unit of work is over.

        What ``Store.transaction()`` and the web layers call when their
        transaction has ended.  A data manager still taking part in a
        transaction then (changed after the request's commit, into the
        next transaction of its manager) has that transaction aborted
        first, with a warning: the work it belonged to is over.
        """
        if dm._closed:
            return
        if dm._busy():
            LOG.warning('%r was given back to the store with changes not '
                        'committed (made after its unit of work ended): '
                        'they are aborted', dm)
            dm.transaction_manager.abort()
        dm.close()

    def transaction(self, attempts=None, transaction_manager=None):
        """Run a unit of work in a transaction of its own.

        Used in a ``with`` statement it yields a data manager, commits
        when the block ends and aborts if it raises (one attempt: Python
        cannot run a block again).  Iterated, it gives attempts, and runs
        again (up to ``attempts``, default the store's) a unit of work
        that ends in a retryable error (``ConflictError``, a transient
        server transaction error), waiting a little longer, with jitter,
        before each retry::

            for attempt in store.transaction():
                with attempt as dm:
                    dm.root['counter'].value += 1

        The transaction manager is a new one of its own unless given.
        Retries and the last failed attempt are logged (INFO, logger
        ``mongopersist.transaction``); a server that does not answer is
        ``ServerUnreachableError`` (``translate_unreachable``).
        """
        return TransactionAttempts(self, attempts or self.attempts,
                                   transaction_manager)

    def close(self):
        """Shut the pooled data managers down; close the client if the
        store made it (and give a ``file://`` store's server back)."""
        self.pool.clear()
        if self._owns_client:
            self.client.close()
        if self._lease is not None:
            self._lease.close()


class TransactionAttempts:
    """The attempts at one unit of work (see ``Store.transaction``)."""

    def __init__(self, store, attempts, transaction_manager=None):
        self.store = store
        self.attempts = attempts
        self.transaction_manager = (
            transaction_manager
            or transaction.TransactionManager(explicit=True))
        self._dm = None
        self._single = None

    @property
    def dm(self):
        """The data manager of this unit of work (opened on first need)."""
        if self._dm is None:
            self._dm = self.store.open(self.transaction_manager)
        return self._dm

    def give_back(self):
        """The unit of work is over: its data manager goes back to the
        store's pool."""
        dm, self._dm = self._dm, None
        if dm is not None:
            self.store.give_back(dm)

    def __iter__(self):
        try:
            for number in range(self.attempts):
                if number:
                    delay = retry_delay(number)
                    logs.retrying(number, self.attempts, attempt.error,
                                  delay)
                    time.sleep(delay)
                attempt = Attempt(self, last=number == self.attempts - 1,
                                  number=number + 1)
                yield attempt
                if not attempt.retry:
                    return
        finally:
            # Also when the loop is left early.
            self.give_back()

    def __enter__(self):
        self._single = Attempt(self, last=True, number=1)
        return self._single.__enter__()

    def __exit__(self, kind, error, tb):
        return self._single.__exit__(kind, error, tb)


class Attempt:
    """One attempt: a context manager yielding the data manager.

    On leaving it commits (aborts if the transaction was doomed); an error
    in the block or at commit aborts.  A retryable error is swallowed
    unless this is the last attempt, and ``retry`` is then true.  Unless
    it is retried, the data manager goes back to the store's pool.
    """

    def __init__(self, attempts, last, number=1):
        self._attempts = attempts
        #: The transaction manager this attempt runs in.
        self.transaction_manager = attempts.transaction_manager
        self.last = last
        #: Which attempt this is (1 for the first).
        self.number = number
        self.retry = False
        #: The retryable error this attempt ended in, if any.
        self.error = None

    def __enter__(self):
        self.transaction_manager.begin()
        return self._attempts.dm

    def __exit__(self, kind, error, tb):
        try:
            with self._attempts.store.translate_unreachable():
                handled = self._finish(error)
                if not handled and isinstance(
                        error, ServerSelectionTimeoutError):
                    # Raised again, said clearly (``translate_unreachable``).
                    raise error
                return handled
        finally:
            if not self.retry:
                self._attempts.give_back()

    def _finish(self, error):
        manager = self.transaction_manager
        if error is None:
            try:
                if manager.isDoomed():
                    manager.abort()
                else:
                    manager.commit()
                return False
            except Exception as commit_error:
                if self._give_up(manager, commit_error):
                    raise
                return False
        if not isinstance(error, Exception):
            manager.abort()
            return False
        return not self._give_up(manager, error)

    def _give_up(self, manager, error):
        """Abort; return whether ``error`` is to be raised (no retry)."""
        try:
            retryable = manager.get().isRetryableError(error)
        finally:
            manager.abort()
        if retryable and not self.last:
            self.retry = True
            self.error = error
            return False
        if retryable and self.number > 1:
            logs.given_up(self.number, error)
        return True


@functools.lru_cache(maxsize=None)
def _takes(cls, argument):
    """Whether ``cls(...)`` takes ``argument``."""
    return argument in inspect.signature(cls).parameters


def _default_database(client):
    try:
        return client.get_default_database().name
    except Exception:
        raise ConfigurationError(
            'name the database: database=... (or mongopersist.database in '
            'settings), or in the URI (mongodb://host/NAME)',
            'database') from None


def _memory_client(found):
    warnings.warn(
        'mongopersist store %r on the in-process stand-in (memory://): the '
        'data lives in this process\'s memory only and is lost when it '
        'ends.  Pass a file://DIR or mongodb:// URI (or set %s) to keep '
        'it'
        % (found.database, URI_VARIABLE), InMemoryStoreWarning, stacklevel=4)
    try:
        return testing.embedded_client()
    except ImportError:
        raise ConfigurationError(
            '%s needs mongomock: pip install mongopersist[embedded]'
            % settings.MEMORY_URI, 'uri') from None


def _mongo_client(found, uri=None):
    import pymongo
    options = dict(found.client_options)
    concern = found.write_concern
    if concern is not None:
        document = concern.document
        for name, option in (('w', 'w'), ('wtimeout', 'wTimeoutMS'),
                             ('j', 'journal')):
            if name in document:
                options[option] = document[name]
    preference = found.read_preference
    if preference is not None:
        options['readPreference'] = preference.mongos_mode
        tags = [tag for tag in (preference.tag_sets or ()) if tag]
        if tags:
            options['readPreferenceTags'] = [
                ','.join('%s:%s' % item for item in tag.items())
                for tag in tags]
        if preference.max_staleness != -1:
            options['maxStalenessSeconds'] = preference.max_staleness
    try:
        return pymongo.MongoClient(uri or found.uri, **options)
    except (pymongo.errors.ConfigurationError, TypeError, ValueError) as error:
        # PyMongo's message, without the URI's credentials.
        raise ConfigurationError('bad MongoDB URI or option: %s' % (
            settings.scrub(str(error), uri or found.uri),), 'uri') from None

