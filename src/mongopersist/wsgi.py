"""One transaction per request for any WSGI application.

``TransactionMiddleware(app, store)`` runs each request in a transaction
of its own, with a data manager of its own in ``environ['mongopersist.dm']``
(and its transaction manager in ``environ['mongopersist.tm']``).  The
transaction commits when the application answers 2xx or 3xx and aborts
otherwise; a request that ends in a retryable error (a ``ConflictError``,
a transient server transaction error), in the application or at commit,
runs again, up to ``attempts`` times, after a short random wait.

To be able to run a request again, the middleware reads the request body
before calling the application and holds the response until the
transaction is over: it suits ordinary requests, not streaming ones.
"""
import io

DM_KEY = 'mongopersist.dm'
TM_KEY = 'mongopersist.tm'


class TransactionMiddleware:
    """WSGI middleware: one transaction and one data manager per request.

    :param app: the WSGI application.
    :param store: the ``mongopersist.Store``.
    :param attempts: how often a request is run at most (default: the
        store's ``attempts``).
    """

    def __init__(self, app, store, attempts=None):
        self.app = app
        self.store = store
        self.attempts = attempts or store.attempts

    def __call__(self, environ, start_response):
        body = _read_body(environ)
        for attempt in self.store.transaction(self.attempts):
            with attempt as dm:
                answer = self._run(environ, body, dm, attempt)
            if not attempt.retry:
                status, headers, chunks = answer
                start_response(status, headers)
                return chunks
        raise AssertionError('unreachable: the last attempt raises')

    def _run(self, environ, body, dm, attempt):
        """Call the application once; return its whole answer."""
        env = dict(environ)
        env['wsgi.input'] = io.BytesIO(body)
        env[DM_KEY] = dm
        manager = env[TM_KEY] = attempt.transaction_manager
        answer = []

        def start_response(status, headers, exc_info=None):
            if exc_info is not None and answer:
                raise exc_info[1].with_traceback(exc_info[2])
            answer[:] = [status, list(headers)]
            return chunks.append

        chunks = []
        result = self.app(env, start_response)
        try:
            chunks.extend(result)
        finally:
            close = getattr(result, 'close', None)
            if close is not None:
                close()
        if not answer:
            raise RuntimeError('the application did not call start_response')
        status = answer[0]
        if status[:1] not in ('2', '3'):
            manager.doom()
        return status, answer[1], chunks


def _read_body(environ):
    try:
        length = int(environ.get('CONTENT_LENGTH') or 0)
    except ValueError:
        length = 0
    if length <= 0:
        return b''
    return environ['wsgi.input'].read(length)
