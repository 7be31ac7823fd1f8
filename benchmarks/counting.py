"""Counting the round trips a scenario makes to MongoDB, and their time.

On a real server (``MONGODB_URI``) PyMongo command monitoring counts the
commands that reach the server, batches included, and sums their
durations.  On mongomock, which sends no commands, the public write and read
methods of its ``Collection`` are wrapped instead: one outermost call counts
as one round trip (calls mongomock makes internally are not counted again),
and the time spent inside them and in its cursors is the backend's time.

A PyMongo bulk write or ``insert_many`` is one round trip as long as it fits
in one batch (100,000 operations, 48 MB) and, for ``bulk_write``, holds one
kind of operation; on a real server any split shows in the count.
"""
import contextlib
import functools
import threading
import time

WRITE_COMMANDS = frozenset(['insert', 'update', 'delete', 'findAndModify'])
READ_COMMANDS = frozenset(['find', 'getMore', 'aggregate', 'count',
                           'distinct'])

MONGOMOCK_WRITES = (
    'insert_one', 'insert_many', 'update_one', 'update_many', 'replace_one',
    'delete_one', 'delete_many', 'bulk_write', 'find_one_and_update',
    'find_one_and_replace', 'find_one_and_delete')
MONGOMOCK_READS = (
    'find', 'find_one', 'count_documents', 'estimated_document_count',
    'aggregate', 'distinct')


class RoundTrips:
    """Write and read round trips, and backend seconds, since ``reset``."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.writes = 0
        self.reads = 0
        self.seconds = 0.0

    def count(self, kind):
        if kind == 'write':
            self.writes += 1
        elif kind == 'read':
            self.reads += 1


# The round trips being counted on a real server (innermost last), and
# whether the one command listener counting them is registered.
_COUNTING = []
_LISTENING = []


def _command_listener():
    from pymongo import monitoring

    def counts():
        return _COUNTING[-1] if _COUNTING else None

    class Listener(monitoring.CommandListener):
        def started(self, event):
            current = counts()
            if current is None:
                return
            if event.command_name in WRITE_COMMANDS:
                current.count('write')
            elif event.command_name in READ_COMMANDS:
                current.count('read')

        def succeeded(self, event):
            current = counts()
            if current is not None:
                current.seconds += event.duration_micros / 1e6

        failed = succeeded

    return Listener()


def listen():
    """Register the command listener (once): clients created afterwards
    report their commands to the ``counting`` block running then.  Call
    it before creating a client that is measured on a real server."""
    if not _LISTENING:
        from pymongo import monitoring
        monitoring.register(_command_listener())
        _LISTENING.append(True)


def _counted(method, kind, counts, local):
    """Wrap a mongomock method: count outermost calls, add up their time."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        depth = getattr(local, 'depth', 0)
        if depth:
            return method(*args, **kwargs)
        counts.count(kind)
        local.depth = 1
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            counts.seconds += time.perf_counter() - start
            local.depth = 0
    return wrapper


def _patch_mongomock(counts):
    """Wrap mongomock's collections and cursors; return how to undo it."""
    from mongomock.collection import Collection, Cursor

    from mongopersist import testing
    # Wrap after the shims of mongopersist.testing are in place, so that
    # undoing this wrapping keeps them.
    testing.patch_mongomock()
    local = threading.local()
    saved = []
    targets = [(Collection, name, 'write') for name in MONGOMOCK_WRITES]
    targets += [(Collection, name, 'read') for name in MONGOMOCK_READS]
    targets += [(Cursor, '__next__', 'time')]
    for cls, name, kind in targets:
        method = cls.__dict__.get(name)
        if method is None:
            continue
        saved.append((cls, name, method))
        setattr(cls, name, _counted(method, kind, counts, local))

    def undo():
        for cls, name, method in saved:
            setattr(cls, name, method)
    return undo


@contextlib.contextmanager
def counting(real_server):
    """Count round trips while the block runs; yields a ``RoundTrips``.

    With ``real_server`` the commands of clients created after ``listen()``
    (called here, if not before) are counted: PyMongo adds listeners to
    new clients only.
    """
    counts = RoundTrips()
    if real_server:
        listen()
        _COUNTING.append(counts)
        try:
            yield counts
        finally:
            _COUNTING.remove(counts)
        return
    undo = _patch_mongomock(counts)
    try:
        yield counts
    finally:
        undo()
