"""Model-based stateful test: two data managers against a model of the store.

A hypothesis ``RuleBasedStateMachine`` runs random sequences of: insert an
object, set one as a root entry (written at once), change a scalar, a list
(``PersistentList`` inside the document), a dict (``PersistentDict``) or a
sub-object (``_p_mongo_sub_object``), query (``count``, ``find_objects``:
an implicit flush), ``flush()``, savepoint and rollback, commit, abort,
``remove``, and re-insert an object that was taken back (aborted insert,
rolled back insert, removed and committed), also into the other data
manager.  Two data managers share one database, each with its own
``transaction.TransactionManager``; both use ``transactions='never'``.  The
machine runs twice: conflict detection on (``SimpleSerialConflictHandler``)
and off (last writer wins, field by field, as updates ``$set`` only the
fields that changed).

The model
---------
``stored`` is what the database holds *now*: in ``'never'`` mode a flush
writes at once and others see it before commit, so the model writes too
when (and exactly when) the data manager flushes: before a query, on
``flush()``, on ``root[...] = obj`` (that object only) and at commit.  Every
stored version has a model-internal *token*, unique per write.

Per data manager and transaction the model keeps the state of every object
it loaded (``view``), the version each was loaded as or last written as
(``base``), the new, changed, removed objects, and the list of its writes
(each with the version before and the version written).  A flush writes
every new object, every loaded object whose state differs from its base
(an unchanged document is not written), and every removal.

Conflicts (detection on): a flush raises ``ConflictError``, writing
nothing, exactly when it updates or removes a document whose stored token
is not the base token of the writer (another data manager wrote it since
this one loaded or last wrote it, or removed it).  Detection off: never;
an update ``$set`` s the changed fields over what is stored now, an update
of a removed document writes nothing.

Abort (and rollback) takes back the transaction's writes, newest first,
each only where the document is still the version this data manager
wrote (``docs/transactions.rst``, "Abort undo"): a write the other data
manager made since is never overwritten.  With detection on that is exact
(the serial).  With detection off the library can only compare contents:
where the stored document is not exactly the document this data manager
wrote (the other wrote it in between, or this update was merged with
fields the other had committed before), each field this data manager
changed may either stay or go back (when the stored value still equals
the value written), and every other field must stay; the model adopts
what is stored when it is within that.  Otherwise it must go back
exactly.  A removal is put back when the document is still absent.

Savepoint rollback: objects new or changed at the savepoint get their
state back; objects first changed since become ghosts (reload what is
stored); objects inserted since are taken back; objects loaded since
stay loaded as they are; writes since are taken back as on abort.  A
rollback to a savepoint taken before the data manager joined aborts it.

Invariant checked after every step: the stored documents (and root
entries) equal ``stored``; every object a data manager has loaded in its
open transaction has the model's state and is not a ghost; objects taken
back have no jar and keep their state.  After each commit/abort: every
object of that data manager is a ghost (unless its transaction manager is
explicit and conflicts are detected: then the object cache keeps them
loaded), and loading every stored document (a fresh transaction) gives
exactly the stored fields and serials; root entries load as the data
manager's identical object.

The object cache (``mongopersist.cache``): with conflict detection a data
manager keeps loaded objects across transactions and validates them at
the start of the next one.  The model keeps every version each document
was stored as (``history``) and, per data manager, which was current when
its transaction began (``floor``).  An object first used in a transaction
may show any version stored since it began, never an older one (a stale
read); the model tells which by the object's serial, and predicts
conflicts by serials, as the conditional writes decide.  A third machine
(``CachingAcrossTransactions``) runs with explicit transaction managers,
whose transactions start with ``begin()``, so that objects stay loaded
across them, and ``cache_size=1``.

A sharded variant (``Sharded``, ``ShardedDetectingConflicts``) stores the
second collection's objects as ``ShardedItem`` (shard key ``shard``, one
constant value) and records the commands the data managers send to that
collection: after every step, every insert, update, replace, delete (in a
bulk write, as find-one-and-*, and the undo of an abort or rollback) and
every read by ``_id`` must carry ``_id`` and the whole shard key, as a
mongos needs to target one shard (40 examples each).

Every example starts from 0-2 committed documents and uses a fresh
database, dropped in ``teardown``.

Restricted to keep the model exact: a data manager changes or removes only
documents that were committed, or that it inserted itself (it can still
load another's flushed but uncommitted documents through queries).

Runtime: about 60-100 s for the file when it passes (200 examples of up
to 30 steps per machine, 150 for the third, mongomock, one core);
examples are derandomized (the ``ci`` profile of ``tests/conftest.py``)
so CI runs the same sequences every time; ``make explore`` draws new ones.
A failure costs more: shrinking can take a few minutes.
"""
import uuid

