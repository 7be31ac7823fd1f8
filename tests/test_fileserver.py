"""``file://`` stores: a directory served by SecantusDB in its own process.

The application processes are children (tests/file_store_child.py) that
use ``mongopersist.connect('file://DIR')`` as an application does; the
test reads what they left with a lease of its own.  Every test stops the
servers of its directories and checks that no process is left behind.
Tests that need a server skip, with the reason, where the ``server`` extra
(SecantusDB) is not installed; the errors without it are tested anyway.
"""
import contextlib
import ctypes
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pymongo
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mongopersist
from mongopersist import cli, fileserver
from mongopersist.interfaces import ConfigurationError
from tests.model import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATABASE = 'mp_file_store'
CHILD_TIMEOUT = 120     # seconds; bounds every wait for a child

needs_server = pytest.mark.skipif(
    importlib.util.find_spec(fileserver.SERVER_MODULE) is None,
    reason="SecantusDB is not installed (pip install 'mongopersist[server]')")


def alive(pid):
    return fileserver._alive(pid)


#: The servers asked to stop, waited for at the end of the module.
STOPPING = []


def stopped(path):
    """Ask the server of ``path`` to stop (it takes a second or two: the
    other tests go on meanwhile)."""
    record = fileserver.stop(path, wait=False)
    STOPPING.append((path, record or fileserver.read_record(path)))


@pytest.fixture(scope='module', autouse=True)
def no_server_left():
    """No process of a server of these tests is left behind them."""
    yield
    for path, record in STOPPING:
        if record:
            fileserver.wait_stopped(path, record)
            assert not alive(record.get('pid'))
            assert not alive(record.get('watcher'))
    del STOPPING[:]


@pytest.fixture
def store_dir(tmp_path, monkeypatch):
    """A store directory; its server is stopped afterwards.  Servers this
    process starts stop as soon as their leases go."""
    monkeypatch.setattr(fileserver, 'LINGER', 0.0)
    path = str(tmp_path / 'store')
    yield path
    stopped(path)


def child_env():
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        filter(None, [os.path.join(ROOT, 'src'), ROOT,
                      env.get('PYTHONPATH')]))
    return env


def start_child(command, path, *arguments, **options):
    return subprocess.Popen(
        [sys.executable, '-m', 'tests.file_store_child', command, path,
         DATABASE] + [str(a) for a in arguments],
        cwd=ROOT, env=child_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, stdin=subprocess.PIPE, text=True, **options)


def message(child):
    """The next JSON line of ``child`` (bounded wait)."""
    import select
    ready, _, _ = select.select([child.stdout], [], [], CHILD_TIMEOUT)
    line = child.stdout.readline() if ready else ''
    if not line:
        child.kill()
        raise AssertionError('the child said nothing: %s'
                             % child.communicate()[1])
    return json.loads(line)


def finish(child):
    out, err = child.communicate(timeout=CHILD_TIMEOUT)
    assert child.returncode == 0, err
    return [json.loads(line) for line in out.splitlines()]


def run_child(command, path, *arguments):
    return finish(start_child(command, path, *arguments))


@contextlib.contextmanager
def reading(path):
    """A store of this process on ``path``."""
    store = mongopersist.connect('file://' + path, database=DATABASE,
                                 trusted_modules=['tests.model'])
    try:
        yield store
    finally:
        store.close()


def counter_value(path):
    with reading(path) as store:
        with store.transaction() as dm:
            return dm.root['counter'].value


# -- processes share one server ---------------------------------------------

@needs_server
def test_data_written_by_one_process_is_read_by_another(store_dir):
    [said] = run_child('write', store_dir, 41)
    assert said['step'] == 'written'
    # The writer has ended; its server may be gone: this starts one again.
    assert counter_value(store_dir) == 41
    with reading(store_dir) as store:
        raw = store.client[DATABASE]['counter'].find_one()
    assert raw['value'] == 41
    assert raw['_py_serial'] == 1


@needs_server
def test_processes_on_one_directory_share_one_server(store_dir):
    first = fileserver.lease(store_dir)
    try:
        child = start_child('hold', store_dir)
        assert message(child)['step'] == 'ready'
        second = fileserver.lease(store_dir)
        assert (second.uri, second.pid) == (first.uri, first.pid)
        second.close()
        child.stdin.write('go\n')
        child.stdin.flush()
        assert finish(child)[-1]['step'] == 'done'
        record = fileserver.read_record(store_dir)
        assert record['pid'] == first.pid and record['state'] == 'running'
        assert first.client()[DATABASE]['counter'].find_one()['value'] == 2
    finally:
        first.close()


