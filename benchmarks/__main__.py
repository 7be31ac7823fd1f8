"""``python -m benchmarks``: run the benchmarks, print the table, save JSON
and a chart.  ``--help`` lists the options."""
import argparse
import datetime
import os
import platform
import sys
from importlib import metadata as importlib_metadata

from benchmarks import (
    BASELINE, SCENARIOS, SYSTEMS, counting, memory, model, report, runner)
from mongopersist import testing

DEFAULT_JSON = os.path.join('benchmarks', 'results', 'results.json')


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='python -m benchmarks',
        description='Benchmark mongopersist against raw PyMongo, MongoEngine '
                    'and ZODB on the same backend (mongomock, or the server '
                    'of MONGODB_URI).')
    parser.add_argument('--n', type=int, default=10000,
                        help='objects per scenario (default: %(default)s)')
    parser.add_argument('--runs', type=int, default=5,
                        help='runs per scenario and system; the table shows '
                             'the median (default: %(default)s)')
    parser.add_argument('--json', default=DEFAULT_JSON,
                        help='where to write the results; the PNG chart goes '
                             'next to it (default: %(default)s)')
    parser.add_argument('--scenarios', default=','.join(SCENARIOS),
                        help='comma-separated subset of: %(default)s')
    parser.add_argument('--systems', default=','.join(SYSTEMS),
                        help='comma-separated subset of: %(default)s')
    parser.add_argument('--quiet', action='store_true',
                        help='do not report progress on stderr')
    parser.add_argument('--memory', type=int, default=20000,
                        help='people loaded for the memory held per object '
                             '(benchmarks/memory.py; 0: not measured; '
                             'default: %(default)s)')
    args = parser.parse_args(argv)
    args.scenarios = _subset(parser, args.scenarios, SCENARIOS, 'scenario')
    args.systems = _subset(parser, args.systems, SYSTEMS, 'system')
    if args.n < 1 or args.runs < 1 or args.memory < 0:
        parser.error('--n and --runs must be at least 1, --memory at '
                     'least 0')
    return args


def _subset(parser, text, known, what):
    names = [name.strip() for name in text.split(',') if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        parser.error('unknown %s %s; choose from %s' % (
            what, ', '.join(unknown) or '(none given)', ', '.join(known)))
    return tuple(name for name in known if name in names)


def _version(dist):
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None


def _cpu():
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _backend(client, real_server):
    if real_server:
        # buildInfo spelled as the server documents it (server_info() sends
        # 'buildinfo', which some wire-protocol servers do not know).
        version = client.admin.command('buildInfo').get('version', '?')
        return 'MongoDB %s' % version
    return 'mongomock %s' % _version('mongomock')


def metadata(args, client, real_server):
    return {
        'n': args.n, 'runs': args.runs,
        'backend': _backend(client, real_server),
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds'),
        'python': '%s %s' % (platform.python_implementation(),
                             platform.python_version()),
        'platform': platform.platform(),
        'cpu': _cpu(), 'cpus': os.cpu_count(),
        'versions': {dist: _version(dist) for dist in (
            'mongopersist', 'pymongo', 'mongomock', 'mongoengine', 'ZODB',
            'persistent', 'transaction')},
        'accelerator': _accelerator(),
    }


def _accelerator():
    """Which implementation of mongopersist's hot paths ran."""
    import mongopersist.datamanager  # noqa: F401 (activates speedups)
    from mongopersist import speedups
    return 'compiled' if speedups.enabled() else 'pure Python'



def _progress(scenario, system, run_number, seconds):
    print('%-17s %-13s run %d: %.3fs' % (scenario, system, run_number,
                                         seconds),
          file=sys.stderr, flush=True)


def main(argv=None, out=None):
    """Run the benchmarks, print the report to ``out`` (default: stdout).

    Returns the list of ``runner.Result``.
    """
    out = sys.stdout if out is None else out
    args = parse_args(argv)
    real_server = testing.uses_real_server()
    with counting.counting(real_server) as counts:
        client = testing.client()
        try:
            meta = metadata(args, client, real_server)
            results = runner.run(
                args.n, args.runs, client, counts,
                scenarios=args.scenarios, systems=args.systems,
                progress=None if args.quiet else _progress)
            held = memory.measure(
                client, args.memory, [name for name in memory.SYSTEMS
                                      if name in args.systems]
            ) if args.memory else {}
        finally:
            client.close()
    print('N=%d, median of %d runs, backend: %s, %s, %s (%s CPUs), '
          'mongopersist %s' % (
              args.n, args.runs, meta['backend'], meta['python'],
              meta['cpu'], meta['cpus'], meta['accelerator']), file=out)
    print(report.format_table(results), file=out)
    for line in report.format_parts(results, BASELINE):
        print(line, file=out)
    for line in report.format_per_transaction(
            results, BASELINE, model.WARM_TRANSACTIONS):
        print(line, file=out)
    for line in report.format_goals(results, BASELINE):
        print(line, file=out)
    for line in report.format_client_cpu(results, BASELINE):
        print(line, file=out)
    if held:
        for line in memory.format_memory(held, args.memory):
            print(line, file=out)
    report.write_json(args.json, results, meta, held)
    png = report.chart_path(args.json)
    report.write_chart(png, results, meta)
    print('Wrote %s and %s' % (args.json, png), file=out)
    return results


if __name__ == '__main__':
    main()
