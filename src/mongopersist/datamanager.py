"""The Mongo data manager: persistent objects stored at transaction commit.

``MongoDataManager`` is both a ``transaction`` data manager (it joins the
current transaction and writes at commit) and the ``_p_jar`` of the
persistent objects it loads (it loads their state on first access and hears
about their changes).  The work is shared out:

* ``mongopersist.serialize``: objects <-> documents (the serializer chain);
* ``mongopersist.commit``: the commit pipeline (serialize, plan, write);
* ``mongopersist.conflict``: what a write is conditional on;
* ``mongopersist.typemap``: which classes live in which collection;
* ``mongopersist.root``: the named entry points;
* ``mongopersist.cache``: loaded objects and documents, across transactions,
  and when they are validated;
* ``mongopersist.invalidation``: changes pushed by a change stream;
* ``mongopersist.undo``: taking back what an aborted transaction wrote;
* ``mongopersist.journal``: what a crash in the middle of one left;
* ``mongopersist.metadata``: which stored names may load as which classes;
* ``mongopersist.sharding``, ``.indexes``, ``.sequence``: scale-out (shard
  keys, declared indexes, counters).
"""
import threading
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, Callable, Literal, NoReturn, Optional, TypeVar

import persistent
import transaction
import zope.interface
from bson.dbref import DBRef
from bson.objectid import ObjectId

from mongopersist import (
    batching, broken, commit, conflict, indexes, interfaces, journal,
    limits, logs, metadata, query, references, sequence, serialize,
    sessions, settings, sharding, speedups)
from mongopersist.cache import DEFAULT_SIZE, CacheValidator, ObjectCache
from mongopersist.collection import MongoCollection
from mongopersist.root import Root
from mongopersist.savepoint import Savepoint
from mongopersist.typemap import CollectionTypeMap
from mongopersist.undo import UndoLog

#: A persistent class queried, and its instances found.
T = TypeVar('T')


def p64(number: int) -> bytes:
    """Return ``number`` as the 8-byte string persistent uses for serials."""
    return int(number).to_bytes(8, 'big')


