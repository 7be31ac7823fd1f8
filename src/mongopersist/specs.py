"""Query hooks: rewrite the filters that containers and mappings send.

A *spec processor* is the application's function (or an object with a
``process`` method, ``interfaces.IMongoSpecProcessor``) called as
``process(collection, spec)`` with the PyMongo collection about to be
queried and the filter ("spec") of the query; it returns the filter to
send.  Use one to add a condition to every query of the containers
(``mongopersist.container``) and collection mappings
(``mongopersist.mapping``): a tenant, a permission, a "not deleted" flag::

    from mongopersist import specs

    @specs.register
    def only_this_tenant(collection, spec):
        return {'$and': [spec, {'tenant': current_tenant()}]}

Processors are process-wide and run in the order they were registered,
each on the result of the previous one; ``unregister`` removes one.  The
filter a processor returns must be a dict (``TypeError`` otherwise).  A
processor that adds a condition with ``$and`` keeps the container's own
conditions (its parent, the name looked up) whatever it adds.  What the
data manager reads by reference (loading an object) is not a query and
is not processed.
"""
from collections.abc import Mapping

from mongopersist import limits

_processors = []


def register(processor):
    """Add ``processor`` (a function ``(collection, spec) -> spec`` or an
    object with such a ``process`` method); return it, so that this works
    as a decorator."""
    if not (callable(processor) or callable(getattr(processor, 'process',
                                                    None))):
        raise TypeError('A spec processor is a function (collection, spec) '
                        'or has a process(collection, spec) method, not %s'
                        % limits.quote(processor))
    _processors.append(processor)
    return processor


def unregister(processor):
    """Remove ``processor`` (``ValueError`` if it is not registered)."""
    _processors.remove(processor)


def registered():
    """The registered processors, in the order they run."""
    return tuple(_processors)


def active():
    """Whether any processor is registered (queries are rewritten)."""
    return bool(_processors)


def process(collection, spec):
    """Return ``spec``, the filter of a query of ``collection`` (a PyMongo
    collection), as the registered processors rewrite it."""
    for processor in tuple(_processors):
        method = getattr(processor, 'process', None)
        function = method if callable(method) else processor
        result = function(collection, spec)
        if not isinstance(result, Mapping):
            raise TypeError('The spec processor %s returned %s, not a filter '
                            '(a dict)' % (limits.quote(processor),
                                          limits.quote(result)))
        spec = dict(result)
    return spec
