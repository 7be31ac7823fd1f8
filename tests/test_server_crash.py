"""A real server killed in the middle of a commit: each unit of work once.

The module starts its own SecantusDB (a MongoDB wire-protocol server on
WiredTiger, durable with ``sync_on_commit``) when the ``secantus`` package
is importable, and talks to it through a small TCP proxy (``CrashProxy``).
Armed, the proxy lets one command through to the server (or not), reads
the server's reply, SIGKILLs the server, restarts it on the same storage
directory and drops the client's connection without the reply: a commit
applied, or not, whose acknowledgement is lost.  The driver's retries then
reach a server that forgot the transaction and the retryable write.

``Store.transaction()`` increments a counter; whatever the kill, the
counter ends at the number of increments that returned: no increment lost
(the server is durable) and none applied twice (``mongopersist.outcome``
reads back what the commit wrote).  See docs/transactions.rst ("A lost
acknowledgement").
"""
import importlib.util
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import bson
import pymongo
import pytest

from mongopersist.store import Store
from tests.model import Counter

pytestmark = [
    pytest.mark.requires_real_mongodb(
        reason='kills and restarts a real server (SecantusDB) mid-commit'),
    pytest.mark.skipif(
        importlib.util.find_spec('secantus') is None,
        reason='needs the secantus package (SecantusDB, pip install '
               'secantusdb) to start a server it can kill'),
]

START_TIMEOUT = 30          # seconds for the server to accept connections
OP_MSG = 2013


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class SecantusProcess:
    """A SecantusDB server process on one storage directory and port."""

    def __init__(self, path, port):
        self.path = path
        self.port = port
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'secantus', '--host', '127.0.0.1',
             '--port', str(self.port), '--storage-path', self.path,
             '--sync-on-commit', '--cache-size', '64M',
             '--log-level', 'WARNING'],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with socket.create_connection(('127.0.0.1', self.port), 1):
                    return
            except OSError:
                if self.process.poll() is not None or \
                        time.monotonic() > deadline:
                    raise RuntimeError('SecantusDB did not start (exit %s)'
                                       % self.process.poll())
                time.sleep(0.05)

    def kill(self):
        """SIGKILL: no shutdown, no flush beyond what it synced."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _read_message(sock):
    header = _read_exactly(sock, 16)
    if header is None:
        return None
    length = struct.unpack('<i', header[:4])[0]
    rest = _read_exactly(sock, length - 16)
    return None if rest is None else header + rest


def _read_exactly(sock, size):
    data = b''
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def command_name(message):
    """The command an OP_MSG message carries (its body's first key)."""
    if struct.unpack('<i', message[12:16])[0] != OP_MSG:
        return None
    # Header, flag bits, then section kind 0: the body document.
    if message[20] != 0:
        return None
    size = struct.unpack('<i', message[21:25])[0]
    body = bson.decode(message[21:21 + size])
    return next(iter(body), None)


class CrashProxy:
    """Forwards MongoDB wire messages to a ``SecantusProcess``; ``arm``
    makes it crash the server at the next message carrying a command."""

    def __init__(self, server):
        self.server = server
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._armed = None
        self.crashes = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, command, applied):
        """Crash at the next ``command``: after the server replied to it
        (``applied``) or before it reaches the server."""
        with self._lock:
            self._armed = (command, applied)

    def close(self):
        self._closed = True
        self.listener.close()

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,),
                             daemon=True).start()

    def _upstream(self):
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                return socket.create_connection(
                    ('127.0.0.1', self.server.port), 1)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _serve(self, client):
        try:
            upstream = self._upstream()
        except OSError:
            client.close()
            return
        try:
            while True:
                message = _read_message(client)
                if message is None:
                    return
                crash = self._take(command_name(message))
                if crash is not None and not crash:
                    self._crash()           # before the server sees it
                    return
                upstream.sendall(message)
                reply = _read_message(upstream)
                if reply is None:
                    return
                if crash:
                    self._crash()           # applied; the reply is lost
                    return
                client.sendall(reply)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()

    def _take(self, name):
        with self._lock:
            if self._armed is None or self._armed[0] != name:
                return None
            applied = self._armed[1]
            self._armed = None
            return applied

    def _crash(self):
        self.server.kill()
        self.crashes.append(time.monotonic())
        self.server.start()


@pytest.fixture(scope='module')
def proxy():
    path = tempfile.mkdtemp(prefix='mp-crash-secantus-')
    server = SecantusProcess(path, free_port())
    server.start()
    crash = CrashProxy(server)
    try:
        yield crash
    finally:
        crash.close()
        server.kill()
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def store(proxy, request):
    mode = request.param
    database = 'mp_crash_%s' % uuid.uuid4().hex[:8]
    client = pymongo.MongoClient(
        '127.0.0.1', proxy.port, directConnection=True,
        serverSelectionTimeoutMS=START_TIMEOUT * 1000)
    store = Store(client, database=database, transactions=mode,
                  owns_client=True)
    yield store
    store.close()


def increment(store):
    for attempt in store.transaction():
        with attempt as dm:
            dm.root['counter'].value += 1


@pytest.mark.parametrize('store, command', [
    ('auto', 'commitTransaction'), ('never', 'update')],
    ids=['transaction', 'no-transaction'], indirect=['store'])
@pytest.mark.parametrize('applied', [True, False],
                         ids=['after-applying', 'before-applying'])
def test_a_server_killed_mid_commit_applies_each_unit_once(
        proxy, store, command, applied, retry_waits):
    with store.transaction() as dm:
        dm.root['counter'] = Counter()
        uses_transactions = dm.transactions
    assert uses_transactions == (command == 'commitTransaction')
    crashes = len(proxy.crashes)
    increment(store)
    proxy.arm(command, applied)
    increment(store)            # the server is killed in its commit
    increment(store)
    assert len(proxy.crashes) == crashes + 1
    with store.transaction() as dm:
        assert dm.root['counter'].value == 3
