"""Running every scenario on every system and collecting the results."""
import statistics
import tempfile
import uuid

from benchmarks import BASELINE, SCENARIOS, SYSTEMS, model
from benchmarks.measure import Measure
from benchmarks.systems import Context, all_systems


class Result:
    """The runs of one scenario on one system."""

    def __init__(self, scenario, system, count):
        self.scenario = scenario
        self.system = system
        self.count = count          # objects handled per run
        self.seconds = []           # one per run
        self.writes = []
        self.reads = []
        self.backend_seconds = []
        self.parts = {}             # part name -> seconds, one per run
        self.ratio = None           # median time / baseline median time

    def add(self, measure):
        self.seconds.append(measure.seconds)
        self.writes.append(measure.writes)
        self.reads.append(measure.reads)
        self.backend_seconds.append(measure.backend_seconds)
        for name, seconds in measure.parts.items():
            self.parts.setdefault(name, []).append(seconds)

    @property
    def median_seconds(self):
        return statistics.median(self.seconds)

    @property
    def per_second(self):
        """Objects per second, from the median run."""
        return self.count / self.median_seconds

    def part_per_second(self, name):
        """Objects per second of a noted part alone (median of runs)."""
        return self.count / statistics.median(self.parts[name])

    @property
    def backend_share(self):
        """The share of the time spent in the backend (median of runs)."""
        return _median_or_none([
            None if backend is None else backend / total
            for backend, total in zip(self.backend_seconds, self.seconds)])

    @property
    def outside_backend_seconds(self):
        """Median time not spent in the backend: library and driver."""
        return _median_or_none([
            None if backend is None else total - backend
            for backend, total in zip(self.backend_seconds, self.seconds)])

    @property
    def writes_per_commit(self):
        return _median_or_none(self.writes)

    @property
    def reads_per_commit(self):
        return _median_or_none(self.reads)

    def as_dict(self):
        return {
            'scenario': self.scenario, 'system': self.system,
            'objects': self.count, 'runs': len(self.seconds),
            'seconds': self.seconds, 'median_seconds': self.median_seconds,
            'objects_per_second': self.per_second,
            'ratio_to_pymongo': self.ratio,
            'backend_seconds': self.backend_seconds,
            'backend_share': self.backend_share,
            'outside_backend_us_per_object': (
                None if self.outside_backend_seconds is None
                else self.outside_backend_seconds / self.count * 1e6),
            'parts': {name: {'seconds': seconds,
                             'objects_per_second': self.part_per_second(name)}
                      for name, seconds in self.parts.items()},
            'write_round_trips': self.writes_per_commit,
            'read_round_trips': self.reads_per_commit,
        }


def _median_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def object_count(scenario, dataset):
    if scenario in ('modify', 'modify-conflicts'):
        return dataset.modified_count
    if scenario == 'one-object':
        return dataset.request_count
    if scenario in ('warm', 'warm-implicit'):
        # Object reads: the held objects, in every transaction.
        return dataset.modified_count * model.WARM_TRANSACTIONS
    return dataset.n


def run(n, runs, client, counts, scenarios=SCENARIOS, systems=SYSTEMS,
        progress=None):
    """Run ``scenarios`` on ``systems``; return the ``Result`` list.

    ``counts`` is the ``counting.RoundTrips`` that counting fills;
    ``progress(scenario, system, run_number, seconds)`` hears of each run.

    Runs are interleaved (run 1 of every system, then run 2, ...) so that
    a slow phase of the machine does not land on one system only.
    """
    dataset = model.Dataset(n)
    prefix = 'mp_bench_%s' % uuid.uuid4().hex[:8]
    results = []
    with tempfile.TemporaryDirectory(prefix='mp-bench-') as tmpdir:
        context = Context(dataset, client, prefix, tmpdir, counts)
        chosen = []
        try:
            for cls in all_systems():
                if cls.name in systems:
                    chosen.append(cls(context))
            if 'insert' not in scenarios:
                for system in chosen:   # the data the others read
                    system.insert(Measure(), 0)
            stamp = 0       # unique per run, so every modify changes data
            for scenario in scenarios:
                method = scenario.replace('-', '_')
                row = {s.name: Result(scenario, s.name,
                                      object_count(scenario, dataset))
                       for s in chosen}
                for run_number in range(1, runs + 1):
                    stamp += 1
                    for system in chosen:
                        measure = Measure(system.counts)
                        getattr(system, method)(measure, stamp)
                        row[system.name].add(measure)
                        if progress is not None:
                            progress(scenario, system.name, run_number,
                                     measure.seconds)
                _set_ratios(row)
                results.extend(row[s.name] for s in chosen)
        finally:
            for system in chosen:
                system.close()
    return results


def _set_ratios(row):
    base = row.get(BASELINE)
    if base is None:
        return
    for result in row.values():
        result.ratio = result.median_seconds / base.median_seconds
