"""A scripted MongoDB replica-set member (mockupdb) for wire-level tests.

The stand-in (mongomock) has no sessions or server transactions, so the
transaction protocol is tested against this: it answers the commands the
data manager sends with plausible replies, records them, and lets a test
inject a fault as the reply to the n-th command of a given name.
"""
import pymongo
from mockupdb import MockupDB

HANDSHAKE = {'ismaster', 'isMaster', 'hello', 'endSessions', 'ping',
             'buildinfo', 'buildInfo'}


class ScriptedReplicaSet:
    """One primary of replica set ``rs0`` speaking wire version 21."""

    def __init__(self):
        self.server = MockupDB(auto_ismaster=True, max_wire_version=21)
        self.port = self.server.run()
        address = 'localhost:%d' % self.port
        self.hello = {
            'ismaster': True, 'isWritablePrimary': True, 'setName': 'rs0',
            'hosts': [address], 'me': address, 'minWireVersion': 0,
            'maxWireVersion': 21, 'logicalSessionTimeoutMinutes': 30}
        self.commands = []
        self.faults = {}
        self.server.autoresponds(self._handle)
        self.client = pymongo.MongoClient(
            self.server.uri, replicaSet='rs0', serverSelectionTimeoutMS=3000,
            connectTimeoutMS=3000, socketTimeoutMS=5000, retryWrites=False)

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
        occurrence = sum(1 for n, _ in self.commands if n == name)
        fault = self.faults.get((name, occurrence))
        if fault is not None:
            return fault(request)
        return getattr(self, '_reply_' + name, self._reply_ok)(request)

    def _reply_ok(self, request):
        return request.ok()

    def _reply_find(self, request):
        ns = '%s.%s' % (request.doc['$db'], request.doc['find'])
        return request.ok(cursor={'id': 0, 'ns': ns, 'firstBatch': []})

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
