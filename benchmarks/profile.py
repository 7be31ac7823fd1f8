"""Profile one scenario of one system with cProfile.

``python -m benchmarks.profile --scenario cold-load [--system mongopersist]
[--n 10000] [--sort tottime] [--limit 30] [--out file.pstats]``

Only the measured part of the scenario is profiled (not its set-up).  The
printed statistics show where the time goes; ``--out`` keeps them for
``snakeviz`` or ``python -m pstats``.
"""
import argparse
import cProfile
import pstats
import tempfile
import uuid

from benchmarks import SCENARIOS, SYSTEMS, counting, model
from benchmarks.measure import Measure
from benchmarks.systems import Context, all_systems
from mongopersist import testing


class ProfilingMeasure(Measure):
    """A ``Measure`` that also profiles the measured block."""

    def __init__(self, counts=None):
        super().__init__(counts)
        self.profile = cProfile.Profile()

    def __enter__(self):
        super().__enter__()
        self.profile.enable()
        return self

    def __exit__(self, *exc_info):
        self.profile.disable()
        return super().__exit__(*exc_info)


def profile(scenario, system_name, n, runs=1):
    """Run ``scenario`` on one system; return the last ``ProfilingMeasure``."""
    real_server = testing.uses_real_server()
    with counting.counting(real_server) as counts, \
            tempfile.TemporaryDirectory(prefix='mp-profile-') as tmpdir:
        client = testing.client()
        context = Context(model.Dataset(n), client,
                          'mp_profile_%s' % uuid.uuid4().hex[:8], tmpdir,
                          counts)
        cls, = [c for c in all_systems() if c.name == system_name]
        system = cls(context)
        try:
            if scenario != 'insert':
                system.insert(Measure(), 0)
            for stamp in range(1, runs + 1):
                measure = ProfilingMeasure(system.counts)
                getattr(system, scenario.replace('-', '_'))(measure, stamp)
        finally:
            system.close()
            client.close()
    return measure


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m benchmarks.profile')
    parser.add_argument('--scenario', choices=SCENARIOS, required=True)
    parser.add_argument('--system', choices=SYSTEMS, default='mongopersist')
    parser.add_argument('--n', type=int, default=10000)
    parser.add_argument('--runs', type=int, default=1,
                        help='profile the last of this many runs')
    parser.add_argument('--sort', default='tottime')
    parser.add_argument('--limit', type=int, default=30)
    parser.add_argument('--out', help='also save the raw statistics here')
    args = parser.parse_args(argv)
    measure = profile(args.scenario, args.system, args.n, args.runs)
    print('%s on %s, N=%d: %.3fs (%.3fs in the backend)' % (
        args.scenario, args.system, args.n, measure.seconds,
        measure.backend_seconds or 0.0))
    stats = pstats.Stats(measure.profile)
    if args.out:
        stats.dump_stats(args.out)
    stats.sort_stats(args.sort).print_stats(args.limit)


if __name__ == '__main__':
    main()