import pymongo
import pytest
import transaction
from bson.dbref import DBRef
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine, initialize, invariant, precondition, rule)

from mongopersist import interfaces, testing
from mongopersist.datamanager import MongoDataManager
from tests.model import Person
from tests.stateful_model import (
    COLLECTION, FIELDS, SHARD, Item, OtherItem, ShardedItem, apply_to_fields,
    apply_to_object, document_fields, new_fields, object_fields)

CLIENT = testing.client()

NAMES = st.sampled_from(['a', 'b', 'c'])
ROOT_NAMES = st.sampled_from(['r1', 'r2'])
DMS = st.integers(0, 1)
PICK = st.integers(0, 7)
SMALL = st.integers(0, 2)
NAME_OPS = st.tuples(st.just('name'), NAMES)
LIST_OPS = st.tuples(st.sampled_from(['append', 'del_tag']), SMALL)
DICT_OPS = st.tuples(st.sampled_from(['set_key', 'del_key']), SMALL)
SUB_OPS = st.tuples(st.sampled_from(['sub', 'new_sub']), SMALL)
OPS = st.one_of(NAME_OPS, LIST_OPS, DICT_OPS, SUB_OPS)


class Version:
    """A stored version of a document: its fields, a unique token and,
    with conflict detection, the ``_py_serial`` it is stored under."""

    __slots__ = ('fields', 'token', 'serial')

    def __init__(self, fields, token, serial=None):
        self.fields = dict(fields)
        self.token = token
        self.serial = serial

    def __repr__(self):
        return 'V%d/%s%r' % (self.token, self.serial, self.fields)


class Txn:
    """The model of one data manager's open transaction."""

    def __init__(self):
        self.view = {}       # id -> fields of the object in memory
        self.base = {}       # id -> Version loaded or last written
        self.new = set()     # inserted, not yet written
        self.inserted = set()
        self.dirty = set()   # changed since last written
        self.removed = set()     # removal not yet written
        self.deleted = set()     # removal written
        self.undo = []       # ('doc', id, before, written, fields, document)
                             # or ('root', name, before, written)
        self.mutated = []    # ids, in the order they were changed
        self.prefetched = {}     # id -> Version read ahead by prefetch
        self.joined = False
        self.savepoint = None    # (transaction savepoint, Snapshot)

    def snapshot(self):
        snap = Txn()
        for name in ('view', 'base'):
            setattr(snap, name, dict(getattr(self, name)))
        for name in ('new', 'inserted', 'dirty', 'removed', 'deleted'):
            setattr(snap, name, set(getattr(self, name)))
        snap.undo = len(self.undo)
        snap.mutated = len(self.mutated)
        snap.joined = self.joined
        return snap


