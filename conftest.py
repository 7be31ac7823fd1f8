"""Settings for every test of the suite, the doctests in docs/ included."""
import pytest

from mongopersist.datamanager import MongoDataManager


@pytest.fixture(autouse=True, scope='session')
def _writes_visible_at_once():
    """Data managers made without ``transactions=`` use ``'never'``.

    Tests and doctests look at MongoDB between the steps of a transaction
    (a root entry is written at once, a query flushes first), which a
    server transaction would hide until commit when ``MONGODB_URI`` names a
    replica set.  Server transactions are tested on their own: at the wire
    level in tests/test_server_transactions.py, and on a real deployment
    there too.
    """
    default = MongoDataManager.default_transactions
    MongoDataManager.default_transactions = 'never'
    yield
    MongoDataManager.default_transactions = default


def _skip_unless_able(probe):
    # What the deployment lacks skips the test (tests/capabilities.py).
    from mongopersist import testing
    client = testing.client()
    try:
        gap = probe(client)
    finally:
        client.close()
    if gap is not None:
        pytest.skip(gap)


@pytest.fixture(scope='session')
def geospatial_queries():
    """Skip unless the server runs geospatial queries as MongoDB does
    (``$near``, ``$geoWithin`` on a ``2dsphere`` index).  A doctest asks
    with ``getfixture('geospatial_queries')`` and is skipped from there."""
    from tests import capabilities
    _skip_unless_able(capabilities.geospatial_gap)


@pytest.fixture(scope='session')
def change_streams():
    """Skip unless the deployment opens change streams."""
    from tests import capabilities
    _skip_unless_able(capabilities.change_stream_gap)


@pytest.fixture(scope='session')
def concurrent_upserts():
    """Skip unless ``findAndModify`` upserts racing to create a document
    each get it back, as on MongoDB."""
    from tests import capabilities
    _skip_unless_able(capabilities.concurrent_upsert_gap)
