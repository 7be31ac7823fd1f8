"""A scripted ``mongos`` for wire-level tests of shard-key targeting.

``ScriptedMongos`` is ``tests.wire_server.WireServer`` (mongomock over the
wire) answering ``hello`` as a mongos does (``msg: 'isdbgrid'``), with
collections sharded by ``shard(database, collection, fields)``.  It records
every command it receives (``sent``) so that tests can assert what the
library sends, and refuses, the way a real mongos does:

* an upsert (``update`` with ``upsert: true``, ``findAndModify``) whose
  filter lacks an equality on every shard-key field: code 61
  ``ShardKeyNotFound`` (MongoDB before 7.1 refuses these in any case);
* a change of a shard-key value outside a transaction (code 20
  ``IllegalOperation``), or in a batch with other updates;
* with ``strict=True`` (the default), also a single-document update or
  delete without the full shard key (code 72 ``InvalidOptions``).  A real
  mongos sends an ``_id``-only one to every shard instead (or, before 4.4,
  refuses it as well): being strict shows that the library never relies
  on that broadcast.

Server transactions are kept simply: the store is copied when a
transaction starts and put back when it aborts, so "nothing of the commit
is written" can be checked.  One request at a time (mockupdb), so that is
exact for one client.
"""
import copy

from tests.wire_server import HELLO, NO_REPLY_NEEDED, WireServer

MONGOS_HELLO = dict(HELLO, msg='isdbgrid')

SHARD_KEY_NOT_FOUND = 61
ILLEGAL_OPERATION = 20
INVALID_OPTIONS = 72


class Refused(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class ScriptedMongos(WireServer):
    """A mongos in front of mongomock; see the module docstring."""

    def __init__(self, strict=True):
        super().__init__()
        self.strict = strict
        self.shard_keys = {}        # 'db.coll' -> list of fields
        self.sent = []              # (name, command document)
        self.refused = []           # (name, code, message)
        self._snapshot = None

    def shard(self, database, collection, fields):
        """Shard ``database.collection`` on ``fields`` (a list)."""
        self.shard_keys['%s.%s' % (database, collection)] = list(fields)

    def docs(self, name, collection=None):
        """The recorded ``name`` commands (of ``collection``)."""
        return [doc for n, doc in self.sent if n == name and (
            collection is None or doc.get(name) == collection)]

    # -- dispatch ---------------------------------------------------------
    def _handle(self, request):
        name = request.command_name
        if name in ('ismaster', 'isMaster', 'hello'):
            return request.ok(MONGOS_HELLO)
        if name in NO_REPLY_NEEDED or name in ('buildinfo', 'buildInfo'):
            return super()._handle(request)
        doc = request.doc
        self.sent.append((name, doc))
        if doc.get('startTransaction'):
            self._snapshot = self._copy_store()
        if name == 'commitTransaction':
            self._snapshot = None
            return request.ok()
        if name == 'abortTransaction':
            self._restore()
            return request.ok()
        try:
            self._check(name, doc)
        except Refused as error:
            self.refused.append((name, error.code, str(error)))
            if 'txnNumber' in doc:
                self._restore()     # a failed write aborts the transaction
            return request.command_err(code=error.code, errmsg=str(error))
        return super()._handle(request)

    # -- what a mongos refuses ------------------------------------------------
    def _key(self, doc, name):
        return self.shard_keys.get('%s.%s' % (doc.get('$db'), doc.get(name)))

    def _check(self, name, doc):
        key = self._key(doc, name)
        if key is None:
            return
        in_transaction = 'txnNumber' in doc and doc.get('autocommit') is False
        if name == 'update':
            updates = doc.get('updates') or ()
            for item in updates:
                if item.get('multi'):
                    continue
                self._check_single(key, item.get('q') or {},
                                   bool(item.get('upsert')), 'update')
                if self._changes_key(key, item.get('q') or {}, item['u']):
                    if not in_transaction:
                        raise Refused(
                            ILLEGAL_OPERATION,
                            'Must run update to shard key field in a '
                            'multi-statement transaction or with '
                            'retryWrites: true.')
                    if len(updates) > 1:
                        raise Refused(
                            INVALID_OPTIONS,
                            'A shard key update that moves a document must '
                            'be the only update of its batch')
        elif name == 'delete':
            for item in doc.get('deletes') or ():
                if item.get('limit') == 1:
                    self._check_single(key, item.get('q') or {}, False,
                                       'delete')
        elif name == 'findAndModify':
            self._check_single(key, doc.get('query') or {},
                               bool(doc.get('upsert')), 'findAndModify')

    def _check_single(self, key, query, upsert, what):
        missing = [field for field in key if not _equality(query, field)]
        if not missing:
            return
        if upsert:
            raise Refused(
                SHARD_KEY_NOT_FOUND,
                'Failed to target upsert by query :: could not extract '
                'exact shard key (missing %s)' % ', '.join(missing))
        if self.strict:
            raise Refused(
                INVALID_OPTIONS,
                'A single %s on a sharded collection must contain the shard '
                'key (missing %s)' % (what, ', '.join(missing)))

    @staticmethod
    def _changes_key(key, query, update):
        new = update.get('$set', {}) if any(
            k.startswith('$') for k in update) else update
        return any(field in new and new[field] != query.get(field)
                   for field in key)

    # -- transactions ---------------------------------------------------------
    def _copy_store(self):
        return {(db, name): copy.deepcopy(list(self.store[db][name].find()))
                for db in self.store.list_database_names()
                for name in self.store[db].list_collection_names()}

    def _restore(self):
        snapshot, self._snapshot = self._snapshot, None
        if snapshot is None:
            return
        for db in self.store.list_database_names():
            for name in self.store[db].list_collection_names():
                coll = self.store[db][name]
                coll.delete_many({})
                docs = snapshot.get((db, name))
                if docs:
                    coll.insert_many(docs)


def _equality(query, field):
    """True if ``query`` pins ``field`` to one value, as mongos extracts an
    exact shard key (also inside ``$and``)."""
    if field in query:
        value = query[field]
        if isinstance(value, dict) and value and all(
                k.startswith('$') for k in value):
            return set(value) == {'$eq'}
        return True
    return any(_equality(clause, field) for clause in query.get('$and', ())
               if isinstance(clause, dict))
