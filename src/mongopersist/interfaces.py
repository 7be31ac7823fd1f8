"""Interfaces and exceptions of mongopersist."""
import transaction.interfaces
import zope.interface
from pymongo.errors import ServerSelectionTimeoutError
from persistent.interfaces import IPersistentDataManager
from transaction.interfaces import IDataManager, ISavepointDataManager


class MongoPersistError(Exception):
    """Base class of all errors raised by mongopersist."""


class CircularReferenceError(MongoPersistError):
    """A non-persistent object contains itself.

    Non-persistent objects are stored inside the document of the persistent
    object that holds them, so they cannot be part of a reference cycle.
    ``args[0]`` is the object at fault.
    """

    def __init__(self, obj, path=None):
        super().__init__(obj)
        self.obj = obj
        self.path = path

    def __str__(self):
        text = repr(self.obj)
        if self.path:
            text += ' (reached again at %s)' % self.path
        return text


class UnstorableObjectError(MongoPersistError, TypeError):
    """An object cannot be turned into a MongoDB value.

    The message names the class of the object and the attribute path at
    which it was found, for example ``Person.phone.area``.  Also raised
    for a persistent class whose objects the object cache cannot hold
    (they cannot be weakly referenced: ZODB's ``BTrees``, a class with
    ``__slots__``), as soon as one meets a data manager, stored or loaded.
    """

    def __init__(self, message, obj=None, path=None):
        super().__init__(message)
        self.obj = obj
        self.path = path


class DocumentLimitError(UnstorableObjectError):
    """A document would break one of MongoDB's limits (16 MB of BSON, 100
    levels of nesting).  Checked before anything is written, on every
    backend; the message names the object and the attribute path, never
    the document's content."""


class DocumentNotFoundError(MongoPersistError, KeyError):
    """A referenced document does not exist (any more)."""

    def __str__(self):
        return str(self.args[0])


class StoredDataError(MongoPersistError):
    """Stored data that cannot be loaded: malformed, or refused.

    ``database``, ``collection`` and ``id`` name the document (``None``
    until the data manager knows which document was being read); ``path``
    is the field path inside it, when known.  The message names them and
    never holds the document itself.
    """

    #: Internal: the stored value (dict, array, reference) whose reading
    #: raised the error, as far as ``path`` locates it; the reader finds
    #: it by identity in the value holding it (``serialize._locate``).
    stored_value = None

    def __init__(self, message, database=None, collection=None, id=None,
                 path=None):
        super().__init__(message)
        self.message = message
        self.database = database
        self.collection = collection
        self.id = id
        self.path = path

    def locate(self, database, collection, id):
        """Name the document the error was found in (if not named yet)."""
        if self.database is None and self.collection is None:
            self.database, self.collection, self.id = database, collection, id
        return self

    def at(self, *names):
        """Prefix ``names`` to the field path (from the inside out)."""
        parts = [str(name) for name in names]
        if self.path:
            parts.append(self.path)
        self.path = '.'.join(parts) or None
        return self

    def __str__(self):
        # Stored names and ids, bounded (``limits.quote``).
        from mongopersist.limits import excerpt, quote
        where = []
        if self.database is not None or self.collection is not None:
            where.append('document %s.%s _id=%s' % (
                excerpt(self.database), excerpt(self.collection),
                quote(self.id)))
        if self.path:
            where.append('field %s' % excerpt(self.path))
        if not where:
            return self.message
        return '%s (%s)' % (self.message, ', '.join(where))


class UnknownTypeError(StoredDataError, LookupError):
    """A stored name is unknown, or names something loading may not use.

    ``name`` is the stored name.  Loading resolves names only to what the
    application allowed (see ``docs/security.rst``); anything else raises
    this error, and nothing named by the document is imported or called.
    """

    def __init__(self, message, name=None, **location):
        super().__init__(message, **location)
        self.name = name


class RefusedReferenceError(StoredDataError):
    """A stored reference points into a database this data manager may
    not read (see ``allowed_databases``)."""


