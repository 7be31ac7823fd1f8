"""``python -m benchmarks.pool``: warm web requests, pooled data managers
against a new data manager per request.

The example blog (``examples/blogapp.py``, Pyramid through WebTest, no
HTTP) holds ``--posts`` posts, each with an author and a like counter.  The
same requests (``--page list``: ``GET /``, the list of every post with its
author and its likes; ``show``: ``GET /posts/<id>`` of one post, after a
list page warmed the cache; ``mixed``: the two in turn, the figures of
the show requests) run on two stores in the same process run: one with
``pool_size=0`` (a new data manager per request, as before the pool) and
one with the default pool (the data manager of the previous request, its
cache validated).  Printed: reads per request, milliseconds per request
(median of ``--requests``), and the ratio of the two.  The backend is the
client of ``mongopersist.testing.client()`` (mongomock, or the server of
``MONGODB_URI``).
"""
import argparse
import importlib.util
import os
import re
import statistics
import sys
import time
import uuid
import warnings

from benchmarks import counting
from mongopersist import testing
from mongopersist.store import Store

EXAMPLES = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'examples')


def load_blogapp():
    spec = importlib.util.spec_from_file_location(
        'mongopersist_bench_blogapp', os.path.join(EXAMPLES, 'blogapp.py'))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module     # Pyramid looks its caller up there
    spec.loader.exec_module(module)
    return module


def measure(blogapp, client, pool_size, posts, requests, page='list'):
    """Return (reads per request, median seconds per request)."""
    import webtest
    dbname = 'mp_bench_pool_%s_%d' % (uuid.uuid4().hex[:8], pool_size)
    store = Store(client, dbname, trusted_modules=('blogmodel',),
                  pool_size=pool_size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            app = webtest.TestApp(blogapp.main(store=store,
                                               **blogapp.settings()))
        for n in range(posts):
            app.post('/posts/add', {
                'title': 'Post %d' % n, 'author': 'Author %d' % (n % 10),
                'email': 'a%d@example.com' % (n % 10), 'body': 'Text'},
                status=303)
        listing = app.get('/')          # warm (for the pool)
        shown = re.search(r'href="[^"]*(/posts/[0-9a-f]+)"',
                          listing.text).group(1)
        url = '/' if page == 'list' else shown
        times = []
        reads = 0
        for _ in range(requests):
            if page == 'mixed':
                app.get('/')
            with counting.counting(testing.uses_real_server()) as counts:
                start = time.perf_counter()
                app.get(url)
                times.append(time.perf_counter() - start)
            reads += counts.reads
        return reads / requests, statistics.median(times)
    finally:
        client.drop_database(dbname)
        store.close()


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m benchmarks.pool',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--posts', type=int, default=50)
    parser.add_argument('--requests', type=int, default=20)
    parser.add_argument('--page', choices=('list', 'show', 'mixed'),
                        default='list')
    args = parser.parse_args(argv)
    blogapp = load_blogapp()
    if testing.uses_real_server():
        counting.listen()      # before the client: it counts its commands
    client = testing.client()
    new_reads, new_time = measure(blogapp, client, 0, args.posts,
                                  args.requests, args.page)
    pooled_reads, pooled_time = measure(blogapp, client, 7, args.posts,
                                        args.requests, args.page)
    print('warm %s of %d posts, %d requests (%s)' % (
        {'list': 'GET /', 'show': 'GET /posts/<id>',
         'mixed': 'GET /posts/<id> after GET /'}[args.page],
        args.posts, args.requests,
        'MongoDB' if testing.uses_real_server() else 'mongomock'))
    print('%-28s %10s %12s' % ('', 'reads/req', 'ms/req'))
    print('%-28s %10.1f %12.2f' % ('new data manager per request',
                                   new_reads, new_time * 1e3))
    print('%-28s %10.1f %12.2f' % ('pooled data manager',
                                   pooled_reads, pooled_time * 1e3))
    print('ratio new/pooled: reads %.1fx, time %.2fx' % (
        new_reads / max(pooled_reads, 1e-9), new_time / pooled_time))
    return new_reads, pooled_reads


if __name__ == '__main__':
    main()
