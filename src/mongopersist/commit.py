"""The commit pipeline: pending changes to MongoDB writes.

One ``Flush`` writes a set of objects:

1. **serialize** every object (and every new object it references) into a
   document; a failure here raises before anything is written;
2. **plan** one write per document: insert for new objects, ``$set``/
   ``$unset`` of the changed fields for changed ones (nothing when the
   document is identical to what was loaded), delete for removed ones; the
   conflict handler stamps serials and makes updates conditional;
3. **check** serials of documents others may have changed (one read per
   collection), where the conflict handler resolves conflicts or the
   flush deletes; otherwise the conditional writes alone decide.  Without
   conflict detection the same read fetches what updates and deletes
   replace, which is what an abort puts back (a collection with a single
   update or delete takes it from the write itself instead);
4. **write** each collection's share in one ordered ``bulk_write`` (one
   ``findAndModify`` for a single update or delete without conflict
   detection, which returns the version it replaced);
5. **verify** that every conditional write matched; a lost race raises
   ``ConflictError`` (see ``Flush.execute`` for how a lost race is told).
   A write whose reply was lost is read back before anything is decided
   (``mongopersist.outcome``): with conflict detection every document
   written carries the flush's write id (``_py_write``) next to its serial.

Every write that reached MongoDB is reported to the data manager, which
keeps what it needs to undo it when the transaction aborts.
"""
import math

import pymongo
from bson.dbref import DBRef
from bson.objectid import ObjectId
from pymongo.errors import (BulkWriteError, ConnectionFailure,
                            DuplicateKeyError, OperationFailure, PyMongoError)

from mongopersist import (indexes, interfaces, limits, logs, metadata,
                          outcome, sharding)
from mongopersist.serialize import (PY_PERSISTENT_TYPE, PY_RESTORED,
                                    PY_SERIAL, PY_WRITE)

INSERT = 'insert'
UPDATE = 'update'
DELETE = 'delete'

#: ``DocumentWrite.before`` of a write to a document that did not exist.
ABSENT = 'absent'

#: The server's code for a write that conflicts with another server
#: transaction's (which wrote the document after this one's snapshot).
WRITE_CONFLICT = 112

#: Fields a write stamps, not part of what an object stores.
_STAMPS = frozenset([PY_SERIAL, PY_WRITE])


def same_value(a, b):
    """Return true if BSON values ``a`` and ``b`` would be stored the same.

    Stricter than ``==``: ``True`` and ``1``, ``1`` and ``1.0``, or ``0.0``
    and ``-0.0`` differ; NaN is the same as NaN (so an unchanged NaN is not
    written again).
    """
    kind_a, kind_b = type(a), type(b)
    if kind_a is dict or kind_b is dict:
        return (kind_a is kind_b and len(a) == len(b)
                and all(k in b and same_value(v, b[k]) for k, v in a.items()))
    if kind_a is list or kind_b is list:
        return (kind_a is kind_b and len(a) == len(b)
                and all(same_value(x, y) for x, y in zip(a, b)))
    if kind_a is float and kind_b is float:
        if a != a:
            return b != b
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if kind_a is not kind_b:
        if isinstance(a, DBRef) and isinstance(b, DBRef):
            return a == b        # an OID and the DBRef read back
        if isinstance(a, bool) or isinstance(b, bool):
            return False
        if not (isinstance(a, int) and isinstance(b, int)):
            return False
    return a == b


def same_document(a, b):
    """Return true if documents ``a`` and ``b`` differ in their serial and
    write id only (and in the mark of a version an abort put back)."""
    return (a is not None and b is not None
            and same_value(_content(a), _content(b)))


def _content(doc):
    return {k: v for k, v in doc.items()
            if k not in _STAMPS and k != PY_RESTORED}


def changed_fields(doc, loaded):
    """Return the ``$set`` and ``$unset`` parts that turn loaded into doc."""
    to_set = {key: value for key, value in doc.items()
              if key != '_id' and key not in _STAMPS
              and (key not in loaded or not same_value(value, loaded[key]))}
    to_unset = {key: '' for key in loaded
                if key not in doc and key != '_id' and key not in _STAMPS
                and key != PY_RESTORED}
    return to_set, to_unset


