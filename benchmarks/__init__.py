"""Side-by-side benchmarks of mongopersist, raw PyMongo, MongoEngine and ZODB.

Run ``python -m benchmarks --n 10000`` (or ``make bench``); see
``benchmarks/README.md`` for what each scenario measures.

Every system runs the same scenarios on the same data set and, for the
MongoDB-based ones, on the same backend: the client of
``mongopersist.testing.client()`` (mongomock unless ``MONGODB_URI`` is set).
"""

# Scenario names, in the order they run (later ones use the data that the
# insert scenario left behind).
SCENARIOS = ('insert', 'cold-load', 'cold-walk', 'one-object', 'modify',
             'modify-conflicts', 'serialize', 'deserialize', 'warm',
             'warm-implicit')

# System names, in table order.  ``pymongo`` is the baseline.
SYSTEMS = ('pymongo', 'mongopersist', 'mongopersist-pure', 'mongoengine',
           'zodb-mapping', 'zodb-file')

BASELINE = 'pymongo'
