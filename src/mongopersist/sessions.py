"""Server transactions: one client session per ``transaction`` transaction.

On a replica set or sharded cluster, every write of a data manager's
transaction goes through one ``ClientSession`` and one server transaction,
so a commit is all-or-nothing.  ``ServerTransaction`` owns that session:
started when the data manager joins a transaction, committed in
``tpc_vote``, aborted on ``abort``/``tpc_abort``, ended when the
transaction is over.
"""
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from mongopersist import interfaces

MODES = ('auto', 'always', 'never')

TRANSIENT_LABEL = 'TransientTransactionError'
UNKNOWN_COMMIT_LABEL = 'UnknownTransactionCommitResult'

# Retries of commitTransaction after UnknownTransactionCommitResult, as
# the MongoDB drivers' transactions specification recommends.
COMMIT_RETRIES = 3


def deployment_supports_transactions(client):
    """Return true if the deployment behind ``client`` runs transactions.

    Judged from the ``hello`` reply: a replica set member (``setName``) or
    a mongos (``msg: 'isdbgrid'``) with a wire version that has them.
    """
    try:
        hello = client.admin.command('hello')
    except (PyMongoError, NotImplementedError, AttributeError):
        return False
    wire = hello.get('maxWireVersion', 0)
    if hello.get('msg') == 'isdbgrid':
        return wire >= 8
    return 'setName' in hello and wire >= 7


def choose(client, mode):
    """Return whether to use server transactions for ``mode``."""
    if mode not in MODES:
        raise ValueError('transactions must be one of %s, not %r'
                         % (', '.join(MODES), mode))
    if mode == 'never':
        return False
    supported = deployment_supports_transactions(client)
    if mode == 'always' and not supported:
        raise interfaces.TransactionsNotSupportedError(
            "transactions='always' needs a replica set or sharded cluster; "
            "this deployment has no server transactions")
    return supported


def is_transient(error):
    """Return true if ``error`` means: retry the whole transaction.

    A ``CommitError`` is judged by the PyMongo error that caused it.
    """
    error = getattr(error, 'cause', None) or error
    return (isinstance(error, PyMongoError)
            and error.has_error_label(TRANSIENT_LABEL))


class ServerTransaction:
    """A client session running one server transaction."""

    def __init__(self, client):
        self.session = client.start_session()
        self.session.start_transaction()

    @property
    def active(self):
        return self.session is not None and self.session.in_transaction

    def commit(self):
        """Commit, retrying an unknown commit result; raise on failure."""
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
                if is_transient(error):
                    raise interfaces.TransientTransactionError(
                        'The server transaction failed and can be retried: '
                        '%s' % error) from error
                raise

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
        if self.session is not None:
            self.abort()
            self.session.end_session()
            self.session = None
