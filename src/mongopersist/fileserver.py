"""``file://`` stores: a directory served by SecantusDB in its own process.

``mongopersist.connect('file://var/data', database='blog')`` keeps the
application's documents in the directory ``var/data``, through a MongoDB
wire-protocol server over WiredTiger: SecantusDB (the ``server`` extra,
``pip install 'mongopersist[server]'``).  Its code is GPL-2.0-only, so it
never runs in the application's process: this module starts it with
``python -m secantus`` and talks to it over the wire, as to any MongoDB.

The server is bound to 127.0.0.1 on a free port, advertises a one-member
replica set (so PyMongo opens sessions and server transactions work), and
syncs WiredTiger's log on every commit (``--sync-on-commit``): a commit
that returned survives a crash of the application and of the server.

**Sharing.**  WiredTiger lets one process at a time open a directory, so
every process that uses it shares one server.  ``lease(path)`` finds the
server of ``path`` or starts it, under the lock file
``mongopersist-server.lock``; the server's address and process ids are
recorded in ``mongopersist-server.json`` (written whole, then renamed into
place).  A record whose server does not answer, or answers with another
process id, is stale: it is replaced by a new server, on the same port
when that port is free (so that clients of the old one reconnect).  A
directory whose WiredTiger files another process holds (a server not
started here) is refused with ``ConfigurationError``.

**Lifecycle.**  Each lease holds a shared lock on
``mongopersist-server.users`` until ``Lease.close()`` (``Store.close()``)
or until its process ends, however it ends: the system drops the lock of a
killed process.  A small watcher process (this module, ``python -m
mongopersist.fileserver watch``; it imports no GPL code) starts the server
and stays with it: it stops the server cleanly ``LINGER`` seconds after the
last lease went (so that the next command or restart within that time finds
it running), restarts it on the same port if it dies while leases remain,
and stops it on ``SIGTERM`` (``stop(path)``, ``python -m
mongopersist.fileserver stop DIR``).  On Linux the server is killed with its
watcher (elsewhere, the next lease finds a server without a watcher and
restarts it).  Nothing else is left running.

The server listens on loopback without authentication: while it runs,
any process of any user of this machine can connect to its port.  Use
``file://`` stores for development, tests, demos and single-user
applications; use a ``mongodb://`` deployment with authentication
otherwise (``docs/applications.rst``).

Run ``python -m mongopersist.fileserver serve DIR`` to serve a directory in
the foreground and print its ``mongodb://`` URI (for ``mongodump``, a
shell, or to move the store to a replica set).
"""
import argparse
import contextlib
import errno
import importlib.util
import json
import os
import select
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.parse

from mongopersist.interfaces import ConfigurationError

try:
    import fcntl
except ImportError:     # pragma: no cover (Windows)
    fcntl = None

#: The URI scheme of directory stores (``settings.FILE_SCHEME``).
SCHEME = 'file://'

#: The module run as the server (from the ``server`` extra).
SERVER_MODULE = 'secantus'
EXTRA = "pip install 'mongopersist[server]'"

#: Files this module keeps in the directory, next to WiredTiger's.
LOCK_FILE = 'mongopersist-server.lock'
RECORD_FILE = 'mongopersist-server.json'
USERS_FILE = 'mongopersist-server.users'
LOG_FILE = 'mongopersist-server.log'
CONFIG_FILE = 'mongopersist-server.toml'
#: A directory holding one of these (a file) is a store already: one this
#: module served, or one SecantusDB made.  (Not any WiredTiger directory:
#: a mongod's is not SecantusDB's to open.)
STORE_MARKERS = (LOCK_FILE, RECORD_FILE, 'secantus_collections.wt')

HOST = '127.0.0.1'
#: Seconds the server runs on after its last lease went.
LINGER = 10.0
#: Seconds to wait for the lock of the directory and for a server to start.
START_TIMEOUT = 60.0
#: Seconds a server gets to stop cleanly before it is killed (its commits
#: are in its synced log either way; a killed one recovers at its next
#: start).
STOP_TIMEOUT = 10.0
#: Seconds a recorded server that does not answer gets to let go of the
#: directory (it may be ending) before the directory counts as held.
RELEASE_WAIT = 5.0
#: Seconds after which a SIGTERM the server seems not to have taken is sent
#: again (see ``terminate``).
RESEND = 2.0
#: How often the watcher looks at its server and the leases (seconds).
POLL = 0.2
#: Restarts of a server that keeps dying within ``RESTART_WINDOW`` seconds
#: of its start, at most; then the watcher gives up.
RESTARTS = 3
RESTART_WINDOW = 30.0
#: The interpreter the watcher and the server run with.
PYTHON = sys.executable

