"""The results as a table, a JSON file and a chart."""
import json
import os


HEADER = ('scenario', 'system', 'objects/s', 'x pymongo time',
          'in backend', 'writes/commit', 'reads')


def _fmt_count(value):
    if value is None:
        return '-'
    return '%g' % value


def table_rows(results):
    rows = []
    for r in results:
        rows.append((r.scenario, r.system, '{:,.0f}'.format(r.per_second),
                     '-' if r.ratio is None else '%.2f' % r.ratio,
                     '-' if r.backend_share is None
                     else '%.0f%%' % (100 * r.backend_share),
                     _fmt_count(r.writes_per_commit),
                     _fmt_count(r.reads_per_commit)))
    return rows


def format_table(results):
    """A Markdown table (readable as plain text too)."""
    rows = [HEADER] + table_rows(results)
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    right = (False, False, True, True, True, True, True)

    def line(row):
        cells = [cell.rjust(w) if r else cell.ljust(w)
                 for cell, w, r in zip(row, widths, right)]
        return '| ' + ' | '.join(cells) + ' |'

    rule = '|' + '|'.join(('-' * (w + 1) + ':') if r else ('-' * (w + 2))
                          for w, r in zip(widths, right)) + '|'
    return '\n'.join([line(HEADER), rule] + [line(r) for r in rows[1:]])


def format_parts(results, baseline):
    """Lines for the noted parts of runs, e.g. the writer without BSON."""
    base = {r.scenario: r for r in results if r.system == baseline}
    lines = []
    for r in results:
        for name in r.parts:
            line = '%s / %s, %s alone: {:,.0f} objects/s'.format(
                r.part_per_second(name)) % (r.scenario, r.system, name)
            if r.scenario in base:
                line += ' (%.2f x pymongo time)' % (
                    base[r.scenario].per_second / r.part_per_second(name))
            lines.append(line)
    return lines


#: The goals the summary checks: (scenario, what, goal).  Round trips:
#: issue 9; (de)serialization time: issue 20.
GOALS = (
    ('serialize', 'time', 2.0),
    ('deserialize', 'time', 2.5),
    ('cold-walk', 'reads', 5),
    ('one-object', 'round trips', 2),
)

#: Issue 20's goals for the client's CPU per object: (mongopersist + BSON)
#: / (raw PyMongo + BSON), both outside the backend, with BSON the
#: ``bson.encode`` (writing scenarios), ``bson.decode`` (reading ones) or
#: both (one-object) of raw PyMongo's documents, per object, in the same
#: run: what a server adds to both sides.
CLIENT_GOALS = (
    ('insert', 'encode', 3.0),
    ('cold-load', 'decode', 3.0),
    ('cold-walk', 'decode', 3.0),
    ('one-object', 'both', 10.0),
    ('modify', 'encode', 5.0),
    ('modify-conflicts', 'encode', None),
    ('warm', 'decode', 3.0),
    ('warm-implicit', 'decode', 3.0),
)

#: Scenarios where issue 20 asks mongopersist to be ahead of ZODB
#: (FileStorage) on total time.
AHEAD_OF_ZODB = ('insert', 'modify', 'warm')


def client_cpu(results, baseline='pymongo', system='mongopersist'):
    """``[(scenario, raw us, ours us, bson us, ratio, goal)]``: the client
    CPU per object outside the backend (see ``CLIENT_GOALS``); empty
    without the (de)serialize rows of ``baseline`` to take BSON from."""
    rows = {(r.scenario, r.system): r for r in results}
    per_object = {}
    for scenario in ('serialize', 'deserialize'):
        base = rows.get((scenario, baseline))
        if base is None:
            return []
        per_object[scenario] = base.median_seconds / base.count * 1e6
    bson_us = {'encode': per_object['serialize'],
               'decode': per_object['deserialize'],
               'both': per_object['serialize'] + per_object['deserialize']}
    lines = []
    for scenario, side, goal in CLIENT_GOALS:
        ours, base = rows.get((scenario, system)), rows.get(
            (scenario, baseline))
        if ours is None or base is None or \
                ours.outside_backend_seconds is None or \
                base.outside_backend_seconds is None:
            continue
        ours_us = ours.outside_backend_seconds / ours.count * 1e6
        base_us = base.outside_backend_seconds / base.count * 1e6
        added = bson_us[side]
        lines.append((scenario, base_us, ours_us, added,
                      (ours_us + added) / (base_us + added), goal))
    return lines


def format_client_cpu(results, baseline='pymongo', system='mongopersist',
                      zodb='zodb-file'):
    """A table of ``client_cpu``, with ZODB's total time where issue 20
    compares it (and the same for mongopersist's pure-Python code, when it
    ran)."""
    out = _client_cpu_table(results, baseline, system, zodb)
    pure = system + '-pure'
    if out and any(r.system == pure for r in results):
        out += _client_cpu_table(results, baseline, pure, zodb)
    return out