@zope.interface.implementer(interfaces.IMongoDataManager)
class MongoDataManager:
    """Stores persistent objects in MongoDB when the transaction commits.

    :param client: a ``pymongo.MongoClient`` (or compatible) instance.
    :param default_database: database for classes without
        ``_p_mongo_database``; defaults to the client's default database.
    :param root_database: database of the root collection (and of the
        type map); defaults to ``default_database``.
    :param root_collection: name of the collection behind ``dm.root``.
    :param detect_conflicts: keep ``_py_serial`` on every document and refuse
        to overwrite documents others changed (``ConflictError``).
    :param conflict_handler: a handler class or instance from
        ``mongopersist.conflict``; overrides ``detect_conflicts``.
    :param serializers: ``ObjectSerializer`` instances consulted before the
        process-wide and built-in ones.
    :param transaction_manager: defaults to ``transaction.manager``.
    :param transactions: ``'auto'`` runs each transaction in a server
        transaction when the deployment has them (replica set or sharded
        cluster) and without otherwise; ``'always'`` refuses to start
        without them; ``'never'`` writes without them.  The default is the
        class attribute ``default_transactions`` (``'auto'``).  See
        ``docs/transactions.rst`` for what is atomic in each mode.  The
        deployment is asked whether it has them when this data manager
        first joins a transaction, never in the constructor.
    :param deployment: the ``mongopersist.sessions.Deployment`` of
        ``client``, shared by the data managers of a ``mongopersist.Store``
        so that the deployment is asked once (default: this data
        manager's own).
    :param trusted_modules: module name prefixes whose classes loading may
        use (besides the process-wide ones, ``metadata.trust_modules``).
    :param allowed_databases: databases that stored references may point
        into, besides this data manager's own (``default_database``,
        ``root_database`` and those of classes known to the process).
    :param broken_objects: load documents of unknown or refused classes as
        read-only ``mongopersist.broken.Broken`` placeholders instead of
        raising ``UnknownTypeError``.
    :param cache_size: how many recently used objects stay in memory across
        transactions (``mongopersist.cache.ObjectCache``); with conflict
        detection, loaded objects survive transaction boundaries and are
        validated against the stored ``_py_serial`` (``docs/cache.rst``).
    :param watch_changes: keep a change stream open on this data manager's
        databases (``mongopersist.invalidation.ChangeWatcher``): changed
        documents are invalidated as the stream reports them, instead of
        by a validating read per transaction.  Needs a replica set or
        sharded cluster and conflict detection.

    Loading resolves stored names only to what the application allowed:
    see ``docs/security.rst``.
    """

    name = 'mongopersist'

    #: The ``transactions`` mode of data managers created without one.
    default_transactions: str = 'auto'

    #: What a query of a sharded class that does not pin its shard key
    #: does: ``'error'`` or ``'warn'``; ``None`` follows the process-wide
    #: ``mongopersist.sharding.global_queries()``.
    global_queries: Optional[str] = None

    #: Called with this data manager by ``close()`` instead of shutting it
    #: down: the pool of the ``Store`` that opened it.
    _release: Optional[Callable[['MongoDataManager'], None]]

    # The bookkeeping of the running transaction (set by
    # ``_reset_transaction_state``): oids and ids to objects and documents.
    _prefetched: dict[Any, Any]
    _new: dict[Any, Any]
    _inserted: dict[Any, Any]
    _registered: dict[int, Any]
    _changed_sub: dict[int, Any]
    _removed: dict[Any, Any]
    _deleted: dict[Any, Any]
    _written_oids: list[Any]
    _replaced_docs: list[tuple[Any, Any]]

    def __init__(self, client: Any, default_database: Optional[str] = None,
                 root_database: Optional[str] = None,
                 root_collection: str = 'persistence_root',
                 detect_conflicts: bool = False,
                 conflict_handler: Any = None,
                 serializers: Optional[Iterable[Any]] = None,
                 transaction_manager: Any = None,
                 transactions: Optional[str] = None,
                 trusted_modules: Iterable[str] = (),
                 allowed_databases: Iterable[str] = (),
                 broken_objects: bool = False, cache_size: int = DEFAULT_SIZE,
                 watch_changes: bool = False, deployment: Any = None) -> None:
        settings.refuse_unacknowledged(client)
        self._client = self._conn = client
        if default_database is None:
            default_database = client.get_default_database().name
        self.default_database: str = default_database
        self.root_database: str = root_database or default_database
        self._release = None
        self._closed = False
        self._watcher: Any = None
        self.conflict_handler = conflict_handler or (
            conflict.SimpleSerialConflictHandler if detect_conflicts
            else conflict.NoCheckConflictHandler)
        self.type_registry = metadata.TypeRegistry(
            trusted_modules=trusted_modules, parent=metadata.REGISTRY)
        self.allowed_databases = frozenset(allowed_databases)
        self.broken_objects = broken_objects
        self._databases = {self.default_database, self.root_database}
        self._documents_read = 0    # documents being read (nested)
        self._databases.update(self.allowed_databases)
        self._writer = serialize.ObjectWriter(self, serializers or ())
        self._reader = serialize.ObjectReader(self, serializers or ())
        self._types = CollectionTypeMap(client, self.root_database,
                                        registry=self.type_registry)
        self.root = Root(self, self.root_database, root_collection)
        self._transactions_mode = sessions.check_mode(
            transactions or self.default_transactions)
        # Learnt on first need (no I/O here).
        self._transactions: Optional[bool] = None
        self._deployment = deployment or sessions.Deployment(client)
        self._server_txn: Any = None
        self._journal = journal.Journal(self)
        # The identity map, the strong cache and the loaded documents.
        self._cache = ObjectCache(cache_size)
        # When what the cache holds is validated.
        self._validator = CacheValidator(self)
        if watch_changes:
            if not self.detect_conflicts:
                raise ValueError('watch_changes needs conflict detection: '
                                 'own writes are told apart by _py_serial')
            from mongopersist.invalidation import ChangeWatcher
            self._watcher = ChangeWatcher(client, self._watched_databases)
        self.state_generation = 0
        self._batches = batching.Batches(self)
        self._reset_transaction_state()
        self._invalidated = False
        self._activated = False
        #: Oids whose writes the last abort or savepoint rollback could not
        #: take back, because somebody else changed the document since.
        self.unrestored: list[Any] = []
        self._bind(transaction_manager or transaction.manager)

    def _bind(self, transaction_manager: Any) -> None:
        """Follow the transactions of ``transaction_manager`` from now on."""
        self.transaction_manager = transaction_manager
        # A thread-local manager tells this data manager about the
        # transaction boundaries of the calling thread only.
        self._thread = (threading.get_ident() if isinstance(
            transaction_manager, transaction.ThreadTransactionManager)
            else None)
        transaction_manager.registerSynch(self)

    def _reset_transaction_state(self) -> None:
        # Changes whenever what the data manager knows may have gone stale
        # (a transaction boundary, a savepoint rollback): caches compare it.
        self.state_generation += 1
        self._joined = None
        self._prefetched = {}       # oid -> document read before activation
        self._batches.clear()       # siblings' documents read ahead
        self._new = {}              # oid -> new object, not yet written
        self._inserted = {}         # oid -> every object inserted
        self._registered = {}       # id -> changed top-level object
        self._changed_sub = {}      # id -> changed sub-object
        self._removed = {}          # oid -> object to remove
        self._deleted = {}          # oid -> object whose document is deleted
        self._undo = UndoLog(self)  # how to take back what was written
        self._written_oids = []     # oids written in this transaction
        # (oid, document loaded before the write or None), per write, in
        # order: what a savepoint rollback puts back (``Savepoint``).
        self._replaced_docs = []
        self._discovered = None     # new objects found by a running flush
        self._round_trips = 0       # commands sent to write (``logs``)

    def __repr__(self) -> str:
        return '<%s %s>' % (self.__class__.__name__, self.default_database)

    @property
    def _loaded_docs(self) -> Any:
        """oid -> document as loaded or last written (kept by the cache
        across transactions while its object lives)."""
        return self._cache.docs

    @_loaded_docs.setter
    def _loaded_docs(self, docs: Any) -> None:
        self._cache.docs = docs

    @property
    def cache_size(self) -> int:
        """How many recently used objects stay alive across transactions."""
        size: int = self._cache.size
        return size

    @property
    def conflict_handler(self) -> Any:
        """The conflict handler (``mongopersist.conflict``).  Assigning one
        (a handler or its class) also sets ``detect_conflicts``: the two
        are one setting."""
        return self._conflict_handler

    @conflict_handler.setter
    def conflict_handler(self, handler: Any) -> None:
        if isinstance(handler, type):
            handler = handler(self)
        if self._watcher is not None and not handler.detects_conflicts:
            raise ValueError('watch_changes needs conflict detection: '
                             'own writes are told apart by _py_serial')
        handler._jar = self
        self._conflict_handler = handler

    @property
    def detect_conflicts(self) -> bool:
        """Whether documents keep ``_py_serial`` and commits refuse to
        overwrite what others changed (the conflict handler's
        ``detects_conflicts``).  Assigning it switches to the default
        handler of that kind when the current one differs."""
        detects: bool = self._conflict_handler.detects_conflicts
        return detects

    @detect_conflicts.setter
    def detect_conflicts(self, value: bool) -> None:
        if bool(value) != self.detect_conflicts:
            self.conflict_handler = (conflict.SimpleSerialConflictHandler
                                     if value
                                     else conflict.NoCheckConflictHandler)

    def _watched_databases(self) -> set[str]:
        return set(self._databases)

    # -- collections ------------------------------------------------------
    def get_collection(self, db_name: str,
                       coll_name: str) -> MongoCollection:
        """Return the collection ``coll_name`` of database ``db_name``.

        The collection is a ``mongopersist.collection.MongoCollection``: its
        queries first write this transaction's pending changes of the
        collection, so that they see them.
        """
        return MongoCollection(self, self._raw_collection(db_name, coll_name))

    def _raw_collection(self, db_name: str, coll_name: str) -> Any:
        """The PyMongo collection itself, for the data manager's own use."""
        return self._client[db_name][coll_name]

    def get_collection_of_object(self, obj: Any) -> MongoCollection:
        """Return the collection that stores ``obj`` (or its class)."""
        if not isinstance(obj, type) and obj._p_oid is not None:
            oid = obj._p_oid
            return self.get_collection(oid.database, oid.collection)
        db_name, coll_name = self._collection_name_of(obj)
        return self.get_collection(db_name, coll_name)

    def _collection_name_of(self, obj: Any) -> tuple[str, str]:
        cls = obj if isinstance(obj, type) else type(obj)
        return (metadata.database_name(cls, self.default_database),
                metadata.collection_name(cls))

    # -- object queries (mongopersist.query) ------------------------------
    def find_objects(self, cls: type[T], filter: query.Filter = None,
                     sort: query.Sort = None, limit: int = 0, skip: int = 0,
                     allow_global: bool = False) -> Iterator[T]:
        """Iterate the instances of ``cls`` whose documents match ``filter``.

        One query for all results; objects already loaded are returned as
        they are; pending changes of the collection are written first.
        ``sort`` is a key name or a list of ``(key, direction)`` pairs.
        For a class with a shard key, a filter that does not pin it raises
        ``GlobalQueryError`` unless ``allow_global`` is true.
        """
        return query.find_objects(self, cls, filter, sort=sort, limit=limit,
                                  skip=skip, allow_global=allow_global)

    def find_one_object(self, cls: type[T], filter: query.Filter = None,
                        allow_global: bool = False) -> Optional[T]:
        """Return an instance of ``cls`` whose document matches, or None."""
        return query.find_one_object(self, cls, filter,
                                     allow_global=allow_global)

    def count(self, cls: type, filter: query.Filter = None,
              allow_global: bool = False) -> int:
        """Return how many instances of ``cls`` have a matching document."""
        return query.count(self, cls, filter, allow_global=allow_global)

    # -- scale-out (mongopersist.indexes, .sequence) --------------------------
    def ensure_indexes(self, *classes: type) -> list[Any]:
        """Create the indexes ``classes`` declare (``_p_mongo_indexes``)
        that MongoDB lacks; return the ``indexes.CreatedIndex`` list.
        Idempotent; never drops an index (see ``mongopersist.indexes``)."""
        return indexes.ensure_indexes(self, *classes)

    def next_sequence(self, name: str, step: int = 1) -> int:
        """Return the next value of the counter ``name`` (1, 2, ...): one
        atomic ``findAndModify``, outside the transaction (an abort leaves
        a gap, two callers never get the same value).  Usable as
        ``dm.insert(obj, oid=dm.next_sequence('posts'))``."""
        return sequence.next_value(self, name, step)

    # -- the transaction ----------------------------------------------------
    @property
    def _session(self) -> Any:
        """The session of the running server transaction, or ``None``."""
        server_txn = self._server_txn
        return server_txn.session if server_txn is not None else None

    def _check_thread(self) -> None:
        """Refuse use once closed, and from a thread whose transactions
        this cannot hear."""
        if self._closed:
            raise interfaces.DataManagerStateError(
                '%r is closed: it may be serving somebody else now.  Open '
                'a data manager again (store.open()) for more work' % (self,))
        if self._thread is not None and threading.get_ident() != self._thread:
            raise interfaces.WrongThreadError(
                '%r belongs to the thread that opened it: it follows that '
                'thread\'s transactions (transaction.manager is '
                'thread-local).  Open one data manager per thread, or give '
                'it its own transaction_manager to use it from any thread, '
                'one at a time' % (self,))

    @property
    def transactions(self) -> bool:
        """Whether this data manager runs server transactions.

        Decided on first use from the ``transactions`` mode and the
        deployment (which may raise ``TransactionsNotSupportedError`` or
        PyMongo's ``ConnectionFailure``), then kept.
        """
        if self._transactions is None:
            self._transactions = sessions.choose(self._deployment,
                                                 self._transactions_mode)
        return self._transactions

    def _use(self, ref: Any = None) -> None:
        """Check the thread; validate the held objects of the collection of
        ``ref`` at the first use of that collection in a transaction
        (``CacheValidator.use``)."""
        self._check_thread()
        if ref is not None:
            self._validator.use(ref)

    def _use_document(self, ref: Any) -> None:
        """Check the thread; a query read the document of ``ref`` now
        (``CacheValidator.use_document``)."""
        self._check_thread()
        self._validator.use_document(ref)

    def _join_txn(self) -> None:
        self._use()
        txn = self.transaction_manager.get()
        if self._joined is not txn:
            try:
                use_server_transaction = self.transactions
            except BaseException:
                # Nothing joined, nothing written: forget the change that
                # brought us here, as an abort would.
                self._end_transaction(committed=False)
                raise
            txn.join(self)
            self._joined = txn
            if use_server_transaction and self._server_txn is None:
                self._server_txn = sessions.ServerTransaction(self._client)

    # -- objects --------------------------------------------------------------
    def insert(self, obj: Any, oid: Any = None) -> DBRef:
        """Add the new persistent ``obj``; it is written at commit.

        ``oid`` is the ``_id`` to use (default: a new ``ObjectId``).
        Returns the object's ``DBRef``.
        """
        if not isinstance(obj, persistent.Persistent):
            raise TypeError('Only persistent objects can be stored, not %s'
                            % limits.quote(obj))
        if metadata.is_sub_object(type(obj)):
            raise TypeError(
                '%s is stored inside its parent (_p_mongo_sub_object) and '
                'cannot be inserted on its own' % type(obj).__name__)
        if obj._p_jar is not None:
            raise ValueError('%s is already stored by %r'
                             % (limits.quote(obj), obj._p_jar))
        references.check_oid(oid)
        db_name, coll_name = self._collection_name_of(obj)
        ref = metadata.OID(
            coll_name, ObjectId() if oid is None else oid, db_name)
        if ref in self._cache:
            raise ValueError('Another object is already stored as %s'
                             % limits.quote(ref))
        # First: the cache refuses a class it cannot hold, before the
        # object is attached.
        self._cache[ref] = obj
        obj._p_jar = self
        obj._p_oid = ref
        self._new[ref] = obj
        self._inserted[ref] = obj
        if self._discovered is not None:
            self._discovered.append(obj)
        self._join_txn()
        return ref

    def _forget_new(self, objects: Iterable[Any]) -> None:
        """Take back ``insert`` of objects (their writes are undone apart)."""
        for obj in objects:
            ref = obj._p_oid
            if ref is not None and self._inserted.get(ref) is obj:
                del self._inserted[ref]
                self._new.pop(ref, None)
                self._cache.pop(ref, None)
                self._registered.pop(id(obj), None)
                _detach(obj)

    def dump(self, obj: Any) -> DBRef:
        """Return the ``DBRef`` of ``obj``, inserting it if it is new."""
        jar = obj._p_jar
        if jar is self and obj._p_oid is not None:
            return sharding.reference(obj)
        if jar is not None:
            raise ValueError('%s belongs to another data manager (%r)'
                             % (limits.quote(obj), jar))
        self.insert(obj)
        return sharding.reference(obj)

    def load(self, dbref: DBRef) -> Any:
        """Return the object stored under ``dbref``, usually as a ghost."""
        self._check_thread()
        cache = self._cache
        stored = dbref
        if type(dbref) is not metadata.OID or dbref.database is None:
            # Looked up as an oid (its hash and equality are cheaper than a
            # ``DBRef``'s), without the shard-key fields a stored reference
            # may carry: they are not part of the identity.
            try:
                dbref = metadata.OID.of(dbref, self.default_database)
            except TypeError:
                # An ``_id`` that cannot be hashed: a dict, a list, ...
                references.refuse_id(self, dbref, self.default_database)
        obj = cache.get(dbref)
        if obj is None:
            obj = self._load_new(dbref, stored)
        else:
            if obj._p_status != 'ghost':
                # Loaded: its collection is validated before it is used (a
                # ghost is validated when it activates: setstate).
                self._use(obj._p_oid)
            cache.used(obj._p_oid, obj)
        if obj._p_state == persistent.GHOST:
            # Found while reading a document: loads with its siblings.
            self._batches.found(obj._p_oid)
        return obj

    def prefetch(self, objects_or_refs: Iterable[Any]) -> list[Any]:
        """Read the documents of several objects in one query per collection.

        ``objects_or_refs`` is an iterable of persistent objects of this
        data manager and references (``DBRef``).  The documents of those
        that are ghosts are read now; each object is filled from its
        document when it is first used in this transaction (documents
        read ahead are dropped at its end).  Returns the objects, in the
        order given.  A reference that may not be loaded raises as
        ``load`` does; a document that is missing raises
        ``DocumentNotFoundError`` when its object is used.
        """
        self._use()
        return self._batches.prefetch(objects_or_refs)

    def _load_new(self, dbref: Any, stored: Any) -> Any:
        """The ghost of ``dbref``, which is not in the identity map
        (``stored``: the reference as stored, maybe with a shard key)."""
        self._check_reference(dbref)
        with self._reading(dbref):
            cls = self._or_broken(self._types.class_for, dbref.database,
                                  dbref.collection)
        # The shard-key values the reference carries, checked (errors name
        # the document holding the reference).
        sharding.route(self, dbref, stored, cls)
        if cls is None:
            # Shared collection: the document names the class.
            self._use(dbref)
            doc = self._find_document(dbref)
            cls = self._class_of_document(dbref, doc)
            self._prefetched[dbref] = doc
        return self._new_ghost(cls, dbref)

    def _check_reference(self, dbref: Any) -> None:
        """Refuse a stored reference this data manager may not follow
        (``references.check_reference``): into a database not allowed, to
        a collection that is not one, or with an ``_id`` that is not a
        single value."""
        references.check_reference(self, dbref)

    def _object_from_document(self, db_name: str, coll_name: str,
                              doc: dict[str, Any]) -> Any:
        """Return the object stored as ``doc``, filled from it if needed.

        For query results: the identity map holds (an object already loaded
        in this data manager is returned as it is), and a ghost is filled
        from ``doc`` without another read.
        """
        try:
            dbref = metadata.OID(coll_name, doc['_id'], db_name)
        except (KeyError, TypeError):
            # An ``_id`` that cannot be hashed (an embedded document: valid
            # in MongoDB), or none (a projection left it out).
            raise references.id_error(db_name, coll_name, doc) from None
        self._use_document(dbref)
        obj = self._cache.get(dbref)
        if obj is None:
            cls = self._class_of_document(dbref, doc)
            if cls.__setstate__ is not _SETSTATE:
                # Its __setstate__ may set attributes: fill it as a ghost
                # being activated, which does not count as a change.
                obj = self._new_ghost(cls, dbref)
                self._prefetched[dbref] = doc
                obj._p_activate()
                return obj
            # Filled from ``doc`` at once: no ghost to activate.
            obj = cls.__new__(cls)
            obj._p_jar = self
            obj._p_oid = dbref
            self._cache[dbref] = obj
            try:
                self._activate(obj, doc)
            except BaseException:
                # Not filled: forget it (a new load reads it again).
                del self._cache[dbref]
                raise
            return obj
        self._cache.used(dbref, obj)
        if obj._p_state == persistent.GHOST:
            # Activate through persistent so it stops being a ghost; setstate
            # takes the document from here instead of reading it again.
            self._prefetched[dbref] = doc
            obj._p_activate()
        return obj

    def _new_ghost(self, cls: Any, dbref: Any) -> Any:
        obj = cls.__new__(cls)
        obj._p_jar = self
        obj._p_oid = dbref
        obj._p_deactivate()
        self._cache[dbref] = obj
        return obj

    def _class_of_document(self, dbref: Any, doc: dict[str, Any]) -> Any:
        # The error context of ``_reading``, inline: this runs for every
        # query result, and a ``try`` costs nothing until something raises.
        self._documents_read += 1
        try:
            name = doc.get(serialize.PY_PERSISTENT_TYPE)
            if name is not None:
                return self._or_broken(self.type_registry.resolve, name,
                                       'persistent')
            return self._or_broken(self._types.default_class,
                                   dbref.database, dbref.collection)
        except BaseException as error:
            _raise_located(error, dbref)
        finally:
            self._documents_read -= 1

    def _or_broken(self, find_class: Callable[..., Any], *args: Any) -> Any:
        """``find_class(*args)``, or with ``broken_objects`` the broken
        placeholder class of a name that is unknown or refused."""
        try:
            return find_class(*args)
        except interfaces.UnknownTypeError as error:
            if not self.broken_objects or not isinstance(error.name, str):
                raise
            return broken.persistent_broken_class(error.name)

    def _reading(self, dbref: Any) -> '_Reading':
        """Name the document ``dbref`` in errors about its stored data."""
        return _Reading(self, dbref)

    def _find_document(self, dbref: Any) -> Any:
        coll = self._raw_collection(dbref.database, dbref.collection)
        doc = sharding.find_document(coll, dbref, session=self._session)
        if doc is None:
            raise interfaces.DocumentNotFoundError(
                'No document %s in %s.%s (removed?)' % (
                    limits.quote(dbref.id), limits.excerpt(dbref.database),
                    limits.excerpt(dbref.collection)))
        return doc

    def remove(self, obj: Any) -> None:
        """Remove the document of ``obj`` when the transaction commits."""
        ref = obj._p_oid
        if obj._p_jar is not self or ref is None:
            raise ValueError('%s is not stored by this data manager'
                             % limits.quote(obj))
        if ref in self._new:
            self._forget_new([obj])
            return
        # Load it now: the version removed (its serial, and what an abort
        # puts back) is the one seen when removing.
        obj._p_activate()
        self._removed[ref] = obj
        self._join_txn()

    # -- IPersistentDataManager ---------------------------------------------
    def setstate(self, obj: Any) -> None:
        """Load the state of the ghost ``obj`` from its document."""
        ref = obj._p_oid
        doc = self._prefetched.pop(ref, None)
        if doc is None or ref not in self._validator.fresh:
            self._use(ref)
        if doc is None:
            # Validated in this transaction, or loaded or written in it.
            doc = self._cache.docs.get(ref)
        if doc is None:
            # Read with its siblings (``mongopersist.batching``).
            doc = self._batches.document(ref)
        self._activate(obj, doc)
        self._cache.used(ref, obj)

    def _activate(self, obj: Any, doc: dict[str, Any]) -> None:
        ref = obj._p_oid
        # The error context of ``_reading``, inline (see
        # ``_class_of_document``).
        self._documents_read += 1
        try:
            serial = conflict.stored_serial(doc)
            name = doc.get(serialize.PY_PERSISTENT_TYPE)
            if name is not None and name != metadata.get_dotted_name(
                    type(obj)):
                # The ghost was made before the collection was shared.
                obj.__class__ = self._class_of_document(ref, doc)
            # The references read from one document are loaded together.
            batches = self._batches
            grouping = batches.start()
            try:
                self._reader.set_ghost_state(obj, doc)
            finally:
                if grouping:
                    batches.stop()
        except BaseException as error:
            _raise_located(error, ref)
        finally:
            self._documents_read -= 1
        sharding.remember(ref, type(obj), doc)
        self._cache.docs[ref] = doc
        # Loaded after this data manager's transaction ended (in the same
        # ``transaction``), or before ``begin()``: the boundary must see it.
        self._invalidated = False
        self._activated = True
        obj._p_serial = p64(serial)

    def register(self, obj: Any) -> None:
        """Hear that ``obj`` changed: its document is written at commit.

        persistent calls it for the objects of this data manager.  Called
        by hand with a new object (no data manager yet), it inserts it, as
        the original mongopersist did: the next flush or the commit writes
        it.  An object of another data manager raises ``ValueError``; a
        sub-object class without its owner, or anything but a persistent
        object, ``TypeError``.
        """
        owner = getattr(obj, '_p_mongo_doc_object', None)
        if owner is None and getattr(obj, '_p_jar', None) is not self:
            # By hand: ``insert`` checks it, then it is this one's.
            self.insert(obj)
            return
        target = owner if owner is not None else obj
        loaded = target._p_status != 'ghost'
        self._use(target._p_oid)
        if loaded and target._p_status == 'ghost' and \
                target._p_jar is self and target._p_oid is not None:
            # Validating the cache (just now) found the state it was
            # changing stale: the change must be made again on fresh state.
            raise _stale_change(target)
        if owner is not None and owner is not obj:
            if owner._p_jar is not self:
                # The owner was taken back (or stored elsewhere since): the
                # change is part of its in-memory state, written with it.
                if owner._p_jar is not None:
                    owner._p_jar.register(owner)
                return
            if owner._p_status == 'ghost':
                raise _stale_owner(obj, owner)
            self._changed_sub[id(obj)] = obj
            obj = owner
        if obj._p_oid in self._deleted:
            # Removed (and its removal written): nothing to write.
            return
        self._registered[id(obj)] = obj
        self._join_txn()

    def oldstate(self, obj: Any, tid: bytes) -> Any:
        """``KeyError``, as ``IPersistentDataManager`` says for a revision
        that does not exist: MongoDB keeps no old revisions."""
        raise KeyError(tid)

    # -- writing ----------------------------------------------------------
    def _store_now(self, obj: Any) -> DBRef:
        """Write ``obj`` (and new objects it references) immediately."""
        if not isinstance(obj, persistent.Persistent):
            raise TypeError('Only persistent objects can be stored in the '
                            'root, not %s' % limits.quote(obj))
        if obj._p_jar is None:
            self.insert(obj)
        elif obj._p_jar is not self:
            raise ValueError('%s belongs to another data manager'
                             % limits.quote(obj))
        self._join_txn()
        if obj._p_oid in self._new or id(obj) in self._registered:
            try:
                self._write_now([obj], ())
            except BaseException:
                if obj._p_oid in self._new:
                    self._forget_new([obj])
                raise
        return sharding.reference(obj)

    def flush(self,
              collections: Optional[Iterable[tuple[str, str]]] = None
              ) -> None:
        """Write pending changes of this transaction now.

        ``collections`` limits the flush to objects stored in those
        ``(database, collection)`` pairs (new objects they reference are
        written too).  Without a server transaction, the writes are visible
        to others at once; an abort later takes them back.
        """
        def wanted(obj: Any) -> bool:
            return collections is None or (
                obj._p_oid.database, obj._p_oid.collection) in collections
        objects = [obj for obj in self._new.values() if wanted(obj)] + [
            obj for obj in self._registered.values()
            if obj._p_oid not in self._new and wanted(obj)]
        removed = [obj for obj in self._removed.values() if wanted(obj)]
        if not objects and not removed:
            return
        self._write_now(objects, removed)

    def _write_now(self, objects: Iterable[Any],
                   removed: Iterable[Any]) -> None:
        """Run the commit pipeline for ``objects`` and ``removed`` now.

        Written objects are *saved* again (``_p_changed`` false, their
        changed sub-objects too): a change made after this write makes
        persistent call ``register`` anew, so it is written as well.
        Objects holding values that do not report changes (a plain
        ``dict`` or ``list`` of a new object, a value object) stay
        registered instead: they are serialized again at the next flush
        and at commit, and written if they differ from what was written.
        """
        flush = commit.Flush(self).serialize(objects).remove(removed)
        flush.plan().check().execute()
        for obj in removed:
            # Its document is gone: later changes are not written.
            self._removed.pop(obj._p_oid, None)
            self._registered.pop(id(obj), None)
        saved = set()
        for write in flush.serialized:
            obj = write.obj
            if write.untracked:
                self._registered[id(obj)] = obj
                continue
            self._registered.pop(id(obj), None)
            saved.add(id(obj))
            if obj._p_changed:
                obj._p_changed = False
        for key, sub in list(self._changed_sub.items()):
            if id(sub._p_mongo_doc_object) in saved:
                del self._changed_sub[key]
                sub._p_changed = False

    def _written(self, write: Any) -> None:
        """Record a write that reached MongoDB (called by the pipeline).

        The undo entry keeps the version to put back and the document as
        written: taking the write back is conditional on the stored
        document still being that one (see ``_undo_writes``).
        """
        ref = write.oid
        self._written_oids.append(ref)
        self._replaced_docs.append((ref, self._loaded_docs.get(ref)))
        if write.kind == commit.INSERT:
            self._new.pop(ref, None)
        self._undo.wrote(write)
        if write.kind == commit.DELETE:
            self._loaded_docs.pop(ref, None)
            self._cache.pop(ref, None)
            self._deleted[ref] = write.obj
        else:
            serial = write.doc.get(serialize.PY_SERIAL)
            if serial is not None:
                write.obj._p_serial = p64(serial)
            # The document is now stored exactly as written.
            self._loaded_docs[ref] = write.doc
            sharding.remember(ref, type(write.obj), write.doc)

    def _written_this_transaction(self) -> list[Any]:
        return list(self._written_oids)

    def _remember_root_change(self, collection: Any, name: str,
                              previous: Any, written: Any) -> None:
        """Record a root entry change: ``written`` is the entry now stored
        (``None`` if deleted), ``previous`` the one it replaced."""
        self._undo.root_changed(collection, name, previous, written)
        self._join_txn()

    def _undo_writes(self, since: int = 0) -> Any:
        """Take back this transaction's writes after the ``since``-th.

        Used on abort without a server transaction, and to roll back to a
        savepoint in either mode (inside the server transaction).  See
        ``mongopersist.undo``: a write is taken back only where the stored
        document is still the one written; the others are listed in
        ``unrestored``.  Returns the documents put back, by oid.
        """
        if len(self._undo) > since:
            self._journal.before_undo()
        put_back, self.unrestored = self._undo.take_back(since)
        return put_back

    # -- IDataManager ---------------------------------------------------
    def sortKey(self) -> str:
        return 'mongopersist:%s:%s' % (self.root_database, id(self))

    def abort(self, txn: Any) -> None:
        """Forget this transaction's changes and take back its writes.

        Writes that cannot be taken back safely (the document changed
        since) are left alone and listed in ``unrestored``.
        """
        self.unrestored = []
        if not self._busy():
            # Not in this transaction: called again by a later rollback to
            # a savepoint taken before it joined (``transaction`` keeps
            # asking).  Nothing to forget; what it loaded since stays.
            return
        try:
            if self._server_txn is not None:
                self._server_txn.abort()
            else:
                self._undo_writes()
                if not self.unrestored:
                    # Everything was taken back: nothing left to find.
                    self._journal.finished()
        finally:
            self._end_transaction(committed=False)

    def tpc_begin(self, txn: Any) -> None:
        pass

    def commit(self, txn: Any) -> None:
        """Write every pending change (inside the server transaction)."""
        try:
            self._journal.committing()
            self.flush()
        except Exception as error:
            if self._server_txn is not None and sessions.is_transient(error):
                raise interfaces.TransientTransactionError(
                    'Commit failed and can be retried: %s' % error) from error
            raise

    def tpc_vote(self, txn: Any) -> None:
        """Commit the server transaction; a failure aborts everything."""
        if self._server_txn is not None:
            self._server_txn.commit()

    def tpc_finish(self, txn: Any) -> None:
        """Forget the transaction's bookkeeping; never fails."""
        self._journal.finished()
        logs.committed(self)
        self._end_transaction(committed=True)

    def should_retry(self, error: BaseException) -> bool:
        """Tell ``transaction`` whether ``error`` is worth a retry."""
        if isinstance(error, (interfaces.ConflictError,
                              interfaces.TransientTransactionError)):
            return True
        return sessions.is_transient(error)

    def savepoint(self) -> Savepoint:
        """Return a savepoint to roll this data manager back to."""
        return Savepoint(self)

    def tpc_abort(self, txn: Any) -> None:
        self.abort(txn)

    def _end_transaction(self, committed: bool) -> None:
        self._journal.forget()
        server_txn, self._server_txn = self._server_txn, None
        if server_txn is not None:
            server_txn.end()
        cache = self._cache
        if committed:
            # Still registered: objects holding values that do not report
            # changes (a new object's plain list).  They reload (from the
            # document written, once validated) so that they do.
            unsure: Iterable[Any] = [
                obj._p_oid for obj in self._registered.values()]
            for obj in self._deleted.values():
                # Removed for good: the object may be inserted again.
                _detach(obj)
        else:
            # What this transaction changed or wrote is not what is stored.
            unsure = self._touched()
            self._forget_new(list(self._inserted.values()))
            for ref, obj in self._deleted.items():
                if obj._p_jar is self:
                    # Its document was put back (unless this transaction
                    # inserted it too: then it was taken back, detached).
                    cache[ref] = obj
        for obj in self._changed_sub.values():
            obj._p_changed = False
        for ref in unsure:
            if committed:
                obj = cache.get(ref)
                if obj is not None and obj._p_status != 'ghost':
                    obj._p_invalidate()
            else:
                cache.forget(ref)
        self._reset_transaction_state()
        self._boundary()
        self._invalidated = True

    def _touched(self) -> set[Any]:
        """The oids of every object this transaction changed or wrote."""
        touched = set(self._written_oids)
        touched.update(obj._p_oid for obj in self._registered.values())
        touched.update(sub._p_mongo_doc_object._p_oid
                       for sub in self._changed_sub.values())
        touched.update(self._removed)
        touched.update(self._deleted)
        touched.discard(None)
        return touched

    # -- transaction boundaries: what the cache holds may be stale --------
    def _explicit(self) -> bool:
        return bool(getattr(self.transaction_manager, 'explicit', False))

    def _boundary(self) -> None:
        """A transaction ended: from now on, what the cache holds may be
        stale until validated (``CacheValidator.boundary``)."""
        self._activated = False
        self._prefetched.clear()
        self._batches.clear()
        self._validator.boundary(self._explicit())

    def _validate_at_begin(self) -> None:
        """``begin()`` of an explicit manager (or of the watcher's
        transaction): validate what the cache holds now
        (``CacheValidator.validate_at_begin``)."""
        self._check_thread()
        self._validator.validate_at_begin()

    # -- ISynchronizer: fresh state in every transaction ------------------
    def beforeCompletion(self, txn: Any) -> None:
        pass

    def afterCompletion(self, txn: Any) -> None:
        """A transaction ended: what the cache holds may be stale."""
        if self._joined is None and not self._invalidated:
            self._boundary()
        self._invalidated = False

    def newTransaction(self, txn: Any) -> None:
        """``begin()``: validate held objects now (they may be read before
        this data manager is asked for anything)."""
        if self._joined is None and self._activated:
            # Loaded since the last transaction ended, outside any.
            self._boundary()
        if self._validator.needs_validation and (
                self._watcher is not None or self._explicit()):
            self._validate_at_begin()

    def _busy(self) -> bool:
        """Whether this data manager takes part in a transaction."""
        return self._joined is not None or bool(
            self._new or self._registered or self._removed
            or self._changed_sub)

    def close(self) -> None:
        """End the use of this data manager; closing twice does nothing.

        It stops following its transaction manager and refuses further use
        (``DataManagerStateError``).  Opened by a ``mongopersist.Store``, it
        goes back to the store's pool, with its cache, for the next
        ``store.open()``; otherwise it stops watching for changes (if
        ``watch_changes``).  Closing a data manager that still takes part
        in a transaction (joined, or with changes not yet committed) is
        refused with ``DataManagerStateError``: commit or abort first.
        """
        if self._closed:
            return
        self._check_thread()
        if self._busy():
            raise interfaces.DataManagerStateError(
                '%r takes part in a transaction: commit or abort it before '
                'closing the data manager' % (self,))
        try:
            self.transaction_manager.unregisterSynch(self)
        except KeyError:
            pass
        # While closed it hears of no transaction boundary: whatever it
        # holds is validated when it is opened again.
        self._boundary()
        self._closed = True
        if self._release is not None:
            self._release(self)
        else:
            self._shut_down()

    def _reopen(self, transaction_manager: Any) -> None:
        """Opened again (by a store's pool) for ``transaction_manager``:
        follow it; validate what the cache holds now if a transaction of
        an explicit manager is running already (it began while this data
        manager was closed), else at ``begin()`` or first use."""
        self._closed = False
        # Registering announces a running transaction (newTransaction,
        # which validates for an explicit manager) with transaction >= 2.x;
        # validated here otherwise.
        self._bind(transaction_manager)
        if self._validator.needs_validation and self._explicit():
            try:
                transaction_manager.get()
            except transaction.interfaces.NoTransaction:
                return
            self._validate_at_begin()

    def _shut_down(self) -> None:
        """Stop watching for changes (the data manager is done for)."""
        if self._watcher is not None:
            self._watcher.close()


