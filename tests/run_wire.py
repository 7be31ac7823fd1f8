"""Run the test suite against a MongoDB wire-protocol server (``make test-wire``).

The server is mongoeco (https://pypi.org/project/mongoeco/, memory engine),
which needs Python >= 3.13; the suite itself runs in this interpreter (the
project's venv) with PyMongo, as against any real server (``MONGODB_URI``).

Usage::

    .venv/bin/python tests/run_wire.py [pytest arguments...]

What it does:

1. finds a Python >= 3.13 (``$WIRE_PYTHON``, then ``python3.13`` ...
   ``python3.19`` on PATH, then pyenv versions); if there is none it
   prints why and exits 0 (the check is optional, not part of .ci/run);
2. creates or updates ``.venv-wire`` with that Python and mongoeco;
3. starts mongoeco's wire server on 127.0.0.1 (a free port picked by the
   system) in a child process and waits until it answers ``hello``;
4. runs ``python -m pytest`` with ``MONGODB_URI`` pointing at it and the
   given arguments;
5. stops the server and exits with pytest's exit code.

Every wait is bounded; the server is always stopped (and stops by itself
if this process dies: it exits when its stdin closes).

Environment: ``WIRE_PYTHON`` (an interpreter to use), ``WIRE_VENV``
(default ``.venv-wire``), ``WIRE_MONGOECO`` (pip requirement, default
``mongoeco[wire]>=4.10,<5``: the ``wire`` extra brings the ``bson`` its
server needs), ``WIRE_TEST_TIMEOUT`` (seconds for the whole pytest run,
default 1800).
"""
import glob
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, os.environ.get('WIRE_VENV', '.venv-wire'))
REQUIREMENT = os.environ.get('WIRE_MONGOECO', 'mongoeco[wire]>=4.10,<5')
MIN_VERSION = (3, 13)
SKIP_MESSAGE = ('skipped: make test-wire needs Python >= 3.13 for mongoeco '
                '(none found; set WIRE_PYTHON=/path/to/python3.13 to use one)')

# The server, run by the venv's Python: mongoeco's wire proxy on a memory
# engine.  It prints "LISTENING <port>" once bound and stops on SIGTERM,
# SIGINT, or when its stdin closes (the runner went away).
SERVER_CODE = r'''
import asyncio, contextlib, os, signal, sys, threading
from mongoeco.engines.memory import MemoryEngine
from mongoeco.wire.proxy import AsyncMongoEcoProxyServer

async def main(host):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def watch_stdin():
        try:
            while os.read(0, 65536):
                pass
        finally:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
    threading.Thread(target=watch_stdin, daemon=True).start()
    server = AsyncMongoEcoProxyServer(engine=MemoryEngine(), host=host, port=0)
    await asyncio.wait_for(server.start(), timeout=30)
    try:
        print('LISTENING', server.address.port, flush=True)
        await stop.wait()
    finally:
        await asyncio.wait_for(server.close(), timeout=10)

asyncio.run(main(sys.argv[1]))
'''


def log(message):
    print('test-wire: %s' % message, flush=True)


