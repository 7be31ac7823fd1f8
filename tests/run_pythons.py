"""Run the test suite on every supported Python found here (``make test-all``).

Supported: CPython 3.10, 3.11, 3.12 and 3.13 (the classifiers of
pyproject.toml).  For each of them this script

1. finds an interpreter: the one running this script if it is that
   version (``make test-all`` runs it with .venv's, which ``make test``
   installed), else ``python3.X`` on PATH, else the newest
   ``versions/3.X.N`` of pyenv (``$PYENV_ROOT``, ``~/.pyenv``);
   a version found nowhere is reported as skipped, with where it was
   looked for;
2. for an interpreter other than the running one, makes the virtualenv
   ``.venv-3.X`` once and installs this project into it (editable, with
   the extras the suite imports: ``SUITE_EXTRAS``, not the docs' or the
   type checker's); it is reused while pyproject.toml is unchanged but
   for mypy's settings (a stamp holds the hash of what was installed);
3. runs ``python -m pytest`` there with the given arguments (the same
   suite and settings as ``make test``: setup.cfg).  On the running
   interpreter the property tests run all their examples, as in ``make
   test``; on the others a quarter of them (``HYPOTHESIS_PROFILE=server``,
   as ``make test-server``: the same draws, about a fifth less time), as
   what differs between Python versions shows in any example.  Set
   ``HYPOTHESIS_PROFILE`` (``ci``: all of them) to choose;

and at the end prints one line per version (passed, failed or skipped,
and the seconds each took) and exits 0 only if every suite run passed and
at least one ran.

Usage::

    .venv/bin/python tests/run_pythons.py [pytest arguments...]

Environment: ``PYTHONS`` (the versions to run, e.g. ``"3.10 3.13"``;
default all supported; the others are reported as skipped),
``TEST_ALL_TIMEOUT`` (seconds for one interpreter's suite, default 1800).
"""
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUPPORTED = ('3.10', '3.11', '3.12', '3.13')
#: What the suite imports: its tools, the stand-in, file:// stores
#: (SecantusDB), the web layer, the benchmarks' smoke test (MongoEngine,
#: ZODB, matplotlib) and the container events.
SUITE_EXTRAS = 'test,embedded,server,pyramid,bench,zope'
TIMEOUT = float(os.environ.get('TEST_ALL_TIMEOUT', 1800))
INSTALL_TIMEOUT = 1200


def log(message):
    print('test-all: %s' % message, flush=True)


