"""Rewrite documents of the original mongopersist into the current format.

Rewrites, at any depth of every document: ``dict_data`` dicts (to
``builtins.dict`` items), ``_py_constant`` (to ``{'_py_type':
'constant'}``), and dates, datetimes and times pickled by Python 2 as
``_py_factory`` bytes (to the current ``datetime`` representations, a
naive datetime to a BSON date).  Copies the class names of the original
package's ``persistence_name_map`` into the type map.  Nothing is loaded
or imported: only stored values are rewritten, each document with a
conditional write (see ``rename-class``).  Exit code 1 if something could
not be rewritten.

Only the databases given are rewritten; type-map and name-map entries
naming another database are listed as refused (exit code 1), and a
name-map entry's class names are copied for the databases given only.
"""
from mongopersist import legacy, typemap
from mongopersist.cli import reach, text, walk

HELP = "rewrite the original package's stored formats into the current one"


def add_arguments(parser):
    walk.add_rewrite_options(parser)


def _name_map(context, dry_run):
    """Copy ``persistence_name_map`` entries into the type map."""
    source = context.client[context.root_database][
        legacy.NAME_MAP_COLLECTION]
    target = context.client[context.root_database][
        typemap.TYPE_MAP_COLLECTION]
    added = 0
    for entry in source.find().sort('_id'):
        database = entry.get('database') or context.database
        collection, path = entry.get('collection'), entry.get('path')
        problem = _name_map_problem(context, database, collection, path)
        if problem is not None:
            field, message, outside = problem
            context.refuse(context.root_database, legacy.NAME_MAP_COLLECTION,
                           entry.get('_id'), field, message, outside=outside)
            continue
        key = '%s.%s' % (database, collection)
        existing = target.find_one({'_id': {'$eq': key}}) or {}
        types = existing.get('types')
        if isinstance(types, list) and path in types:
            continue
        added += 1
        if not dry_run:
            target.update_one(
                {'_id': {'$eq': key}},
                {'$addToSet': {'types': path},
                 '$setOnInsert': {'database': database,
                                  'collection': collection}},
                upsert=True)
    return added


def _name_map_problem(context, database, collection, path):
    """``(field, problem, outside)`` of a name-map entry not to copy, or
    ``None``."""
    if reach.database_name_problem(database) is not None:
        return 'database', ('a name map entry names database %s, which is '
                            'not a database name' % text.quoted(database)
                            ), False
    if reach.collection_name_problem(collection) is not None:
        return 'collection', (
            'a name map entry names collection %s, which is not a '
            'collection name' % text.quoted(collection)), False
    if not isinstance(path, str):
        return 'path', ('a name map entry needs "path", a class name, not '
                        '%s' % text.quoted(path)), False
    if context.outside(database):
        return 'database', walk.not_given(
            'names', database, 'nothing there is read or written'), True
    return None


def run(context):
    dry_run = context.options.dry_run
    upgrade = legacy.Upgrade()
    problems = []
    per_collection = []
    conflicts = []
    type_map_added = _name_map(context, dry_run)
    for database, collection in walk.application_collections(context):
        def change(doc, again=False):
            new, changed = upgrade.rewrite(doc, count=not again)
            for path, reason in () if again else upgrade.problems:
                problems.append({'database': database,
                                 'collection': collection,
                                 'id': doc.get('_id'), 'path': path,
                                 'problem': reason})
            return new if changed else None
        changed, failed = walk.rewrite_all(
            context, database, collection, change, dry_run,
            batch_size=context.options.batch_size)
        conflicts.extend(failed)
        if changed:
            per_collection.append({'database': database,
                                   'collection': collection,
                                   'documents': changed})
    result = {'database': context.database, 'dry_run': dry_run,
              'collections': per_collection,
              'documents': sum(c['documents'] for c in per_collection),
              'values': upgrade.counts, 'type_map_added': type_map_added,
              'problems': problems, 'conflicts': conflicts,
              'refused': context.refused}
    _print(context, result)
    return result, 1 if problems or conflicts or context.refused else 0


def _print(context, result):
    verb = 'Would rewrite' if result['dry_run'] else 'Rewrote'
    context.say_refused()
    rows = [['%s.%s' % (text.shown(c['database']),
                        text.shown(c['collection'])), c['documents']]
            for c in result['collections']]
    if rows:
        context.say(walk.table(rows, ['collection', 'documents']))
    context.say('%s %d documents%s' % (
        verb, result['documents'],
        ' (dry run: nothing written)' if result['dry_run'] else ''))
    if result['values']:
        context.say('Values: %s' % ', '.join(
            '%s %d' % item for item in sorted(result['values'].items())))
    if result['type_map_added']:
        context.say('Type map: %d class names taken from %s' % (
            result['type_map_added'], legacy.NAME_MAP_COLLECTION))
    for problem in result['problems']:
        context.say('Not rewritten: %s.%s _id=%s %s: %s' % (
            text.shown(problem['database']),
            text.shown(problem['collection']), text.quoted(problem['id']),
            text.shown(problem['path']), text.shown(problem['problem'],
                                                    limit=1000)))
    if result['conflicts']:
        context.say('Changed by others while rewriting (run again): %s'
                    % ', '.join(text.quoted(id)
                                for id in result['conflicts']))
