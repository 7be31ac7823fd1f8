"""Declared indexes: created on request, and unique-index violations told.

A class lists the indexes of its collection in ``_p_mongo_indexes`` as
PyMongo's own ``pymongo.IndexModel`` (unique, compound, ``2dsphere``, TTL,
partial: whatever the driver takes)::

    class Post(persistent.Persistent):
        _p_mongo_collection = 'posts'
        _p_mongo_indexes = [
            pymongo.IndexModel([('author', 1), ('title', 1)], unique=True),
            pymongo.IndexModel([('where', pymongo.GEOSPHERE)]),
        ]

``dm.ensure_indexes(Post, ...)`` (``ensure_indexes`` here) creates those
missing from MongoDB and returns what it created (``CreatedIndex``);
``missing_indexes`` tells what it would create, creating nothing.  It is
idempotent, and it never drops or changes an index: an index of the same
name or keys but other options raises ``interfaces.IndexConflictError``.

When a commit breaks a unique index, the commit pipeline raises
``interfaces.UniqueIndexError`` naming the index, the collection and the
duplicate values (``duplicate``), not PyMongo's ``BulkWriteError``.
"""
import collections
import re
from typing import Any

from mongopersist import interfaces, limits, metadata

#: One index ``ensure_indexes`` created.
CreatedIndex = collections.namedtuple(
    'CreatedIndex', 'database collection name keys')

# Options MongoDB reports that a declaration does not need to repeat.
_REPORTED_ONLY = frozenset(['v', 'ns', 'key', 'name', 'background',
                            '2dsphereIndexVersion', 'textIndexVersion',
                            'weights', 'default_language',
                            'language_override'])


def _keys(spec):
    """An index key (a dict, SON or list of pairs) as a list of pairs."""
    items = spec.items() if hasattr(spec, 'items') else spec
    result = []
    for field, direction in items:
        if isinstance(direction, float) and direction.is_integer():
            direction = int(direction)
        result.append((field, direction))
    return result


# Flags MongoDB reads as false unless set; a server lists one only where
# it was given (some list ``unique: false`` anyway): an index declared with
# one false is the index made without it, and a false flag is not told.
_FLAGS = frozenset(['unique', 'sparse', 'hidden'])


def _options(doc):
    return {k: v for k, v in doc.items()
            if k not in _REPORTED_ONLY and (v or k not in _FLAGS)}


def _compatible(declared, existing):
    """True if the existing index is the declared one (same keys, and
    every option declared set alike; ``unique`` must agree both ways)."""
    if _keys(declared['key']) != _keys(existing['key']):
        return False
    wanted = _options(declared)
    have = _options(existing)
    if bool(wanted.get('unique')) != bool(have.get('unique')):
        return False
    for option, value in wanted.items():
        current = have.get(option)
        if isinstance(value, dict) and isinstance(current, dict):
            if any(current.get(k) != v for k, v in value.items()):
                return False
        elif current != value:
            return False
    return True


def _describe(doc):
    options = _options(doc)
    text = '{%s}' % ', '.join('%s: %s' % (limits.excerpt(name, 100),
                                          limits.quote(kind, 100))
                              for name, kind in _keys(doc['key']))
    if options:
        text += ' ' + ', '.join('%s=%s' % (name, limits.quote(value, 100))
                                for name, value in sorted(options.items()))
    return limits.excerpt(text, 1000)


def declared(jar, classes):
    """The declared ``IndexModel``s of ``classes``, by ``(database,
    collection)``; each index once."""
    found = {}
    for cls in classes:
        where = (metadata.database_name(cls, jar.default_database),
                 metadata.collection_name(cls))
        models = found.setdefault(where, [])
        for model in metadata.declared_indexes(cls):
            if all(model.document != m.document for m in models):
                models.append(model)
    return found


def missing_indexes(jar, *classes):
    """Return what ``ensure_indexes(jar, *classes)`` would create, without
    creating anything: a ``CreatedIndex`` per declared index MongoDB
    lacks (``name`` as declared).  One ``listIndexes`` per collection;
    raises ``IndexConflictError`` as ``ensure_indexes`` does (a dry run).
    """
    return [CreatedIndex(database, collection, model.document['name'],
                         _keys(model.document['key']))
            for database, collection, _, missing in _plan(jar, classes)
            for model in missing]


