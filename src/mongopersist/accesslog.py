"""A log of collection access, built on PyMongo's command monitoring.

``CollectionAccessLog`` is a ``pymongo.monitoring.CommandListener``: give
it to the client, and every command that reads or writes a collection is
logged (logger ``mongopersist.collection``, level ``DEBUG`` by default)
and counted, by database, collection and command::

    from mongopersist.accesslog import CollectionAccessLog

    access = CollectionAccessLog()
    client = pymongo.MongoClient(uri, event_listeners=[access])
    ...
    access.counts[('blog', 'posts', 'find')]     # how many finds

A line reads ``find blog.posts 0.8 ms``; with ``filters=True`` it also
shows the filter of the command, bounded (``limits.excerpt``): filters
hold application data, so they are left out unless asked for.  Names from
the server's side (database, collection) are bounded and escaped too.
Failed commands are logged at ``WARNING`` with the server's error code.

This replaces the original package's ``LoggingDecorator`` (which wrapped
collection methods and logged a traceback per call): command monitoring
sees every command of the client, whoever sends it, and costs nothing
when the logger is off (the counts are still kept).  The in-process
stand-in (mongomock) sends no commands, so it logs nothing.
"""
import collections
import logging
import threading

import pymongo.monitoring

from mongopersist import limits

LOG = logging.getLogger('mongopersist.collection')

#: The commands that read or write the documents of a collection, and the
#: field of the command naming the collection.
COLLECTION_COMMANDS = {
    'find': 'find', 'getMore': 'collection', 'aggregate': 'aggregate',
    'count': 'count', 'distinct': 'distinct', 'insert': 'insert',
    'update': 'update', 'delete': 'delete', 'findAndModify':
    'findAndModify', 'createIndexes': 'createIndexes', 'drop': 'drop',
}

# Where the filter of a command is.
_FILTER_FIELDS = ('filter', 'query')


class CollectionAccessLog(pymongo.monitoring.CommandListener):
    """Log and count the commands that access collections.

    :param logger: the logger (default ``mongopersist.collection``).
    :param level: the level of a successful command's line.
    :param filters: also log the filter of each command (bounded).
    """

    def __init__(self, logger=None, level=logging.DEBUG, filters=False):
        self.logger = logger or LOG
        self.level = level
        self.filters = filters
        #: ``(database, collection, command) -> count`` of the commands
        #: started.
        self.counts = collections.Counter()
        self._lock = threading.Lock()
        self._started = {}

    def reset(self):
        """Forget the counts."""
        with self._lock:
            self.counts.clear()

    def started(self, event):
        name = event.command_name
        field = COLLECTION_COMMANDS.get(name)
        if field is None:
            return
        collection = event.command.get(field)
        if not isinstance(collection, str):
            return
        database = event.database_name
        described = '%s %s.%s' % (name, limits.excerpt(database),
                                  limits.excerpt(collection))
        if self.filters:
            for key in _FILTER_FIELDS:
                if key in event.command:
                    described += ' %s' % limits.excerpt(
                        repr(event.command[key]))
                    break
        with self._lock:
            self.counts[(database, collection, name)] += 1
            self._started[self._key(event)] = described

    def _key(self, event):
        return (event.request_id, event.connection_id, event.operation_id)

    def succeeded(self, event):
        with self._lock:
            described = self._started.pop(self._key(event), None)
        if described is not None and self.logger.isEnabledFor(self.level):
            self.logger.log(self.level, '%s %.1f ms', described,
                            event.duration_micros / 1000.0)

    def failed(self, event):
        with self._lock:
            described = self._started.pop(self._key(event), None)
        if described is not None:
            code = None
            failure = event.failure
            if isinstance(failure, dict):
                code = failure.get('code')
            self.logger.warning('%s failed (code %s) %.1f ms', described,
                                code, event.duration_micros / 1000.0)