_SHOWN = 200


def _shown(path):
    """``path`` quoted for a message, bounded."""
    text = repr(path)
    if len(text) > _SHOWN:
        text = '%s...(%d more)' % (text[:_SHOWN], len(text) - _SHOWN)
    return text


def _error(path, message, setting='uri'):
    return ConfigurationError(
        'file:// store %s: %s' % (_shown(path), message), setting)


# -- the URI -----------------------------------------------------------------

def is_file_uri(uri):
    """Whether ``uri`` names a directory store (``file://...``)."""
    return isinstance(uri, str) and uri.startswith(SCHEME)


def directory(uri, base=None):
    """The absolute directory a ``file://`` URI names.

    ``file:///abs/dir`` is absolute; ``file://relative/dir`` is relative to
    ``base`` (default: the current directory).  Percent-escapes are decoded
    (``%20`` is a space, ``%25`` a percent sign), except ``%2F``: a
    directory name holds no slash (and a relative path does not become
    absolute once decoded).  A query or fragment (``?``, ``#``) is
    refused, as is an empty path.  Nothing is touched.
    """
    if not is_file_uri(uri):
        raise ConfigurationError(
            'a directory store URI starts with %s, not %s'
            % (SCHEME, _shown(uri)), 'uri')
    raw = uri[len(SCHEME):]
    if '?' in raw or '#' in raw:
        raise ConfigurationError(
            '%s URIs take no options (? or #): %s; give the store\'s '
            'settings as settings, and write a ? or # in the directory '
            'name as %%3F or %%23' % (SCHEME, _shown(uri)), 'uri')
    if '%2f' in raw.lower():
        raise ConfigurationError(
            'a directory name holds no slash: write / rather than %%2F in '
            '%s' % _shown(uri), 'uri')
    try:
        path = urllib.parse.unquote(raw, errors='strict')
    except UnicodeDecodeError:
        raise ConfigurationError(
            'the path of %s is not UTF-8 once its %%-escapes are decoded'
            % _shown(uri), 'uri') from None
    if not path.strip('/') and path != '/':
        raise ConfigurationError(
            '%s names no directory: write file:///absolute/path or '
            'file://relative/path' % _shown(uri), 'uri')
    if '\x00' in path:
        raise ConfigurationError(
            'the path of %s holds a NUL character' % _shown(uri), 'uri')
    return os.path.abspath(os.path.join(base or os.getcwd(), path))


# -- leases ------------------------------------------------------------------

class Lease:
    """The use of a directory's server by this process.

    ``uri`` is the ``mongodb://`` URI of the server; ``client()`` makes a
    ``pymongo.MongoClient`` for it.  The server runs at least as long as a
    lease is open; ``close()`` (or the end of the process) gives the lease
    back and closes the clients it made.
    """

    def __init__(self, path, record, users_fd):
        self.path = path
        self.host = record['host']
        self.port = record['port']
        #: The server's process id.
        self.pid = record['pid']
        self.uri = server_uri(record)
        self._users_fd = users_fd
        self._clients = []

    def __repr__(self):
        state = 'closed' if self.closed else self.uri
        return '<Lease of %s: %s>' % (self.path, state)

    @property
    def closed(self):
        return self._users_fd is None

    def client(self, **options):
        """A ``pymongo.MongoClient`` for the server (closed with the
        lease); ``options`` are ``MongoClient``'s."""
        import pymongo
        if self.closed:
            raise ValueError('%r is closed' % self)
        client = pymongo.MongoClient(self.uri, **options)
        self._clients.append(client)
        return client

    def close(self):
        """Close the clients made here and give the lease back."""
        clients, self._clients = self._clients, []
        for client in clients:
            client.close()
        fd, self._users_fd = self._users_fd, None
        if fd is not None:
            # Closing, not unlocking: a child forked with this descriptor
            # keeps the shared lock (and the server) until it ends.
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def server_uri(record):
    """The ``mongodb://`` URI of a recorded server."""
    return 'mongodb://%s:%d/?directConnection=true' % (
        record['host'], record['port'])


