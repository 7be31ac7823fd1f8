"""What the commands share: which collections to walk, a progress bar,
tables, the stored values of a document, and conditional rewrites.

Collections are walked in the databases the command was given only
(``Context.given``); a type-map entry or a reference that points
elsewhere, or is malformed, is recorded with ``Context.refuse`` and not
followed.
"""
import pymongo
from bson.dbref import DBRef

from mongopersist import journal, legacy, typemap
from mongopersist.cli import reach, text

ROOT_COLLECTION = 'persistence_root'
#: Collections of the library itself (not application documents).
LIBRARY_COLLECTIONS = frozenset([
    ROOT_COLLECTION, typemap.TYPE_MAP_COLLECTION,
    journal.JOURNAL_COLLECTION, legacy.NAME_MAP_COLLECTION,
    'persistence_migrations'])
#: Where ``rename-class`` keeps its checkpoints.
MIGRATIONS_COLLECTION = 'persistence_migrations'


def progress(context, iterable, total=None, description=None):
    """Wrap ``iterable`` in a progress bar (counts and rate) on stderr.

    The bar comes from ``tqdm`` (the ``cli`` extra).  There is none with
    ``--json`` or ``--no-progress``, when stderr is not a terminal, or when
    tqdm is not installed: the command works the same without it.
    """
    stream = context.err
    if not context.progress_enabled or not getattr(
            stream, 'isatty', lambda: False)():
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total,
                desc=None if description is None else text.shown(
                    description),
                unit=' docs', file=stream, leave=False, dynamic_ncols=True)


def table(rows, headers):
    """Format ``rows`` (lists of values) as a text table (cells escaped;
    stored values in them should be bounded with ``text.shown``)."""
    rows = [[text.escape(str(cell)) for cell in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row)]
    lines = ['  '.join(header.ljust(width) for header, width in zip(
        headers, widths)).rstrip()]
    lines.append('  '.join('-' * width for width in widths))
    for row in rows:
        lines.append('  '.join(cell.ljust(width) for cell, width in zip(
            row, widths)).rstrip())
    return '\n'.join(lines)


#: The message for a stored pointer into a database not given.
NOT_GIVEN = ('%s database %s, which this command was not given '
             '(--database): %s')


def not_given(verb, database, consequence):
    """``'names database 'x', which this command was not given ...'``."""
    return NOT_GIVEN % (verb, text.quoted(database), consequence)


def type_map_entries(context):
    """The usable documents of the type map (``persistence_type_map``),
    in ``_id`` order: those whose ``database`` and ``collection`` are
    names, in a database the command was given, and whose ``types`` is a
    list of strings.  The others are refused (``Context.refuse``).  Read
    once per command."""
    if context._type_map is not None:
        return context._type_map
    coll = context.client[context.root_database][typemap.TYPE_MAP_COLLECTION]
    usable = []
    for entry in coll.find().sort('_id'):
        problem = _type_map_problem(context, entry)
        if problem is None:
            usable.append(entry)
        else:
            field, message, outside = problem
            context.refuse(context.root_database,
                           typemap.TYPE_MAP_COLLECTION, entry.get('_id'),
                           field, message, outside=outside)
    context._type_map = usable
    return usable


def _type_map_problem(context, entry):
    """``(field, problem, outside)`` of a type-map entry not to use, or
    ``None``."""
    database, collection = entry.get('database'), entry.get('collection')
    if reach.database_name_problem(database) is not None:
        return 'database', (
            'a type map entry names database %s, which is not a database '
            'name' % text.quoted(database)), False
    if reach.collection_name_problem(collection) is not None:
        return 'collection', (
            'a type map entry names collection %s, which is not a '
            'collection name' % text.quoted(collection)), False
    if context.outside(database):
        return 'database', not_given(
            'names', database, 'nothing there is read or written'), True
    types = entry.get('types')
    if not isinstance(types, list) or not all(
            isinstance(name, str) for name in types):
        return 'types', ('a type map entry needs "types", an array of '
                         'class names'), False
    return None


def application_collections(context):
    """``(database, collection)`` of every collection holding application
    documents: those of the ``--database`` databases, and of the root
    database if the type map names it.  A type-map entry naming another
    database is refused (see ``type_map_entries``): listed, not walked."""
    found = set()
    databases = list(context.databases)
    for entry in type_map_entries(context):
        if entry['database'] not in databases:
            databases.append(entry['database'])
    for database in databases:
        for name in context.client[database].list_collection_names():
            if name in LIBRARY_COLLECTIONS or name.startswith('system.'):
                continue
            found.add((database, name))
    return sorted(found)


def reference_problem(context, holder_database, ref):
    """Why the command does not follow ``ref`` (a ``DBRef`` stored in a
    document of ``holder_database``): ``(kind, message)`` with kind
    ``'outside'`` (into a database not given) or ``'malformed'``; or
    ``None`` to follow it."""
    if reach.collection_name_problem(ref.collection) is not None:
        return 'malformed', ('a reference to collection %s, which is not a '
                             'collection name' % text.quoted(ref.collection))
    database = ref.database or holder_database
    if context.outside(database):
        return 'outside', not_given('refers to', database, 'not followed')
    return None


def class_name(doc, default=None):
    """The class a document stores, as stored: its
    ``_py_persistent_type``, else ``default`` (the first class of its
    collection in the type map); ``'(unknown)'`` without either,
    ``'(malformed)'`` if it is not a string."""
    name = doc.get('_py_persistent_type', default)
    if not isinstance(name, str):
        return '(unknown)' if name is None else '(malformed)'
    return name


