"""Rename a stored class: rewrite OLD to NEW wherever documents name it.

Rewrites the type map entries (and the original package's name map),
``_py_persistent_type`` (of documents and of
sub-objects), ``_py_type`` of values, the class of enum entries, classes
stored as values and ``_py_factory`` at any depth.  Collections are walked
in batches in ``_id`` order; each document is rewritten with a conditional
write (only if the fields changed still hold what was read, and its
``_py_serial`` is unchanged), so it is safe while the application runs:
a document someone changes in between is read and rewritten again.

Resumable: finished collections are recorded in ``persistence_migrations``
and skipped when the same rename runs again after an interruption; running
it again is always safe (a rewritten document no longer names OLD).

A collection named after the old class (the default collection name of a
class without ``_p_mongo_collection``) keeps its name: give the renamed
class ``_p_mongo_collection = 'OLD'`` (see docs/operations.rst).

Only the databases given are rewritten; type-map entries naming another
database are listed as refused (exit code 1, and the rename counts as
unfinished).
"""
from mongopersist import legacy, typemap
from mongopersist.cli import text, walk

HELP = 'rewrite a stored class name everywhere (resumable, online)'

#: Stored fields that hold a class name (``_py_type`` names a class unless
#: it is one of the library's own representations).
NAME_FIELDS = ('_py_persistent_type', '_py_type', '_py_factory')


def add_arguments(parser):
    parser.add_argument('old', metavar='OLD',
                        help='the stored dotted name (module.Class)')
    parser.add_argument('new', metavar='NEW', help='the new dotted name')
    walk.add_rewrite_options(parser)
    parser.add_argument('--restart', action='store_true',
                        help='ignore the checkpoint of an earlier run')


class Renamer:
    """Rewrites one class name in stored values; counts what it changed."""

    def __init__(self, old, new):
        self.old = old
        self.new = new
        self.counts = {}

    def _count(self, what):
        self.counts[what] = self.counts.get(what, 0) + 1

    def document(self, doc, again=False):
        """The renamed document, or ``None`` if it does not name OLD.

        ``again``: the document was counted before (read again after a
        conflict)."""
        counts = self.counts
        if again:
            self.counts = {}
        try:
            new, changed = self._value(doc)
        finally:
            self.counts = counts
        return new if changed else None

    def _names_old(self, stored, key, item):
        """What the field ``key`` of the stored dict is, if it names OLD."""
        if item != self.old:
            return None
        if key in NAME_FIELDS:
            return key
        kind = stored.get('_py_type')
        if key == 'class' and kind == 'enum.Enum':
            return 'enum class'
        if key == 'path' and kind == 'type':
            return 'class value'
        return None

    def _value(self, value):
        kind = type(value)
        if kind is list:
            changed = False
            items = []
            for item in value:
                item, did = self._value(item)
                items.append(item)
                changed = changed or did
            return items, changed
        if kind is not dict:
            return value, False
        changed = False
        new = {}
        for key, item in value.items():
            what = self._names_old(value, key, item)
            if what is not None:
                new[key] = self.new
                self._count(what)
                changed = True
                continue
            new[key], did = self._value(item)
            changed = changed or did
        return new, changed


def _rename_type_map(context, renamer, dry_run):
    coll = context.client[context.root_database][
        typemap.TYPE_MAP_COLLECTION]
    changed, conflicts = 0, []
    # The usable entries (those naming a database not given, or
    # malformed, are refused and left as they are).
    for entry in walk.type_map_entries(context):
        types = entry['types']
        if renamer.old not in types:
            continue
        new = []
        for name in types:
            name = renamer.new if name == renamer.old else name
            if name not in new:
                new.append(name)
        changed += 1
        if dry_run:
            continue
        result = coll.update_one({'_id': {'$eq': entry['_id']},
                                  'types': {'$eq': types}},
                                 {'$set': {'types': new}})
        if result.matched_count != 1:
            conflicts.append(entry['_id'])
    # The original package's name map, in a database not upgraded yet.
    name_map = context.client[context.root_database][
        legacy.NAME_MAP_COLLECTION]
    old_names = {'path': renamer.old}
    if dry_run:
        changed += name_map.count_documents(old_names)
    else:
        changed += name_map.update_many(
            old_names, {'$set': {'path': renamer.new}}).modified_count
    return changed, conflicts


def run(context):
    options = context.options
    renamer = Renamer(options.old, options.new)
    dry_run = options.dry_run
    migrations = context.client[context.root_database][
        walk.MIGRATIONS_COLLECTION]
    key = 'rename-class %s %s' % (options.old, options.new)
    state = None if options.restart or dry_run else migrations.find_one(
        {'_id': key})
    done = set(map(tuple, _pairs(state.get('done')))) if state else set()
    type_map_changed, conflicts = _rename_type_map(context, renamer, dry_run)
    per_collection = []
    skipped = []
    for database, collection in walk.application_collections(context):
        if (database, collection) in done:
            skipped.append('%s.%s' % (database, collection))
            continue
        changed, failed = walk.rewrite_all(
            context, database, collection, renamer.document, dry_run,
            batch_size=options.batch_size)
        conflicts.extend(failed)
        if changed:
            per_collection.append({'database': database,
                                   'collection': collection,
                                   'documents': changed})
        if not dry_run and not failed:
            migrations.update_one(
                {'_id': key},
                {'$addToSet': {'done': [database, collection]}}, upsert=True)
    if not dry_run and not conflicts and not context.refused:
        # Finished: a later run of the same rename starts afresh.
        migrations.delete_one({'_id': key})
    named_after = [
        '%s.%s' % pair for pair in walk.application_collections(context)
        if pair[1] == options.old]
    result = {'old': options.old, 'new': options.new, 'dry_run': dry_run,
              'type_map_entries': type_map_changed,
              'collections': per_collection,
              'documents': sum(c['documents'] for c in per_collection),
              'fields': renamer.counts,
              'skipped': skipped, 'conflicts': conflicts,
              'collections_named_after_old': named_after,
              'refused': context.refused}
    _print(context, result)
    return result, 1 if conflicts or context.refused else 0


def _pairs(value):
    """The ``[database, collection]`` pairs of a checkpoint's ``done``
    (anything else in it is ignored: the collection is walked again)."""
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, list)
            and len(item) == 2 and all(isinstance(x, str) for x in item)]


def _print(context, result):
    verb = 'Would rewrite' if result['dry_run'] else 'Rewrote'
    context.say_refused()
    context.say('%s %s -> %s' % (
        'Renaming (dry run)' if result['dry_run'] else 'Renamed',
        text.shown(result['old']), text.shown(result['new'])))
    rows = [['%s.%s' % (text.shown(c['database']),
                        text.shown(c['collection'])), c['documents']]
            for c in result['collections']]
    if rows:
        context.say(walk.table(rows, ['collection', 'documents']))
    context.say('%s %d documents and %d type map entries' % (
        verb, result['documents'], result['type_map_entries']))
    if result['fields']:
        context.say('Names replaced: %s' % ', '.join(
            '%s %d' % item for item in sorted(result['fields'].items())))
    if result['skipped']:
        context.say('Skipped (finished by an earlier run): %s'
                    % ', '.join(text.shown(name)
                                for name in result['skipped']))
    for name in result['collections_named_after_old']:
        context.say('Note: collection %s is named after the old class; give '
                    '%s _p_mongo_collection = %s' % (
                        text.shown(name), text.shown(result['new']),
                        text.quoted(result['old'])))
    if result['conflicts']:
        context.say('Changed by others while rewriting (run again): %s'
                    % ', '.join(text.quoted(id)
                                for id in result['conflicts']))
