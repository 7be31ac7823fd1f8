"""Conflict handlers: how a commit protects documents others changed.

A handler decides what the write of a changed document is conditional on
and what happens when that condition fails.  The data manager asks it:

* ``serial_of(doc)``: the serial of a document as loaded;
* ``stamp(doc, loaded)``: add the serial to a document about to be written;
* ``write_filter(oid, loaded)``: the filter the write is conditional on;
* ``serial_update(update, doc)``: how an update stores the serial;
* ``resolve(obj, orig, current, new)``: what to write after a lost race
  (a new document) or ``None`` to give up with a ``ConflictError``;
* ``undo_filter(oid, written)``: what taking back a write on abort is
  conditional on (the stored document must still be the one written);
* ``undo_document(before, written)``: the document an abort puts back.

The check and the write are one operation: the filter of the update holds
``_id`` and the serial that was loaded, so a concurrent write makes the
update match nothing instead of overwriting it.
"""
from bson.int64 import Int64

from mongopersist import interfaces, limits, metadata
from mongopersist.serialize import PY_RESTORED, PY_SERIAL


def stored_serial(doc):
    """Return the ``_py_serial`` of a stored document (0 if it has none).

    Raises ``StoredDataError`` if the stored serial is not an integer.
    """
    serial = doc.get(PY_SERIAL, 0)
    if type(serial) is int or type(serial) is Int64:
        if serial >= 0:
            return serial
    raise interfaces.StoredDataError(
        'The stored %s must be a non-negative integer, not %s %s' % (
            PY_SERIAL, type(serial).__name__, limits.quote(serial)),
        path=PY_SERIAL)


def restored_version(doc):
    """The serial a version was written under, if ``doc`` is that version
    as an abort put it back (marked ``PY_RESTORED`` with its serial now),
    else ``None``.  Any later write of the document removes the mark (or,
    without conflict detection, bumps the serial past it)."""
    mark = doc.get(PY_RESTORED)
    if (type(mark) is list and len(mark) == 2
            and all(type(n) in (int, Int64) for n in mark)
            and mark[1] == doc.get(PY_SERIAL)):
        return mark[0]
    return None


class NoCheckConflictHandler:
    """Last writer wins: documents carry no serial and writes are plain."""

    detects_conflicts = False

    def __init__(self, jar=None):
        self._jar = jar

    def serial_of(self, doc):
        return (doc or {}).get(PY_SERIAL, 0)

    def stamp(self, doc, loaded):
        if loaded is not None and PY_SERIAL in loaded:
            # A document a conflict-detecting peer wrote: bump its serial,
            # so that the peer's conditional writes and its object cache
            # (``mongopersist.cache``) see that it changed.
            doc[PY_SERIAL] = self.serial_of(loaded) + 1
        return doc

    def write_filter(self, oid, loaded):
        return metadata.document_filter(oid)

    def serial_update(self, update, doc):
        """Add the serial of ``doc`` (stamped) to ``update``, the
        ``$set``/``$unset`` of a stored document: an atomic increment.
        Two writers that loaded one version never store one serial for two
        contents (a conflict-detecting cache would take the second for the
        first); the commit learns the serial from what it replaced."""
        if PY_SERIAL in doc:
            update['$inc'] = {PY_SERIAL: 1}

    def undo_filter(self, oid, written):
        """The stored document still holds every field as ``written``.

        Without serials, the content is the only way to tell that nobody
        wrote the document since.
        """
        query = metadata.document_filter(oid)
        for key, value in written.items():
            if key != '_id':
                query[key] = value
        return query

    def undo_document(self, before, written):
        """The version stored before the write, as it was."""
        return before

    def resolve(self, obj, orig, current, new):
        return None


class SimpleSerialConflictHandler(NoCheckConflictHandler):
    """Every write bumps ``_py_serial``; a lost race raises ConflictError."""

    detects_conflicts = True
    #: Whether a commit reads the serials of the documents it updates
    #: before writing them.  The conditional writes decide conflicts on
    #: their own; a handler that resolves them needs the current version
    #: first (commits that delete read in any case).
    reads_before_writing = False

    def stamp(self, doc, loaded):
        doc[PY_SERIAL] = self.serial_of(loaded) + 1
        return doc

    def write_filter(self, oid, loaded):
        query = metadata.document_filter(oid)
        # ``None`` also matches documents written before serials were on.
        query[PY_SERIAL] = (loaded or {}).get(PY_SERIAL)
        return query

    def serial_update(self, update, doc):
        """Set the serial stamped: the write is conditional on the one
        loaded, so no other write stores it."""
        update.setdefault('$set', {})[PY_SERIAL] = doc[PY_SERIAL]

    def undo_filter(self, oid, written):
        """The stored document still carries the serial written."""
        query = metadata.document_filter(oid)
        query[PY_SERIAL] = written.get(PY_SERIAL)
        return query

    def undo_document(self, before, written):
        """The version before the write, under a serial never used yet.

        Putting back the old serial would let a writer that loaded the
        taken-back version overwrite a later write that reuses its serial
        (A-B-A); one more than the serial written is new.  The document
        is marked as that version put back (``PY_RESTORED``: the serial
        it was written under, the one it is put back under), so that the
        abort of the transaction that wrote it, if that one did not end
        yet, still knows it for its write (``restored_version``).
        """
        doc = dict(before)
        serial = doc[PY_SERIAL] = self.serial_of(written) + 1
        version = restored_version(before)
        if version is None:
            version = self.serial_of(before)
        doc[PY_RESTORED] = [version, serial]
        return doc


class ResolvingSerialConflictHandler(SimpleSerialConflictHandler):
    """Like the simple handler, but lets objects merge concurrent changes.

    After a lost race, the ``_p_resolveConflict(orig, current, new)``
    method of the object's class is called with the three instance
    states; the merged state it returns is written with a fresh
    conditional write.  The resolver is the class's (as in ZODB), never
    an attribute of the instance: stored fields never set ``_p_`` names.
    """

    reads_before_writing = True

    def resolve(self, obj, orig, current, new):
        # Found on the class and bound as attribute lookup would, never
        # taken from the instance.
        resolver = metadata.declared_attribute(
            type(obj), '_p_resolveConflict')
        if resolver is None or current is None:
            return None
        get = getattr(type(resolver), '__get__', None)
        if get is not None:
            resolver = get(resolver, obj, type(obj))
        reader = self._jar._reader
        # The current document is somebody else's: read it as safely as
        # any load, and name it in errors about its stored data.
        with self._jar._reading(obj._p_oid):
            states = (reader.get_state(orig or {}, None),
                      reader.get_state(current, None),
                      reader.get_state(new, None))
        try:
            merged = resolver(*states)
        except interfaces.ConflictError:
            return None
        type(obj).__setstate__(obj, merged)
        return merged


HANDLERS = {
    'none': NoCheckConflictHandler,
    'simple': SimpleSerialConflictHandler,
    'resolving': ResolvingSerialConflictHandler,
}