def _client_cpu_table(results, baseline, system, zodb):
    lines = client_cpu(results, baseline, system)
    if not lines:
        return []
    rows = {(r.scenario, r.system): r for r in results}
    out = ['Client CPU per object outside the backend, in us, and the '
           'ratio (%s + BSON) / (%s + BSON); last column: %s total time / '
           '%s total time:' % (system, baseline, system, zodb),
           '  %-17s %8s %12s %6s %6s %7s %7s' % (
               'scenario', baseline, system, 'BSON', 'ratio', 'goal',
               'x ZODB')]
    for scenario, base_us, ours_us, added, ratio, goal in lines:
        ours, other = rows.get((scenario, system)), rows.get(
            (scenario, zodb))
        versus = '-'
        if scenario in AHEAD_OF_ZODB and ours is not None and \
                other is not None:
            versus = '%.2f' % (ours.median_seconds / other.median_seconds)
        out.append('  %-17s %8.1f %12.1f %6.1f %6.2f %7s %7s' % (
            scenario, base_us, ours_us, added, ratio,
            '-' if goal is None else '<= %g' % goal, versus))
    return out


def format_goals(results, baseline, system='mongopersist'):
    """Lines comparing ``system`` with ``baseline`` (same run) where
    issues 9 and 20 set goals: time ratios to ``bson.encode``/
    ``bson.decode`` (raw PyMongo's (de)serialization), reads of the cold
    walk, and round trips per one-object request."""
    rows = {(r.scenario, r.system): r for r in results}
    lines = []
    for scenario, what, goal in GOALS:
        ours = rows.get((scenario, system))
        base = rows.get((scenario, baseline))
        if ours is None or base is None:
            continue
        if what == 'time':
            lines.append('%s: %s takes %.2f x the time of %s (bson.%s of '
                         'equal dicts); goal <= %g x' % (
                             scenario, system, ours.ratio, baseline,
                             'encode' if scenario == 'serialize'
                             else 'decode', goal))
        elif what == 'reads':
            lines.append('%s: %s %s reads, %s %s; goal <= %d' % (
                scenario, system, _fmt_count(ours.reads_per_commit),
                baseline, _fmt_count(base.reads_per_commit), goal))
        else:
            lines.append('%s: %s %s round trips per request, %s %s; '
                         'goal %d' % (
                             scenario, system, _per_request(ours), baseline,
                             _per_request(base), goal))
    return lines


def _per_request(result):
    if result.writes_per_commit is None:
        return '-'
    return '%g' % ((result.reads_per_commit + result.writes_per_commit)
                   / result.count)


def format_per_transaction(results, baseline, transactions):
    """Lines for the warm scenarios: round trips per transaction (the
    measured block runs ``transactions`` of them) and the time ratio."""
    lines = []
    for r in results:
        if not r.scenario.startswith('warm') or r.reads_per_commit is None:
            continue
        line = '%s / %s: %g reads and %g writes per transaction' % (
            r.scenario, r.system, r.reads_per_commit / transactions,
            r.writes_per_commit / transactions)
        if r.ratio is not None and r.system != baseline:
            line += ', %.2f x pymongo time' % r.ratio
        lines.append(line)
    return lines


def write_json(path, results, meta, memory=None):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    data = {'meta': meta, 'results': [r.as_dict() for r in results],
            'client_cpu': [dict(zip(('scenario', 'pymongo_us', 'ours_us',
                                     'bson_us', 'ratio', 'goal'), line))
                           for line in client_cpu(results)]}
    if memory:
        data['memory_bytes_per_object'] = memory
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=2)
        f.write('\n')


def chart_path(json_path):
    return os.path.splitext(json_path)[0] + '.png'


def write_chart(path, results, meta):
    """A grouped bar chart: objects/second per scenario and system."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot

    scenarios = list(dict.fromkeys(r.scenario for r in results))
    systems = list(dict.fromkeys(r.system for r in results))
    by_key = {(r.scenario, r.system): r for r in results}
    height = 0.8 / max(1, len(systems))
    fig, ax = pyplot.subplots(
        figsize=(10, 1.2 + 0.9 * len(scenarios) * max(1, len(systems)) / 4))
    colors = pyplot.get_cmap('tab10')
    for j, system in enumerate(systems):
        ys, xs, labels = [], [], []
        for i, scenario in enumerate(scenarios):
            result = by_key.get((scenario, system))
            if result is None:
                continue
            ys.append(i + (j - (len(systems) - 1) / 2) * height)
            xs.append(result.per_second)
            labels.append('' if result.ratio is None
                          else '%.2f×' % result.ratio)
        bars = ax.barh(ys, xs, height=height, label=system, color=colors(j))
        for bar, label in zip(bars, labels):
            ax.text(bar.get_width() * 1.05, bar.get_y() + bar.get_height() / 2,
                    label, va='center', fontsize=7)
    ax.set_xscale('log')
    ax.set_yticks(range(len(scenarios)))
    ax.set_yticklabels(scenarios)
    ax.invert_yaxis()
    ax.set_xlabel('objects per second (log scale; labels: time relative to '
                  'raw PyMongo)')
    ax.set_title('mongopersist benchmarks, N=%s, %s backend' % (
        meta['n'], meta['backend']))
    ax.set_xlim(right=max(r.per_second for r in results) * 2.5)
    ax.legend(loc='upper left', bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.grid(axis='x', which='both', alpha=0.3)
    fig.tight_layout()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=110)
    pyplot.close(fig)
