"""Smoke test of the benchmarks (``python -m benchmarks``).

It runs every scenario on every system with a tiny data set and checks the
report: the table, the JSON file, the chart and the round trips counted.
Nothing here asserts a timing.
"""
import io
import json

import pytest

from benchmarks import __main__ as cli
from benchmarks import model

SCENARIOS = ['insert', 'cold-load', 'cold-walk', 'one-object', 'modify',
             'modify-conflicts', 'serialize', 'deserialize', 'warm',
             'warm-implicit']
SYSTEMS = ['pymongo', 'mongopersist', 'mongopersist-pure', 'mongoengine',
           'zodb-mapping', 'zodb-file']
ROWS = {(scenario, system) for scenario in SCENARIOS for system in SYSTEMS}
N = 20


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """One benchmark run: its results, printed output and JSON path."""
    out = tmp_path_factory.mktemp('bench') / 'results.json'
    printed = io.StringIO()
    results = cli.main(['--n', str(N), '--runs', '1', '--json', str(out),
                        '--quiet', '--memory', str(N)], out=printed)
    return results, printed.getvalue(), out


def table_rows(text):
    rows = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip('|').split('|')]
        if line.startswith('| ') and cells[0] in SCENARIOS:
            rows.append(cells)
    return rows


def test_table_has_a_row_for_every_scenario_and_system(run):
    results, printed, _ = run
    rows = table_rows(printed)
    assert len(rows) == len(ROWS)
    assert {(row[0], row[1]) for row in rows} == ROWS
    assert {(r.scenario, r.system) for r in results} == ROWS
    for row in rows:
        if row[1] == 'pymongo':
            assert row[3] == '1.00'     # the baseline's ratio to itself


def test_json_and_chart_are_written_side_by_side(run):
    _, printed, out = run
    data = json.loads(out.read_text(encoding='utf-8'))
    assert data['meta']['n'] == N and data['meta']['runs'] == 1
    assert {(r['scenario'], r['system']) for r in data['results']} == ROWS
    for result in data['results']:
        assert result['objects_per_second'] > 0
        assert len(result['seconds']) == 1
    png = out.with_suffix('.png')
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert str(png) in printed


def test_client_cpu_and_memory_are_reported(run):
    _, printed, out = run
    data = json.loads(out.read_text(encoding='utf-8'))
    assert 'Client CPU per object outside the backend' in printed
    assert {line['scenario'] for line in data['client_cpu']} == {
        'insert', 'cold-load', 'cold-walk', 'one-object', 'modify',
        'modify-conflicts', 'warm', 'warm-implicit'}
    for line in data['client_cpu']:
        assert line['ratio'] > 0 and line['bson_us'] > 0
    assert 'Memory held per loaded person (%d people' % N in printed
    held = data['memory_bytes_per_object']
    assert set(held) == {'pymongo', 'mongopersist', 'zodb-file'}
    assert all(value > 0 for value in held.values())
    assert data['meta']['accelerator'] in ('compiled', 'pure Python')


def by_row(results):
    return {(r.scenario, r.system): r for r in results}


def test_round_trips_are_counted(run):
    rows = by_row(run[0])
    # Raw PyMongo: one insert_many per collection, one find, one bulk_write.
    assert rows['insert', 'pymongo'].writes_per_commit == 2
    assert rows['cold-load', 'pymongo'].reads_per_commit == 1
    assert rows['modify', 'pymongo'].writes_per_commit == 1
    # MongoEngine saves each modified document on its own (10% of N).
    assert rows['modify', 'mongoengine'].writes_per_commit == N // 10
    # mongopersist writes a collection's changes in one bulk write.
    assert rows['modify', 'mongopersist'].writes_per_commit == 1
    # Warm transactions: raw PyMongo queries the held documents once per
    # transaction; mongopersist reads their serials once (and, at commit,
    # those of the documents it updates), never one read per object.
    for scenario in ('warm', 'warm-implicit'):
        assert rows[scenario, 'pymongo'].reads_per_commit == \
            model.WARM_TRANSACTIONS
        assert rows[scenario, 'mongopersist'].reads_per_commit <= \
            2 * model.WARM_TRANSACTIONS
        assert rows[scenario, 'mongopersist'].writes_per_commit == \
            model.WARM_TRANSACTIONS
    # ZODB does not talk to MongoDB; (de)serializing makes no round trip.
    assert rows['insert', 'zodb-file'].writes_per_commit is None
    assert rows['serialize', 'mongopersist'].writes_per_commit == 0
    # The cold walk: raw PyMongo reads the people, then their addresses in
    # one $in; mongopersist loads each query page's addresses together.
    assert rows['cold-walk', 'pymongo'].reads_per_commit == 2
    assert rows['cold-walk', 'mongopersist'].reads_per_commit == 2
    # A one-object request: a find and an update, for both.
    for system in ('pymongo', 'mongopersist'):
        row = rows['one-object', system]
        assert row.count == N
        assert (row.reads_per_commit, row.writes_per_commit) == (N, N)


def test_the_goals_are_reported_against_the_same_run(run):
    printed = run[1]
    for text in ('serialize: mongopersist takes', 'bson.encode',
                 'deserialize: mongopersist takes', 'bson.decode',
                 'cold-walk: mongopersist 2 reads, pymongo 2',
                 'one-object: mongopersist 2 round trips per request, '
                 'pymongo 2'):
        assert text in printed


def test_warm_round_trips_are_printed_per_transaction(run):
    printed = run[1]
    assert 'warm / pymongo: 1 reads and 1 writes per transaction' in printed
    assert 'warm / mongopersist: ' in printed


def test_every_modify_run_writes(run):
    # Each run changes the data anew (runs after the first, on the same
    # objects, would otherwise find nothing to write).
    rows = by_row(run[0])
    for scenario in ('modify', 'modify-conflicts'):
        assert rows[scenario, 'mongopersist'].writes_per_commit == 1
        assert rows[scenario, 'mongoengine'].writes_per_commit == N // 10


def test_unknown_scenario_is_refused(capsys):
    with pytest.raises(SystemExit):
        cli.main(['--scenarios', 'insert,teleport'])
    assert 'teleport' in capsys.readouterr().err


def test_the_pool_benchmark_counts_fewer_reads_for_pooled_requests(capsys):
    from benchmarks import pool
    new_reads, pooled_reads = pool.main(['--posts', '3', '--requests', '2'])
    printed = capsys.readouterr().out
    assert 'ratio new/pooled: reads' in printed
    # The root entry and one validation query per collection.
    assert pooled_reads <= 5 and pooled_reads < new_reads


def test_the_cache_benchmark_measures_one_and_many_collections(capsys):
    from benchmarks import cache
    one, many = cache.main(['--objects', '5', '--collections', '3',
                            '--repeat', '2'])
    printed = capsys.readouterr().out
    assert 'validate one collection' in printed and '3 held' in printed
    assert 'rollback to it' in printed
    assert len(one) == len(many) == 6
    assert one[5] == many[5] == 0       # savepoints make no round trip


def test_make_bench_passes_its_size_knobs():
    # ``make bench N=... RUNS=...`` is how the README and the issue size a
    # run; the target must hand them to ``python -m benchmarks``.
    import os
    import shutil
    import subprocess
    if shutil.which('make') is None:
        pytest.skip('make is not installed')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = subprocess.run(
        ['make', '-n', '-s', 'bench', 'N=50', 'RUNS=2', 'STAMP=Makefile'],
        cwd=root, capture_output=True, text=True, check=True).stdout
    assert '-m benchmarks --n 50 --runs 2' in command
