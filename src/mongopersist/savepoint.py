"""Savepoints: roll a data manager back to an earlier point of a transaction.

A savepoint remembers which objects were new, changed and removed, a copy of
the in-memory state of the changed and new objects, and how many writes the
transaction had made.  Rolling back puts the states back, forgets what was
inserted since, inserts again what was new and removed since, takes back
writes made since (flushes before queries, root entries) and turns objects
first changed since into ghosts, which reload.
"""
import copy
import io
import pickle

import persistent
import zope.interface
from transaction.interfaces import IDataManagerSavepoint

from mongopersist import metadata

# The data manager's per-transaction bookkeeping a savepoint puts back
# (the loaded documents, which the cache keeps across transactions, are
# put back from ``_replaced_docs``: those of the objects written since).
BOOKKEEPING = ('_new', '_inserted', '_registered', '_changed_sub',
               '_removed', '_deleted')


def _shared(obj):
    """Persistent objects stored on their own (loaded, ghosts or not
    stored yet) are referred to, never copied, as a stored reference."""
    return isinstance(obj, persistent.Persistent) and \
        not metadata.is_sub_object(type(obj))


class FrozenState:
    """A copy of an object's state, kept by a savepoint, that ``thaw()``
    turns into a new deep copy, sharing the persistent objects stored on
    their own with the state copied.

    The state is pickled in memory (it never leaves the process, and is
    never read from the database): the cost is that of the state, not of
    everything the data manager holds.  A state pickle cannot copy (a
    class it cannot name, say) is deep-copied instead.
    """

    __slots__ = ('_data', '_objects', '_copy')

    def __init__(self, state):
        objects = []
        buffer = io.BytesIO()
        pickler = _StatePickler(buffer, objects)
        try:
            pickler.dump(state)
        except (pickle.PicklingError, TypeError, AttributeError):
            self._data = None
            self._objects = None
            self._copy = _deep_copy(state)
        else:
            self._data = buffer.getvalue()
            self._objects = objects
            self._copy = None

    def thaw(self):
        if self._data is None:
            return _deep_copy(self._copy)
        return _StateUnpickler(io.BytesIO(self._data), self._objects).load()


# Persistent ids by subclassing: Python 3.13.0 refuses to set them as
# attributes of a pickler (``persistent_id`` is read-only there).
class _StatePickler(pickle.Pickler):
    """Pickles a state; ``_shared`` objects become indexes in ``objects``."""

    def __init__(self, file, objects):
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self._objects = objects

    def persistent_id(self, obj):
        if _shared(obj):
            self._objects.append(obj)
            return len(self._objects) - 1
        return None


class _StateUnpickler(pickle.Unpickler):
    """Unpickles a state, the ``_shared`` objects taken from ``objects``."""

    def __init__(self, file, objects):
        super().__init__(file)
        self._objects = objects

    def persistent_load(self, pid):
        return self._objects[pid]


def _deep_copy(state):
    """``copy.deepcopy`` of ``state``, but objects ``_shared`` picks."""
    memo = {}
    stack = [state]
    seen = set()
    while stack:
        value = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if _shared(value):
            memo[id(value)] = value
            continue
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, (list, tuple, set, frozenset)):
            stack.extend(value)
        elif isinstance(value, persistent.Persistent):
            stack.append(type(value).__getstate__(value))
        elif hasattr(value, '__dict__'):
            stack.append(vars(value))
    return copy.deepcopy(state, memo)


@zope.interface.implementer(IDataManagerSavepoint)
class Savepoint:
    """The state of a ``MongoDataManager`` at one point of a transaction."""

    def __init__(self, jar):
        self.jar = jar
        self._saved = {name: dict(getattr(jar, name)) for name in BOOKKEEPING}
        self._undo_length = len(jar._undo)
        self._replaced_length = len(jar._replaced_docs)
        self._states = {}
        for obj in (list(jar._registered.values())
                    + list(jar._new.values())):
            if obj._p_status != 'ghost':
                self._states[id(obj)] = (obj, FrozenState(
                    type(obj).__getstate__(obj)))

    def rollback(self):
        """Put the data manager back to the state of this savepoint."""
        jar = self.jar
        written_since = jar._undo.refs_since(self._undo_length)
        put_back = jar._undo_writes(since=self._undo_length)
        saved = self._saved
        inserted_since = [obj for ref, obj in jar._inserted.items()
                          if ref not in saved['_inserted']]
        changed_since = [obj for key, obj in jar._registered.items()
                         if key not in saved['_registered']]
        deleted_since = {ref: obj for ref, obj in jar._deleted.items()
                         if ref not in saved['_deleted']}
        # The documents loaded stay as they are now (objects first loaded
        # since keep them; objects found stale since, validating their
        # collection, stay forgotten or reloaded), but for the documents
        # this transaction wrote since: those are the savepoint's again
        # (then what the undo put back).  Work on those only: the cache
        # holds documents across transactions, of every object it keeps.
        docs = jar._loaded_docs
        replaced = jar._replaced_docs
        before = {}
        for ref, doc in replaced[self._replaced_length:]:
            # The document before the first write since: the savepoint's.
            before.setdefault(ref, doc)
        del replaced[self._replaced_length:]
        for ref in written_since:
            doc = before.get(ref)
            if doc is not None:
                docs[ref] = doc
            else:
                docs.pop(ref, None)
        jar._forget_new(inserted_since)
        for name, value in saved.items():
            setattr(jar, name, dict(value))
        self._insert_again(jar)
        for ref, doc in put_back.items():
            # Put back under a new serial: that is what is stored now.
            if ref in jar._loaded_docs:
                jar._loaded_docs[ref] = doc
        for ref, obj in deleted_since.items():
            if obj._p_jar is jar:
                # Removed since: its document is back (unless it was
                # inserted since too, and taken back with its insert).
                jar._cache[ref] = obj
        jar.state_generation += 1
        # Writes since the savepoint were taken back; written objects are
        # no longer new, so what was new at the savepoint is new again.
        for obj, state in self._states.values():
            if obj._p_jar is not jar:
                continue        # stored by another data manager since
            type(obj).__setstate__(obj, state.thaw())
            obj._p_changed = True
        # Written since (and saved, so no longer registered) counts as
        # changed since; a removal put back leaves the object as it was.
        changed_since += [
            jar._cache.get(ref) for ref in written_since
            if not (ref in deleted_since and ref in put_back)]
        for obj in changed_since:
            # Objects new or changed at the savepoint got their state back
            # above; the others reload what is stored.
            if (obj is not None and obj._p_jar is jar
                    and id(obj) not in self._states):
                obj._p_invalidate()
                # It reloads what is stored, not a document kept from
                # before (a write since may not have been taken back).
                jar._loaded_docs.pop(obj._p_oid, None)
                if jar._inserted.get(obj._p_oid) is obj:
                    # Inserted by this transaction: if it aborts, the
                    # object is taken back keeping its state, so load it
                    # now (what the insert wrote).
                    obj._p_activate()

    @staticmethod
    def _insert_again(jar):
        """New at the savepoint, removed since: ``remove`` of an object
        never written took its insert back (no jar, no oid); insert it
        again under its oid.  One stored by another data manager since is
        that one's: forget it here."""
        for ref, obj in list(jar._inserted.items()):
            if obj._p_jar is jar:
                continue
            if obj._p_jar is None:
                obj._p_jar = jar
                obj._p_oid = ref
                jar._cache[ref] = obj
            else:
                del jar._inserted[ref]
                jar._new.pop(ref, None)
                jar._registered.pop(id(obj), None)