def lease(path, linger=None, timeout=None, sync_on_commit=True):
    """Return a ``Lease`` of the server of directory ``path``, started if
    none runs.

    :param linger: seconds a server started here runs on after its last
        lease went (default ``LINGER``).
    :param timeout: seconds to wait for the directory's lock and for the
        server to start (default ``START_TIMEOUT``).
    :param sync_on_commit: a server started here syncs its log at every
        commit (what makes commits durable; off only for throw-away test
        stores).

    A missing ``server`` extra, a path that is not a directory or cannot be
    created or written, a directory that holds other files, one whose
    WiredTiger files another process holds, and a server that does not
    start each raise ``ConfigurationError`` naming the directory.
    """
    path = os.path.abspath(path)
    linger = LINGER if linger is None else linger
    timeout = START_TIMEOUT if timeout is None else timeout
    check_available(path)
    _prepare(path)
    deadline = time.monotonic() + timeout
    lock_fd = _open(path, LOCK_FILE)
    users_fd = None
    try:
        _flock(lock_fd, fcntl.LOCK_EX, deadline, path)
        users_fd = _open(path, USERS_FILE)
        # Only a stopping watcher holds it exclusively, and it holds the
        # directory's lock (taken above) while it does.
        _flock(users_fd, fcntl.LOCK_SH, deadline, path)
        record = read_record(path)
        if _answers(record) and not _alive(record.get('watcher')):
            # A server whose watcher was killed: nobody would stop it.
            # It is ours (it answers as the recorded process): stop it
            # and start it again with a watcher, on the same port.
            _stop_process(record['pid'], _port(record))
        if not _answers(record):
            _refuse_foreign(path, record)
            record = _start(path, record, linger, sync_on_commit, deadline)
            if not _answers(record):
                raise _error(path, 'the server started on port %s does not '
                             'answer as process %s' % (
                                 _port(record), record.get('pid')))
        return Lease(path, record, users_fd)
    except BaseException:
        if users_fd is not None:
            os.close(users_fd)
        raise
    finally:
        os.close(lock_fd)


def check_available(path):
    """Raise ``ConfigurationError`` unless this Python can serve ``path``:
    the ``server`` extra is installed, and the system has ``fcntl``.
    Nothing is imported from the extra (its code runs in its own
    process)."""
    if fcntl is None:
        raise _error(path, 'directory stores need a POSIX system (fcntl); '
                     'use a mongodb:// server here')
    if importlib.util.find_spec(SERVER_MODULE) is None:
        raise _error(path, 'serving a directory needs SecantusDB, which is '
                     'not installed for %s: %s' % (PYTHON, EXTRA))


