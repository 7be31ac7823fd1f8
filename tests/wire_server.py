"""A small MongoDB wire-protocol server for tests, backed by mongomock.

The stand-in (mongomock) lives inside one process; a test that needs a
*second process* (tests/test_crash.py kills one) runs this in the test
process instead: a standalone server (no ``setName``, so no server
transactions) on 127.0.0.1 that answers the commands PyMongo 4 sends for
what a data manager does, by running them on a mongomock client.  Replies
have the server's shapes (``n``, ``nModified``, ``upserted``,
``writeErrors`` with code 11000, ``cursor`` with ``firstBatch`` and
``nextBatch``).  mockupdb handles one request at a time, so every command
is applied whole before the next one starts, as a server applies a
single-document write.
"""
import itertools

import mongomock
from mockupdb import MockupDB
from pymongo import ReturnDocument

from mongopersist import testing

HELLO = {
    'ismaster': True, 'isWritablePrimary': True, 'helloOk': True,
    'minWireVersion': 0, 'maxWireVersion': 21,
    'maxBsonObjectSize': 16 * 1024 * 1024, 'maxMessageSizeBytes': 48000000,
    'maxWriteBatchSize': 100000, 'logicalSessionTimeoutMinutes': 30,
    'connectionId': 1, 'readOnly': False}
NO_REPLY_NEEDED = {'ping', 'endSessions', 'killAllSessions', 'saslStart'}
DEFAULT_BATCH = 101


