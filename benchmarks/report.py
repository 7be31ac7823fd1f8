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


#: The goals of issue 9 the summary checks: (scenario, what, goal).
GOALS = (
    ('serialize', 'time', 3.0),
    ('deserialize', 'time', 3.5),
    ('cold-walk', 'reads', 5),
    ('one-object', 'round trips', 2),
)


def format_goals(results, baseline, system='mongopersist'):
    """Lines comparing ``system`` with ``baseline`` (same run) where
    issue 9 set goals: time ratios to ``bson.encode``/``bson.decode``
    (raw PyMongo's (de)serialization), reads of the cold walk, and round
    trips per one-object request."""
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


def write_json(path, results, meta):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump({'meta': meta, 'results': [r.as_dict() for r in results]},
                  f, indent=2)
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