class TwoDataManagers(RuleBasedStateMachine):
    """See the module docstring."""

    detect_conflicts = False
    # Transaction managers that need ``begin()``: the cache then keeps
    # objects loaded across transactions (validated at ``begin()``).
    explicit = False
    cache_size = 400
    #: The class of the second collection.
    other_class = OtherItem

    def __init__(self):
        super().__init__()
        self.dbname = 'mp_stateful_%s' % uuid.uuid4().hex[:12]
        self.tms = [transaction.TransactionManager(explicit=self.explicit)
                    for _ in range(2)]
        self.dms = [MongoDataManager(
            CLIENT, default_database=self.dbname, transactions='never',
            detect_conflicts=self.detect_conflicts, transaction_manager=tm,
            cache_size=self.cache_size)
            for tm in self.tms]
        for d in range(2):
            self.begin(d)
        # id -> every Version stored, in order; per data manager, id ->
        # the index of the version stored when its transaction began: a
        # transaction never sees an older one.
        self.history = {}
        self.floor = [{}, {}]
        self.txns = [Txn(), Txn()]
        self.handles = [{}, {}]     # id -> the data manager's object
        self.pool = []              # [object, fields]: taken back objects
        self.stored = {}            # id -> Version
        self.root = {}              # root name -> id
        self.committed = set()      # ids whose insert was committed
        self.counter = 0
        self.collection_of = {}     # id -> the collection storing it

    def teardown(self):
        for tm in self.tms:
            tm.abort()
        CLIENT.drop_database(self.dbname)

    def begin(self, d):
        """A transaction of ``d`` ended: start the next one."""
        if self.explicit:
            self.tms[d].begin()

    def end(self, d, commit=False):
        """End ``d``'s transaction (the library's side) and begin anew."""
        if commit:
            self.tms[d].commit()
        else:
            self.tms[d].abort()
        self.begin(d)

    def serial_of(self, k):
        if not self.detect_conflicts:
            return None
        doc = CLIENT[self.dbname][self.collection_of[k]].find_one({'_id': k})
        return None if doc is None else doc.get('_py_serial')

    def sync_history(self):
        for k, version in self.stored.items():
            versions = self.history.setdefault(k, [])
            if not versions or versions[-1] is not version:
                versions.append(version)

    def set_floor(self, d):
        """``d``'s transaction begins: what is stored now is its floor."""
        self.sync_history()
        self.floor[d] = {k: len(self.history[k]) - 1 for k in self.stored}

    # -- helpers ----------------------------------------------------------
    def token(self):
        self.counter += 1
        return self.counter

    def new_id(self, obj=None):
        """A new id, for ``obj`` (stored in the collection of its class)."""
        self.counter += 1
        k = 'k%d' % self.counter
        if obj is not None:
            self.collection_of[k] = type(obj)._p_mongo_collection
        return k

    def ref(self, oid):
        collection = self.collection_of[oid]
        extras = ({'shard': SHARD} if getattr(
            self.other_class, '_p_mongo_shard_key', None)
            and collection == self.other_class._p_mongo_collection else {})
        return DBRef(collection, oid, self.dbname, **extras)

    @property
    def collections(self):
        return (COLLECTION, self.other_class._p_mongo_collection)

    def eligible(self, d):
        """Ids data manager ``d`` may change or remove now."""
        t = self.txns[d]
        ids = set(self.stored) | set(t.view)
        return sorted((
            k for k in ids
            if (k in self.committed or k in t.inserted)
            and k not in t.removed and k not in t.deleted
            and (k in t.view or k in self.stored)), key=str)

    def obj(self, d, k):
        """Data manager ``d``'s object ``k``, loaded as the model says."""
        t = self.txns[d]
        obj = self.handles[d].get(k)
        if obj is None:
            obj = self.dms[d].load(self.ref(k))
            self.handles[d][k] = obj
        obj._p_activate()
        if k not in t.view:
            # Filled from the document prefetch read, if it did.
            version = t.prefetched.pop(k, None)
            if version is None:
                version = self.seen_version(d, k, obj)
            t.view[k] = dict(version.fields)
            t.base[k] = version
        return obj

    def seen_version(self, d, k, obj):
        """The version ``d``'s object ``k`` shows when first used in the
        transaction: with conflict detection, any version stored since the
        transaction began (the cache validated what it held then), told
        apart by the serial; without, what is stored now."""
        if not self.detect_conflicts or k not in self.floor[d]:
            return self.stored[k]
        self.sync_history()
        serial = int.from_bytes(obj._p_serial, 'big')
        since = self.history[k][self.floor[d][k]:]
        matching = [v for v in since if v.serial == serial]
        assert matching, (
            'stale read of %s: serial %d, versions since the transaction '
            'began: %r' % (k, serial, since))
        version = matching[-1]
        assert object_fields(obj) == version.fields, (k, version)
        return version

    def detach(self, d, k):
        t = self.txns[d]
        obj = self.handles[d].pop(k)
        self.pool.append([obj, t.view.pop(k)])
        t.base.pop(k, None)
        for name in ('new', 'inserted', 'dirty', 'removed', 'deleted'):
            getattr(t, name).discard(k)

    # -- the model of a flush -------------------------------------------
    def plan(self, d, collection=None):
        """The writes of a flush (of ``collection`` only: a query's)."""
        t = self.txns[d]
        writes = [('insert', k) for k in sorted(t.new, key=str)]
        for k in sorted(t.view, key=str):
            if k in t.new or k in t.removed or k in t.deleted:
                continue
            if t.view[k] != t.base[k].fields:
                writes.append(('update', k))
        writes += [('delete', k) for k in sorted(t.removed, key=str)]
        return [(kind, k) for kind, k in writes
                if collection is None or self.collection_of[k] == collection]

    def conflicts(self, d, collection=None):
        if not self.detect_conflicts:
            return []
        t = self.txns[d]
        found = []
        for kind, k in self.plan(d, collection):
            if kind != 'insert':
                current = self.stored.get(k)
                # Conditional on the serial loaded (a version put back by
                # an abort has a new one).
                if current is None or current.serial != t.base[k].serial:
                    found.append(k)
        return found

    def apply_flush(self, d, only=None, collection=None):
        t = self.txns[d]
        for kind, k in self.plan(d, collection):
            if only is not None and k != only:
                continue
            if kind == 'insert':
                version = Version(t.view[k], self.token(),
                                  self.serial_of(k))
                self.stored[k] = version
                t.undo.append(('doc', k, None, version, FIELDS, version.fields))
                t.base[k] = version
                t.new.discard(k)
                t.dirty.discard(k)
            elif kind == 'update':
                current = self.stored.get(k)
                changed = [f for f in FIELDS
                           if t.view[k][f] != t.base[k].fields[f]]
                if self.detect_conflicts:
                    fields = dict(t.view[k])
                else:
                    fields = dict(current.fields) if current else None
                    for f in changed:
                        if fields is not None:
                            fields[f] = t.view[k][f]
                version = Version(t.view[k], self.token(), self.serial_of(k))
                if current is not None:
                    written = Version(fields, version.token, version.serial)
                    self.stored[k] = written
                    t.undo.append(
                        ('doc', k, current, written, changed, t.view[k]))
                t.base[k] = version
                t.dirty.discard(k)
            else:
                current = self.stored.pop(k, None)
                if current is not None:
                    t.undo.append(('doc', k, current, None, FIELDS, None))
                t.removed.discard(k)
                t.deleted.add(k)
        if only is None:
            # The flush saved every changed object it serialized, also
            # those whose change wrote nothing (a name set to itself):
            # they are no longer registered.
            t.dirty = {k for k in t.dirty if collection is not None
                       and self.collection_of[k] != collection}

    def flushing(self, d, action, collection=None):
        """Run ``action`` (which flushes ``d``, or its changes of
        ``collection``: a query) as the model says it goes.

        Returns ``(True, result)``, or ``(False, None)`` after the expected
        ``ConflictError`` (the transaction is then aborted).
        """
        if self.conflicts(d, collection):
            with pytest.raises(interfaces.ConflictError):
                action()
            self.end(d)
            self.model_abort(d)
            self.check_fresh(d)
            return False, None
        result = action()
        self.apply_flush(d, collection=collection)
        return True, result

    # -- the model of taking writes back --------------------------------
    def take_back(self, entries):
        self._take_back(entries)
        if self.detect_conflicts:
            for k, version in list(self.stored.items()):
                serial = self.serial_of(k)
                if version.serial != serial:
                    # Put back under a new serial.
                    self.stored[k] = Version(version.fields, version.token,
                                             serial)

    def _take_back(self, entries):
        loose = {}      # id -> {field: allowed values}: outcome not exact
        for entry in reversed(entries):
            if entry[0] == 'root':
                _, name, before, written = entry
                if self.root.get(name) == written:
                    if before is None:
                        del self.root[name]
                    else:
                        self.root[name] = before
                continue
            _, k, before, written, changed, document = entry
            current = self.stored.get(k)
            if k in loose:
                allowed = loose[k]
                for f in changed:
                    if written is not None and written.fields[f] in allowed[f]:
                        allowed[f].add(before.fields[f])
                continue
            if written is None:             # a removal
                if current is None:
                    self.stored[k] = before
            elif (current is not None and current.token == written.token
                  and (self.detect_conflicts or before is None
                       or current.fields == document)):
                if before is None:
                    del self.stored[k]
                else:
                    self.stored[k] = before
            elif current is not None and not self.detect_conflicts:
                # Written over by the other data manager since (or merged
                # with its fields when written): only the fields this one
                # wrote, still as written, may go back.
                allowed = {f: {current.fields[f]} for f in FIELDS}
                for f in changed:
                    if (before is not None
                            and current.fields[f] == written.fields[f]):
                        allowed[f].add(before.fields[f])
                loose[k] = allowed
        for k, allowed in loose.items():
            doc = CLIENT[self.dbname][self.collection_of[k]].find_one(
                {'_id': k})
            assert doc is not None, (
                'abort removed %s, which the other data manager wrote' % k)
            fields = document_fields(doc)
            for f in FIELDS:
                assert fields[f] in allowed[f], (
                    'abort of a document written over by the other data '
                    'manager: %s.%s is %r, allowed %r' % (
                        k, f, fields[f], allowed[f]))
            if fields != self.stored[k].fields:
                self.stored[k] = Version(fields, self.token(),
                                         self.serial_of(k))

    def model_abort(self, d, ended=True):
        t = self.txns[d]
        self.take_back(t.undo)
        for k in sorted(t.inserted, key=str):
            self.detach(d, k)
        self.txns[d] = Txn()
        if ended:
            self.set_floor(d)

    def model_commit(self, d):
        t = self.txns[d]
        self.apply_flush(d)
        self.committed |= t.inserted
        for k in sorted(t.deleted, key=str):
            self.committed.discard(k)
            self.detach(d, k)
        self.txns[d] = Txn()
        self.set_floor(d)

    # -- rules ------------------------------------------------------------
    @initialize(names=st.lists(NAMES, max_size=2))
    def committed_items(self, names):
        """Start with committed documents (most sequences need some)."""
        for n, name in enumerate(names):
            self.insert(0, name, other=bool(n % 2))
        self.commit(0)

    @rule(d=DMS, name=NAMES, other=st.booleans())
    def insert(self, d, name, other=False):
        obj = (self.other_class if other else Item)(name)
        k = self.new_id(obj)
        self.dms[d].insert(obj, oid=k)
        t = self.txns[d]
        self.handles[d][k] = obj
        t.view[k] = new_fields(name)
        t.new.add(k)
        t.inserted.add(k)
        t.joined = True

    @rule(d=DMS, root_name=ROOT_NAMES, name=NAMES)
    def set_root(self, d, root_name, name):
        obj = Item(name)
        self.dms[d].root[root_name] = obj
        k = obj._p_oid.id
        self.collection_of[k] = COLLECTION
        t = self.txns[d]
        self.handles[d][k] = obj
        t.view[k] = new_fields(name)
        t.new.add(k)
        t.inserted.add(k)
        t.joined = True
        self.apply_flush(d, only=k)
        t.undo.append(('root', root_name, self.root.get(root_name), k))
        self.root[root_name] = k

    @rule(d=DMS, pick=PICK, op=NAME_OPS)
    def set_name(self, d, pick, op):
        self.change(d, pick, op)

    @rule(d=DMS, pick=PICK, op=LIST_OPS)
    def change_list(self, d, pick, op):
        self.change(d, pick, op)

    @rule(d=DMS, pick=PICK, op=DICT_OPS)
    def change_dict(self, d, pick, op):
        self.change(d, pick, op)

    @rule(d=DMS, pick=PICK, op=SUB_OPS)
    def change_sub_object(self, d, pick, op):
        self.change(d, pick, op)

    def change(self, d, pick, op):
        ids = self.eligible(d)
        if not ids:
            return
        k = ids[pick % len(ids)]
        obj = self.obj(d, k)
        t = self.txns[d]
        try:
            apply_to_object(obj, op)
        except interfaces.ConflictError:
            # The first use of its collection in the transaction validated
            # it (lazily: no ``begin()`` validated it, as after a rollback
            # that aborted the data manager) and found its state stale: a
            # change made on it could never be written.
            stored = self.stored.get(k)
            assert self.detect_conflicts and (
                stored is None or stored.token != t.base[k].token), k
            self.abort(d)
            return
        t.view[k] = apply_to_fields(t.view[k], op)
        t.dirty.add(k)
        t.mutated.append(k)
        t.joined = True

    @rule(d=DMS, pick=PICK)
    def remove(self, d, pick):
        ids = self.eligible(d)
        if not ids:
            return
        k = ids[pick % len(ids)]
        obj = self.obj(d, k)
        self.dms[d].remove(obj)
        t = self.txns[d]
        t.joined = True
        if k in t.new:
            self.detach(d, k)
        else:
            t.removed.add(k)
            t.dirty.discard(k)

    @rule(pick=PICK, op=OPS)
    def change_taken_back(self, pick, op):
        if not self.pool:
            return
        entry = self.pool[pick % len(self.pool)]
        apply_to_object(entry[0], op)
        entry[1] = apply_to_fields(entry[1], op)

    @rule(d=DMS, pick=PICK)
    def insert_again(self, d, pick):
        if not self.pool:
            return
        obj, fields = self.pool.pop(pick % len(self.pool))
        k = self.new_id(obj)
        self.dms[d].insert(obj, oid=k)
        t = self.txns[d]
        self.handles[d][k] = obj
        t.view[k] = fields
        t.new.add(k)
        t.inserted.add(k)
        t.joined = True

    @rule(d=DMS, other=st.booleans())
    def count(self, d, other):
        cls = self.other_class if other else Item
        done, result = self.flushing(d, lambda: self.dms[d].count(
            cls, allow_global=True),
                                     cls._p_mongo_collection)
        if done:
            assert result == len([
                k for k in self.stored
                if self.collection_of[k] == cls._p_mongo_collection])

    @rule(d=DMS, name=NAMES, other=st.booleans())
    def find(self, d, name, other):
        cls = self.other_class if other else Item
        done, found = self.flushing(d, lambda: list(
            self.dms[d].find_objects(cls, {'name': name},
                                     allow_global=True)),
            cls._p_mongo_collection)
        if not done:
            return
        expected = {k for k, v in self.stored.items()
                    if v.fields['name'] == name
                    and self.collection_of[k] == cls._p_mongo_collection}
        assert {obj._p_oid.id for obj in found} == expected
        t = self.txns[d]
        for obj in found:
            k = obj._p_oid.id
            t.prefetched.pop(k, None)     # filled from the query's document
            mine = self.handles[d].setdefault(k, obj)
            assert obj is mine, 'identity map broken for %s' % k
            if k not in t.view:
                # Returned as loaded if it is (the identity map holds).
                version = self.seen_version(d, k, obj)
                t.view[k] = dict(version.fields)
                t.base[k] = version

    @rule(d=DMS)
    def prefetch(self, d):
        """Read ahead the documents of every stored object not loaded."""
        t = self.txns[d]
        ids = [k for k in sorted(self.stored, key=str)
               if k not in t.view and k not in t.prefetched]
        dm = self.dms[d]
        objects = dm.prefetch([self.ref(k) for k in ids])
        for k, obj in zip(ids, objects):
            assert self.handles[d].setdefault(k, obj) is obj, k
        # Read now: two or more ghosts whose documents the cache does not
        # hold (validated ones fill from the cache; one alone is read when
        # used).
        read = {oid.id for oid in dm._batches._documents}
        for k in ids:
            if k in read:
                t.prefetched[k] = self.stored[k]

    @rule(d=DMS)
    def flush(self, d):
        self.flushing(d, self.dms[d].flush)

    @rule(d=DMS)
    def savepoint(self, d):
        t = self.txns[d]
        snap = t.snapshot()
        snap.handles = dict(self.handles[d])
        t.savepoint = (self.tms[d].savepoint(), snap)

    @precondition(lambda self: any(t.savepoint for t in self.txns))
    @rule(d=DMS)
    def rollback(self, d):
        t = self.txns[d]
        if t.savepoint is None:
            return
        savepoint, snap = t.savepoint
        savepoint.rollback()
        if not snap.joined:
            if t.joined:
                # Joined after the savepoint: rolling back aborts it
                # (the ``transaction`` goes on).
                self.model_abort(d, ended=False)
            self.txns[d].savepoint = (savepoint, snap)
            return
        t.prefetched.clear()     # dropped by the rollback
        entries = t.undo[snap.undo:]
        del t.undo[snap.undo:]
        self.take_back(entries)
        since = t.inserted - snap.inserted
        for k in sorted(since, key=str):
            self.detach(d, k)
        changed_since = (set(t.mutated[snap.mutated:])
                         - snap.dirty - snap.new - since)
        del t.mutated[snap.mutated:]
        for k in list(t.view):
            if k in changed_since and k in t.inserted:
                # Reloaded at once (an abort takes it back with a state).
                t.view[k] = dict(self.stored[k].fields)
                t.base[k] = self.stored[k]
            elif k in changed_since:
                del t.view[k]
                t.base.pop(k, None)
            elif k in snap.view:
                t.view[k] = dict(snap.view[k])
                if k in snap.base:
                    t.base[k] = snap.base[k]
                else:
                    t.base.pop(k, None)
        for name in ('new', 'inserted', 'dirty', 'removed', 'deleted'):
            setattr(t, name, set(getattr(snap, name)))
        self.insert_again_after_rollback(d, snap)
        # A write taken back puts the version before it back under a new
        # serial, which the data manager now holds as loaded (also after
        # a later rollback to the same savepoint).
        for k in {entry[1] for entry in entries if entry[0] == 'doc'}:
            base, current = t.base.get(k), self.stored.get(k)
            if (base is not None and current is not None
                    and current.token == base.token):
                t.base[k] = current
                if snap.base.get(k) is base:
                    snap.base[k] = current

    def insert_again_after_rollback(self, d, snap):
        """New at the savepoint and removed since (taken back to the pool):
        inserted again with the state it had then; stored by the other
        data manager since: forgotten here."""
        t = self.txns[d]
        for k in sorted(snap.inserted, key=str):
            obj = snap.handles[k]
            if self.handles[d].get(k) is obj:
                continue
            for n, entry in enumerate(self.pool):
                if entry[0] is obj:
                    del self.pool[n]
                    self.handles[d][k] = obj
                    t.view[k] = dict(snap.view[k])
                    break
            else:
                for name in ('new', 'inserted', 'dirty'):
                    getattr(t, name).discard(k)
                t.view.pop(k, None)

    @rule(d=DMS)
    def commit(self, d):
        if self.conflicts(d):
            with pytest.raises(interfaces.ConflictError):
                self.tms[d].commit()
            self.end(d)
            self.model_abort(d)
        else:
            self.end(d, commit=True)
            self.model_commit(d)
        self.check_fresh(d)

    @rule(d=DMS)
    def abort(self, d):
        self.end(d)
        self.model_abort(d)
        self.check_fresh(d)

    # -- checks -----------------------------------------------------------
    def check_stored(self):
        db = CLIENT[self.dbname]
        docs = {doc['_id']: document_fields(doc)
                for collection in self.collections
                for doc in db[collection].find()}
        expected = {k: v.fields for k, v in self.stored.items()}
        assert docs == expected
        roots = {doc['name']: doc['ref'].id
                 for doc in db['persistence_root'].find()}
        assert roots == self.root

    def check_fresh(self, d):
        """After a commit/abort of ``d``: a fresh transaction loads stored."""
        self.check_stored()
        dm = self.dms[d]
        for k, obj in self.handles[d].items():
            assert obj._p_jar is dm, k
            if not (self.explicit and self.detect_conflicts):
                # Without begin() nothing would tell the data manager when
                # the next transaction starts: held objects become ghosts
                # (which reload from validated documents).
                assert obj._p_status == 'ghost', (k, obj._p_status)
        for k in sorted(self.stored, key=str):
            obj = self.handles[d].get(k)
            if obj is None:
                obj = self.handles[d][k] = dm.load(self.ref(k))
            assert object_fields(obj) == self.stored[k].fields, k
            if self.detect_conflicts:
                assert obj._p_serial == self.stored[k].serial.to_bytes(
                    8, 'big'), k
        for name, k in self.root.items():
            obj = dm.root[name]
            assert obj._p_oid.id == k
            if k in self.handles[d]:
                assert obj is self.handles[d][k], name
        # Nothing joined: this only ends the transaction.
        self.end(d)
        self.set_floor(d)

    @invariant()
    def consistent(self):
        self.check_stored()
        for d in range(2):
            for k, fields in self.txns[d].view.items():
                obj = self.handles[d][k]
                assert obj._p_jar is self.dms[d], k
                assert obj._p_status != 'ghost', k
                assert object_fields(obj) == fields, k
        for obj, fields in self.pool:
            assert obj._p_jar is None and obj._p_oid is None
            assert object_fields(obj) == fields