class InvalidKeyError(MongoPersistError, KeyError, TypeError):
    """A key given to ``dm.root`` or a ``MongoCollectionMapping`` is not
    of the mapping's key type (``str``, unless the mapping declares
    another in ``__mongo_key_type__``).

    Keys are values that the stored key is compared with, never queries:
    a dict such as ``{'$ne': 'guest'}``, a regular expression or a list
    is refused before any query is sent.  The error is a ``TypeError``
    (the caller passed the wrong kind of key) and a ``KeyError``, so that
    ``get()``, ``pop(key, default)`` and code that handles missing keys
    take it as "not there"; ``key in mapping`` is ``False``.
    """

    def __str__(self):
        return str(self.args[0]) if self.args else ''


class WrongThreadError(MongoPersistError):
    """A data manager bound to one thread's transactions was used from
    another thread (where it would not hear that thread's transaction
    boundaries and would serve stale state)."""


class DataManagerStateError(MongoPersistError):
    """A data manager was used after it was closed (it may be another
    user's now: a store's pool hands closed data managers out again), or
    closed while it still takes part in a transaction (commit or abort
    first)."""


class ConflictError(MongoPersistError, transaction.interfaces.TransientError):
    """Somebody else changed a document after this transaction loaded it.

    The transaction can be retried.  ``orig_state``, ``cur_state`` and
    ``new_state`` hold the document as loaded, as currently stored and as this
    transaction wanted to write it (``cur_state`` is ``None`` when the
    document was removed).
    """

    def __init__(self, message=None, object=None, orig_state=None,
                 cur_state=None, new_state=None, oid=None,
                 start_serial=None, current_serial=None):
        self.message = message or 'database conflict error'
        self.object = object
        self.orig_state = orig_state
        self.cur_state = cur_state
        self.new_state = new_state
        self.oid = oid
        self.start_serial = start_serial
        self.current_serial = current_serial
        super().__init__(str(self))

    def __str__(self):
        from mongopersist.limits import excerpt
        extras = ['oid %s' % excerpt('%s' % (self.oid,))]
        if self.object is not None:
            extras.append('class %s' % self.object.__class__.__name__)
        extras.append('start serial %s' % (self.start_serial,))
        extras.append('current serial %s' % (self.current_serial,))
        return '%s (%s)' % (self.message, ', '.join(extras))


class TransientTransactionError(MongoPersistError,
                                transaction.interfaces.TransientError):
    """The server transaction failed in a way that a retry can fix.

    Raised for PyMongo errors labelled ``TransientTransactionError``;
    ``transaction.manager.attempts()`` and ``run()`` retry it.
    """


class TransactionsNotSupportedError(MongoPersistError):
    """Server transactions were required but the deployment has none."""


class ConfigurationError(MongoPersistError, ValueError):
    """A setting of a store or data manager is unknown, malformed or
    refused (see ``mongopersist.settings``).

    ``setting`` names the setting at fault (with its prefix when it came
    from a settings mapping).
    """

    def __init__(self, message, setting=None):
        super().__init__(message)
        self.setting = setting


class ServerUnreachableError(MongoPersistError, ServerSelectionTimeoutError):
    """No MongoDB server could be reached within the client's wait.

    PyMongo's ``ServerSelectionTimeoutError`` (which it still is), said in
    one line: the hosts and what each answered, the wait, and the setting
    that controls it (the client option ``serverSelectionTimeoutMS``); no
    password.  ``cause`` is PyMongo's error.  Raised where an application
    meets the error: ``Store.transaction()``, ``Store.ensure_indexes()``,
    the web layers (``mongopersist.pyramid``, ``mongopersist.wsgi``) and
    the command line (see ``mongopersist.reachability``).
    """

    def __init__(self, message, cause=None):
        super().__init__(message)
        self.cause = cause


class CommitError(MongoPersistError):
    """Writing a commit failed part-way without a server transaction.

    ``written`` and ``not_written`` list the oids (``DBRef`` objects) of the
    documents that were and were not written before the failure.
    """

    def __init__(self, message, written=(), not_written=(), cause=None):
        self.written = list(written)
        self.not_written = list(not_written)
        self.cause = cause
        super().__init__(
            '%s; written: %s; not written: %s' % (
                message, _refs(self.written), _refs(self.not_written)))


