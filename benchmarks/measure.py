"""Timing one run of one scenario."""
import gc
import time


class Measure:
    """The timed part of a scenario run: ``with measure: ...``.

    Everything outside the ``with`` block is set-up and is neither timed nor
    counted.  The garbage collector stays on, but the objects that exist
    before the block (other systems' data, the set-up) are frozen
    (``gc.freeze``) while it runs, so that its passes only pay for what the
    measured work allocates.

    After the block, ``seconds`` holds the elapsed wall time, and
    ``writes``, ``reads`` and ``backend_seconds`` the round trips and the
    time inside the backend counted by ``counts`` (a
    ``counting.RoundTrips``; all ``None`` without one, for systems that do
    not talk to MongoDB).  ``parts`` holds the seconds of named parts of
    the work that the scenario noted with ``part()``.
    """

    def __init__(self, counts=None):
        self.counts = counts
        self.seconds = None
        self.writes = None
        self.reads = None
        self.backend_seconds = None
        self.parts = {}
        self._start = None

    def part(self, name, seconds):
        """Note how long a named part of the measured work took."""
        self.parts[name] = seconds

    def __enter__(self):
        gc.collect()
        gc.freeze()
        if self.counts is not None:
            self.counts.reset()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc_info):
        self.seconds = time.perf_counter() - self._start
        gc.unfreeze()
        if self.counts is not None:
            self.writes = self.counts.writes
            self.reads = self.counts.reads
            self.backend_seconds = self.counts.seconds
        return False
