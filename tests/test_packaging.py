"""The package as installed: its version, the command's ``--version`` and
the PEP 561 marker that lets type checkers use the annotations.

The name ``mongopersist`` on the package index belongs to the original
package's releases (0.5.0 to 0.8.4, Python 2) until this project publishes
one; this package's version must sort above all of them, or an upgrade
would pick the old package.
"""
import importlib.metadata
import io
import json
import os
import re
import subprocess
import sys

import pytest

import mongopersist
from mongopersist import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The last release of the original package on the package index.
ORIGINAL_LAST_RELEASE = (0, 8, 4)


def release(version):
    """The release segment of a PEP 440 version, as a tuple of ints."""
    match = re.match(r'(\d+(?:\.\d+)*)', version)
    assert match, version
    return tuple(int(part) for part in match.group(1).split('.'))


def test_version_is_a_pep440_development_or_final_release():
    assert re.fullmatch(r'\d+\.\d+\.\d+(\.dev\d+|a\d+|b\d+|rc\d+)?',
                        mongopersist.__version__)


def test_version_sorts_above_every_release_of_the_original_package():
    assert release(mongopersist.__version__) > ORIGINAL_LAST_RELEASE


def test_version_is_written_once_and_read_by_the_build():
    # pyproject.toml names no version of its own: setuptools reads
    # mongopersist.__version__.
    with open(os.path.join(ROOT, 'pyproject.toml'), encoding='utf-8') as f:
        text = f.read()
    assert re.search(r'^dynamic = \[.*"version".*\]$', text, re.M)
    assert 'version = {attr = "mongopersist.__version__"}' in text
    assert not re.search(r'^version = "', text, re.M)
    assert not os.path.exists(os.path.join(ROOT, 'setup.py')) or \
        'version=' not in open(os.path.join(ROOT, 'setup.py')).read()


def installed_from_this_tree():
    """The installed distribution, if it was installed from this tree."""
    try:
        dist = importlib.metadata.distribution('mongopersist')
    except importlib.metadata.PackageNotFoundError:
        return None
    direct_url = dist.read_text('direct_url.json')
    if not direct_url:
        return None
    url = json.loads(direct_url).get('url', '')
    if url.rstrip('/') != 'file://' + ROOT:
        return None
    return dist


def test_installed_metadata_has_the_version_of_the_source():
    dist = installed_from_this_tree()
    if dist is None:
        pytest.skip('mongopersist is not installed from this source tree '
                    '(make test installs it; PYTHONPATH=src does not)')
    assert dist.version == mongopersist.__version__


def test_command_line_says_its_version():
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(['--version'], out=out, err=err)
    assert (code, out.getvalue(), err.getvalue()) == (
        0, 'mongopersist %s\n' % mongopersist.__version__, '')


def test_python_m_mongopersist_says_its_version():
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, 'src'))
    done = subprocess.run(
        [sys.executable, '-m', 'mongopersist', '--version'],
        capture_output=True, text=True, env=env, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (
        0, 'mongopersist %s\n' % mongopersist.__version__, '')


def test_package_ships_the_pep561_marker():
    package = os.path.dirname(mongopersist.__file__)
    assert os.path.isfile(os.path.join(package, 'py.typed'))
    with open(os.path.join(ROOT, 'pyproject.toml'), encoding='utf-8') as f:
        assert 'mongopersist = ["py.typed"]' in f.read()