#: How many references a ``CommitError`` message lists, at most.
REFS_SHOWN = 10


class CommitOutcomeUnknownError(CommitError):
    """Whether a commit took effect cannot be told.

    Its acknowledgement was lost (the server or the network failed after
    the writes or the ``commitTransaction`` were sent) and reading the
    documents back did not tell whether they hold what the commit wrote
    (somebody changed them since, or they could not be read).  The
    unit of work may have been applied: it is not retried (neither
    ``Store.transaction()`` nor ``transaction``'s ``attempts`` retry it),
    since running it again could apply it twice.  Check the data
    (``unsure`` lists the documents in question) before running it again.
    """

    def __init__(self, message, written=(), not_written=(), cause=None,
                 unsure=()):
        self.unsure = list(unsure)
        if self.unsure:
            message += '; may or may not have been written: %s' % (
                _refs(self.unsure),)
        super().__init__(message, written=written, not_written=not_written,
                         cause=cause)


def _refs(refs):
    from mongopersist.limits import excerpt, quote
    if not refs:
        return 'none'
    text = ', '.join('%s/%s' % (excerpt(r.collection, 100),
                                quote(r.id, 100))
                     for r in refs[:REFS_SHOWN])
    if len(refs) > REFS_SHOWN:
        text += ' ...(%d more)' % (len(refs) - REFS_SHOWN)
    return text


class GlobalQueryError(MongoPersistError):
    """A query of a sharded class does not pin its shard key.

    MongoDB would send it to every shard (scatter-gather).  ``missing``
    lists the shard-key fields the filter leaves open; pass
    ``allow_global=True`` to send it anyway (see ``docs/scaling.rst``).
    """

    def __init__(self, message, cls=None, missing=()):
        super().__init__(message)
        self.cls = cls
        self.missing = tuple(missing)


class GlobalQueryWarning(UserWarning):
    """Issued instead of ``GlobalQueryError`` when the guard is set to
    warn (``mongopersist.sharding.global_queries``)."""


class ShardKeyError(MongoPersistError):
    """A write cannot be targeted by its shard key: a shard-key value was
    changed outside a server transaction, or a new document lacks one.
    Raised before anything of the flush is written."""

    def __init__(self, message, obj=None, fields=()):
        super().__init__(message)
        self.obj = obj
        self.fields = tuple(fields)


class UniqueIndexError(CommitError):
    """A commit would store a duplicate value in a unique index.

    ``index`` is the index name, ``database`` and ``collection`` where it
    is, ``key`` the duplicate values (by field), ``oid`` the reference of
    the document whose write was refused.  With a server transaction
    nothing of the commit was written; without one, ``written`` lists
    what was (an abort takes it back).
    """

    def __init__(self, message, index=None, database=None, collection=None,
                 key=None, oid=None, **kwargs):
        self.index = index
        self.database = database
        self.collection = collection
        self.key = key
        self.oid = oid
        super().__init__(message, **kwargs)


class IndexConflictError(MongoPersistError):
    """A declared index differs from the index of that name (or of those
    keys) in MongoDB.  ``ensure_indexes`` never drops an index: drop or
    rename it yourself, then ensure again."""


class IObjectSerializer(zope.interface.Interface):
    """Turns objects of some types into MongoDB values and back."""

    def can_read(state):
        """Return true if this serializer can turn ``state`` into an object."""

    def read(state):
        """Turn the stored ``state`` into an object."""

    def can_write(obj):
        """Return true if this serializer can turn ``obj`` into a value."""

    def write(obj):
        """Turn ``obj`` into a BSON-compatible value."""


class IObjectWriter(zope.interface.Interface):
    """Turns persistent objects into MongoDB documents."""

    def get_state(obj, pobj=None):
        """Return the BSON-compatible value that represents ``obj``."""

    def get_document(obj):
        """Return the full document that stores the persistent ``obj``."""


class IObjectReader(zope.interface.Interface):
    """Turns MongoDB documents into objects."""

    def get_object(state, obj):
        """Return the Python value for the stored ``state``.

        ``obj`` is the top-level persistent object the state belongs to.
        """

    def set_ghost_state(obj, doc):
        """Fill the ghost ``obj`` from its stored document ``doc``."""


