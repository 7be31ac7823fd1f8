"""Run the test suite against SecantusDB (``make test-server``).

SecantusDB (the ``server`` extra) is a MongoDB wire-protocol server over
WiredTiger that advertises a one-member replica set: sessions, server
transactions and change streams run for real.  This script

1. makes a fresh directory and starts SecantusDB on it, on a free port of
   127.0.0.1, with ``mongopersist.fileserver`` (the launcher of
   ``file://`` stores);
2. runs ``python -m pytest`` with ``MONGODB_URI`` naming that server and
   the given arguments (and ``HYPOTHESIS_PROFILE=server`` unless one is
   set: see tests/conftest.py);
3. stops the server, removes the directory, says how much time the suite
   and the server took (wall clock and CPU: the server's own CPU is most
   of the run's), and exits with pytest's code.

Usage::

    .venv/bin/python tests/run_server.py [pytest arguments...]

Environment: ``SERVER_TEST_TIMEOUT`` (seconds for the whole pytest run,
default 2400).
"""
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'src'))

from mongopersist import fileserver  # noqa: E402
from mongopersist.interfaces import ConfigurationError  # noqa: E402

TIMEOUT = float(os.environ.get('SERVER_TEST_TIMEOUT', 2400))


def main(args):
    scratch = tempfile.mkdtemp(prefix='mongopersist-test-server-')
    path = os.path.join(scratch, 'data')
    started = time.monotonic()
    try:
        try:
            # No lingering: the server goes when this lease does.
            lease = fileserver.lease(path, linger=0)
        except ConfigurationError as error:
            print('make test-server: %s' % error, file=sys.stderr)
            return 2
        try:
            print('make test-server: SecantusDB serving %s at %s'
                  % (path, lease.uri), flush=True)
            env = dict(os.environ, MONGODB_URI=lease.uri)
            env.setdefault('HYPOTHESIS_PROFILE', 'server')
            tests = subprocess.Popen(
                [sys.executable, '-m', 'pytest'] + list(args), cwd=ROOT,
                env=env)
            try:
                return tests.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                print('make test-server: the suite took more than %ds: '
                      'stopped' % TIMEOUT, file=sys.stderr)
                tests.kill()
                tests.wait()
                return 1
            except KeyboardInterrupt:
                tests.wait()
                return 130
        finally:
            server_cpu = _cpu_seconds(lease.pid)
            lease.close()
            fileserver.stop(path)
            used = resource.getrusage(resource.RUSAGE_CHILDREN)
            print('make test-server: %.0f s; CPU: the suite %.0f s, the '
                  'server %s s' % (
                      time.monotonic() - started,
                      used.ru_utime + used.ru_stime,
                      '?' if server_cpu is None else '%.0f' % server_cpu))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _cpu_seconds(pid):
    """CPU seconds process ``pid`` has used (Linux), else ``None``."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            fields = f.read().rpartition(')')[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
    except (OSError, ValueError, IndexError):
        return None


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
