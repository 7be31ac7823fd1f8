"""A scripted MongoDB replica-set member (mockupdb) for wire-level tests.

The stand-in (mongomock) has no sessions or server transactions, so the
transaction protocol is tested against this: it answers the commands the
data manager sends with plausible replies, records them, and lets a test
inject a fault as the reply to the n-th command of a given name.  It
stores nothing by itself: ``find`` answers with the documents a test puts
in ``stored`` (by collection name, then ``_id``), matched on ``_id`` only.
"""
import pymongo
from mockupdb import MockupDB

HANDSHAKE = {'ismaster', 'isMaster', 'hello', 'endSessions', 'ping',
             'buildinfo', 'buildInfo'}


class ScriptedReplicaSet:
    """One primary of replica set ``rs0`` speaking wire version 21."""

    def __init__(self, retry_writes=False):
        self.server = MockupDB(auto_ismaster=True, max_wire_version=21)
        self.port = self.server.run()
        address = 'localhost:%d' % self.port
        self.hello = {
            'ismaster': True, 'isWritablePrimary': True, 'setName': 'rs0',
            'hosts': [address], 'me': address, 'minWireVersion': 0,
            'maxWireVersion': 21, 'logicalSessionTimeoutMinutes': 30}
        self.commands = []
        self.faults = {}
        #: What ``find`` answers: {collection: {_id: document}}.
        self.stored = {}
        #: Server transactions (session, number) the server aborted: any
        #: later command in one fails with NoSuchTransaction, as MongoDB's.
        self.aborted = set()
        self.server.autoresponds(self._handle)
        self.client = pymongo.MongoClient(
            self.server.uri, replicaSet='rs0', serverSelectionTimeoutMS=3000,
            connectTimeoutMS=3000, socketTimeoutMS=5000,
            retryWrites=retry_writes)

    def close(self):
        self.client.close()
        self.server.stop()

    def fail(self, command, occurrence, reply):
        """Answer the ``occurrence``-th (1-based) ``command`` with ``reply``.

        ``reply`` is a function taking the mockupdb request, e.g.
        ``lambda r: r.hangup()`` or
        ``lambda r: r.replies(ok=0, code=2, errmsg='bad value')``.
        """
        self.faults[(command, occurrence)] = reply

    def names(self, in_transaction=False):
        """The recorded command names (optionally only transactional ones)."""
        return [name for name, doc in self.commands
                if not in_transaction or 'txnNumber' in doc]

    def docs(self, name):
        return [doc for n, doc in self.commands if n == name]

    def _handle(self, request):
        name = request.command_name
        if name in HANDSHAKE:
            if name in ('ismaster', 'isMaster', 'hello'):
                return request.ok(**self.hello)
            return request.ok()
        self.commands.append((name, request.doc))
        if _transaction(request.doc) in self.aborted and \
                name != 'abortTransaction':
            return request.replies(
                ok=0, code=251, codeName='NoSuchTransaction',
                errmsg='Given transaction number %s does not match any '
                'in-progress transactions.' % request.doc['txnNumber'],
                errorLabels=['TransientTransactionError'])
        occurrence = sum(1 for n, _ in self.commands if n == name)
        fault = self.faults.get((name, occurrence))
        if fault is not None:
            return fault(request)
        return getattr(self, '_reply_' + name, self._reply_ok)(request)

    def apply(self, doc):
        """Store what the write command ``doc`` (as recorded) writes, as
        a server would: inserts, and updates (``$set``, ``$unset``)
        matched on every field of their filter.  A test calls it where
        the script says the server applied a write."""
        name = doc.get('insert') or doc.get('update')
        docs = self.stored.setdefault(name, {})
        for new in doc.get('documents') or ():
            docs[new['_id']] = dict(new)
        for update in doc.get('updates') or ():
            query, change = update['q'], update['u']
            for key, old in docs.items():
                if all(old.get(field) == value
                       for field, value in query.items()):
                    old.update(change.get('$set') or {})
                    for field in change.get('$unset') or {}:
                        old.pop(field, None)
                    break

    def apply_transaction_of(self, request):
        """Store the writes of the server transaction of ``request``."""
        this = _transaction(request.doc)
        for name, doc in self.commands:
            if name in ('insert', 'update') and _transaction(doc) == this:
                self.apply(doc)

    def abort_transaction_of(self, request):
        """The server aborted the transaction of ``request``."""
        self.aborted.add(_transaction(request.doc))

    def _reply_ok(self, request):
        return request.ok()

    def _reply_find(self, request):
        name = request.doc['find']
        ns = '%s.%s' % (request.doc['$db'], name)
        wanted = (request.doc.get('filter') or {}).get('_id')
        if isinstance(wanted, dict) and '$in' in wanted:
            wanted = list(wanted['$in'])
        elif 'filter' in request.doc and '_id' in request.doc['filter']:
            wanted = [wanted]
        docs = self.stored.get(name, {})
        found = [doc for key, doc in docs.items()
                 if wanted is None or key in wanted]
        return request.ok(cursor={'id': 0, 'ns': ns, 'firstBatch': found})

    def _reply_findAndModify(self, request):
        update = request.doc.get('update') or {}
        types = update.get('$addToSet', {}).get('types')
        value = {'_id': request.doc['query'].get('_id'), 'types': [types]}
        return request.ok(value=value, lastErrorObject={
            'n': 1, 'updatedExisting': False})

    def _reply_insert(self, request):
        return request.ok(n=len(request.doc.get('documents') or ()))

    def _reply_update(self, request):
        n = len(request.doc.get('updates') or ())
        return request.ok(n=n, nModified=n)

    def _reply_delete(self, request):
        return request.ok(n=len(request.doc.get('deletes') or ()))


def _transaction(doc):
    """The server transaction a command runs in: (session, number)."""
    if 'txnNumber' not in doc:
        return None
    return repr(doc.get('lsid')), doc['txnNumber']
