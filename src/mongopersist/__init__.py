"""mongopersist: a transactional object store on MongoDB.

Persistent Python objects (``persistent.Persistent`` subclasses) are stored
as plain MongoDB documents when the ``transaction`` package commits.  Start
with ``mongopersist.connect()``: it returns the application's ``Store``,
whose ``open()`` gives a ``MongoDataManager`` per thread or request.
"""
from mongopersist.interfaces import (  # noqa: F401
    CircularReferenceError, CommitError, CommitOutcomeUnknownError,
    ConfigurationError, ConflictError, ServerUnreachableError,
    UnstorableObjectError)
from mongopersist.store import (  # noqa: F401
    InMemoryStoreWarning, Store, connect, store_from_settings)

__all__ = ['CircularReferenceError', 'CommitError',
           'CommitOutcomeUnknownError', 'ConfigurationError',
           'ConflictError', 'InMemoryStoreWarning', 'ServerUnreachableError',
           'Store',
           'UnstorableObjectError', 'connect', 'store_from_settings']