_SETSTATE = persistent.Persistent.__setstate__


def _stale_change(target: Any) -> interfaces.ConflictError:
    """The ``ConflictError`` (logged) for a change to ``target`` whose
    validation, at this change, found it changed in the database."""
    error = interfaces.ConflictError(
        'The %s changed in the database since it was loaded in an earlier '
        'transaction (oid %s); it was reloaded, retry the transaction' % (
            type(target).__name__, limits.quote(target._p_oid.id)))
    logs.conflict(target._p_oid, error)
    return error


def _stale_owner(obj: Any, owner: Any) -> interfaces.MongoPersistError:
    """The error for a change to the sub-object ``obj`` of an ``owner``
    reloaded since ``obj`` was read."""
    return interfaces.MongoPersistError(
        'This %s belongs to a %s that was reloaded since it was read; get it '
        'again from its owner before changing it' % (
            type(obj).__name__, type(owner).__name__))


def _detach(obj: Any) -> None:
    """Make ``obj`` a new object again, as ZODB does: no jar, no oid.

    Deleting (rather than setting ``None``) is what persistent takes as
    "no data manager": changes are then kept in memory only, and the
    object can be stored again, by any data manager.
    """
    del obj._p_jar
    del obj._p_oid


def _raise_located(error: BaseException, ref: Any) -> NoReturn:
    """Raise ``error``, raised while reading the document of ``ref`` (call
    it from the block handling it): a ``StoredDataError`` naming the
    document, any other malformed-data error as one, anything else as it
    is."""
    if isinstance(error, interfaces.StoredDataError):
        error.locate(ref.database, ref.collection, ref.id)
    elif isinstance(error, serialize.MALFORMED) and not isinstance(
            error, interfaces.MongoPersistError):
        raise interfaces.StoredDataError(
            'Cannot load the stored document (%s: %s)' % (
                type(error).__name__, limits.quote(str(error))),
            database=ref.database, collection=ref.collection,
            id=ref.id) from error
    raise error


class _Reading:
    """Context of reading one document: stored-data errors name it."""

    __slots__ = ('jar', 'ref')

    def __init__(self, jar: MongoDataManager, ref: Any) -> None:
        self.jar = jar
        self.ref = ref

    def __enter__(self) -> '_Reading':
        self.jar._documents_read += 1
        return self

    def __exit__(self, kind: Optional[type[BaseException]],
                 error: Optional[BaseException],
                 tb: Optional[TracebackType]) -> Literal[False]:
        self.jar._documents_read -= 1
        if error is not None:
            _raise_located(error, self.ref)
        return False


speedups.activate()
