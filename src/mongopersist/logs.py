"""What mongopersist logs, and under which names.

Every logger is ``mongopersist`` or one of its children: configure
``mongopersist`` to see them all, or a child for one kind of line.

``mongopersist.commit`` (DEBUG)
    One line per commit of a data manager: the documents written, by
    collection and kind (inserted, updated, deleted), root entries set or
    deleted, the round trips the commit took (its writes, the reads that
    checked versions, journal intents, the server transaction's commit),
    and whether a server transaction made it atomic.  Per commit, never
    per object; nothing is formatted unless DEBUG is enabled.
``mongopersist.conflict`` (INFO)
    Each conflict found: the document (database, collection, ``_id``),
    the class, the serial loaded and the serial stored (or that it was
    removed).
``mongopersist.transaction`` (INFO, WARNING)
    Each retry of ``Store.transaction()`` (and so of
    ``mongopersist.wsgi``) and of a Pyramid request run again by
    pyramid_retry, with the error's class and the wait; the attempt that
    was the last (INFO).  A data manager given back to the store with
    changes not committed (WARNING).
``mongopersist.undo`` (WARNING)
    Writes an abort took back after others could see them (no server
    transaction; inside one, DEBUG: nobody saw them), and each write it
    could not take back because somebody changed the document since.
``mongopersist`` (WARNING)
    The rest: the object cache could not be validated, a change stream
    failed, a journal intent could not be deleted, a stale shard-key
    reference.  ``mongopersist.collection`` is the optional access log
    (``mongopersist.accesslog``).

No line holds a stored value or a credential: names (databases,
collections, classes) are escaped and bounded (``limits.excerpt``), ids
and serials quoted and bounded (``limits.quote``), URIs masked
(``settings.mask_uri``).
"""
import logging

from mongopersist import limits

ROOT = logging.getLogger('mongopersist')
COMMIT = logging.getLogger('mongopersist.commit')
CONFLICT = logging.getLogger('mongopersist.conflict')
TRANSACTION = logging.getLogger('mongopersist.transaction')
UNDO = logging.getLogger('mongopersist.undo')

#: Collections named in one line, at most (then "and N more").
COLLECTIONS_SHOWN = 20


def _count(number, noun, plural=None):
    """``'1 document'``, ``'2 documents'``."""
    return '%d %s' % (number, noun if number == 1 else plural or noun + 's')


def _collection(ref):
    return '%s.%s' % (limits.excerpt(ref.database),
                      limits.excerpt(ref.collection))


def _by_collection(refs, shown=COLLECTIONS_SHOWN):
    """``'db.a 2, db.b 1'`` for oids ``refs`` (at most ``shown`` named)."""
    counts = {}
    for ref in refs:
        key = (ref.database, ref.collection)
        counts[key] = counts.get(key, 0) + 1
    parts = ['%s.%s %d' % (limits.excerpt(db), limits.excerpt(coll), n)
             for (db, coll), n in sorted(counts.items(), key=repr)]
    if len(parts) > shown:
        parts[shown:] = ['and %d more collections' % (len(parts) - shown)]
    return ', '.join(parts)


def commands(writes):
    """How many commands one ordered ``bulk_write`` of ``writes`` (one
    collection's writes, ``commit.DocumentWrite`` objects) sends, as the
    commit line counts them: one per run of writes of one kind (counted
    only when that line is logged; else 1)."""
    if not COMMIT.isEnabledFor(logging.DEBUG):
        return 1
    count = 1
    for before, after in zip(writes, writes[1:]):
        if before.kind != after.kind:
            count += 1
    return count


def committed(dm):
    """Log the commit of ``dm`` that just succeeded (DEBUG, one line),
    from its undo log: what this transaction wrote and did not take back
    (a savepoint rollback takes writes back)."""
    if not COMMIT.isEnabledFor(logging.DEBUG):
        return
    kinds = {}          # ref -> the kind of its writes, as the line says
    roots = 0
    for kind, ref, _, _ in dm._undo.entries:
        if kind == 'root':      # ``undo.ROOT``: a root entry set or deleted
            roots += 1
        elif kind == 'delete' or kinds.get(ref) != 'inserted':
            kinds[ref] = {'insert': 'inserted', 'update': 'updated',
                          'delete': 'deleted'}[kind]
    counts = {}
    for ref, kind in kinds.items():
        found = counts.setdefault((ref.database, ref.collection), {})
        found[kind] = found.get(kind, 0) + 1
    parts = []
    for (db, coll), found in sorted(counts.items(), key=repr):
        parts.append('%s.%s (%s)' % (
            limits.excerpt(db), limits.excerpt(coll), ', '.join(
                '%d %s' % (found[kind], kind)
                for kind in ('inserted', 'updated', 'deleted')
                if kind in found)))
    if len(parts) > COLLECTIONS_SHOWN:
        parts[COLLECTIONS_SHOWN:] = ['and %d more collections' % (
            len(parts) - COLLECTIONS_SHOWN)]
    server = dm._server_txn is not None
    COMMIT.debug(
        'Committed %r: %s written%s in %s, %s%s%s',
        dm, _count(len(kinds), 'document'),
        ' and %s' % _count(roots, 'root entry', 'root entries')
        if roots else '',
        _count(dm._round_trips + (1 if server else 0), 'round trip'),
        'in a server transaction' if server else 'no server transaction',
        ': ' if parts else '', '; '.join(parts))


def conflict(ref, error):
    """Log the conflict ``error`` (a ``ConflictError``) on the document
    ``ref`` (INFO)."""
    if not CONFLICT.isEnabledFor(logging.INFO):
        return
    cls = type(error.object).__name__ if error.object is not None else None
    if error.cur_state is None and error.current_serial is None:
        now = 'not stored any more (removed)'
    else:
        now = 'stored serial %s' % limits.quote(error.current_serial, 40)
    CONFLICT.info(
        'Conflict on %s _id=%s%s: loaded serial %s, %s', _collection(ref),
        limits.quote(ref.id), ' (%s)' % limits.excerpt(cls) if cls else '',
        limits.quote(error.start_serial, 40), now)


def conflict_among(refs):
    """Log a conflict the server reported on one of ``refs`` without
    saying which (INFO)."""
    CONFLICT.info('Conflict (server WriteConflict) on one of %d documents: '
                  '%s', len(refs), _by_collection(refs))


def retrying(attempt, attempts, error, delay, what='Store.transaction()'):
    """Log that attempt ``attempt`` (1 for the first) of ``attempts`` ended
    in the retryable ``error`` and runs again after ``delay`` seconds."""
    TRANSACTION.info(
        '%s: attempt %d of %d ended in %s; running it again in %.3f s',
        what, attempt, attempts, type(error).__name__, delay)


def given_up(attempts, error, what='Store.transaction()'):
    """Log that the last of ``attempts`` ended in the retryable
    ``error``, which is raised."""
    TRANSACTION.info(
        '%s: attempt %d of %d ended in %s too; no attempt left, it is '
        'raised', what, attempts, attempts, type(error).__name__)


def taken_back(dm, refs, server_transaction):
    """Log the writes of ``refs`` (oids) an abort or rollback took back:
    WARNING when others could see them (no server transaction), else
    DEBUG."""
    if not refs:
        return
    level = logging.DEBUG if server_transaction else logging.WARNING
    if not UNDO.isEnabledFor(level):
        return
    UNDO.log(level, 'Took back %s of %r %s: %s', _count(len(refs), 'write'),
             dm,
             'inside its server transaction (nobody saw them)'
             if server_transaction else
             '(no server transaction: others could read them until now)',
             _by_collection(refs))
