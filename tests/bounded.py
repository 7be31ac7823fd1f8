"""Run loading under budgets: reader steps, memory, CPU.

Stored data must cost work and memory in proportion to its size
(docs/security.rst).  The tests of ``tests/test_hostile.py``,
``tests/test_hostile_generative.py`` and the linearity properties measure
that without clocks:

``counted(action, budget)``
    runs ``action()`` in this process and counts its *steps*: every Python
    function called and every C function called from Python
    (``sys.setprofile`` events ``call`` and ``c_call``).  Once the count
    passes ``budget`` it raises ``StepBudgetExceeded`` (a
    ``BaseException``, so no ``except Exception`` of the library swallows
    it): a reader that does exponential work fails at once instead of
    hanging the suite.

``isolated(action, ...)``
    runs ``action()`` in a forked child under resource limits and reports
    an ``Outcome``: what it returned or raised (the exception itself,
    pickled back), its steps, the peak of the memory it allocated
    (``tracemalloc``), the canaries that fired and the modules it tried to
    import.  Work done inside one C call (``10 ** 999999999``, a ``deque``
    consuming ``range(2 ** 62)``, ``bytes(2 ** 50)``) is invisible to a
    profiler and cannot be interrupted; in the child it is stopped by
    ``RLIMIT_CPU`` (CPU seconds, not wall-clock time, so a busy machine
    does not make it fire) and ``RLIMIT_AS`` (so a runaway allocation
    fails instead of eating the machine's memory).  A child that outlives
    a generous wall-clock deadline is killed as a last resort.

The limits are guards that make today's defects fail fast, not
measurements: the assertions are on steps and on the memory peak.  With
mongomock the child has its own copy of the in-process database (changes
it makes are not seen by the parent: compare stored data in the child);
with ``MONGODB_URI`` it opens its own client (``client_for_child``).
"""
import os
import pickle
import resource
import select
import signal
import sys
import time
import tracemalloc
import traceback
import warnings

import bson

from mongopersist import testing

#: CPU seconds a child may use; a load of a small document needs a few
#: hundredths of one.  Today's ``Fraction('1e999999999')`` would need hours.
CPU_SECONDS = 2
#: Address space a child may add to what it inherited.
ADDRESS_SPACE = 512 * 2 ** 20
#: Wall-clock seconds after which a child is killed (a last resort: the CPU
#: limit stops it first, unless it is blocked).
DEADLINE = 120
#: Steps a child may take unless told otherwise.
STEPS = 2 * 10 ** 6


class StepBudgetExceeded(BaseException):
    """The action took more steps than its budget."""

    def __init__(self, budget):
        super().__init__(
            'more than %d steps (Python and C calls): work out of '
            'proportion to the data' % budget)
        self.budget = budget


class _Counter:
    def __init__(self, budget):
        self.budget = budget
        self.steps = 0

    def __call__(self, frame, event, arg):
        if event == 'call' or event == 'c_call':
            self.steps += 1
            if self.budget is not None and self.steps > self.budget:
                # Raising here unsets the profiler and propagates.
                raise StepBudgetExceeded(self.budget)


def counted(action, budget=None):
    """Run ``action()``; return ``(result, steps)``.

    Raises ``StepBudgetExceeded`` once ``action`` took more than
    ``budget`` steps (``None``: no budget).  The exception raised carries
    no frame of the action: pytest shows the arguments of the frames of a
    failure's traceback, and showing a ghost (its ``repr``) would load it
    again, without a budget."""
    counter = _Counter(budget)
    previous = sys.getprofile()
    sys.setprofile(counter)
    try:
        result = action()
    except StepBudgetExceeded:
        stopped = True
    else:
        stopped = False
    finally:
        sys.setprofile(previous)
    if stopped:
        raise StepBudgetExceeded(budget) from None
    return result, counter.steps


def bson_size(*docs):
    """The encoded size of ``docs``, in bytes."""
    return sum(len(bson.encode(doc)) for doc in docs)


class Outcome:
    """What an ``isolated`` action did.

    ``value`` (what it returned), ``error`` (the exception it raised, or
    ``None``), ``steps``, ``peak`` (bytes, the tracemalloc peak while it
    ran), ``fired`` (``tests.canary.FIRED`` of the child), ``imports``
    (module names the child's import guard recorded), ``stopped`` (why
    the child did not finish: ``None``, or a text such as 'killed by its
    CPU limit').
    """

    def __init__(self, value=None, error=None, steps=0, peak=0, fired=(),
                 imports=(), stopped=None, trace=''):
        self.value = value
        self.error = error
        self.steps = steps
        self.peak = peak
        self.fired = list(fired)
        self.imports = list(imports)
        self.stopped = stopped
        self.trace = trace

    def __repr__(self):
        return ('<Outcome value=%s error=%s steps=%d peak=%d fired=%r '
                'imports=%r stopped=%r>' % (
                    _short(repr(self.value)), _short(repr(self.error)),
                    self.steps, self.peak, self.fired, self.imports,
                    self.stopped))


def _short(text, limit=300):
    return text if len(text) <= limit else text[:limit] + '...'


