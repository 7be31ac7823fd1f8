"""mongopersist: a transactional object store on MongoDB.

Persistent Python objects (``persistent.Persistent`` subclasses) are stored
as plain MongoDB documents when the ``transaction`` package commits.  Start
with ``mongopersist.datamanager.MongoDataManager``.
"""
from mongopersist.interfaces import (  # noqa: F401
    CircularReferenceError, CommitError, ConflictError, UnstorableObjectError)

__all__ = ['CircularReferenceError', 'CommitError', 'ConflictError',
           'UnstorableObjectError']
