"""What the commands share: which collections to walk, a progress bar,
tables, the stored values of a document, and conditional rewrites."""
from bson.dbref import DBRef

from mongopersist import journal, legacy, typemap

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
    return tqdm(iterable, total=total, desc=description, unit=' docs',
                file=stream, leave=False, dynamic_ncols=True)


def table(rows, headers):
    """Format ``rows`` (lists of values) as a text table."""
    rows = [[str(cell) for cell in row] for row in rows]
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


def type_map_entries(context):
    """The documents of the type map (``persistence_type_map``)."""
    coll = context.client[context.root_database][typemap.TYPE_MAP_COLLECTION]
    return list(coll.find().sort('_id'))


def application_collections(context):
    """``(database, collection)`` of every collection holding application
    documents: those of ``--database``, and of other databases the type
    map names (classes with ``_p_mongo_database``)."""
    found = set()
    databases = {context.database}
    for entry in type_map_entries(context):
        if isinstance(entry.get('database'), str) and isinstance(
                entry.get('collection'), str):
            databases.add(entry['database'])
    for database in databases:
        for name in context.client[database].list_collection_names():
            if name in LIBRARY_COLLECTIONS or name.startswith('system.'):
                continue
            found.add((database, name))
    return sorted(found)


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
    """Writes changed top-level fields of a document, conditionally.

    The write only happens if the fields it changes still hold what was
    read (and ``_py_serial``, if the document has one, is unchanged; it is
    then incremented, so a writer that loaded the old version gets a
    ``ConflictError`` and retries).  Fields others changed in the meantime
    are left as they are.
    """

    def __init__(self, coll):
        self.coll = coll

    def apply(self, old, new):
        """Write ``new`` over ``old``; return true if it was written."""
        selector = {'_id': old['_id']}
        update = {}
        sets = {key: value for key, value in new.items()
                if key != '_id' and (key not in old or old[key] != value
                                     or type(old[key]) is not type(value))}
        unsets = {key: '' for key in old if key not in new}
        for key in list(sets) + list(unsets):
            selector[key] = old[key] if key in old else {'$exists': False}
        serial = old.get('_py_serial')
        if isinstance(serial, int) and not isinstance(serial, bool):
            selector['_py_serial'] = serial
            sets['_py_serial'] = serial + 1
        if sets:
            update['$set'] = sets
        if unsets:
            update['$unset'] = unsets
        if not update:
            return True
        return self.coll.update_one(selector, update).matched_count == 1

    def delete(self, old):
        """Delete ``old`` if it is unchanged; return true if deleted."""
        selector = {'_id': old['_id']}
        if '_py_serial' in old:
            selector['_py_serial'] = old['_py_serial']
        return self.coll.delete_one(selector).deleted_count == 1


def rewrite_all(context, database, collection, change, dry_run,
                attempts=3, checkpoint=None):
    """Rewrite every document of a collection that ``change(doc)`` changes.

    ``change`` returns the new document or ``None``.  A document changed
    by somebody else between the read and the write is read again and
    rewritten (up to ``attempts`` times), else counted as a conflict.
    ``checkpoint(doc)`` is called after each document written.  Returns
    ``(changed, conflicts)``.
    """
    coll = context.client[database][collection]
    rewrite = Rewrite(coll)
    changed, conflicts = 0, []
    for doc in documents(context, database, collection):
        new = change(doc)
        if new is None:
            continue
        if dry_run:
            changed += 1
            continue
        for _ in range(attempts):
            if rewrite.apply(doc, new):
                changed += 1
                if checkpoint is not None:
                    checkpoint(doc)
                break
            doc = coll.find_one({'_id': doc['_id']})
            new = change(doc) if doc is not None else None
            if new is None:
                break
        else:
            conflicts.append(doc['_id'])
    return changed, conflicts

