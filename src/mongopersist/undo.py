"""The undo log: how to take back what a transaction wrote.

Without a server transaction, writes made before the commit (root entries,
flushes before queries) and the commit's own writes are visible at once;
an abort, or a rollback to a savepoint, takes them back by writing again.
That undo must never destroy a write the transaction did not make, so
every step is conditional on the stored document still being the one
this transaction wrote: the conflict handler's ``undo_filter`` (the serial
written, or the content without conflict detection), the reference set
for a root entry, the absence of any document for a removal put back.
With conflict detection, a write that another transaction read, wrote
over and took back is stored again under that transaction's new serial,
marked as the version of the serial written put back
(``conflict.restored_version``): when the serial condition fails, the
undo reads the document, and if it is so marked (and only its serial
differs from the write), takes it back conditional on the serial read.
A document somebody changed since is left as it is, logged (logger
``mongopersist.undo``, WARNING) and reported in ``unrestored``; what was
taken back is logged too (``logs.taken_back``).

What is put back is the version stored right before the write
(``commit.DocumentWrite.before``), through the handler's
``undo_document`` (with conflict detection: under a serial never used).
"""
from bson.dbref import DBRef
from pymongo.errors import DuplicateKeyError

from mongopersist import commit, conflict, limits, logs, metadata, sharding
from mongopersist.serialize import PY_SERIAL

LOG = logs.UNDO

ROOT = 'root'


class UndoLog:
    """The writes of one transaction of data manager ``jar``, in order.

    Each entry is ``(kind, ref, before, written)``: the kind of write
    (``commit.INSERT``/``UPDATE``/``DELETE`` or ``ROOT``), the oid (for
    root entries ``(collection, name)``), the version to put back
    (``None``: none, the write created it) and what the write stored
    (``None`` for deletes).
    """

    def __init__(self, jar):
        self.jar = jar
        self.entries = []

    def __len__(self):
        return len(self.entries)

    def wrote(self, write):
        """Record a ``commit.DocumentWrite`` that reached MongoDB."""
        if write.before is not commit.ABSENT:
            self.entries.append((write.kind, write.oid, write.before,
                                 write.doc))

    def root_changed(self, collection, name, previous, written):
        """Record a root entry change: ``written`` is the entry's reference
        now (``None``: deleted), ``previous`` the entry it replaced."""
        self.entries.append((ROOT, (collection, name), previous, written))

    def refs_since(self, since):
        """The oids (and root keys) written after the ``since``-th entry."""
        return {entry[1] for entry in self.entries[since:]}

    def take_back(self, since=0):
        """Take back the writes after the ``since``-th entry, last first.

        Returns ``(put_back, unrestored)``: the documents now stored
        again, by oid, and the oids (``DBRef``) left alone because they
        changed since.
        """
        undo = self.entries[since:]
        del self.entries[since:]
        session = self.jar._session
        put_back = {}
        unrestored = []
        restored_refs = []
        for kind, ref, before, written in reversed(undo):
            if kind == ROOT:
                restored = self._root(ref, before, written, session)
                ref = DBRef(ref[0], ref[1], self.jar.root_database)
            else:
                restored = False
                stored = put_back.get(ref, written)
                # What a later write's undo put back is this write's
                # document (under another serial) if nobody wrote in
                # between; then this undo is conditional on it.
                if stored is written or commit.same_document(stored,
                                                             written):
                    restored = self._document(kind, ref, before, stored,
                                              session, put_back)
            if restored:
                restored_refs.append(ref)
            else:
                unrestored.append(ref)
                LOG.warning(
                    'Abort: the write of %s.%s _id=%s was not taken back: '
                    'the stored document changed since this transaction '
                    'wrote it (another writer); it is left as it is',
                    limits.excerpt(ref.database),
                    limits.excerpt(ref.collection), limits.quote(ref.id))
        logs.taken_back(self.jar, restored_refs, session is not None)
        return put_back, unrestored

    def _document(self, kind, ref, before, written, session, put_back):
        """Take back one document write if it is still what is stored."""
        jar = self.jar
        coll = jar._raw_collection(ref.database, ref.collection)
        if kind == commit.DELETE:
            if before is None:
                return False
            try:
                coll.insert_one(before, session=session)
            except DuplicateKeyError:
                return False        # another document was stored since
            put_back[ref] = before
            return True
        if before is None and kind != commit.INSERT:
            return False        # written over a version never read
        if self._put_back(coll, ref, before, written, session, put_back):
            return True
        if not jar.conflict_handler.detects_conflicts:
            return False        # the condition was the content already
        # Another transaction that read this (uncommitted) write, wrote
        # over it and aborted put it back under a new serial, marked as
        # this version put back: then the stored document is still this
        # write.  (Equal content alone does not say so: another
        # transaction may have committed the same content.)
        current = coll.find_one(
            sharding.undo_filter(jar, ref, metadata.document_filter(ref),
                                 written), session=session)
        if current is None or conflict.restored_version(current) != \
                written.get(PY_SERIAL) or \
                not commit.same_document(current, written):
            return False
        return self._put_back(coll, ref, before, current, session, put_back)

    def _put_back(self, coll, ref, before, stored, session, put_back):
        """Put ``before`` back (remove the document where ``None``) on
        condition that ``stored`` is what is stored."""
        jar = self.jar
        handler = jar.conflict_handler
        # Targeted like the write it takes back: ``_id`` and shard key.
        condition = sharding.undo_filter(
            jar, ref, handler.undo_filter(ref, stored), stored)
        if before is None:
            put_back.pop(ref, None)
            return coll.delete_one(condition, session=session).deleted_count
        doc = handler.undo_document(before, stored)
        if not coll.replace_one(condition, doc, session=session).matched_count:
            return False
        put_back[ref] = doc
        return True

    def _root(self, key, before, written, session):
        """Take back a root entry change if the entry is still ours."""
        collection, name = key
        coll = self.jar._raw_collection(self.jar.root_database, collection)
        if written is None:
            # Deleted: restore it unless the name was set again since.
            entry = dict(before)
            entry.pop('name', None)
            result = coll.update_one({'name': name}, {'$setOnInsert': entry},
                                     upsert=True, session=session)
            return result.upserted_id is not None
        condition = {'name': name, 'ref': written}
        if before is None:
            return coll.delete_one(condition, session=session).deleted_count
        return coll.replace_one(condition, before,
                                session=session).matched_count == 1