def _prepare(path):
    """Create ``path`` if missing; refuse what is not a usable store
    directory."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise _error(path, 'not a directory')
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        entries = os.listdir(path)
    except OSError as error:
        raise _error(path, 'cannot create or read the directory: %s'
                     % (error.strerror or error)) from None
    entries = [name for name in entries if not name.startswith('.')]
    if entries and not any(os.path.isfile(os.path.join(path, name))
                           for name in STORE_MARKERS if name in entries):
        raise _error(path, 'the directory holds other files and no store '
                     '(no %s or SecantusDB files): give an empty or new '
                     'directory' % RECORD_FILE)


def _open(path, name):
    try:
        return os.open(os.path.join(path, name),
                       os.O_RDWR | os.O_CREAT | getattr(os, 'O_CLOEXEC', 0),
                       0o600)
    except OSError as error:
        raise _error(path, 'cannot write %s in the directory: %s'
                     % (name, error.strerror or error)) from None


def _flock(fd, kind, deadline, path):
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise _error(path, 'another process has held %s for too '
                             'long (a server starting or stopping?)'
                             % LOCK_FILE) from None
            time.sleep(0.05)


def read_record(path):
    """The recorded server of ``path`` (a dict), or ``None``."""
    try:
        with open(os.path.join(path, RECORD_FILE), encoding='utf-8') as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    return record


def _write_record(path, record):
    target = os.path.join(path, RECORD_FILE)
    temporary = '%s.%d' % (target, os.getpid())
    with open(temporary, 'w', encoding='utf-8') as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write('\n')
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, target)


def _port(record):
    port = record.get('port') if record else None
    if isinstance(port, int) and not isinstance(port, bool) and \
            0 < port < 65536:
        return port
    return None


def _answers(record, timeout=2.0):
    """Whether the recorded server runs: its port answers and the server
    behind it reports the recorded process id."""
    if not record or record.get('state') != 'running':
        return False
    port, pid = _port(record), record.get('pid')
    if port is None or not isinstance(pid, int) or not _alive(pid):
        return False
    try:
        socket.create_connection((HOST, port), timeout=timeout).close()
    except OSError:
        return False
    import pymongo
    client = pymongo.MongoClient(
        HOST, port, directConnection=True, connect=False,
        serverSelectionTimeoutMS=int(timeout * 1000),
        connectTimeoutMS=int(timeout * 1000))
    try:
        return client.admin.command('serverStatus').get('pid') == pid
    except pymongo.errors.PyMongoError:
        return False
    finally:
        client.close()


def _alive(pid):
    """Whether process ``pid`` exists and has not ended (a zombie has)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has ended, once all its threads have (a killed process's
    # first thread may be a zombie while the others still let go of its
    # files and locks).
    try:
        tasks = os.listdir('/proc/%d/task' % pid)
    except OSError:
        return True
    for task in tasks:
        try:
            with open('/proc/%d/task/%s/stat' % (pid, task), 'rb') as f:
                state = f.read().rpartition(b')')[2].split()[:1]
        except OSError:
            continue
        if state not in ([b'Z'], [b'X']):
            return True
    return False


def _refuse_foreign(path, record):
    """Refuse a directory whose WiredTiger files another process holds."""
    lock = os.path.join(path, 'WiredTiger.lock')
    if not os.path.exists(lock):
        return
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError as error:
        raise _error(path, 'cannot open WiredTiger.lock: %s'
                     % (error.strerror or error)) from None
    # A recorded server that was just killed may still be letting go.
    deadline = time.monotonic() + (RELEASE_WAIT if record else 0)
    try:
        while True:
            try:
                # WiredTiger locks it with fcntl; a test lock shows a holder.
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.lockf(fd, fcntl.LOCK_UN)
                return
            except OSError as error:
                if error.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
            if time.monotonic() > deadline:
                raise _error(path, _held_message(record))
            time.sleep(0.05)
    finally:
        os.close(fd)


def _held_message(record):
    recorded = ''
    if record and _alive(record.get('pid')):
        recorded = (' (%s names process %s, which does not answer on port '
                    '%s)' % (RECORD_FILE, record.get('pid'), _port(record)))
    return ('the directory is held by another process that mongopersist '
            'did not start, or no longer reaches%s: WiredTiger allows one '
            'process per directory.  Stop that process, or connect to its '
            'server with a mongodb:// URI' % recorded)


def _start(path, old, linger, sync_on_commit, deadline):
    """Start a watcher and its server (the directory's lock is held);
    return the new record."""
    command = [PYTHON, '-m', 'mongopersist.fileserver', 'watch', path,
               '--linger', repr(float(linger))]
    if _port(old):
        command += ['--port', str(_port(old))]
    if not sync_on_commit:
        command.append('--no-sync-on-commit')
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    installed = {os.path.abspath(sysconfig.get_paths()[name])
                 for name in ('purelib', 'platlib')}
    if here not in installed:
        # This mongopersist, wherever the application found it (a source
        # tree put on sys.path), and not another installed one.
        env['PYTHONPATH'] = os.pathsep.join(
            [here] + [p for p in [env.get('PYTHONPATH')] if p])
    try:
        starter = subprocess.Popen(
            command, cwd=path, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True)
    except OSError as error:
        raise _error(path, 'cannot run %s: %s' % (PYTHON, error)) from None
    try:
        line = _read_line(starter.stdout, deadline)
    finally:
        starter.stdout.close()
        try:
            # The starter forks the watcher off and ends at once.
            starter.wait(timeout=max(1.0, deadline - time.monotonic()))
            errors = starter.stderr.read().decode('utf-8', 'replace')
        except subprocess.TimeoutExpired:
            starter.kill()
            starter.wait()
            errors = ''
        starter.stderr.close()
    try:
        message = json.loads(line) if line else {}
    except ValueError:
        message = {}
    if 'ready' in message:
        return message['ready']
    reason = message.get('error') or (
        'the server did not start in time' if not line and not errors
        else 'the watcher failed: %s' % _tail(errors))
    raise _error(path, reason)


def _read_line(stream, deadline):
    data = b''
    while not data.endswith(b'\n'):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([stream], [], [], left)
        if not ready:
            break
        chunk = os.read(stream.fileno(), 4096)
        if not chunk:
            break
        data += chunk
    return data.decode('utf-8', 'replace').strip()


def _tail(text, lines=8):
    text = '\n'.join(text.strip().splitlines()[-lines:])
    if len(text) > 2000:
        text = '...' + text[-2000:]
    return text


def stop(path, wait=True):
    """Stop the server of ``path`` now, leases or not; return the record
    of the server that was running, else ``None``.  With ``wait``, return
    once its processes have ended (``make test-server`` and the tests end
    with it); else see ``wait_stopped``."""
    path = os.path.abspath(path)
    record = read_record(path)
    if not _answers(record) or not _alive(record.get('watcher')):
        return None
    os.kill(record['watcher'], signal.SIGTERM)
    if wait:
        wait_stopped(path, record)
    return record


def wait_stopped(path, record, timeout=STOP_TIMEOUT + 10):
    """Wait until the watcher and server of ``record`` have ended."""
    deadline = time.monotonic() + timeout
    while _alive(record.get('watcher')) or _alive(record.get('pid')):
        if time.monotonic() > deadline:
            raise _error(path, 'the server (process %s) did not stop within '
                         '%s seconds' % (record.get('pid'), timeout))
        time.sleep(0.05)


# -- the watcher ---------------------------------------------------------

class _Watcher:
    """Runs the server of one directory and stops it when its leases are
    gone (see the module's docstring).  Runs in a process of its own, in
    the directory."""

    def __init__(self, path, port, linger, sync_on_commit):
        self.path = path
        self.port = port
        self.linger = linger
        self.sync_on_commit = sync_on_commit
        self.server = None
        self.started = None
        self.restarts = 0
        self.stopping = False
        self.log = open(os.path.join(path, LOG_FILE), 'ab', buffering=0)

    def say(self, text):
        self.log.write(('%s mongopersist.fileserver[%d]: %s\n' % (
            time.strftime('%Y-%m-%dT%H:%M:%S'), os.getpid(), text)).encode(
            'utf-8', 'replace'))

    def record(self, state):
        return {'state': state, 'host': HOST, 'port': self.port,
                'pid': self.server.pid if self.server else None,
                'watcher': os.getpid(),
                'sync_on_commit': self.sync_on_commit,
                'since': time.strftime('%Y-%m-%dT%H:%M:%S%z')}

    def command(self):
        config = os.path.join(self.path, CONFIG_FILE)
        if not os.path.exists(config):
            with open(config, 'w', encoding='utf-8') as f:
                # Its presence keeps SecantusDB from reading a
                # secantusd.toml found elsewhere; the command line below
                # wins over what it says.
                f.write('# Settings of the SecantusDB server that '
                        'mongopersist.fileserver runs on\n# this directory '
                        '(host, port, storage path and sync on commit come\n'
                        '# from its command line).\n')
        command = [PYTHON, '-m', SERVER_MODULE, '--config', config,
                   '--host', HOST, '--port', str(self.port),
                   '--storage-path', self.path, '--log-level', 'WARNING']
        if self.sync_on_commit:
            command.append('--sync-on-commit')
        return command

    def start(self, deadline):
        """Start the server on ``self.port`` (a free one if that is taken);
        raise ``RuntimeError`` with the reason if it does not start."""
        for attempt in range(3):
            if not self.port or not _port_free(self.port):
                self.port = _free_port()
            offset = self.log.seek(0, os.SEEK_END)
            self.say('starting SecantusDB on %s:%d' % (HOST, self.port))
            self.server = subprocess.Popen(
                self.command(), cwd=self.path, stdin=subprocess.DEVNULL,
                stdout=self.log, stderr=self.log,
                preexec_fn=_die_with_parent)
            self.started = time.monotonic()
            while time.monotonic() < deadline:
                if self.server.poll() is not None:
                    break
                try:
                    socket.create_connection((HOST, self.port),
                                             timeout=1).close()
                    self.say('SecantusDB (process %d) answers on port %d'
                             % (self.server.pid, self.port))
                    return
                except OSError:
                    time.sleep(0.05)
            else:
                self.kill_server()
                raise RuntimeError('the server did not answer within the '
                                   'start timeout')
            output = _read_from(os.path.join(self.path, LOG_FILE), offset)
            if 'already being managed by another process' in output:
                raise RuntimeError(_held_message(None))
            if 'Address already in use' not in output:
                raise RuntimeError('the server ended (exit code %s): %s' % (
                    self.server.returncode, _tail(output)))
            self.port = None
        raise RuntimeError('found no free port for the server')

    def kill_server(self):
        if self.server is not None and self.server.poll() is None:
            self.server.kill()
            self.server.wait()

    def stop_server(self):
        """Stop the server cleanly (WiredTiger closes its files)."""
        if self.server is None or self.server.poll() is not None:
            return
        if not terminate(self.server, self.port):
            self.say('the server did not stop within %ds: killed'
                     % STOP_TIMEOUT)
        self.say('SecantusDB stopped (exit code %s)' % self.server.returncode)

    def named(self):
        """Whether the record still names this watcher."""
        record = read_record(self.path)
        return bool(record) and record.get('watcher') == os.getpid()

    def run(self, users_fd, lock_fd):
        """Watch until the end; return the exit code."""
        idle_since = None
        while True:
            time.sleep(POLL)
            if self.stopping:
                self.stop_server()
                with _holding(lock_fd, STOP_TIMEOUT) as held:
                    if held and self.named():
                        _write_record(self.path, self.record('stopped'))
                return 0
            if self.server.poll() is not None:
                if not self.after_crash(users_fd, lock_fd):
                    return 1
                idle_since = None
                continue
            if _locked_by_others(users_fd):
                idle_since = None
                continue
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since < self.linger:
                continue
            with _holding(lock_fd, POLL) as held:
                if not held:
                    continue
                if not self.named():
                    self.say('%s names another server: stopping mine'
                             % RECORD_FILE)
                    self.stop_server()
                    return 0
                if _locked_by_others(users_fd):
                    idle_since = None
                    continue
                self.say('no lease for %ss: stopping' % self.linger)
                self.stop_server()
                _write_record(self.path, self.record('stopped'))
                return 0

    def after_crash(self, users_fd, lock_fd):
        """The server ended by itself: restart it if leases remain.
        Return whether the watcher goes on."""
        self.say('SecantusDB (process %d) ended by itself (exit code %s)'
                 % (self.server.pid, self.server.returncode))
        with _holding(lock_fd, START_TIMEOUT) as held:
            if not held or not self.named():
                return False
            recent = time.monotonic() - self.started < RESTART_WINDOW
            self.restarts = self.restarts + 1 if recent else 1
            if not _locked_by_others(users_fd) or self.restarts > RESTARTS:
                _write_record(self.path, self.record('stopped'))
                return False
            try:
                self.start(time.monotonic() + START_TIMEOUT)
            except RuntimeError as error:
                self.say('restart failed: %s' % error)
                _write_record(self.path, self.record('stopped'))
                return False
            _write_record(self.path, self.record('running'))
            return True


def terminate(process, port=None, timeout=None):
    """Stop ``process`` (a ``subprocess.Popen`` of SecantusDB listening on
    ``port`` of ``HOST``) cleanly, else kill it after ``timeout`` seconds
    (default ``STOP_TIMEOUT``); return whether it stopped by itself.
    (``_stop_process`` does the same for a process that is not a child.)

    SecantusDB stops on SIGTERM, but (0.7.0b3): its thread blocked in
    ``accept`` keeps the stop waiting two seconds, unless a connection
    wakes it; and about one SIGTERM in seven is taken by a thread that
    does not wake the main one, and is lost.  So the port is connected to
    while the server stops, and SIGTERM is sent again only when the server
    still accepts connections ``RESEND`` seconds after the last one (a
    server that stops has closed its port; a second signal during its stop
    would start the stop over).
    """
    def ended():
        try:
            process.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            return False
        return True
    return _stop(process.send_signal, ended, port, timeout)


def _stop_process(pid, port, timeout=None):
    """``terminate`` for process ``pid``, which is not a child of this
    one."""
    def send(signum):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    def ended():
        if _alive(pid):
            time.sleep(0.1)
        return not _alive(pid)
    return _stop(send, ended, port, timeout)


def _stop(send, ended, port, timeout):
    deadline = time.monotonic() + (STOP_TIMEOUT if timeout is None
                                   else timeout)
    send(signal.SIGTERM)
    sent = time.monotonic()
    while not ended():
        if time.monotonic() > deadline:
            send(signal.SIGKILL)
            deadline += STOP_TIMEOUT
            while not ended() and time.monotonic() < deadline:
                pass
            return False
        if port and _connects(port) and time.monotonic() - sent > RESEND:
            send(signal.SIGTERM)
            sent = time.monotonic()
    return True


def _connects(port):
    try:
        socket.create_connection((HOST, port), timeout=0.5).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _holding(fd, timeout):
    """Hold the exclusive lock of ``fd`` for the block if it can be had
    within ``timeout`` seconds; yield whether it is held."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                yield False
                return
            time.sleep(0.05)
    try:
        yield True
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _locked_by_others(users_fd):
    """Whether a lease holds the users' lock (tested, not kept)."""
    try:
        fcntl.flock(users_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(users_fd, fcntl.LOCK_UN)
    return False


def _port_free(port):
    """Whether the server can listen on ``port`` (it binds as here, with
    SO_REUSEADDR: connections of a dead server on it do not matter)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_port():
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _die_with_parent():
    # Runs in the server's process before it execs: on Linux, the server is
    # killed if its watcher dies (SIGKILL: SecantusDB may miss a SIGTERM;
    # its commits are in its synced log).  Elsewhere the next lease finds
    # it without a watcher and restarts it.
    if sys.platform.startswith('linux'):
        try:
            import ctypes
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except Exception:
            pass


def _read_from(name, offset):
    try:
        with open(name, 'rb') as f:
            f.seek(offset)
            return f.read().decode('utf-8', 'replace')
    except OSError:
        return ''


def _watch(path, port, linger, sync_on_commit):
    """The watcher's main: started by ``lease`` (which holds the directory's
    lock), it forks itself off, starts the server, writes the record and
    says so on stdout, then watches."""
    if os.fork():
        os._exit(0)     # the starter ends; the watcher is nobody's child
    out = os.fdopen(os.dup(1), 'w')
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    watcher = _Watcher(path, port, linger, sync_on_commit)

    def tell(**message):
        out.write(json.dumps(message) + '\n')
        out.flush()
        out.close()

    try:
        watcher.start(time.monotonic() + START_TIMEOUT)
    except RuntimeError as error:
        watcher.say('not started: %s' % error)
        tell(error=str(error))
        return 1
    record = watcher.record('running')
    _write_record(path, record)
    users_fd = _open(path, USERS_FILE)
    lock_fd = _open(path, LOCK_FILE)

    def stop_requested(signum, frame):
        watcher.stopping = True
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop_requested)
    tell(ready=record)
    try:
        return watcher.run(users_fd, lock_fd)
    finally:
        watcher.stop_server()


def _serve(path, linger):
    """Serve ``path`` in the foreground until interrupted."""
    with lease(path, linger=linger) as held:
        print('%s served at %s (Ctrl-C to stop using it)' % (
            path, held.uri), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


def main(argv=None):
    """``python -m mongopersist.fileserver serve|stop|watch DIR``."""
    parser = argparse.ArgumentParser(
        prog='python -m mongopersist.fileserver',
        description='Serve a directory store (file://) with SecantusDB.')
    commands = parser.add_subparsers(dest='command', required=True)
    serve = commands.add_parser(
        'serve', help='serve DIR until Ctrl-C and print its mongodb:// URI')
    serve.add_argument('path', metavar='DIR')
    serve.add_argument('--linger', type=float, default=LINGER)
    stop_parser = commands.add_parser(
        'stop', help="stop DIR's server now, leases or not")
    stop_parser.add_argument('path', metavar='DIR')
    watch = commands.add_parser(
        'watch', help='(internal) start and watch the server of DIR')
    watch.add_argument('path', metavar='DIR')
    watch.add_argument('--port', type=int, default=None)
    watch.add_argument('--linger', type=float, default=LINGER)
    watch.add_argument('--no-sync-on-commit', dest='sync_on_commit',
                       action='store_false')
    options = parser.parse_args(argv)
    path = os.path.abspath(options.path)
    try:
        if options.command == 'watch':
            return _watch(path, options.port, options.linger,
                          options.sync_on_commit)
        if options.command == 'serve':
            return _serve(path, options.linger)
        print('stopped' if stop(path) else 'no server was running')
        return 0
    except ConfigurationError as error:
        print('%s: error: %s' % (parser.prog, error), file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