SETTINGS = settings(
    max_examples=200, stateful_step_count=30, deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow,
                           HealthCheck.filter_too_much])


class DetectingConflicts(TwoDataManagers):
    detect_conflicts = True


class CachingAcrossTransactions(DetectingConflicts):
    """Explicit transactions: loaded objects stay loaded across them."""
    explicit = True
    cache_size = 1

    def __init__(self):
        super().__init__()
        for dm in self.dms:
            # The object cache drops what it keeps of objects gone at the
            # end of every transaction that let one go.
            dm._cache.sweep_after = 0


TestLastWriterWins = TwoDataManagers.TestCase
TestLastWriterWins.settings = SETTINGS
TestDetectingConflicts = DetectingConflicts.TestCase
TestDetectingConflicts.settings = SETTINGS
TestCachingAcrossTransactions = CachingAcrossTransactions.TestCase
TestCachingAcrossTransactions.settings = settings(SETTINGS, max_examples=150)


# -- the same with a sharded collection ---------------------------------------
# The commands the data managers send to the sharded collection are
# recorded; after every step each single-document write (insert, update,
# replace, delete, also in a bulk write and as find-one-and-*), each undo
# and each read by ``_id`` must carry ``_id`` and the whole shard key, as a
# mongos needs to target one shard.  Queries by other fields are the
# machine's own global queries (``allow_global=True``).
TARGETED_WRITES = frozenset([
    'update_one', 'replace_one', 'delete_one', 'find_one_and_update',
    'find_one_and_replace', 'find_one_and_delete'])
