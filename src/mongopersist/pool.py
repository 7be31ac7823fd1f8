"""The pool of a store's data managers, as ZODB's ``DB`` pools connections.

A data manager that a request or unit of work is done with (``dm.close()``,
or the store giving it back at the end of ``Store.transaction()``, of a
Pyramid request or of a ``TransactionMiddleware`` request) goes back to its
store's ``DataManagerPool`` with its object cache and type map.  The next
``Store.open()`` takes the most recently returned one (its cache is the
warmest) and binds it to the caller's transaction manager; what its cache
holds is validated against the stored serials before it is used (see
``docs/cache.rst``), so a pooled data manager never serves a state older
than what others committed through the library.

At most ``size`` data managers wait in the pool; one more returned makes
the least recently returned one go (it is shut down: its change stream, if
any, is closed).  A data manager is in the pool or in use, never both, so
two users never share one.
"""
import threading

#: Data managers kept waiting by default (ZODB's default ``pool_size``).
DEFAULT_SIZE = 7


class DataManagerPool:
    """Closed data managers of one store, most recently returned last.

    :param size: how many closed data managers wait for reuse, at most
        (``0``: none, every ``Store.open()`` makes a new one).
    """

    def __init__(self, size=DEFAULT_SIZE):
        self.size = size
        self._lock = threading.Lock()
        self._available = []

    def __repr__(self):
        return '<DataManagerPool %d of %d waiting>' % (
            len(self._available), self.size)

    def __len__(self):
        return len(self._available)

    def take(self):
        """Return the most recently returned data manager (removed from
        the pool: it is the caller's alone), or ``None``."""
        with self._lock:
            if self._available:
                return self._available.pop()
        return None

    def give_back(self, dm):
        """Keep the closed ``dm`` for reuse; shut down those beyond
        ``size`` (the least recently returned)."""
        with self._lock:
            if any(dm is waiting for waiting in self._available):
                return
            self._available.append(dm)
            excess = len(self._available) - self.size
            dropped = self._available[:excess] if excess > 0 else []
            del self._available[:len(dropped)]
        for old in dropped:
            old._shut_down()

    def clear(self):
        """Shut down every waiting data manager."""
        with self._lock:
            dropped, self._available = self._available, []
        for old in dropped:
            old._shut_down()
