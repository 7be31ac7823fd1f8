"""When no server answers: one error that says where, and how long.

PyMongo waits ``serverSelectionTimeoutMS`` (30 s unless set) for a
suitable server, then raises ``ServerSelectionTimeoutError`` with a
dump of its topology.  ``unreachable`` turns it into
``interfaces.ServerUnreachableError``: the hosts and what each answered,
the wait, and where to set it (``connect(uri,
serverSelectionTimeoutMS=...)``,
``mongopersist.client.serverSelectionTimeoutMS`` in settings, or the
URI).  Hosts are ``host:port`` (no user information:
no password); what they answered is bounded and scrubbed of the URI's
credentials when the URI is known.

``translated`` is the context manager the places where an application
meets the error use (``Store.transaction()``, ``Store.ensure_indexes()``,
the web layers, the command line).
"""
import contextlib
import re

from pymongo.errors import ServerSelectionTimeoutError

from mongopersist import interfaces, limits, settings

#: The client option that sets the wait.
WAIT_OPTION = 'serverSelectionTimeoutMS'

#: Where the wait is set (said by every message).
WHERE = ('the wait is the client option %s: connect(uri, %s=5000), '
         'mongopersist.client.%s = 5000 in settings, or ?%s=5000 in the URI'
         % ((WAIT_OPTION,) * 4))

#: Hosts named in one message, at most.
HOSTS_SHOWN = 10

# PyMongo's reason for a host, after "host:port: " and before its
# "(configured timeouts: ...)".
_TIMEOUTS = re.compile(r'\s*\(configured timeouts:[^)]*\)')


def _wait(client):
    """The client's wait in seconds, or ``None`` if it has none."""
    options = getattr(client, 'options', None)
    wait = getattr(options, 'server_selection_timeout', None)
    return wait if isinstance(wait, (int, float)) else None


def _hosts(client):
    """``[(address, what it answered, failed)]`` of the servers ``client``
    knows (``failed``: it could not be reached)."""
    try:
        servers = client.topology_description.server_descriptions()
    except Exception:
        return []
    found = []
    for address, server in sorted(servers.items(), key=repr):
        host, port = address if isinstance(address, tuple) else (address, '')
        name = ('[%s]:%s' if ':' in str(host) else '%s:%s') % (host, port)
        error = server.error
        if error is None:
            found.append((name, server.server_type_name, False))
            continue
        reason = str(error)
        for prefix in ('%s:%s: ' % (host, port), name + ': '):
            if reason.startswith(prefix):
                reason = reason[len(prefix):]
        found.append((name, _TIMEOUTS.sub('', reason), True))
    return found


def unreachable(client, error, uri=None, what='', where=WHERE):
    """The ``ServerUnreachableError`` for PyMongo's ``error`` raised by
    ``client``.  ``uri``: the client's URI, whose credentials are scrubbed
    from the text; ``what``: what could not be reached (``'the store in
    DIR'``), said after the hosts; ``where``: where the wait is set."""
    wait = _wait(client)
    hosts = _hosts(client)
    if hosts and not all(failed for _, _, failed in hosts):
        head = 'No suitable MongoDB server found'
    else:
        head = 'No MongoDB server answered'
    if wait is not None:
        head += ' within %g s (%s=%d)' % (wait, WAIT_OPTION,
                                          round(wait * 1000))
    if hosts:
        shown = ['%s: %s' % (limits.excerpt(name, 100),
                             limits.excerpt(reason, 150))
                 for name, reason, _ in hosts[:HOSTS_SHOWN]]
        if len(hosts) > HOSTS_SHOWN:
            shown.append('and %d more' % (len(hosts) - HOSTS_SHOWN))
        head += ' at %s' % '; '.join(shown)
    else:
        head += ': %s' % limits.excerpt(str(error).split(', Timeout:')[0])
    if what:
        head += ' (%s)' % what
    message = '%s.  Is it running, and reachable from here?  %s.' % (
        head, where[0].upper() + where[1:])
    if uri:
        message = settings.scrub(message, uri)
    return interfaces.ServerUnreachableError(message, cause=error)


@contextlib.contextmanager
def translated(client, uri=None, what=''):
    """Raise PyMongo's ``ServerSelectionTimeoutError`` from the block as
    ``unreachable(...)`` (PyMongo's own traceback suppressed; it is the
    new error's ``cause``).  One already translated passes as it is."""
    try:
        yield
    except interfaces.ServerUnreachableError:
        raise
    except ServerSelectionTimeoutError as error:
        raise unreachable(client, error, uri, what) from None
