"""Server transactions: one client session per ``transaction`` transaction.

On a replica set or sharded cluster, every write of a data manager's
transaction goes through one ``ClientSession`` and one server transaction,
so a commit is all-or-nothing.  ``ServerTransaction`` owns that session:
started when the data manager joins a transaction, committed in
``tpc_vote``, aborted on ``abort``/``tpc_abort``, ended when the
transaction is over.

Whether the deployment has server transactions is a ``Deployment`` fact,
learnt from the server on first need and kept: making a data manager does
no network I/O.
"""
import threading

from pymongo import ReadPreference
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from mongopersist import interfaces, outcome

MODES = ('auto', 'always', 'never')

TRANSIENT_LABEL = 'TransientTransactionError'
UNKNOWN_COMMIT_LABEL = 'UnknownTransactionCommitResult'

# Retries of commitTransaction after UnknownTransactionCommitResult, as
# the MongoDB drivers' transactions specification recommends.
COMMIT_RETRIES = 3

# The server's code for a command it does not know (``hello`` is MongoDB
# 4.4.2+, backported to 4.2.10, 4.0.21 and 3.6.21).
COMMAND_NOT_FOUND = 59


def deployment_supports_transactions(client):
    """Return true if the deployment behind ``client`` runs transactions.

    Judged from the ``hello`` reply: a replica set member (``setName``) or
    a mongos (``msg: 'isdbgrid'``) with a wire version that has them.  A
    client without commands (the in-process stand-in) has none.  A server
    that cannot be reached raises PyMongo's ``ConnectionFailure`` (after
    the client's ``serverSelectionTimeoutMS``): nobody can tell whether
    the deployment has transactions, so running on without them would be
    a guess.
    """
    try:
        hello = _hello(client)
    except (NotImplementedError, AttributeError):
        return False
    wire = hello.get('maxWireVersion', 0)
    if hello.get('msg') == 'isdbgrid':
        return wire >= 8
    return 'setName' in hello and wire >= 7


def deployment_has_change_streams(client):
    """Return true if the deployment behind ``client`` opens change
    streams: a replica set member (``setName``) or a mongos; a standalone
    server has none.  Asks ``hello``; raises PyMongo's errors."""
    hello = _hello(client)
    return 'setName' in hello or hello.get('msg') == 'isdbgrid'


def _hello(client):
    try:
        return client.admin.command('hello')
    except OperationFailure as error:
        if error.code != COMMAND_NOT_FOUND:
            raise
        return client.admin.command('isMaster')


class Deployment:
    """Facts about the deployment behind one client, learnt once.

    Shared by the data managers of one ``mongopersist.Store``; a data
    manager made on its own has its own.  Nothing is asked of the server
    before a fact is first needed, and a fact is asked for once (also
    when several threads need it at the same time).  A failure to ask is
    raised to the caller and asked again next time.
    """

    def __init__(self, client):
        self.client = client
        self._has_transactions = None
        self._lock = threading.Lock()

    @property
    def has_transactions(self):
        """Whether the deployment runs server transactions."""
        if self._has_transactions is None:
            with self._lock:
                if self._has_transactions is None:
                    self._has_transactions = (
                        deployment_supports_transactions(self.client))
        return self._has_transactions


def check_mode(mode):
    """Refuse a ``transactions`` mode that is not one of ``MODES``."""
    if mode not in MODES:
        raise ValueError('transactions must be one of %s, not %r'
                         % (', '.join(MODES), mode))
    return mode


def choose(deployment, mode):
    """Return whether to use server transactions for ``mode``.

    ``deployment`` is a ``Deployment`` (or a client, asked afresh).
    """
    check_mode(mode)
    if mode == 'never':
        return False
    if not isinstance(deployment, Deployment):
        deployment = Deployment(deployment)
    supported = deployment.has_transactions
    if mode == 'always' and not supported:
        raise interfaces.TransactionsNotSupportedError(
            "transactions='always' needs a replica set or sharded cluster; "
            "this deployment has no server transactions")
    return supported


def is_transient(error: BaseException) -> bool:
    """Return true if ``error`` means: retry the whole transaction.

    A ``CommitError`` is judged by the PyMongo error that caused it; a
    ``CommitOutcomeUnknownError`` never is (the commit may have taken
    effect: running it again could apply it twice).
    """
    if isinstance(error, interfaces.CommitOutcomeUnknownError):
        return False
    error = getattr(error, 'cause', None) or error
    return (isinstance(error, PyMongoError)
            and error.has_error_label(TRANSIENT_LABEL))


class ServerTransaction:
    """A client session running one server transaction.

    Everything inside it reads from the primary, whatever the client's
    read preference (a server transaction cannot read from secondaries);
    its commit uses the client's write concern.  It keeps the writes made
    in it (``wrote``): when its commit fails, they are read back to tell
    whether it took effect all the same (``commit``).
    """

    def __init__(self, client):
        self.client = client
        #: The ``commit.DocumentWrite``s sent in this transaction.
        self.written = []
        self.session = client.start_session()
        self.session.start_transaction(
            read_preference=ReadPreference.PRIMARY,
            write_concern=client.write_concern)

    @property
    def active(self):
        return self.session is not None and self.session.in_transaction

    def wrote(self, write):
        """Hear that ``write`` (a ``commit.DocumentWrite``) was sent."""
        self.written.append(write)

    def commit(self):
        """Commit, retrying an unknown commit result; raise on failure.

        A failed commit may have taken effect: its reply lost with the
        connection, the retry (PyMongo's or ours) then finding no
        transaction on a server that forgot it.  Before reporting a
        failure the documents written are read back
        (``outcome.transaction_outcome``): it returns if they hold what
        this transaction wrote, raises the failure if they still hold
        what it replaced (``TransientTransactionError`` when retryable),
        and ``CommitOutcomeUnknownError`` (not retried) if that cannot be
        told.
        """
        attempt = 0
        while True:
            try:
                self.session.commit_transaction()
                return
            except (ConnectionFailure, OperationFailure) as error:
                attempt += 1
                if (error.has_error_label(UNKNOWN_COMMIT_LABEL)
                        and attempt <= COMMIT_RETRIES):
                    continue
                failure = error
                break
        found = outcome.transaction_outcome(self.client, self.written)
        if found == outcome.APPLIED:
            return
        if found is None:
            raise interfaces.CommitOutcomeUnknownError(
                'The commit of the server transaction failed (%s: %s) and '
                'reading back the %d writes it made could not tell whether '
                'it took effect' % (type(failure).__name__, failure,
                                    len(self.written)),
                unsure=_unique(w.oid for w in self.written),
                cause=failure) from failure
        if is_transient(failure):
            raise interfaces.TransientTransactionError(
                'The server transaction failed and can be retried: '
                '%s' % failure) from failure
        raise failure

    def abort(self):
        """Abort the server transaction if it is still running."""
        if self.active:
            try:
                self.session.abort_transaction()
            except PyMongoError:
                # The server aborts it by itself; nothing is committed.
                pass

    def end(self):
        """Abort if needed and end the session."""
        self.written = []
        if self.session is not None:
            self.abort()
            self.session.end_session()
            self.session = None


def _unique(refs):
    seen = []
    for ref in refs:
        if ref not in seen:
            seen.append(ref)
    return seen