@needs_server
def test_two_processes_counting_lose_nothing(store_dir):
    run_child('write', store_dir, 0)
    increments = 15
    children = [start_child('count', store_dir, increments)
                for _ in range(2)]
    for child in children:
        assert finish(child)[-1]['step'] == 'counted'
    assert counter_value(store_dir) == 2 * increments


@needs_server
def test_a_commit_that_returned_survives_sigkill(store_dir):
    child = start_child('commit-and-wait', store_dir, 7)
    said = message(child)
    assert said['step'] == 'committed'
    record = fileserver.read_record(store_dir)
    # The application, its server and the server's watcher die at once:
    # nothing is stopped cleanly, the record is left as it was.
    for pid in (child.pid, record['watcher'], record['pid']):
        os.kill(pid, signal.SIGKILL)
    child.communicate(timeout=CHILD_TIMEOUT)
    deadline = time.monotonic() + CHILD_TIMEOUT
    while alive(record['pid']) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fileserver.read_record(store_dir)['state'] == 'running'
    # The stale record is replaced by a new server, on the same port.
    with fileserver.lease(store_dir) as held:
        assert held.pid != record['pid']
        assert held.port == record['port']
        doc = held.client()[DATABASE]['counter'].find_one()
    assert doc['value'] == 7


@needs_server
def test_a_server_that_dies_under_its_leases_is_restarted(store_dir):
    with fileserver.lease(store_dir) as held:
        client = held.client(serverSelectionTimeoutMS=30000)
        client[DATABASE]['things'].insert_one({'_id': 1})
        os.kill(held.pid, signal.SIGKILL)
        deadline = time.monotonic() + CHILD_TIMEOUT
        while fileserver.read_record(store_dir)['pid'] == held.pid:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        record = fileserver.read_record(store_dir)
        assert record['state'] == 'running'
        assert record['pid'] != held.pid and record['port'] == held.port
        # The same URI reaches the new server (the first use of a pooled
        # connection to the dead one may fail; PyMongo then reconnects):
        # the write is still there.
        with contextlib.suppress(pymongo.errors.AutoReconnect):
            client.admin.command('ping')
        assert client[DATABASE]['things'].find_one() == {'_id': 1}


@needs_server
def test_the_server_stops_when_its_last_lease_goes(store_dir):
    held = fileserver.lease(store_dir, linger=0)
    record = fileserver.read_record(store_dir)
    held.close()
    fileserver.wait_stopped(store_dir, record)
    assert not alive(record['pid']) and not alive(record['watcher'])
    assert fileserver.read_record(store_dir)['state'] == 'stopped'


@needs_server
def test_the_command_line_reads_a_store_an_application_uses(
        store_dir, capsys):
    child = start_child('hold', store_dir)
    try:
        assert message(child)['step'] == 'ready'
        code = cli.main(['--uri', 'file://' + store_dir, '--json',
                         '--trust', 'tests.model', 'inspect'])
        out = json.loads(capsys.readouterr().out)
        assert code == 0
        [found] = [c for c in out['collections']
                   if c['collection'] == 'counter']
        assert found['database'] == DATABASE
        assert found['classes'] == {'tests.model.Counter': 1}
        # The application goes on using the store afterwards.
        child.stdin.write('go\n')
        child.stdin.flush()
        assert finish(child)[-1]['step'] == 'done'
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert counter_value(store_dir) == 2


@needs_server
def test_the_command_line_asks_which_database_when_there_are_several(
        store_dir, capsys):
    with fileserver.lease(store_dir) as held:
        client = held.client()
        client['one']['c'].insert_one({})
        client['two']['c'].insert_one({})
        code = cli.main(['--uri', 'file://' + store_dir, 'inspect'])
    assert code == cli.EXIT_USAGE
    assert 'give --database' in capsys.readouterr().err


# -- errors ------------------------------------------------------------------

def test_without_the_extra_the_error_names_it(tmp_path, monkeypatch):
    monkeypatch.setattr(fileserver, 'SERVER_MODULE', 'mp_no_such_server')
    path = tmp_path / 'store'
    with pytest.raises(ConfigurationError) as raised:
        mongopersist.connect('file://%s' % path, database='db')
    text = str(raised.value)
    assert str(path) in text
    assert "pip install 'mongopersist[server]'" in text
    assert raised.value.setting == 'uri'
    assert not path.exists()


def drop_root_rights():
    # Root writes anywhere; without CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    # and CAP_FOWNER in its bounding set, the program it runs does not.
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2, 3):
        if libc.prctl(24, capability, 0, 0, 0) != 0:     # PR_CAPBSET_DROP
            os._exit(99)