def ensure_indexes(jar: Any, *classes: type) -> list[CreatedIndex]:
    """Create the indexes ``classes`` declare that MongoDB lacks.

    Returns the list of ``CreatedIndex`` made (empty when all exist).
    One ``listIndexes`` per collection, one ``createIndexes`` per
    collection with missing indexes.  Raises ``IndexConflictError``
    (before creating anything) when an index of a declared name or keys
    exists with other options; nothing is dropped.  Index builds are not
    part of the transaction.
    """
    created = []
    for database, collection, coll, missing in _plan(jar, classes):
        names = coll.create_indexes(missing)
        for model, name in zip(missing, names):
            created.append(CreatedIndex(
                database, collection, name, _keys(model.document['key'])))
    return created


def _plan(jar, classes):
    """``(database, collection, PyMongo collection, missing IndexModels)``
    for each collection of ``classes`` lacking declared indexes; raises
    ``IndexConflictError`` for a clash in any of them."""
    plan = []
    for (database, collection), models in declared(jar, classes).items():
        if not models:
            continue
        coll = jar._raw_collection(database, collection)
        existing = list(coll.list_indexes())
        missing = []
        for model in models:
            doc = model.document
            same_name = [e for e in existing if e['name'] == doc['name']]
            same_keys = [e for e in existing
                         if _keys(e['key']) == _keys(doc['key'])]
            clash = [e for e in same_name + same_keys
                     if not _compatible(doc, e)]
            if clash:
                raise interfaces.IndexConflictError(
                    'Index %s of %s.%s is declared as %s, but MongoDB has '
                    '%s as %s; ensure_indexes never drops or changes an '
                    'index: drop it (or rename the declaration) yourself'
                    % (doc['name'], database, collection, _describe(doc),
                       clash[0]['name'], _describe(clash[0])))
            if not same_name and not same_keys:
                missing.append(model)
        if missing:
            plan.append((database, collection, coll, missing))
    return plan


# -- unique-index violations --------------------------------------------------
_INDEX_NAME = re.compile(r'index: (\S+) dup key')


class Duplicate:
    """What a duplicate key error (code 11000) of a commit's write says.

    ``index`` (name), ``keys`` (the index's fields) and ``values`` (the
    duplicate values, by field) come from the server's ``keyPattern`` and
    ``keyValue`` when it sends them; otherwise from the index named in the
    message and the document written.
    """

    def __init__(self, entry, write, coll):
        self.write = write
        self.database = coll.database.name
        self.collection = coll.name
        self.errmsg = str(entry.get('errmsg', ''))
        match = _INDEX_NAME.search(self.errmsg)
        self.index = match.group(1) if match else None
        pattern = entry.get('keyPattern')
        if pattern is None and self.index is not None:
            pattern = self._pattern(coll)
        self.keys = [field for field, _ in _keys(pattern)] if pattern else []
        values = entry.get('keyValue')
        if values is None and self.keys and write.doc is not None:
            values = {field: metadata._field_value(write.doc, field)
                      for field in self.keys}
        self.values = dict(values) if values else None
        if self.index is None and self.keys == ['_id']:
            self.index = '_id_'

    def _pattern(self, coll):
        if self.index == '_id_':
            return [('_id', 1)]
        try:
            for info in coll.list_indexes():
                if info['name'] == self.index:
                    return info['key']
        except Exception:       # the index is gone: name it anyway
            return None
        return None

    @property
    def on_id(self):
        """True if the duplicate is on ``_id`` (or cannot be told: then it
        is taken as one, as a lost race of a conditional upsert)."""
        return self.index in (None, '_id_') or self.keys == ['_id']

    def details(self):
        return {'index': self.index, 'database': self.database,
                'collection': self.collection, 'key': self.values,
                'oid': self.write.oid}

    def message(self):
        if self.index is None:
            where = 'a unique index of %s.%s (%s)' % (
                self.database, self.collection,
                _short(self.errmsg, 200))
        else:
            where = 'unique index %s of %s.%s' % (
                self.index, self.database, self.collection)
        return ('Commit refused: duplicate key in %s: another document '
                'already holds %s (writing %s _id=%s)' % (
                    where,
                    _short(self.values) if self.values else 'those values',
                    type(self.write.obj).__name__,
                    limits.quote(self.write.oid.id)))


def _short(values, limit=300):
    if isinstance(values, str):
        return limits.excerpt(values, limit)
    return limits.quote(values, limit)


def duplicate(entry, write, coll):
    """Return the ``Duplicate`` a write error ``entry`` (code 11000) of
    ``write`` to ``coll`` reports."""
    return Duplicate(entry, write, coll)