READS = frozenset(['find', 'find_one'])
UNTARGETED_WRITES = frozenset(['update_many', 'delete_many'])


def untargeted(query):
    """What ``query`` misses to pin ``_id`` and the shard key in each of
    its ``$or`` clauses (``None`` if nothing)."""
    clauses = query['$or'] if set(query) == {'$or'} else [query]
    for clause in clauses:
        if '_id' not in clause or clause.get('shard') != SHARD:
            return clause
    return None


def reads_by_id(query):
    return bool(query) and ('_id' in query or any(
        '_id' in clause for clause in query.get('$or', ())))


def filter_of(args, kwargs):
    return args[0] if args else kwargs.get('filter')


class Recorded:
    """A collection that records the commands sent through it."""

    def __init__(self, coll, sent):
        self._coll = coll
        self._sent = sent

    def __getattr__(self, name):
        attr = getattr(self._coll, name)
        if not callable(attr):
            return attr

        def recording(*args, **kwargs):
            self._sent.append((name, args, kwargs))
            result = attr(*args, **kwargs)
            if name == 'with_options':
                result = Recorded(result, self._sent)
            return result
        return recording


def check_sent(name, args, kwargs):
    """Assert that the command ``name(*args, **kwargs)`` is targeted."""
    if name in TARGETED_WRITES:
        query = filter_of(args, kwargs)
        assert untargeted(query) is None, (name, query)
    elif name in READS:
        query = filter_of(args, kwargs)
        if reads_by_id(query):
            assert untargeted(query) is None, (name, query)
    elif name == 'insert_one':
        assert args[0].get('shard') == SHARD, (name, args[0])
    elif name == 'insert_many':
        assert all(doc.get('shard') == SHARD for doc in args[0]), name
    elif name == 'bulk_write':
        for request in args[0]:
            if isinstance(request, pymongo.InsertOne):
                assert request._doc.get('shard') == SHARD, request
            else:
                assert isinstance(request, (
                    pymongo.UpdateOne, pymongo.ReplaceOne,
                    pymongo.DeleteOne)), request
                assert untargeted(request._filter) is None, request
    else:
        assert name not in UNTARGETED_WRITES, (name, args)