@needs_server
def test_an_unwritable_directory_is_refused(tmp_path):
    path = tmp_path / 'store'
    path.mkdir()
    path.chmod(0o500)
    options = {}
    if os.geteuid() == 0:
        if not sys.platform.startswith('linux'):
            pytest.skip('running as root, which writes anywhere')
        options['preexec_fn'] = drop_root_rights
    try:
        child = start_child('connect', str(path), **options)
        out, err = child.communicate(timeout=CHILD_TIMEOUT)
        if child.returncode == 99:
            pytest.skip('running as root, which writes anywhere, and '
                        'cannot drop that right here')
        assert child.returncode == 0, err
        said = json.loads(out)
    finally:
        path.chmod(0o700)
    assert said['setting'] == 'uri'
    assert str(path) in said['error']
    assert 'cannot write' in said['error']
    assert os.listdir(path) == []


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def wait_for_port(port, process):
    deadline = time.monotonic() + CHILD_TIMEOUT
    while not fileserver._connects(port):
        assert process.poll() is None
        assert time.monotonic() < deadline
        time.sleep(0.05)


@needs_server
def test_a_directory_held_by_a_foreign_process_is_refused(store_dir):
    os.makedirs(store_dir)
    port = free_port()
    config = os.path.join(store_dir, 'foreign.toml')
    open(config, 'w').close()
    foreign = subprocess.Popen(
        [sys.executable, '-m', fileserver.SERVER_MODULE, '--config', config,
         '--port', str(port), '--storage-path', store_dir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, foreign)
        with pytest.raises(ConfigurationError) as raised:
            mongopersist.connect('file://' + store_dir, database='db')
        text = str(raised.value)
        assert store_dir in text
        assert 'held by another process' in text
        assert raised.value.setting == 'uri'
        assert fileserver.read_record(store_dir) is None
    finally:
        fileserver.terminate(foreign, port)


@needs_server
def test_a_server_whose_watcher_died_is_restarted_with_one(store_dir):
    # A server of the directory, as a killed watcher leaves it where the
    # system does not kill it along (not Linux): recorded, answering.
    os.makedirs(store_dir)
    port = free_port()
    config = os.path.join(store_dir, fileserver.CONFIG_FILE)
    open(config, 'w').close()
    orphan = subprocess.Popen(
        [sys.executable, '-m', fileserver.SERVER_MODULE, '--config', config,
         '--port', str(port), '--storage-path', store_dir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, orphan)
        gone = subprocess.Popen([sys.executable, '-c', ''])
        gone.wait()
        fileserver._write_record(store_dir, {
            'state': 'running', 'host': fileserver.HOST, 'port': port,
            'pid': orphan.pid, 'watcher': gone.pid})
        client = pymongo.MongoClient(fileserver.server_uri(
            fileserver.read_record(store_dir)))
        client[DATABASE]['things'].insert_one({'_id': 1})
        client.close()
        with fileserver.lease(store_dir) as held:
            assert orphan.wait(timeout=CHILD_TIMEOUT) == 0     # stopped
            record = fileserver.read_record(store_dir)
            assert alive(record['watcher'])
            assert (held.pid, held.port) == (record['pid'], port)
            assert held.client()[DATABASE]['things'].find_one() == {'_id': 1}
    finally:
        if orphan.poll() is None:
            fileserver.terminate(orphan, port)


@needs_server
def test_a_file_is_not_a_directory(tmp_path):
    path = tmp_path / 'store'
    path.write_text('mine')
    with pytest.raises(ConfigurationError, match='not a directory'):
        fileserver.lease(str(path))
    assert path.read_text() == 'mine'


@needs_server
def test_a_directory_of_other_files_is_refused(tmp_path):
    (tmp_path / 'notes.txt').write_text('mine')
    with pytest.raises(ConfigurationError, match='holds other files'):
        mongopersist.connect('file://%s' % tmp_path, database='db')
    assert os.listdir(tmp_path) == ['notes.txt']


@pytest.mark.parametrize('uri, message', [
    ('file://', 'names no directory'),
    ('file:///a?b=1', 'take no options'),
    ('file://a#b', 'take no options'),
    ('file://a%00b', 'NUL'),
    ('file://%ff', 'not UTF-8'),
    ('file://%2F/data', 'holds no slash'),
    ('file://a%2fb', 'holds no slash'),
])
def test_malformed_uris_are_refused_before_anything_happens(
        uri, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match=message) as raised:
        mongopersist.connect(uri, database='db')
    assert raised.value.setting == 'uri'
    assert os.listdir(tmp_path) == []


def test_settings_take_a_file_uri(tmp_path, monkeypatch):
    from mongopersist import settings as settings_module
    monkeypatch.chdir(tmp_path)
    found = settings_module.from_text({
        'mongopersist.uri': 'file://var/my%20data',
        'mongopersist.database': 'blog'})
    assert found.uri == 'file://var/my%20data'
    assert found.directory == str(tmp_path / 'var' / 'my data')
    assert found.database == 'blog'
    assert not found.in_memory
    assert settings_module.check_options(
        'file:///abs/dir', database='x').directory == '/abs/dir'
    # Nothing was created: settings are only read.
    assert os.listdir(tmp_path) == []


@needs_server
def test_connect_gives_a_working_store_and_close_gives_it_back(store_dir):
    store = mongopersist.connect('file://' + store_dir, database='db')
    try:
        assert repr(store) == '<Store db in %s>' % store_dir
        with store.transaction() as dm:
            dm.root['c'] = Counter(3)
        with store.transaction() as dm:
            assert dm.root['c'].value == 3
    finally:
        store.close()
    assert store._lease.closed


# -- the generative test of the door ------------------------------------

SEGMENT = st.one_of(
    st.sampled_from(['..', '.', '', 'data', 'a b', '%20', '%25', '%2F',
                     '%ff', '?x', '#y', '%00', 'é', 'WiredTiger']),
    st.text(st.characters(blacklist_categories=('Cs',),
                          blacklist_characters='/\x00'),
            min_size=1, max_size=12))


def snapshot(top):
    """Every path under ``top`` with its kind and content."""
    found = {}
    for base, dirs, files in os.walk(top):
        for name in dirs:
            found[os.path.join(base, name)] = 'dir'
        for name in files:
            full = os.path.join(base, name)
            with open(full, 'rb') as f:
                found[full] = f.read()
    return found


@contextlib.contextmanager
def confined(sandbox):
    """Fail before anything is touched if the library is about to use a
    directory outside ``sandbox``."""
    prepare = fileserver._prepare

    def guarded(path):
        assert (path + os.sep).startswith(str(sandbox) + os.sep), path
        return prepare(path)
    fileserver._prepare = guarded
    try:
        yield
    finally:
        fileserver._prepare = prepare


@needs_server
@settings(max_examples=12, deadline=None)
@given(absolute=st.booleans(), segments=st.lists(SEGMENT, max_size=4),
       existing=st.sampled_from(['none', 'empty', 'file', 'foreign',
                                 'mongod']))
def test_a_file_uri_gives_the_right_error_or_a_working_store(
        tmp_path_factory, absolute, segments, existing):
    sandbox = tmp_path_factory.mktemp('door')
    cwd = sandbox / 'a' / 'b' / 'c'
    cwd.mkdir(parents=True)
    # No more '..' than the sandbox is deep: nothing outside it is named.
    ups = 0
    kept = []
    for segment in segments:
        ups += segment == '..'
        if segment != '..' or ups <= 3:
            kept.append(segment)
    rest = '/'.join(kept)
    uri = 'file://' + (str(cwd) + '/' + rest if absolute else rest)
    try:
        target = fileserver.directory(uri, base=str(cwd))
    except ConfigurationError:
        target = None
    inside = target is not None and (
        target + os.sep).startswith(str(sandbox) + os.sep)
    if inside and target != str(sandbox):
        if existing == 'file' and not os.path.exists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, 'w') as f:
                f.write('mine')
        elif existing == 'empty':
            os.makedirs(target, exist_ok=True)
        elif existing in ('foreign', 'mongod'):
            os.makedirs(target, exist_ok=True)
            # Somebody's files, or a mongod's WiredTiger directory.
            for name in (['notes.txt'] if existing == 'foreign'
                         else ['WiredTiger', 'mongod.lock']):
                with open(os.path.join(target, name), 'w') as f:
                    f.write('mine')
    before = snapshot(sandbox)
    old = os.getcwd()
    os.chdir(cwd)
    store = None
    try:
        with confined(sandbox):
            store = mongopersist.connect(uri, database='door')
    except ConfigurationError as error:
        assert error.setting == 'uri'
        assert 'file://' in str(error)
    finally:
        os.chdir(old)
    try:
        if store is not None:
            assert inside, uri
            with store.transaction() as dm:
                dm.root['c'] = Counter(1)
            with store.transaction() as dm:
                assert dm.root['c'].value == 1
            store.close()
    finally:
        if target is not None and inside:
            stopped(target)
    after = snapshot(sandbox)
    # Only the store's directory (and the directories leading to it)
    # changed; what was there before is still there, unchanged.
    for name, content in before.items():
        if target is None or not name.startswith(target + os.sep):
            assert after.get(name) == content, name
    for name in set(after) - set(before):
        assert target is not None and store is not None, name
        assert (name + os.sep).startswith(target + os.sep) or \
            (target + os.sep).startswith(name + os.sep), name