def documents(context, database, collection, projection=None):
    """Every document of a collection, in ``_id`` order, with progress."""
    coll = context.client[database][collection]
    total = coll.estimated_document_count()
    cursor = coll.find({}, projection).sort('_id')
    return context.progress(cursor, total, '%s.%s' % (database, collection))


def stored_values(value, path=''):
    """Yield ``(path, value)`` for ``value`` and every value inside it.

    Paths are dotted (``friends.roy``, ``visited.0``) as in
    ``StoredDataError``.
    """
    yield path, value
    if type(value) is dict:
        items = value.items()
    elif type(value) is list:
        items = enumerate(value)
    else:
        return
    for key, item in items:
        yield from stored_values(item, '%s.%s' % (path, key) if path
                                 else str(key))


def references(doc):
    """Yield ``(path, DBRef)`` for every reference in a stored document."""
    for key, value in doc.items():
        if key == '_id':
            continue
        for path, item in stored_values(value, key):
            if isinstance(item, DBRef):
                yield path, item


class Rewrite:
    """Writes changed top-level fields of documents, conditionally.

    A write only happens if the fields it changes still hold what was read
    (and ``_py_serial``, if the document has one, is unchanged; it is then
    incremented, so a writer that loaded the old version gets a
    ``ConflictError`` and retries).  Fields others changed in the meantime
    are left as they are.
    """

    def __init__(self, coll):
        self.coll = coll

    @staticmethod
    def update_for(old, new):
        """The conditional ``UpdateOne`` that turns ``old`` into ``new``
        (``None`` if they are the same)."""
        # Stored values are compared with $eq: a stored document that
        # looks like a query operator is a value, never a query.
        selector = {'_id': {'$eq': old['_id']}}
        update = {}
        sets = {key: value for key, value in new.items()
                if key != '_id' and (key not in old or old[key] != value
                                     or type(old[key]) is not type(value))}
        unsets = {key: '' for key in old if key not in new}
        for key in list(sets) + list(unsets):
            selector[key] = ({'$eq': old[key]} if key in old
                             else {'$exists': False})
        if not (sets or unsets):
            return None
        serial = old.get('_py_serial')
        if isinstance(serial, int) and not isinstance(serial, bool):
            selector['_py_serial'] = {'$eq': serial}
            sets['_py_serial'] = serial + 1
        if sets:
            update['$set'] = sets
        if unsets:
            update['$unset'] = unsets
        return pymongo.UpdateOne(selector, update)

    def apply(self, old, new):
        """Write ``new`` over ``old``; return true if it was written."""
        operation = self.update_for(old, new)
        if operation is None:
            return True
        return self.coll.bulk_write([operation]).matched_count == 1

    def apply_batch(self, pairs):
        """Write each ``(old, new)``; return true if all were written (one
        round trip).  Otherwise some were changed by others meanwhile."""
        operations = [op for op in (self.update_for(old, new)
                                    for old, new in pairs) if op is not None]
        if not operations:
            return True
        result = self.coll.bulk_write(operations, ordered=False)
        return result.matched_count == len(operations)

    def delete(self, old):
        """Delete ``old`` if it is unchanged; return true if deleted."""
        selector = {'_id': {'$eq': old['_id']}}
        if '_py_serial' in old:
            selector['_py_serial'] = {'$eq': old['_py_serial']}
        return self.coll.delete_one(selector).deleted_count == 1


#: Documents rewritten per round trip (``--batch-size``).
BATCH_SIZE = 500


def add_rewrite_options(parser):
    """``--dry-run`` and ``--batch-size``, for commands that rewrite."""
    parser.add_argument('--dry-run', action='store_true',
                        help='count what would change, write nothing')
    parser.add_argument('--batch-size', type=int, default=BATCH_SIZE,
                        metavar='N',
                        help='documents written per round trip (default '
                             '%(default)s)')


def batches(iterable, size):
    batch = []
    for item in iterable:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def rewrite_all(context, database, collection, change, dry_run,
                attempts=3, batch_size=BATCH_SIZE):
    """Rewrite every document of a collection that ``change(doc)`` changes.

    ``change(doc, again=False)`` returns the new document or ``None``
    (``again`` is true when a document is read again after a conflict:
    what it counts is counted already).  The documents that
    change are written ``batch_size`` at a time, each conditionally (see
    ``Rewrite``).  When somebody changed some of a batch between the read
    and the write, those are read again and rewritten one by one (up to
    ``attempts`` times), else counted as conflicts.  Returns ``(changed,
    conflicts)``.
    """
    coll = context.client[database][collection]
    rewrite = Rewrite(coll)
    changed, conflicts = 0, []

    def pairs(docs):
        for doc in docs:
            new = change(doc)
            if new is not None:
                yield doc, new

    for batch in batches(pairs(documents(context, database, collection)),
                         batch_size):
        if dry_run or rewrite.apply_batch(batch):
            changed += len(batch)
            continue
        for doc, new in batch:
            if _retry(coll, rewrite, change, doc, new, attempts):
                changed += 1
            else:
                conflicts.append(doc['_id'])
    return changed, conflicts


def _retry(coll, rewrite, change, doc, new, attempts):
    """Rewrite one document of a batch that did not all go through."""
    for _ in range(attempts):
        doc = coll.find_one({'_id': {'$eq': doc['_id']}})
        new = change(doc, again=True) if doc is not None else None
        if new is None:
            return True     # written by the batch, or nothing left to do
        if rewrite.apply(doc, new):
            return True
    return False