class Sharded(TwoDataManagers):
    """The machine with its second collection sharded on ``shard``."""

    other_class = ShardedItem

    def __init__(self):
        super().__init__()
        self.sent = []
        for dm in self.dms:
            raw = dm._raw_collection

            def recorded(db_name, coll_name, raw=raw):
                coll = raw(db_name, coll_name)
                if coll_name == ShardedItem._p_mongo_collection:
                    return Recorded(coll, self.sent)
                return coll
            dm._raw_collection = recorded

    @invariant()
    def targeted(self):
        sent, self.sent[:] = list(self.sent), []
        for name, args, kwargs in sent:
            check_sent(name, args, kwargs)


class ShardedDetectingConflicts(Sharded):
    detect_conflicts = True


SHARDED_SETTINGS = settings(SETTINGS, max_examples=40)
TestShardedLastWriterWins = Sharded.TestCase
TestShardedLastWriterWins.settings = SHARDED_SETTINGS
TestShardedDetectingConflicts = ShardedDetectingConflicts.TestCase
TestShardedDetectingConflicts.settings = SHARDED_SETTINGS


# -- plain examples of what the machine checks ------------------------------
# (the defects it found are reproduced in tests/test_core_defects.py)
PERSON = 'tests.model.Person'


@pytest.fixture
def tm():
    manager = transaction.TransactionManager()
    yield manager
    manager.abort()