class WireServer:
    """Serve mongomock over the wire; ``uri`` is what a child connects to.

    ``store`` is the mongomock client holding the data: the test reads
    what the child wrote through it.  ``commands`` records the names of
    the commands received (handshakes left out).
    """

    def __init__(self):
        testing.patch_mongomock()
        self.store = mongomock.MongoClient()
        self.commands = []
        self._cursors = {}
        self._cursor_ids = itertools.count(1000)
        self.server = MockupDB(auto_ismaster=False)
        self.server.autoresponds(self._handle)
        self.port = self.server.run()
        self.uri = 'mongodb://127.0.0.1:%d/?directConnection=true' % self.port

    def stop(self):
        self.server.stop()

    # -- dispatch -------------------------------------------------------
    def _handle(self, request):
        name = request.command_name
        doc = request.doc
        if name in ('ismaster', 'isMaster', 'hello'):
            return request.ok(HELLO)
        if name in NO_REPLY_NEEDED:
            return request.ok()
        if name in ('buildinfo', 'buildInfo'):
            return request.ok(version='7.0.0', versionArray=[7, 0, 0, 0])
        self.commands.append(name)
        method = getattr(self, '_' + name, None)
        if method is None:
            return request.command_err(
                code=59, errmsg='no such command: %r' % name)
        try:
            return request.ok(method(doc, doc.get('$db')))
        except mongomock.OperationFailure as error:
            return request.command_err(
                code=error.code or 2, errmsg=str(error))
        except Exception as error:      # a reply, not a hung connection
            return request.command_err(
                code=1, errmsg='%s: %s' % (type(error).__name__, error))

    def _coll(self, doc, db, name):
        return self.store[db][doc[name]]

    # -- writes ---------------------------------------------------------
    def _writes(self, doc, db, name, items, apply_one):
        """Apply ``items`` in order; stop at the first error if ordered."""
        coll = self._coll(doc, db, name)
        reply = {'n': 0}
        errors = []
        for index, item in enumerate(items):
            try:
                apply_one(coll, index, item, reply)
            except mongomock.DuplicateKeyError as error:
                # The stand-in words it as a server (mongopersist.testing).
                entry = {'index': index, 'code': 11000, 'errmsg': str(error)}
                for key in ('keyPattern', 'keyValue'):
                    if key in (error.details or {}):
                        entry[key] = error.details[key]
                errors.append(entry)
            except mongomock.OperationFailure as error:
                errors.append({'index': index, 'code': error.code or 2,
                               'errmsg': str(error)})
            if errors and doc.get('ordered', True):
                break
        if errors:
            reply['writeErrors'] = errors
        return reply

    def _insert(self, doc, db):
        def apply_one(coll, index, item, reply):
            coll.insert_one(item)
            reply['n'] += 1
        return self._writes(doc, db, 'insert', doc.get('documents', ()),
                            apply_one)

    def _update(self, doc, db):
        def apply_one(coll, index, item, reply):
            query, update = item.get('q', {}), item['u']
            upsert = bool(item.get('upsert'))
            if any(key.startswith('$') for key in update):
                method = (coll.update_many if item.get('multi')
                          else coll.update_one)
                result = method(query, update, upsert=upsert)
            else:
                result = coll.replace_one(query, update, upsert=upsert)
            reply.setdefault('nModified', 0)
            reply['n'] += result.matched_count
            reply['nModified'] += result.modified_count
            if result.upserted_id is not None:
                reply['n'] += 1
                reply.setdefault('upserted', []).append(
                    {'index': index, '_id': result.upserted_id})
        reply = self._writes(doc, db, 'update', doc.get('updates', ()),
                             apply_one)
        reply.setdefault('nModified', 0)
        return reply

    def _delete(self, doc, db):
        def apply_one(coll, index, item, reply):
            method = (coll.delete_one if item.get('limit') == 1
                      else coll.delete_many)
            reply['n'] += method(item.get('q', {})).deleted_count
        return self._writes(doc, db, 'delete', doc.get('deletes', ()),
                            apply_one)

    def _findAndModify(self, doc, db):
        coll = self._coll(doc, db, 'findAndModify')
        query = doc.get('query') or {}
        kwargs = {'projection': doc.get('fields'),
                  'sort': _sort(doc.get('sort'))}
        before = coll.find_one(query, sort=kwargs['sort'])
        if doc.get('remove'):
            value = coll.find_one_and_delete(query, **kwargs)
            return {'value': value,
                    'lastErrorObject': {'n': int(value is not None)}}
        update = doc.get('update') or {}
        method = (coll.find_one_and_update
                  if any(key.startswith('$') for key in update)
                  else coll.find_one_and_replace)
        value = method(query, update, upsert=bool(doc.get('upsert')),
                       return_document=(ReturnDocument.AFTER if doc.get('new')
                                        else ReturnDocument.BEFORE), **kwargs)
        last = {'n': 1, 'updatedExisting': before is not None}
        if before is None:
            if not doc.get('upsert'):
                last['n'] = 0
            else:
                last['upserted'] = coll.find_one(
                    query, sort=kwargs['sort'])['_id']
        return {'value': value, 'lastErrorObject': last}

    # -- reads ----------------------------------------------------------
    def _cursor(self, db, coll_name, docs, batch_size, single=False):
        batch_size = batch_size or DEFAULT_BATCH
        first, rest = docs[:batch_size], docs[batch_size:]
        cursor_id = 0
        if rest and not single:
            cursor_id = next(self._cursor_ids)
            self._cursors[cursor_id] = rest
        return {'cursor': {'id': cursor_id, 'ns': '%s.%s' % (db, coll_name),
                           'firstBatch': first}}

    def _find(self, doc, db):
        coll = self._coll(doc, db, 'find')
        docs = list(coll.find(
            doc.get('filter') or {}, doc.get('projection') or None,
            sort=_sort(doc.get('sort')), skip=doc.get('skip', 0),
            limit=abs(doc.get('limit', 0))))
        return self._cursor(db, doc['find'], docs, doc.get('batchSize'),
                            doc.get('singleBatch'))

    def _getMore(self, doc, db):
        rest = self._cursors.pop(doc['getMore'], [])
        size = doc.get('batchSize') or len(rest)
        batch, rest = rest[:size], rest[size:]
        cursor_id = doc['getMore'] if rest else 0
        if rest:
            self._cursors[cursor_id] = rest
        return {'cursor': {'id': cursor_id, 'nextBatch': batch,
                           'ns': '%s.%s' % (db, doc['collection'])}}

    def _killCursors(self, doc, db):
        ids = doc.get('cursors', [])
        for cursor_id in ids:
            self._cursors.pop(cursor_id, None)
        return {'cursorsKilled': ids, 'cursorsNotFound': [],
                'cursorsAlive': [], 'cursorsUnknown': []}

    def _aggregate(self, doc, db):
        coll = self._coll(doc, db, 'aggregate')
        docs = list(coll.aggregate(doc.get('pipeline', [])))
        return self._cursor(db, doc['aggregate'], docs,
                            (doc.get('cursor') or {}).get('batchSize'))

    def _count(self, doc, db):
        coll = self._coll(doc, db, 'count')
        kwargs = {key: doc[key] for key in ('skip', 'limit') if doc.get(key)}
        return {'n': coll.count_documents(doc.get('query') or {}, **kwargs)}

    def _distinct(self, doc, db):
        coll = self._coll(doc, db, 'distinct')
        return {'values': coll.distinct(doc['key'], doc.get('query') or {})}

    # -- indexes and dropping -------------------------------------------
    def _createIndexes(self, doc, db):
        coll = self._coll(doc, db, 'createIndexes')
        before = len(coll.index_information())
        for index in doc.get('indexes', ()):
            options = {key: value for key, value in index.items()
                       if key not in ('key', 'v')}
            coll.create_index(list(index['key'].items()), **options)
        return {'numIndexesBefore': before,
                'numIndexesAfter': len(coll.index_information()),
                'createdCollectionAutomatically': before == 0}

    def _listIndexes(self, doc, db):
        coll = self._coll(doc, db, 'listIndexes')
        docs = []
        for name, info in coll.index_information().items():
            entry = {'v': 2, 'key': dict(info['key']), 'name': name}
            entry.update((key, value) for key, value in info.items()
                         if key not in ('key', 'v'))
            docs.append(entry)
        return self._cursor(db, doc['listIndexes'], docs,
                            (doc.get('cursor') or {}).get('batchSize'))

    def _drop(self, doc, db):
        self.store[db].drop_collection(doc['drop'])
        return {'ns': '%s.%s' % (db, doc['drop'])}

    def _dropDatabase(self, doc, db):
        self.store.drop_database(db)
        return {'dropped': db}


def _sort(spec):
    """A sort document as the list of pairs mongomock expects."""
    return list(spec.items()) if spec else None
