"""Pyramid integration: ``config.include('mongopersist.pyramid')``.

* reads the ``mongopersist.*`` settings (see ``store_from_settings``) and
  registers the application's ``Store`` (unless one is registered
  already: ``config.registry['mongopersist.store'] = store``);
* includes ``pyramid_tm``: one transaction per request, ``request.tm``;
* adds ``request.dm``, a data manager of the request's own, bound to
  ``request.tm`` (opened from the store's pool on first use, reified, and
  given back to the pool when the request is finished);
* a view that cannot reach the server raises ``ServerUnreachableError``
  (one line naming the hosts and the wait, ``Store.translate_unreachable``)
  instead of PyMongo's ``ServerSelectionTimeoutError``: an exception view
  for it (or for PyMongo's class) can answer 503;
* with ``pyramid_retry`` included, conflicts (``ConflictError`` is a
  ``transaction.interfaces.TransientError``, which pyramid_tm marks
  retryable) are retried, after a short random wait that grows with each
  retry.

A store put in the WSGI environ (``environ['mongopersist.store']``) is used
for that request instead of the registered one, for tests.  See
``docs/applications.rst``.

Traversal: ``Configurator(root_factory=mongopersist.pyramid.root_factory)``
publishes the object tree of ``request.dm`` by traversal (URL path ->
``__getitem__`` from the root).  The application's *appmaker* (the
setting ``mongopersist.appmaker``, a dotted name, or
``config.registry['mongopersist.appmaker']``) gets ``request.dm.root``
and returns the root of the tree, making it on the first request; without
one the root is ``dm.root`` itself.  See ``docs/containers.rst``.
"""
import time

from pymongo.errors import ServerSelectionTimeoutError

from mongopersist import container as container_module
from mongopersist import logs
from mongopersist import store as store_module
from mongopersist.store import Store, store_from_settings

#: Registry and environ key of the store.
STORE_KEY = 'mongopersist.store'

#: Registry key (and setting) of the application's appmaker.
APPMAKER_KEY = 'mongopersist.appmaker'


class RootResource:
    """``dm.root`` as the root of a traversal: its entries by name, each
    located in it (``__name__``, ``__parent__``: a ``MongoContained``
    entry).  Names that are not stored (or cannot be: a key of another
    type) raise ``KeyError``, so traversal ends there."""

    __name__ = ''
    __parent__ = None

    def __init__(self, root):
        self.root = root

    def __getitem__(self, name):
        return container_module.located(self.root[name], name, self)

    def __repr__(self):
        return '<RootResource of %r>' % (self.root._jar,)


def root_factory(request):
    """Pyramid root factory: the root of the object tree of ``request.dm``.

    With an appmaker registered (``APPMAKER_KEY``), returns
    ``appmaker(request.dm.root)``: the appmaker finds the application's
    root object there, making and storing it when it is missing (it is
    committed with the request's transaction; two first requests at once
    conflict on the root entry and one is retried).  The returned object is
    told it is the root (a ``MongoContained`` root gets ``__name__`` ``''``
    and ``__parent__`` ``None``; another class declares them).  Without an
    appmaker, returns a ``RootResource`` over ``request.dm.root``.
    """
    dm = request.dm
    appmaker = request.registry.get(APPMAKER_KEY)
    if appmaker is None:
        return RootResource(dm.root)
    return container_module.located(appmaker(dm.root), '', None)


def get_store(request):
    """Return the store of ``request``: the environ's, else the registry's."""
    found = request.environ.get(STORE_KEY)
    if found is None:
        found = request.registry.get(STORE_KEY)
    if found is None:
        raise LookupError(
            "no mongopersist store: config.include('mongopersist.pyramid') "
            'registers one from the settings')
    return found


def request_dm(request):
    """The data manager of ``request`` (``request.dm``), bound to
    ``request.tm``; back to the store's pool when the request is finished
    (after pyramid_tm ended its transaction)."""
    store = get_store(request)
    dm = store.open(request.tm)
    request.add_finished_callback(lambda request: store.give_back(dm))
    return dm


def unreachable_tween_factory(handler, registry):
    """A tween under the exception view tween: PyMongo's
    ``ServerSelectionTimeoutError`` raised by a view is raised as the
    store's ``ServerUnreachableError`` (``Store.translate_unreachable``),
    which exception views then see."""
    def tween(request):
        try:
            return handler(request)
        except ServerSelectionTimeoutError:
            store = request.environ.get(STORE_KEY) or registry.get(STORE_KEY)
            if not isinstance(store, Store):
                raise
            with store.translate_unreachable():
                raise
    return tween


def wait_before_retry(event):
    """Before pyramid_retry runs a request again: wait a little, growing
    with each retry, at random (so conflicting requests spread out)."""
    retry = event.environ.get('retry.attempt', 0) + 1
    delay = store_module.retry_delay(retry)
    attempts = event.environ.get('retry.attempts')
    logs.retrying(retry, attempts if isinstance(attempts, int) else 0,
                  event.exception, delay, what='Pyramid request')
    time.sleep(delay)


def _store_settings(settings):
    """The settings of the store: all but this layer's own."""
    return {name: value for name, value in settings.items()
            if name != APPMAKER_KEY}


def includeme(config):
    """Set up the store, ``request.tm`` and ``request.dm`` (and the
    appmaker of ``root_factory``, from the setting ``mongopersist.appmaker``
    when given)."""
    registry = config.registry
    if not isinstance(registry.get(STORE_KEY), Store):
        given = registry.settings.get(STORE_KEY)
        registry[STORE_KEY] = (given if isinstance(given, Store)
                               else store_from_settings(_store_settings(
                                   registry.settings)))
    appmaker = registry.settings.get(APPMAKER_KEY)
    if appmaker is not None and registry.get(APPMAKER_KEY) is None:
        registry[APPMAKER_KEY] = config.maybe_dotted(appmaker)
    config.include('pyramid_tm')
    config.add_request_method(request_dm, 'dm', reify=True)
    from pyramid.tweens import EXCVIEW
    config.add_tween('mongopersist.pyramid.unreachable_tween_factory',
                     under=EXCVIEW)
    try:
        from pyramid_retry import IBeforeRetry
    except ImportError:     # pragma: no cover (pyramid_retry is optional)
        return
    config.add_subscriber(wait_before_retry, IBeforeRetry)