@pytest.mark.parametrize('detect', [True, False], ids=['detect', 'no-detect'])
def test_abort_keeps_the_other_data_managers_commit(make_dm, db, tm, detect):
    """Bug B: A flushes, B reads that and commits on top, A aborts."""
    mine = make_dm(detect_conflicts=detect)
    theirs = make_dm(detect_conflicts=detect, transaction_manager=tm)
    mine.root['p'] = Person('one')
    transaction.commit()
    mine.root['p'].name = 'flushed by A'
    mine.flush()
    person = theirs.root['p']
    assert person.name == 'flushed by A'
    person.name = 'committed by B'
    tm.commit()
    transaction.abort()
    assert db[PERSON].find_one()['name'] == 'committed by B'


def test_removed_object_can_be_stored_in_another_data_manager(
        dm, make_dm, db, tm):
    """Bug C: removed and committed, then changed and stored elsewhere."""
    dm.root['p'] = Person('x', visited=['USA'])
    transaction.commit()
    person = dm.root['p']
    dm.remove(person)
    transaction.commit()
    assert db[PERSON].count_documents({}) == 0
    person.name = 'y'
    person.visited.append('Peru')
    other = make_dm(transaction_manager=tm)
    other.insert(person)
    tm.commit()
    doc = db[PERSON].find_one()
    assert (doc['name'], doc['visited']) == ('y', ['USA', 'Peru'])
    person.name = 'z'
    tm.commit()
    assert db[PERSON].find_one()['name'] == 'z'
