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
* root entries without a name or a reference;
* references to a malformed collection name, and references and type-map
  entries that point into a database the command was not given (those
  are not followed: see ``reach``).

Each problem names the database, collection, ``_id`` and field path;
loading that fails in a way it should not (a defect of the reader) is a
problem too, and the check carries on with the next document.  Reads
only.
"""
from bson.dbref import DBRef
from pymongo.errors import ConnectionFailure, OperationFailure

from mongopersist import interfaces
from mongopersist.cli import text, walk

HELP = ('find dangling references, refused or malformed stored data and '
        'type-map disagreements')

#: Ids looked up per query when checking references.
BATCH = 500
#: References collected before they are checked (bounds memory).
PENDING_REFERENCES = 5000
#: Characters of a problem that loading reported (its stored values are
#: bounded by the reader; this bounds the whole).
PROBLEM_LIMIT = 1000
#: Server errors that mean nothing more can be checked (the server is
#: gone, or the user may not read): raised, exit code 2.
FATAL_CODES = frozenset([13, 18])     # Unauthorized, AuthenticationFailed


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


def _fatal(error):
    return isinstance(error, ConnectionFailure) or (
        isinstance(error, OperationFailure) and error.code in FATAL_CODES)


def _check_loading(dm, problems, database, collection, doc):
    """Load ``doc`` as the application would; record what is refused.

    Returns the class it loaded as (``None`` if refused).
    """
    try:
        obj = dm._object_from_document(database, collection, doc)
        cls = type(obj)
    except (interfaces.DocumentNotFoundError,
            interfaces.RefusedReferenceError):
        # A dangling reference, or one into a database the command was not
        # given, met while loading: the references are checked (and
        # reported) on their own.
        return None
    except interfaces.StoredDataError as error:
        problems.add(database, collection, doc.get('_id'), error.path,
                     text.shown(error.message, PROBLEM_LIMIT))
        return None
    except Exception as error:
        if _fatal(error):
            raise
        # Loading should have said StoredDataError: report what it said.
        problems.add(database, collection, doc.get('_id'), '',
                     'loading failed with %s: %s' % (
                         type(error).__name__,
                         text.shown(str(error), PROBLEM_LIMIT)))
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
                     % (text.shown(name), text.shown(database),
                        text.shown(collection),
                        text.shown(', '.join(types))))


def _type_map(context):
    """``{(database, collection): types}`` of the usable type-map
    entries (the others are refused by ``walk.type_map_entries``)."""
    return {(entry['database'], entry['collection']): entry['types']
            for entry in walk.type_map_entries(context)}


def _has_operator(value):
    """True if ``value`` is a document with a ``$`` field at any depth
    (``$in`` refuses such values)."""
    for _, item in walk.stored_values(value):
        if type(item) is dict and any(
                isinstance(key, str) and key.startswith('$') for key in item):
            return True
    return False


def _existing_ids(coll, ids):
    """The ``repr`` of each of ``ids`` stored in ``coll``; ids the server
    cannot look up map to the error (``{repr: error}``)."""
    existing, failed = set(), {}
    plain = [id for id in ids if not _has_operator(id)]
    for start in range(0, len(plain), BATCH):
        batch = plain[start:start + BATCH]
        existing.update(repr(doc['_id']) for doc in coll.find(
            {'_id': {'$in': batch}}, {'_id': True}))
    for id in ids:
        if not _has_operator(id):
            continue
        try:
            if coll.find_one({'_id': {'$eq': id}}, {'_id': True}):
                existing.add(repr(id))
        except OperationFailure as error:
            if _fatal(error):
                raise
            failed[repr(id)] = error
    return existing, failed


def _check_references(context, problems, refs):
    """``refs``: (database, collection, id, path, DBRef) found.  Looks
    them up in the databases the command was given only."""
    wanted = {}
    for holder in refs:
        ref = holder[4]
        refused = walk.reference_problem(context, holder[0], ref)
        if refused is not None:
            problems.add(holder[0], holder[1], holder[2], holder[3],
                         refused[1])
            continue
        wanted.setdefault((ref.database or holder[0], ref.collection),
                          []).append(holder)
    for (database, collection), holders in sorted(
            wanted.items(), key=lambda item: repr(item[0])):
        coll = context.client[database][collection]
        ids = list({repr(holder[4].id): holder[4].id
                    for holder in holders}.values())
        existing, failed = _existing_ids(coll, ids)
        for holder in holders:
            ref = holder[4]
            key = repr(ref.id)
            if key in failed:
                problems.add(holder[0], holder[1], holder[2], holder[3],
                             'cannot look up the reference to %s.%s _id=%s:'
                             ' %s' % (text.shown(database),
                                      text.shown(collection),
                                      text.quoted(ref.id),
                                      text.shown(str(failed[key]))))
            elif key not in existing:
                problems.add(holder[0], holder[1], holder[2], holder[3],
                             'dangling reference to %s.%s _id=%s' % (
                                 text.shown(database),
                                 text.shown(collection),
                                 text.quoted(ref.id)))


def run(context):
    problems = Problems()
    dm = context.data_manager()
    type_map = _type_map(context)
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
        if not isinstance(doc.get('name'), str):
            problems.add(context.root_database, walk.ROOT_COLLECTION,
                         doc.get('_id'), 'name',
                         'the root entry has no name (a string)')
        if not isinstance(ref, DBRef):
            problems.add(context.root_database, walk.ROOT_COLLECTION,
                         doc.get('_id'), 'ref',
                         'the root entry holds no reference')
        else:
            refs.append((context.root_database, walk.ROOT_COLLECTION,
                         doc.get('_id'), 'ref', ref))
    _check_references(context, problems, refs)
    # What stored data points elsewhere, or is too malformed to use,
    # first (the type map is read before the documents).
    found = context.refused + problems.items
    result = {'database': context.database, 'databases': context.databases,
              'documents': checked, 'problems': found}
    _print(context, result)
    return result, 1 if found else 0


def _print(context, result):
    rows = [['%s.%s' % (text.shown(p['database']),
                        text.shown(p['collection'])),
             text.quoted(p['id']), text.shown(p['path']), p['problem']]
            for p in result['problems']]
    context.say('Checked %d documents of %s: %d problem%s' % (
        result['documents'], ', '.join(
            text.shown(name) for name in result['databases']), len(rows),
        '' if len(rows) == 1 else 's'))
    if rows:
        context.say(walk.table(rows, ['collection', '_id', 'field',
                                      'problem']))