class IMongoDataManager(IPersistentDataManager, ISavepointDataManager):
    """A data manager that stores persistent objects in MongoDB."""

    root = zope.interface.Attribute(
        'A mapping of names to persistent objects, written at once.')

    def get_collection(db_name, coll_name):
        """Return the collection ``coll_name`` of database ``db_name``."""

    def get_collection_of_object(obj):
        """Return the collection that stores ``obj``."""

    def dump(obj):
        """Store ``obj`` when the transaction commits; return its DBRef."""

    def load(dbref):
        """Return the object stored under ``dbref`` (possibly a ghost)."""

    def insert(obj, oid=None):
        """Add the new persistent ``obj``; return its DBRef."""

    def remove(obj):
        """Remove the document of ``obj`` when the transaction commits."""

    def flush(collections=None):
        """Write pending changes of this transaction now."""

    def find_objects(cls, filter=None, sort=None, limit=0, skip=0,
                     allow_global=False):
        """Iterate the instances of ``cls`` whose documents match."""

    def find_one_object(cls, filter=None, allow_global=False):
        """Return an instance of ``cls`` whose document matches, or None."""

    def count(cls, filter=None, allow_global=False):
        """Return how many instances of ``cls`` have a matching document."""

    def ensure_indexes(*classes):
        """Create the indexes ``classes`` declare; return those created."""

    def next_sequence(name, step=1):
        """Return the next value of the counter ``name``."""

    cache_size = zope.interface.Attribute(
        'How many recently used objects stay loaded across transactions.')

    def close():
        """End the use of the data manager: back to its store's pool
        (``Store.open``), else stop watching for changes
        (``watch_changes``).  Refused in a transaction; a closed data
        manager refuses use (``DataManagerStateError``)."""


class IMongoDataManagerProvider(zope.interface.Interface):
    """Gives the data manager of a container stored elsewhere.

    A ``MongoContainer`` stored in another database (ZODB, or any data
    manager that is not a ``MongoDataManager``) keeps its items in
    MongoDB: it asks the provider for the data manager to use (see
    ``mongopersist.container.set_data_manager_provider``; with
    ``zope.component``, a utility providing this interface is found too).
    """

    def get():
        """Return the ``MongoDataManager`` of the current transaction."""


class IMongoSpecProcessor(zope.interface.Interface):
    """Rewrites the filters of the queries containers and mappings send
    (``mongopersist.specs``)."""

    def process(collection, spec):
        """Return the filter to send instead of ``spec``, the filter of a
        query of ``collection`` (a PyMongo collection)."""


class IMongoContainer(zope.interface.Interface):
    """A container whose items are MongoDB documents
    (``mongopersist.container``)."""

    def __getitem__(name):
        """Return the item named ``name``; ``KeyError`` if there is none."""

    def __setitem__(name, item):
        """Put ``item`` into the container under ``name``."""

    def __delitem__(name):
        """Take the item named ``name`` out of the container."""

    def add(item, name=None):
        """Put ``item`` into the container, choosing a name when none is
        given; return the name."""

    def keys():
        """Return the list of names."""


__all__ = [
    'CircularReferenceError', 'CommitError', 'CommitOutcomeUnknownError',
    'ConfigurationError',
    'ConflictError', 'DataManagerStateError', 'DocumentLimitError',
    'DocumentNotFoundError', 'GlobalQueryError', 'GlobalQueryWarning',
    'IDataManager', 'IndexConflictError', 'InvalidKeyError',
    'IMongoContainer', 'IMongoDataManager', 'IMongoDataManagerProvider',
    'IMongoSpecProcessor', 'IObjectReader', 'IObjectSerializer',
    'IObjectWriter', 'MongoPersistError', 'RefusedReferenceError',
    'ServerUnreachableError', 'ShardKeyError', 'StoredDataError',
    'TransactionsNotSupportedError',
    'TransientTransactionError', 'UniqueIndexError', 'UnknownTypeError',
    'UnstorableObjectError',
    'WrongThreadError',
]
