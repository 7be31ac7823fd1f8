"""Collections handed out by the data manager: queries see pending changes.

``dm.get_collection(db, name)`` and ``dm.get_collection_of_object(obj)``
return a ``MongoCollection``: a thin wrapper around a PyMongo collection.
Before each query (``find``, ``find_one``, ``count_documents``,
``distinct``, ``aggregate``) and each ``find_one_and_*`` it flushes the
pending changes of this transaction that belong to the collections the
operation reads, so that the query sees what the transaction changed.  It
also runs the operation in the data manager's server session, if one is
active.  Everything else is handed to the PyMongo collection unchanged.

PyMongo collections obtained from the client directly are not affected:
they see what has been written, nothing more.
"""
from collections.abc import Mapping
from typing import Any, Optional

# Aggregation stages that read another collection of the same database.
_FOREIGN_STAGES = ('$lookup', '$graphLookup', '$unionWith')


def pipeline_collections(pipeline):
    """Return the names of other collections an aggregation pipeline reads.

    Looks at ``$lookup``, ``$graphLookup`` and ``$unionWith`` stages, also
    inside sub-pipelines and ``$facet``.
    """
    names = set()
    for stage in pipeline or ():
        if not isinstance(stage, dict):
            continue
        for operator, spec in stage.items():
            if operator in _FOREIGN_STAGES:
                if isinstance(spec, str):
                    names.add(spec)
                    continue
                source = spec.get('from') or spec.get('coll')
                if isinstance(source, str):
                    names.add(source)
                names |= pipeline_collections(spec.get('pipeline'))
            elif operator == '$facet':
                for sub_pipeline in spec.values():
                    names |= pipeline_collections(sub_pipeline)
    return names


class MongoCollection:
    """A PyMongo collection that flushes pending changes before queries.

    :param jar: the ``MongoDataManager`` whose changes are flushed.
    :param collection: the PyMongo collection (``raw``) to work on.

    A ``session`` passed explicitly to a method is used as given; otherwise
    the data manager's session (``dm._session``) is passed.
    """

    def __init__(self, jar, collection):
        self._jar = jar
        self.raw = collection

    # -- helpers ------------------------------------------------------------
    def _flush(self, *others):
        """Write pending changes of this collection (and of ``others``)."""
        database = self.raw.database.name
        wanted = {(database, self.raw.name)}
        wanted.update((database, name) for name in others)
        self._jar.flush(collections=wanted)

    def _session(self, kwargs):
        kwargs.setdefault('session', self._jar._session)
        return kwargs

    # -- queries ------------------------------------------------------------
    def find(self, *args: Any, **kwargs: Any) -> Any:
        """Flush this collection's pending changes, then ``find``."""
        self._flush()
        return self.raw.find(*args, **self._session(kwargs))

    def find_one(self, *args: Any,
                 **kwargs: Any) -> Optional[dict[str, Any]]:
        """Flush this collection's pending changes, then ``find_one``."""
        self._flush()
        return self.raw.find_one(*args, **self._session(kwargs))

    def count_documents(self, filter: Mapping[str, Any],
                        **kwargs: Any) -> int:
        """Flush this collection's pending changes, then count."""
        self._flush()
        return self.raw.count_documents(filter, **self._session(kwargs))

    def distinct(self, key: str, filter: Optional[Mapping[str, Any]] = None,
                 **kwargs: Any) -> list[Any]:
        """Flush this collection's pending changes, then ``distinct``."""
        self._flush()
        return self.raw.distinct(key, filter, **self._session(kwargs))

    def aggregate(self, pipeline: list[Any], **kwargs: Any) -> Any:
        """Flush pending changes of every collection read, then aggregate.

        Besides this collection, collections named by ``$lookup``,
        ``$graphLookup`` and ``$unionWith`` stages are flushed.
        """
        self._flush(*pipeline_collections(pipeline))
        return self.raw.aggregate(pipeline, **self._session(kwargs))

    # -- find-and-modify ------------------------------------------------------
    def find_one_and_delete(self, filter, **kwargs):
        """Flush this collection's pending changes, then find and delete."""
        self._flush()
        return self.raw.find_one_and_delete(filter, **self._session(kwargs))

    def find_one_and_replace(self, filter, replacement, **kwargs):
        """Flush this collection's pending changes, then find and replace."""
        self._flush()
        return self.raw.find_one_and_replace(
            filter, replacement, **self._session(kwargs))

    def find_one_and_update(self, filter, update, **kwargs):
        """Flush this collection's pending changes, then find and update."""
        self._flush()
        return self.raw.find_one_and_update(
            filter, update, **self._session(kwargs))

    # -- everything else ------------------------------------------------------
    def _wrap(self, value):
        if type(value) is type(self.raw):
            return MongoCollection(self._jar, value)
        return value

    def __getattr__(self, name):
        # Only called for names not defined here: hand them to PyMongo.
        # Sub-collections (``coll.sub``) are wrapped as well.
        if name in ('raw', '_jar'):
            raise AttributeError(name)
        return self._wrap(getattr(self.raw, name))

    def __getitem__(self, name):
        """Return the sub-collection ``<this>.<name>``, wrapped as well."""
        return self._wrap(self.raw[name])

    def with_options(self, *args, **kwargs):
        """Return a copy with other options, wrapped as well."""
        return self._wrap(self.raw.with_options(*args, **kwargs))

    def __iter__(self):
        raise TypeError("'%s' object is not iterable" % type(self).__name__)

    def __eq__(self, other):
        if isinstance(other, MongoCollection):
            return self._jar is other._jar and self.raw == other.raw
        return NotImplemented

    def __ne__(self, other):
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self):
        return hash((id(self._jar), self.raw.database.name, self.raw.name))

    def __repr__(self):
        return '<%s %s.%s of %r>' % (
            type(self).__name__, self.raw.database.name, self.raw.name,
            self._jar)