def _virtual_size():
    try:
        with open('/proc/self/statm') as statm:
            return int(statm.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def portable(error):
    """``error`` if it pickles (a library error keeps its document and
    path: its attributes are pickled too), else a ``RuntimeError``
    describing it."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError('%s.%s: %s' % (
            type(error).__module__, type(error).__qualname__,
            _short(str(error), 2000)))


def _child(action, setup, after, write_fd, steps, fired, imports):
    """Runs in the child: never returns (``os._exit``)."""
    status = 0
    try:
        if setup is not None:
            setup()
        resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS + 2))
        limit = _virtual_size() + ADDRESS_SPACE
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        outcome = Outcome()
        counter = _Counter(steps() if callable(steps) else steps)
        value = error = None
        tracemalloc.start()
        sys.setprofile(counter)
        try:
            value = action()
        except BaseException as raised:
            sys.setprofile(None)
            error = raised
        finally:
            sys.setprofile(None)
            outcome.steps = counter.steps
            outcome.peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        if isinstance(error, StepBudgetExceeded):
            outcome.stopped = str(error)
        elif isinstance(error, MemoryError):
            outcome.stopped = 'MemoryError (address space limited to %d MB '\
                'more than the parent)' % (ADDRESS_SPACE // 2 ** 20)
        outcome.value = value if after is None else after(value, error)
        if error is not None and not isinstance(error, StepBudgetExceeded):
            outcome.error = portable(error)
        outcome.fired = list(fired())
        outcome.imports = list(imports())
        if error is not None:
            # Once the imports are taken: formatting imports by itself
            # (Python 3.13's traceback imports _suggestions to suggest a
            # name for an AttributeError).
            outcome.trace = ''.join(traceback.format_exception(
                type(error), error, error.__traceback__))[-4000:]
        try:
            data = pickle.dumps(outcome)
        except Exception:
            outcome.value = _short(repr(outcome.value), 2000)
            data = pickle.dumps(outcome)
        view = memoryview(data)
        while view:
            written = os.write(write_fd, view)
            view = view[written:]
    except BaseException:
        status = 3
        try:
            traceback.print_exc()
        except BaseException:
            pass
    finally:
        os._exit(status)


def isolated(action, setup=None, after=None, steps=STEPS,
             fired=lambda: (), imports=lambda: ()):
    """Run ``action()`` in a forked child under the limits above.

    Only ``action`` is measured.  The child calls ``setup()`` before it,
    and ``after(value, error)`` after it (with what it returned or
    raised); ``Outcome.value`` is what ``after`` returns (without it, what
    ``action`` returned).  ``steps`` is the step budget (the child stops
    the action once it is passed: ``Outcome.stopped``; a callable: called
    after ``setup``); ``fired`` and
    ``imports`` are called in the child at the end to collect what the
    canaries and the import guard recorded there.
    """
    if not hasattr(os, 'fork'):        # pragma: no cover
        raise RuntimeError('isolated() needs os.fork')
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    with warnings.catch_warnings():
        # Python 3.12+ warns when a process with threads (PyMongo's
        # monitors, with MONGODB_URI) forks; the child opens its own
        # client and uses no lock of the parent's threads.
        warnings.simplefilter('ignore', DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(action, setup, after, write_fd, steps, fired, imports)
    os.close(write_fd)
    chunks = []
    deadline = time.monotonic() + DEADLINE
    killed = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                killed = True
                break
            ready, _, _ = select.select([read_fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(read_fd, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    if killed:
        return Outcome(stopped='killed after %d s of wall-clock time '
                       '(blocked?)' % DEADLINE)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        name = signal.Signals(number).name
        why = {signal.SIGXCPU: 'stopped by its CPU limit (%d s): work out '
               'of proportion to the data' % CPU_SECONDS,
               signal.SIGKILL: 'killed (SIGKILL: out of memory, or its '
               'CPU hard limit)'}.get(number, 'killed by %s' % name)
        return Outcome(stopped=why)
    data = b''.join(chunks)
    if os.WEXITSTATUS(status) != 0 or not data:
        return Outcome(stopped='the child failed (exit status %d)'
                       % os.WEXITSTATUS(status))
    return pickle.loads(data)


def client_for_child(client):
    """The client a forked child uses: ``client`` itself for the
    in-process stand-in (its copy of the data), a new one for a server."""
    if testing.uses_real_server():
        return testing.client()
    return client


#: The cost bound of loading (or refusing) a stored document of ``size``
#: BSON bytes, as one object through any load path, in a fresh data
#: manager: a constant (the data manager's own work) plus a multiple of the
#: size.  With the stand-in, loading a 700-byte document takes 750 to 3,600
#: steps (conflict resolution, which commits, the most) and 15 to 30 KB;
#: reading a value takes a few steps and a few hundred bytes of Python
#: objects per stored byte.  The constants leave room for a real server's
#: driver code.
STEPS_CONSTANT = 50000
STEPS_PER_BYTE = 50
MEMORY_CONSTANT = 4 * 2 ** 20
MEMORY_PER_BYTE = 200


def step_bound(size):
    return STEPS_CONSTANT + STEPS_PER_BYTE * size


def memory_bound(size):
    return MEMORY_CONSTANT + MEMORY_PER_BYTE * size


def assert_within_bounds(outcome, size):
    """``outcome`` (of ``isolated``) stayed within the cost bound of
    ``size`` stored bytes."""
    assert outcome.steps <= step_bound(size), (
        '%d steps to load a document of %d bytes (bound: %d)' % (
            outcome.steps, size, step_bound(size)))
    assert outcome.peak <= memory_bound(size), (
        '%d bytes allocated to load a document of %d bytes (bound: %d)' % (
            outcome.peak, size, memory_bound(size)))