def describe(python):
    """``(version, implementation)`` of ``python``, or None if it does not
    run: version is the full ``'3.X.Y'``."""
    try:
        done = subprocess.run(
            [python, '-c', 'import platform; print('
             'platform.python_version(), platform.python_implementation())'],
            capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode:
        return None
    parts = done.stdout.split()
    return tuple(parts) if len(parts) == 2 else None


def minor(version):
    return '.'.join(version.split('.')[:2])


def pyenv_roots():
    roots = []
    for root in (os.environ.get('PYENV_ROOT'), os.path.expanduser('~/.pyenv')):
        if root and os.path.isdir(root) and root not in roots:
            roots.append(root)
    return roots


def candidates(wanted):
    """Interpreters that may be CPython ``wanted`` (``'3.X'``)."""
    found = shutil.which('python' + wanted)
    if found:
        yield found
    for root in pyenv_roots():
        # Releases only (3.12.1, not 3.12-dev or the free-threaded 3.13.0t),
        # newest first.
        paths = glob.glob(os.path.join(root, 'versions', wanted + '.*'))
        releases = [p for p in paths if re.fullmatch(
            re.escape(wanted) + r'\.\d+', os.path.basename(p))]
        releases.sort(key=lambda p: int(os.path.basename(p).split('.')[2]),
                      reverse=True)
        for path in releases:
            yield os.path.join(path, 'bin', 'python' + wanted)


def find(wanted):
    """``(python, version)`` of a CPython ``wanted``, or ``(None, None)``."""
    for python in candidates(wanted):
        if not os.path.exists(python):
            continue
        described = describe(python)
        if described and minor(described[0]) == wanted \
                and described[1] == 'CPython':
            return python, described[0]
    return None, None


def where_looked(wanted):
    places = ['python%s on PATH' % wanted]
    places += [os.path.join(root, 'versions', wanted + '.*')
               for root in pyenv_roots()]
    return ', '.join(places)


def install_hash():
    """A hash of what an install depends on: pyproject.toml but its tools'
    own sections (mypy's settings change no install)."""
    kept, tool = [], False
    with open(os.path.join(ROOT, 'pyproject.toml'), encoding='utf-8') as f:
        for line in f:
            if line.startswith('['):
                tool = line.lstrip('[').startswith('tool.mypy')
            if not tool:
                kept.append(line)
    text = ''.join(kept) + SUITE_EXTRAS
    return hashlib.sha256(text.encode('utf-8')).hexdigest()


def ensure_venv(base, wanted):
    """The python of ``.venv-<wanted>``, made and installed if needed."""
    venv = os.path.join(ROOT, '.venv-' + wanted)
    python = os.path.join(venv, 'bin', 'python')
    stamp = os.path.join(venv, '.installed')
    described = describe(python) if os.path.exists(python) else None
    if described is None or minor(described[0]) != wanted:
        log('making %s with %s' % (os.path.relpath(venv, ROOT), base))
        subprocess.run([base, '-m', 'venv', '--clear', venv], check=True,
                       timeout=300)
    wanted_hash = install_hash()
    try:
        with open(stamp, encoding='ascii') as f:
            installed = f.read().strip()
    except OSError:
        installed = None
    if installed != wanted_hash:
        log('installing .[%s] into %s' % (SUITE_EXTRAS,
                                          os.path.relpath(venv, ROOT)))
        subprocess.run(
            [python, '-m', 'pip', 'install', '--quiet',
             '--disable-pip-version-check', '-e', '.[%s]' % SUITE_EXTRAS],
            cwd=ROOT, check=True, timeout=INSTALL_TIMEOUT)
        with open(stamp, 'w', encoding='ascii') as f:
            f.write(wanted_hash + '\n')
    return python


def run_suite(python, args, env=None):
    """Run the suite with ``python``; return pytest's exit code."""
    tests = subprocess.Popen([python, '-m', 'pytest', *args], cwd=ROOT,
                             env=env)
    try:
        return tests.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        log('the suite took more than %ds: stopped' % TIMEOUT)
        tests.kill()
        tests.wait()
        return 124
    except KeyboardInterrupt:
        tests.wait()
        raise


def main(args):
    chosen = os.environ.get('PYTHONS', '').split() or list(SUPPORTED)
    unknown = [v for v in chosen if v not in SUPPORTED]
    if unknown:
        log('PYTHONS names %s; the supported versions are %s'
            % (' '.join(unknown), ' '.join(SUPPORTED)))
        return 2
    running = minor('%d.%d' % sys.version_info[:2])
    outcomes = []       # (version, outcome, seconds)
    for wanted in SUPPORTED:
        if wanted not in chosen:
            outcomes.append((wanted, 'skipped: not in PYTHONS', None))
            continue
        started = time.monotonic()
        if wanted == running:
            python, version = sys.executable, sys.version.split()[0]
            where = os.path.relpath(sys.prefix, ROOT) \
                if sys.prefix.startswith(ROOT) else sys.prefix
        else:
            base, version = find(wanted)
            if base is None:
                outcomes.append((wanted, 'skipped: not found (looked for %s)'
                                 % where_looked(wanted), None))
                log('Python %s not found: skipped' % wanted)
                continue
            try:
                python = ensure_venv(base, wanted)
            except (subprocess.SubprocessError, OSError) as error:
                outcomes.append((version, 'failed: cannot install: %s'
                                 % error, time.monotonic() - started))
                continue
            where = '.venv-' + wanted
        env = None
        if wanted != running and 'HYPOTHESIS_PROFILE' not in os.environ:
            env = dict(os.environ, HYPOTHESIS_PROFILE='server')
            where += '; property tests: a quarter of their examples'
        log('the suite on Python %s (%s)' % (version, where))
        code = run_suite(python, args, env)
        outcomes.append((version, 'passed' if code == 0 else
                         'failed (pytest exit code %d)' % code,
                         time.monotonic() - started))
    for version, outcome, seconds in outcomes:
        log('Python %-7s %s%s' % (version, outcome, '' if seconds is None
                                  else ' (%.0f s)' % seconds))
    ran = [o for _, o, s in outcomes if s is not None]
    if not ran:
        log('no supported Python found: nothing ran')
        return 1
    return 0 if all(o == 'passed' for o in ran) else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