def python_version(python):
    """Return ``python``'s (major, minor), or None if it does not run."""
    try:
        out = subprocess.run(
            [python, '-c', 'import sys; print(*sys.version_info[:2])'],
            capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode:
        return None
    try:
        return tuple(int(part) for part in out.stdout.split())
    except ValueError:
        return None


def candidate_pythons():
    """Yield interpreters that may be Python >= 3.13, best guesses first."""
    if os.environ.get('WIRE_PYTHON'):
        yield os.environ['WIRE_PYTHON']
    for minor in range(13, 20):
        found = shutil.which('python3.%d' % minor)
        if found:
            yield found
    pyenv = shutil.which('pyenv')
    if pyenv:
        try:
            out = subprocess.run([pyenv, 'versions', '--bare'],
                                 capture_output=True, text=True, timeout=30)
            for version in out.stdout.split():
                if version.startswith('3.1') and len(version) > 3 \
                        and version[3].isdigit():
                    prefix = subprocess.run(
                        [pyenv, 'prefix', version], capture_output=True,
                        text=True, timeout=30).stdout.strip()
                    if prefix:
                        yield os.path.join(prefix, 'bin', 'python')
        except (OSError, subprocess.SubprocessError):
            pass
    roots = {os.path.expanduser('~/.pyenv'), '/root/.pyenv'}
    if os.environ.get('PYENV_ROOT'):
        roots.add(os.environ['PYENV_ROOT'])
    for root in sorted(roots):
        for path in sorted(glob.glob(
                os.path.join(root, 'versions', '3.1[3-9]*', 'bin', 'python'))):
            yield path


def find_python():
    seen = set()
    for python in candidate_pythons():
        if python in seen or not os.path.exists(python):
            continue
        seen.add(python)
        version = python_version(python)
        if version and version >= MIN_VERSION:
            return python, version
    return None, None


def venv_python():
    return os.path.join(VENV, 'bin', 'python')


def ensure_venv(base_python):
    """Create or update the venv with mongoeco; return its python."""
    python = venv_python()
    version = python_version(python) if os.path.exists(python) else None
    if version is None or version < MIN_VERSION:
        log('creating %s with %s' % (os.path.relpath(VENV, ROOT),
                                     base_python))
        subprocess.run([base_python, '-m', 'venv', '--clear', VENV],
                       check=True, timeout=300)
    check = subprocess.run(
        [python, '-c',
         'import bson, mongoeco.wire.proxy, mongoeco.engines.memory'],
        capture_output=True, timeout=120)
    if check.returncode:
        log('installing %s into %s' % (REQUIREMENT,
                                       os.path.relpath(VENV, ROOT)))
        subprocess.run([python, '-m', 'pip', 'install', '--quiet',
                        '--disable-pip-version-check', REQUIREMENT],
                       check=True, timeout=900)
    return python


class Server:
    """mongoeco's wire server in a child process."""

    def __init__(self, python):
        self.python = python
        self.process = None
        self.port = None
        self.log_path = os.path.join(VENV, 'server.log')

    def start(self, timeout=60):
        self._log = open(self.log_path, 'wb')
        self.process = subprocess.Popen(
            [self.python, '-c', SERVER_CODE, '127.0.0.1'],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._log, start_new_session=True)
        line = []

        def read():
            line.append(self.process.stdout.readline())
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        text = line[0].decode(errors='replace').strip() if line else ''
        if not text.startswith('LISTENING '):
            raise RuntimeError(
                'mongoeco server did not start within %ds (%s); see %s'
                % (timeout, text or 'no output', self.log_path))
        self.port = int(text.split()[1])
        return 'mongodb://127.0.0.1:%d/' % self.port

    def wait_ready(self, uri, timeout=60):
        """Wait until the server answers ``hello``; return its buildInfo."""
        import pymongo
        from pymongo.errors import PyMongoError
        deadline = time.monotonic() + timeout
        error = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=2000,
                                         connectTimeoutMS=2000)
            try:
                client.admin.command('hello')
                # mongoeco knows 'buildInfo' but not the 'buildinfo' spelling.
                return client.admin.command('buildInfo')
            except PyMongoError as exc:
                error = exc
            finally:
                client.close()
            time.sleep(0.2)
        raise RuntimeError('mongoeco server at %s did not answer hello within '
                           '%ds (%s); see %s'
                           % (uri, timeout, error, self.log_path))

    def stop(self):
        process = self.process
        if process is None:
            return
        self.process = None
        try:
            stop_group(process)
        finally:
            for stream in (process.stdin, process.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            self._log.close()


def run_pytest(args, uri, timeout):
    env = dict(os.environ, MONGODB_URI=uri)
    process = subprocess.Popen([sys.executable, '-m', 'pytest', *args],
                               cwd=ROOT, env=env, start_new_session=True)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log('pytest did not finish within %ds; stopping it' % timeout)
        return 124
    finally:
        stop_group(process)


def stop_group(process):
    """Stop ``process`` and its process group: SIGTERM, then SIGKILL."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)
    except ProcessLookupError:
        pass


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def main(args):
    base, version = find_python()
    if base is None:
        print(SKIP_MESSAGE, flush=True)
        return 0
    log('using Python %d.%d at %s for mongoeco' % (version + (base,)))
    python = ensure_venv(base)
    timeout = int(os.environ.get('WIRE_TEST_TIMEOUT', '1800'))
    signal.signal(signal.SIGTERM, _terminate)
    server = Server(python)
    try:
        uri = server.start()
        info = server.wait_ready(uri)
        log('mongoeco wire server (reports MongoDB %s) at %s'
            % (info.get('version', '?'), uri))
        return run_pytest(args, uri, timeout)
    finally:
        server.stop()
        log('server stopped')


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
