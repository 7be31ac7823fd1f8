"""Find problems in the stored data; exit code 1 if there are any.

Every document is loaded as the application would load it (through a
``TypeRegistry``: give the application's modules with ``--trust`` or an
``--import`` that registers them), and checked for:

* dangling references (a ``DBRef`` to a document that does not exist);
* unknown or refused class names, malformed library fields
  (``_py_serial``, ``_py_type`` and the other stored shapes), anything
  else loading refuses (``StoredDataError``);
* type-map entries that disagree with the documents (a class a document
  names that its collection's entry does not list; a malformed entry);
* shard-key fields missing from a document whose class declares
  ``_p_mongo_shard_key``;
* root entries without a reference.

Each problem names the database, collection, ``_id`` and field path.
Reads only.
"""
from bson.dbref import DBRef

from mongopersist import interfaces
from mongopersist.cli import walk

HELP = ('find dangling references, refused or malformed stored data and '
        'type-map disagreements')

#: Ids looked up per query when checking references.
BATCH = 500
#: References collected before they are checked (bounds memory).
PENDING_REFERENCES = 5000


def add_arguments(parser):
    pass


class Problems:
    """The problems found, in the order found."""

    def __init__(self):
        self.items = []

    def add(self, database, collection, id, path, problem):
        self.items.append({'database': database, 'collection': collection,
                           'id': id, 'path': path or '', 'problem': problem})


def _shard_key_fields(cls):
    key = getattr(cls, '_p_mongo_shard_key', None)
    if not key:
        return ()
    if isinstance(key, str):
        return (key,)
    return tuple(item[0] if isinstance(item, (tuple, list)) else item
                 for item in key)


def _check_loading(dm, problems, database, collection, doc):
    """Load ``doc`` as the application would; record what is refused.

    Returns the class it loaded as (``None`` if refused).
    """
    try:
        obj = dm._object_from_document(database, collection, doc)
        cls = type(obj)
    except interfaces.DocumentNotFoundError:
        # A dangling reference met while loading: reported on its own.
        return None
    except interfaces.StoredDataError as error:
        problems.add(database, collection, doc.get('_id'), error.path,
                     error.message)
        return None
    finally:
        # Only one document at a time is needed: forget what was loaded.
        dm._loaded_docs.clear()
        dm._prefetched.clear()
    return cls


def _check_type_map(context, problems, database, collection, types, doc):
    name = doc.get('_py_persistent_type')
    if isinstance(name, str) and types is not None and name not in types:
        problems.add(database, collection, doc.get('_id'),
                     '_py_persistent_type',
                     'class %s is not in the type map entry of %s.%s (%s)'
                     % (name, database, collection, ', '.join(types)))


def _type_map(context, problems):
    entries = {}
    for entry in walk.type_map_entries(context):
        types = entry.get('types')
        if not isinstance(types, list) or not all(
                isinstance(name, str) for name in types):
            problems.add(context.root_database, 'persistence_type_map',
                         entry.get('_id'), 'types',
                         'a type map entry needs "types", an array of '
                         'class names')
            continue
        entries[(entry.get('database'), entry.get('collection'))] = types
    return entries


def _check_references(context, problems, refs):
    """``refs``: (database, collection, id, path, DBRef) found."""
    wanted = {}
    for holder in refs:
        ref = holder[4]
        wanted.setdefault((ref.database or holder[0], ref.collection),
                          []).append(holder)
    for (database, collection), holders in sorted(
            wanted.items(), key=lambda item: repr(item[0])):
        coll = context.client[database][collection]
        ids = list({repr(holder[4].id): holder[4].id
                    for holder in holders}.values())
        existing = set()
        for start in range(0, len(ids), BATCH):
            batch = ids[start:start + BATCH]
            existing.update(repr(doc['_id']) for doc in coll.find(
                {'_id': {'$in': batch}}, {'_id': True}))
        for holder in holders:
            ref = holder[4]
            if repr(ref.id) not in existing:
                problems.add(holder[0], holder[1], holder[2], holder[3],
                             'dangling reference to %s.%s _id=%r' % (
                                 database, collection, ref.id))


def run(context):
    problems = Problems()
    dm = context.data_manager()
    type_map = _type_map(context, problems)
    refs = []
    checked = 0
    for database, collection in walk.application_collections(context):
        types = type_map.get((database, collection))
        for doc in walk.documents(context, database, collection):
            checked += 1
            _check_type_map(context, problems, database, collection, types,
                            doc)
            cls = _check_loading(dm, problems, database, collection, doc)
            for field in _shard_key_fields(cls):
                if field not in doc:
                    problems.add(database, collection, doc.get('_id'), field,
                                 'shard-key field %s missing (%s declares '
                                 'it)' % (field, cls.__name__))
            for path, ref in walk.references(doc):
                refs.append((database, collection, doc.get('_id'), path, ref))
            if len(refs) >= PENDING_REFERENCES:
                _check_references(context, problems, refs)
                refs = []
    root_coll = context.client[context.root_database][walk.ROOT_COLLECTION]
    for doc in root_coll.find().sort('name'):
        ref = doc.get('ref')
        if not isinstance(ref, DBRef):
            problems.add(context.root_database, walk.ROOT_COLLECTION,
                         doc.get('_id'), 'ref',
                         'the root entry %r holds no reference'
                         % (doc.get('name'),))
        else:
            refs.append((context.root_database, walk.ROOT_COLLECTION,
                         doc.get('_id'), 'ref', ref))
    _check_references(context, problems, refs)
    result = {'database': context.database, 'documents': checked,
              'problems': problems.items}
    _print(context, result)
    return result, 1 if problems.items else 0


def _print(context, result):
    rows = [['%s.%s' % (p['database'], p['collection']), repr(p['id']),
             p['path'], p['problem']] for p in result['problems']]
    context.say('Checked %d documents of %s: %d problem%s' % (
        result['documents'], result['database'], len(rows),
        '' if len(rows) == 1 else 's'))
    if rows:
        context.say(walk.table(rows, ['collection', '_id', 'field',
                                      'problem']))
