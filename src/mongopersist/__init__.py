"""mongopersist: a transactional object store on MongoDB.

Persistent Python objects (``persistent.Persistent`` subclasses) are stored
as plain MongoDB documents when the ``transaction`` package commits.  Start
with ``mongopersist.connect()``: it returns the application's ``Store``,
whose ``open()`` gives a ``MongoDataManager`` per thread or request.
"""
# The one place the version is written (pyproject.toml reads it from here).
# Above every release of the original ``mongopersist`` (0.5.0 to 0.8.4, for
# Python 2), which this package succeeds under the same name.
__version__ = '2.0.0.dev0'

from mongopersist.interfaces import (  # noqa: F401
    CircularReferenceError, CommitError, CommitOutcomeUnknownError,
    ConfigurationError, ConflictError, ServerUnreachableError,
    UnstorableObjectError)
from mongopersist.store import (  # noqa: F401
    InMemoryStoreWarning, Store, connect, store_from_settings)

__all__ = ['CircularReferenceError', 'CommitError',
           'CommitOutcomeUnknownError', 'ConfigurationError',
           'ConflictError', 'InMemoryStoreWarning', 'ServerUnreachableError',
           'Store', 'UnstorableObjectError', '__version__', 'connect',
           'store_from_settings']