class DocumentWrite:
    """One planned write: what, to which document, and on what condition."""

    __slots__ = ('kind', 'obj', 'oid', 'doc', 'loaded', 'filter', 'request',
                 'size', 'before', 'untracked', 'update', 'moves')

    def __init__(self, kind, obj, oid, doc=None, loaded=None):
        self.kind = kind
        self.obj = obj
        self.oid = oid
        self.doc = doc
        self.loaded = loaded
        self.filter = None
        self.request = None
        self.update = None      # the $set/$unset of an update
        self.size = 0           # of ``doc`` in bytes of BSON
        # The object holds values whose changes it does not hear about.
        self.untracked = False
        # It changes a shard-key value: sent on its own (``sharding``).
        self.moves = False
        # What an abort puts back: the version stored before this write
        # (``ABSENT``: there was none, so there is nothing to take back).
        self.before = loaded

    def __repr__(self):
        return '<%s %s/%s>' % (self.kind, self.oid.collection, self.oid.id)


class Flush:
    """Writes the changes of a set of objects (see the module docstring)."""

    def __init__(self, jar):
        self.jar = jar
        self.handler = jar.conflict_handler
        self.writes = []
        # Every object serialized, written or found unchanged.
        self.serialized = []
        # Stamped on every document written with conflict detection: a
        # write whose reply was lost knows itself by it (``outcome``).
        self.write_id = ObjectId()
        # (database, collection, class, inserting) -> whether documents
        # name their class (``_name_type``).
        self._stores_type = {}

    # 1. serialize -------------------------------------------------------
    def serialize(self, objects):
        """Turn ``objects`` and the new objects they reach into documents."""
        jar = self.jar
        queue = list(objects)
        seen = set()
        jar._discovered = queue
        try:
            index = 0
            while index < len(queue):
                obj = queue[index]
                index += 1
                oid = obj._p_oid
                if id(obj) in seen or oid in jar._removed:
                    continue
                seen.add(id(obj))
                loaded = jar._loaded_docs.get(oid)
                kind = UPDATE if loaded is not None or oid not in jar._new \
                    else INSERT
                write = DocumentWrite(kind, obj, oid, None, loaded)
                self._document(write)
                self.writes.append(write)
        except BaseException:
            # Forget the new objects this failed attempt found.
            jar._forget_new(queue[len(objects):])
            raise
        finally:
            jar._discovered = None
        self.serialized = list(self.writes)
        return self

    def _document(self, write):
        """Make ``write.doc`` (and its size) from ``write.obj``.

        The class is named later (``_name_type``), once every document was
        made: recording it in the type map is a write.  MongoDB's limits
        are checked before anything is written.
        """
        writer = self.jar._writer
        write.doc = writer.get_document(write.obj)
        write.untracked = writer.untracked
        write.size = limits.check_document(write.doc, write.obj,
                                           writer.deepest)

    def _name_type(self, write):
        """Name the class in the document if its collection needs that
        (asked of the type map once per collection, class and kind of
        write in a flush: its answer does not change meanwhile)."""
        oid = write.oid
        cls = type(write.obj)
        inserting = write.kind == INSERT
        key = (oid.database, oid.collection, cls, inserting)
        stores = self._stores_type.get(key)
        if stores is None:
            stores = self._stores_type[key] = self.jar._types.stores_type(
                oid.database, oid.collection, cls, inserting=inserting)
        if stores:
            write.doc[PY_PERSISTENT_TYPE] = metadata.get_dotted_name(cls)

    def remove(self, objects):
        """Plan the removal of ``objects``."""
        for obj in objects:
            oid = obj._p_oid
            if oid not in self.jar._loaded_docs:
                # The serial to check and the version an abort restores.
                obj._p_activate()
            self.writes.append(DocumentWrite(
                DELETE, obj, oid, None, self.jar._loaded_docs.get(oid)))
        return self

    # 2. plan ------------------------------------------------------------
    def plan(self):
        """Give every write its request; drop writes that change nothing."""
        planned = []
        for write in self.writes:
            if write.kind != DELETE:
                self._name_type(write)
            if self._plan_one(write):
                if write.size > limits.NEAR_MAX_DOCUMENT_SIZE:
                    # The class name and the serial were added since the
                    # size was measured: measure the final document.
                    limits.check_document(write.doc, write.obj)
                planned.append(write)
        self.writes = planned
        return self

    def _plan_one(self, write):
        handler = self.handler
        if write.kind == INSERT:
            if handler.detects_conflicts:
                handler.stamp(write.doc, None)
                write.doc[PY_WRITE] = self.write_id
            sharding.target(self.jar, write)
            # Its request is made if it is sent in a bulk write (``_send``):
            # inserts alone go as ``insert_many`` of the documents.
            return True
        write.filter = handler.write_filter(write.oid, write.loaded)
        # ``_id`` and the shard key as loaded: mongos targets one shard.
        write.moves = sharding.target(self.jar, write)
        if write.kind == DELETE:
            write.request = pymongo.DeleteOne(write.filter)
            return True
        upsert = handler.detects_conflicts
        if write.loaded is None:
            handler.stamp(write.doc, None)
            if upsert:
                write.doc[PY_WRITE] = self.write_id
            write.request = pymongo.ReplaceOne(
                write.filter, write.doc, upsert=upsert)
            return True
        to_set, to_unset = changed_fields(write.doc, write.loaded)
        if not to_set and not to_unset:
            return False
        if PY_RESTORED in write.loaded:
            # A new version: no longer one an abort put back.
            to_unset[PY_RESTORED] = ''
        handler.stamp(write.doc, write.loaded)
        update = {}
        if to_set:
            update['$set'] = to_set
        if to_unset:
            update['$unset'] = to_unset
        handler.serial_update(update, write.doc)
        if upsert:
            write.doc[PY_WRITE] = self.write_id
            update.setdefault('$set', {})[PY_WRITE] = self.write_id
        write.update = update
        write.request = pymongo.UpdateOne(write.filter, update, upsert=upsert)
        return True

    def by_collection(self):
        groups = {}
        for write in self.writes:
            key = (write.oid.database, write.oid.collection)
            groups.setdefault(key, []).append(write)
        return groups

    def _batches(self, groups):
        """Each collection's writes as one batch, but a write that moves a
        document to another shard (a changed shard-key value) in a batch
        of its own, as MongoDB requires."""
        for where, writes in groups.items():
            batch = []
            for write in writes:
                if write.moves:
                    if batch:
                        yield where, batch
                    yield where, [write]
                    batch = []
                else:
                    batch.append(write)
            if batch:
                yield where, batch

    # 3. check -----------------------------------------------------------
    def check(self):
        """Read the serials of checked documents; resolve or raise conflicts.

        The conditional writes themselves are what guarantee no lost
        update, and ``execute`` tells which update lost a race.  The read
        is made only where that is not enough: when the handler resolves
        conflicts (``reads_before_writing``; it needs the current version
        before writing) and when the flush deletes (a short
        ``deleted_count`` does not say which delete lost).
        """
        if not self.handler.detects_conflicts:
            return self._read_versions_before()
        if not (getattr(self.handler, 'reads_before_writing', True)
                or any(write.kind == DELETE for write in self.writes)):
            return self
        # Only the serials: the whole document is read for conflicts.
        for coll, writes, current in self._stored_versions({PY_SERIAL: 1}):
            for doc_id, write in writes.items():
                if not self._matches(write, current.get(doc_id)):
                    self._resolve(write, self._current(coll, write))
        return self

    def _read_versions_before(self):
        """Without serials, read what updates and deletes will replace.

        An abort must put back the version stored right before the write,
        which is not the version loaded if somebody wrote in between (last
        writer wins): one read per collection, of the documents changed.
        """
        for _, writes, current in self._stored_versions(
                None, skip=_replaces_alone):
            for doc_id, write in writes.items():
                write.before = current.get(doc_id, ABSENT)
        return self

    def _stored_versions(self, projection, skip=None):
        """Per collection: the updates and deletes by ``_id``, and what is
        stored for them now (``projection`` of it), in one read.
        Collections whose writes ``skip`` accepts are left out."""
        for (db, name), writes in self.by_collection().items():
            if skip is not None and skip(self.handler, writes):
                continue
            changed = {w.oid.id: w for w in writes if w.kind != INSERT}
            if not changed:
                continue
            coll = self.jar._raw_collection(db, name)
            # Grouped by shard key (as loaded): read from their shards only.
            query = sharding.batch_filter(
                (w.oid.id, self._key_as_loaded(w)) for w in changed.values())
            current = {doc['_id']: doc for doc in coll.find(
                query, projection, session=self.jar._session)}
            self.jar._round_trips += 1
            yield coll, changed, current

    @staticmethod
    def _key_as_loaded(write):
        key = metadata.shard_key(type(write.obj))
        if key is None:
            return None
        if write.loaded is not None:
            return key.values(write.loaded)
        return write.oid.routing

    def _matches(self, write, current):
        if current is None:
            return False
        return (current.get(PY_SERIAL) == (write.loaded or {}).get(PY_SERIAL))

    def _resolve(self, write, current):
        handler = self.handler
        merged = None
        if write.kind == UPDATE:
            merged = handler.resolve(
                write.obj, write.loaded, current, write.doc)
        if merged is None:
            raise self._conflict(write, current)
        # Write the merged state on top of the current document.
        write.loaded = write.before = current
        self.jar._loaded_docs[write.oid] = current
        self._document(write)
        self._name_type(write)
        self._plan_one(write)

    def _conflict(self, write, current, message=None):
        """The ``ConflictError`` to raise for ``write`` (logged)."""
        error = interfaces.ConflictError(
            message, object=write.obj, oid=write.oid.id,
            orig_state=write.loaded, cur_state=current, new_state=write.doc,
            start_serial=self.handler.serial_of(write.loaded),
            current_serial=(self.handler.serial_of(current)
                            if current is not None else None))
        logs.conflict(write.oid, error)
        return error

    # 4. write and 5. verify -------------------------------------------------
    def execute(self):
        """Write every collection's share in one round trip each.

        With conflict detection, updates are upserts on ``_id`` and the
        loaded serial: when a concurrent writer changed the document, the
        upsert collides with it on ``_id`` (duplicate key error at that
        write's index); when somebody removed it, the upsert creates it
        (reported in ``upserted_ids``).  Both tell exactly which write lost.

        A collision can also be this very write: PyMongo sends a write
        again after a network error, and a server that lost the reply of
        the first attempt (and, unlike MongoDB, does not remember it)
        applies the conditional write again, which then matches nothing.
        The document read back carries this flush's write id then: the
        write was applied, and the rest of the batch is sent.  Inside a
        server transaction the collision aborted it: the version read is
        the one committed (outside the transaction), and a server
        ``WriteConflict`` (another server transaction wrote the document)
        is a ``ConflictError`` as well.
        """
        jar = self.jar
        # Writes not (yet) known to have reached MongoDB, by identity.
        pending = {id(write): write for write in self.writes}
        groups = self.by_collection()
        jar._journal.before_writes(groups)
        for (db, name), writes in self._batches(groups):
            coll = jar._raw_collection(db, name)
            while writes:
                writes = self._execute_batch(coll, writes, pending)
        return self

    def _execute_batch(self, coll, writes, pending):
        """Send ``writes`` in one round trip and verify them; return the
        writes still to send (none, unless a write is found applied by an
        earlier attempt whose reply was lost)."""
        try:
            result = self._send(coll, writes)
        except BulkWriteError as error:
            details = error.details
            errors = details.get('writeErrors') or [{}]
            failed = errors[0].get('index', 0)
            upserted = {u['index'] for u in details.get('upserted', ())}
            self._record(writes[:failed], upserted, pending)
            lost = writes[failed] if failed < len(writes) else None
            duplicate = None
            if lost is not None and errors[0].get('code') == 11000:
                duplicate = indexes.duplicate(errors[0], lost, coll)
                if duplicate.on_id and lost.kind != DELETE and \
                        self.handler.detects_conflicts:
                    try:
                        current = self._committed(coll, lost)
                    except PyMongoError:
                        # Not even the version can be read: was it a
                        # retry of this write, applied the first time?
                        raise self._failure(
                            error, pending, unsure=[lost],
                            duplicate=duplicate) from error
                    if outcome.verdict(lost, current) == outcome.APPLIED:
                        self._record([lost], (), pending)
                        return writes[failed + 1:]
                    if lost.kind == UPDATE:
                        raise self._conflict(lost, current) from error
            raise self._failure(error, pending,
                                duplicate=duplicate) from error
        except DuplicateKeyError as error:
            # A write sent alone (``_replace_alone``) was refused: it
            # wrote nothing.
            duplicate = indexes.duplicate(
                error.details or {'errmsg': str(error)}, writes[0], coll)
            raise self._failure(error, pending,
                                duplicate=duplicate) from error
        except PyMongoError as error:
            if self.jar._server_txn is not None:
                if isinstance(error, OperationFailure) and \
                        error.code == WRITE_CONFLICT:
                    raise self._write_conflict(coll, writes) from error
                raise self._failure(error, pending) from error
            if not isinstance(error, ConnectionFailure):
                raise self._failure(error, pending, unsure=writes) from error
            # Without a server transaction the writes may have been
            # applied (the reply was lost): read back which were.
            self._read_back(writes, pending, error)
            return []
        if result is None:
            self._record(writes, (), pending)
            return []
        upserted = set(result.upserted_ids or ())
        # The document was removed by somebody else (told before the
        # write is recorded as the insert it turned into).
        lost = self._conflict(writes[min(upserted)], None) \
            if upserted else None
        self._record(writes, upserted, pending)
        if lost is not None:
            raise lost
        deletes = [w for w in writes if w.kind == DELETE]
        if result.deleted_count < len(deletes) and \
                self.handler.detects_conflicts:
            for write in deletes:
                current = self._current(coll, write)
                if current is not None:
                    raise self._conflict(write, current)
        return []

    def _read_back(self, writes, pending, error):
        """After ``error`` left it unknown whether ``writes`` were applied
        (no server transaction): record those read back as applied; raise
        the ``CommitError`` (``CommitOutcomeUnknownError`` if some cannot
        be told) unless all were."""
        self.jar._round_trips += 1
        try:
            verdicts = outcome.verdicts(self.jar._client, writes)
        except PyMongoError:
            verdicts = [None] * len(writes)
        applied = [w for w, v in zip(writes, verdicts)
                   if v == outcome.APPLIED]
        self._record(applied, (), pending)
        if len(applied) == len(writes):
            return
        unsure = [w for w, v in zip(writes, verdicts) if v is None]
        raise self._failure(error, pending, unsure=unsure) from error

    def _write_conflict(self, coll, writes):
        """The ``ConflictError`` for a server ``WriteConflict`` on one of
        ``writes``: the server does not say which.  The first whose
        committed version is not the one loaded (somebody committed it),
        else the only one that replaces a document (somebody is writing
        it in a transaction still open)."""
        candidates = [w for w in writes if w.kind != INSERT] or list(writes)
        message = ('Another server transaction wrote this document after '
                   'this one started (WriteConflict)')
        try:
            stored = self._committed_versions(coll, candidates)
        except PyMongoError:
            stored = {}
        for write in candidates:
            if id(write) in stored:
                current = stored[id(write)]
                if not self._matches(write, current):
                    return self._conflict(write, current, message)
        if len(candidates) == 1:
            write = candidates[0]
            return self._conflict(write, stored.get(id(write)), message)
        logs.conflict_among([w.oid for w in candidates])
        return interfaces.ConflictError(
            'Another server transaction wrote one of these documents after '
            'this one started (WriteConflict): %s' % ', '.join(
                '%s/%s' % (w.oid.collection, w.oid.id) for w in candidates))

    def _send(self, coll, writes):
        """One round trip: ``insert_many`` when there are only inserts, a
        ``findAndModify`` for an update or delete alone that must learn
        what it replaces, a ``bulk_write`` otherwise."""
        session = self.jar._session
        jar = self.jar
        if _replaces_alone(self.handler, writes):
            jar._round_trips += 1
            return _replace_alone(coll, writes[0], session)
        if all(write.kind == INSERT for write in writes):
            jar._round_trips += 1
            coll.insert_many([write.doc for write in writes], ordered=True,
                             session=session)
            return None
        jar._round_trips += logs.commands(writes)
        return coll.bulk_write([pymongo.InsertOne(write.doc)
                                if write.kind == INSERT else write.request
                                for write in writes],
                               ordered=True, session=session)

    def _record(self, writes, upserted, pending):
        """Report the writes that reached MongoDB to the data manager (and
        to the server transaction, which reads them back if the outcome
        of its commit is unknown)."""
        server_txn = self.jar._server_txn
        for index, write in enumerate(writes):
            if index in upserted:
                # Ours is the only version now: taking it back removes it.
                write.kind, write.loaded, write.before = INSERT, None, None
            elif write.update is not None and '$inc' in write.update and \
                    write.before not in (None, ABSENT):
                # The serial was incremented on what the write replaced.
                write.doc[PY_SERIAL] = self.handler.serial_of(
                    write.before) + 1
            self.jar._written(write)
            if server_txn is not None:
                server_txn.wrote(write)
            del pending[id(write)]

    def _current(self, coll, write):
        """The stored version of the document of ``write``, as this data
        manager sees it (in its server transaction, if any)."""
        query = {'_id': write.oid.id}
        query.update(self._key_as_loaded(write) or {})
        self.jar._round_trips += 1
        return coll.find_one(query, session=self.jar._session)

    def _committed(self, coll, write):
        """The committed version of the document of ``write``, read from
        the primary outside any server transaction (a write error aborted
        it: the next command in it fails)."""
        query = {'_id': write.oid.id}
        query.update(self._key_as_loaded(write) or {})
        self.jar._round_trips += 1
        return outcome.committed_collection(coll).find_one(query)

    def _committed_versions(self, coll, writes):
        """``_committed`` of several ``writes`` in one read: a dict from
        ``id(write)`` to the document (or ``None``)."""
        query = sharding.batch_filter(
            (w.oid.id, self._key_as_loaded(w)) for w in writes)
        self.jar._round_trips += 1
        docs = {doc['_id']: doc for doc in outcome.committed_collection(
            coll).find(query, batch_size=len(writes) + 1)}
        return {id(w): docs.get(w.oid.id) for w in writes}

    def _failure(self, error, pending, unsure=(), duplicate=None):
        """The ``CommitError`` (``UniqueIndexError`` for a ``duplicate``
        key, see ``indexes.duplicate``; ``CommitOutcomeUnknownError`` when
        some writes are ``unsure``) reporting a failed write."""
        kind, details = interfaces.CommitError, {}
        if duplicate is not None:
            kind, details = interfaces.UniqueIndexError, duplicate.details()
            message = duplicate.message()
        else:
            message = 'Commit failed while writing (%s: %s)' % (
                type(error).__name__, error)
        if self.jar._server_txn is not None:
            return kind(
                message + '; the server transaction is aborted and nothing '
                'was committed', written=[],
                not_written=self.jar._written_this_transaction() + [
                    w.oid for w in pending.values()], cause=error, **details)
        written = self.jar._written_this_transaction()
        if unsure:
            kind = interfaces.CommitOutcomeUnknownError
            details = {'unsure': [w.oid for w in unsure]}
            message += '; whether every write was applied is unknown'
        return kind(
            message, written=written,
            not_written=[w.oid for w in pending.values() if w not in unsure],
            cause=error, **details)


def _replaces_alone(handler, writes):
    """True for one collection's writes that are a single update or delete
    which must learn the version it replaces (no conflict detection)."""
    return (len(writes) == 1 and writes[0].kind != INSERT
            and not handler.detects_conflicts)


def _replace_alone(coll, write, session):
    """Update, replace or delete one document, learning the version it
    replaced (``write.before``), in one ``findAndModify``; returns ``None``
    like ``insert_many`` (the write is done, nothing more to check)."""
    if write.kind == DELETE:
        before = coll.find_one_and_delete(write.filter, session=session)
    elif write.update is not None:
        before = coll.find_one_and_update(
            write.filter, write.update, session=session,
            return_document=pymongo.ReturnDocument.BEFORE)
    else:
        before = coll.find_one_and_replace(
            write.filter, write.doc, session=session,
            return_document=pymongo.ReturnDocument.BEFORE)
    write.before = ABSENT if before is None else before
    return None
