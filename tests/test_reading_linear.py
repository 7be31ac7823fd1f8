"""Reading is linear: the reader's work grows in proportion to the document.

Issue 17: a few kilobytes of nesting with a refused name at the bottom
made the reader search its way back up the tree, reading each subtree
again at every level: work exponential in the depth (depth 18 took 3 s,
depth 40 would not finish).  These properties load documents of growing
nesting (every nesting shape of the format, with an allowed value or a
refused name at the bottom) and of growing width, count the steps of
loading (``tests/bounded.py``: Python and C calls; counts, not time) and
assert that doubling the document at most about doubles the work:

    steps(2n) - steps(n) <= 2.5 * (steps(n) - steps(n / 2)) + SLACK

(the data manager's fixed work cancels out of the differences), and, as
the issue puts it, ``steps(2n) <= 2.5 * steps(n) + SLACK``.  Each load
runs in a forked child under a step budget derived from the smaller
document's count, so exponential work fails at once instead of hanging
(and a CPU limit stops anything that escapes the budget).
"""
import pytest
import transaction
from bson.dbref import DBRef
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mongopersist import interfaces
from tests import bounded
from tests.test_hostile import (  # noqa: F401 (fixtures: guard, s)
    FIELD, NESTINGS, PERSON, REFUSED_LEAF, RootPath, guard, s)
from tests.test_hostile_generative import WRAPPERS, use

#: Steps of difference that are noise, not growth (the fixed work of one
#: load differs a little with what it finds: a first error, a first
#: class resolved).
SLACK = 400

#: Steps the smallest document of a series may take (a load of a small
#: document takes about a thousand).
FIRST_BUDGET = 60000

ALLOWED_LEAF = {'_py_type': 'enum.Enum', 'class': 'tests.test_hostile.Color',
                'name': 'GREEN'}
LEAVES = {'allowed value': ALLOWED_LEAF, 'refused name': REFUSED_LEAF}


def steps_of_loading(s, value, budget):
    """The steps of loading the holder whose ``FIELD`` stores ``value``
    (and of using it: ghosts in it are activated), in a forked child.

    Loading may fail with a ``StoredDataError``; anything else fails the
    test.  A load over ``budget`` steps fails the test at once."""
    dms = []

    def setup():
        s.in_child()
        s.db[PERSON].update_one({'_id': s.holder_id},
                                {'$set': {FIELD: value}})
        dms.append(s.fresh())

    def load():
        holder = dms[0].load(DBRef(PERSON, s.holder_id, s.dbname))
        use(getattr(holder, FIELD))

    outcome = bounded.isolated(load, setup, lambda value, error: None,
                               steps=budget)
    assert outcome.stopped is None, (
        'loading a document of %d bytes was stopped: %s' % (
            bounded.bson_size({FIELD: value}), outcome.stopped))
    if outcome.error is not None:
        assert isinstance(outcome.error, interfaces.StoredDataError), (
            outcome.trace)
    return outcome.steps


def assert_linear(s, make, sizes):
    """Load ``make(n)`` for the three ``sizes`` (each twice the one
    before); assert the steps grow linearly."""
    small, middle, large = sizes
    first = steps_of_loading(s, make(small), FIRST_BUDGET)
    second = steps_of_loading(s, make(middle), int(2.5 * first) + SLACK)
    third = steps_of_loading(s, make(large), int(2.5 * second) + SLACK)
    counts = {small: first, middle: second, large: third}
    assert second <= 2.5 * first + SLACK, counts
    assert third <= 2.5 * second + SLACK, counts
    assert third - second <= 2.5 * max(second - first, 0) + SLACK, (
        'the work grows faster than the document: %r' % counts)
    return counts


@pytest.fixture
def holder(s):
    RootPath().install(s)
    transaction.commit()
    return s


def _nested(nesting, leaf):
    depth, wrap, _ = NESTINGS[nesting]

    def make(n):
        value = leaf
        for _ in range(n):
            value = wrap(value)
        return value
    sizes = (depth // 4, depth // 2, depth // 4 * 4)
    return make, sizes


@pytest.mark.parametrize('leaf', sorted(LEAVES))
@pytest.mark.parametrize('nesting', sorted(NESTINGS))
def test_reading_is_linear_in_the_depth(holder, nesting, leaf):
    """Nesting of every shape, an allowed value or a refused name at the
    bottom: doubling the depth at most about doubles the work."""
    make, sizes = _nested(nesting, LEAVES[leaf])
    assert_linear(holder, make, sizes)


#: Wide documents: ``n`` values side by side (the last one maybe refused).
WIDTHS = {
    'array of numbers': lambda n, leaf: list(range(n)) + [leaf],
    'dict of dicts': lambda n, leaf: dict(
        {'f%d' % i: {'a': i} for i in range(n)}, last=leaf),
    'array of value objects': lambda n, leaf: [
        {'_py_type': 'tests.model.Phone', 'area': i}
        for i in range(n)] + [leaf],
    'array of dates': lambda n, leaf: [
        {'_py_type': 'datetime.date', 'iso': '2020-01-%02d' % (i % 28 + 1)}
        for i in range(n)] + [leaf],
    'set members': lambda n, leaf: {
        '_py_type': 'builtins.set', 'items': list(range(n)) + [leaf]},
    'dict items': lambda n, leaf: {
        '_py_type': 'builtins.dict',
        'items': [[i, {'a': i}] for i in range(n)] + [['last', leaf]]},
    'list items': lambda n, leaf: {
        '_py_factory': 'collections.deque', '_py_factory_args': [],
        '_py_listitems': [{'a': i} for i in range(n)] + [leaf]},
    'arrays of nested dicts': lambda n, leaf: [
        {'a': {'b': {'c': i}}} for i in range(n)] + [{'a': {'b': leaf}}],
}


@pytest.mark.parametrize('leaf', sorted(LEAVES))
@pytest.mark.parametrize('width', sorted(WIDTHS))
def test_reading_is_linear_in_the_width(holder, width, leaf):
    """``n`` values side by side: doubling ``n`` at most about doubles
    the work."""
    shape = WIDTHS[width]
    assert_linear(holder, lambda n: shape(n, LEAVES[leaf]), (100, 200, 400))


def test_reading_is_linear_in_depth_and_width(holder):
    """Many deep branches, a refused name at the bottom of the last."""
    def make(n):
        branches = []
        for index in range(n):
            value = REFUSED_LEAF if index == n - 1 else index
            for _ in range(12):
                value = {'_py_type': 'tests.model.Phone', 'area': [value]}
            branches.append(value)
        return branches
    assert_linear(holder, make, (4, 8, 16))


#: The most BSON levels a drawn nesting pattern may reach (of MongoDB's
#: 100; the holder document and its field take two).
PATTERN_LEVELS = 84


@settings(max_examples=12, deadline=None,
          # The holder is stored once; each example plants in a child.
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pattern=st.lists(st.sampled_from(sorted(WRAPPERS)), min_size=1,
                        max_size=3),
       leaf=st.sampled_from(sorted(LEAVES)))
def test_reading_is_linear_for_any_nesting_pattern(holder, pattern, leaf):
    """Any pattern of nesting shapes, repeated: linear in the repeats."""
    per_pattern = sum(WRAPPERS[kind][1] for kind in pattern)
    repeats = PATTERN_LEVELS // per_pattern // 4
    if repeats < 1:
        return

    def make(n):
        value = LEAVES[leaf]
        for _ in range(n):
            for kind in pattern:
                value = WRAPPERS[kind][0](value)
        return value
    assert_linear(holder, make, (repeats, 2 * repeats, 4 * repeats))
