"""Show what is stored: collections, their classes, counts, sizes, root.

For each collection of the databases given (and of the root database,
where the type map names it): the classes stored in it (from the type map
and the documents' ``_py_persistent_type``), how many documents of each,
and their size in BSON; then the root entries.  Type-map entries that
name another database (or are malformed) are listed as refused (exit
code 1).  Reads only.
"""
import bson
from bson.dbref import DBRef

from mongopersist.cli import text, walk

HELP = 'show collections, stored classes, counts, sizes and root entries'


def add_arguments(parser):
    pass


def _class_counts(context, database, collection, types):
    """Documents per class and total BSON size of a collection."""
    counts = {}
    size = 0
    default = types[0] if types else None
    for doc in walk.documents(context, database, collection):
        size += len(bson.encode(doc))
        name = walk.class_name(doc, default)
        counts[name] = counts.get(name, 0) + 1
    return counts, size


def _size(number):
    for unit in ('B', 'kB', 'MB', 'GB'):
        if number < 1024 or unit == 'GB':
            return ('%d %s' % (number, unit) if unit == 'B'
                    else '%.1f %s' % (number, unit))
        number /= 1024.0


def run(context):
    type_map = {(entry['database'], entry['collection']): entry['types']
                for entry in walk.type_map_entries(context)}
    collections = []
    for database, name in walk.application_collections(context):
        types = list(type_map.get((database, name), ()))
        counts, size = _class_counts(context, database, name, types)
        collections.append({
            'database': database, 'collection': name,
            'type_map': types, 'classes': counts,
            'documents': sum(counts.values()), 'bytes': size})
    root_coll = context.client[context.root_database][walk.ROOT_COLLECTION]
    root = []
    for doc in root_coll.find().sort('name'):
        entry = {'name': doc.get('name'), 'ref': doc.get('ref')}
        if not isinstance(entry['name'], str):
            entry['id'] = doc.get('_id')
        root.append(entry)
    result = {'database': context.database, 'databases': context.databases,
              'root_database': context.root_database,
              'collections': collections, 'root': root,
              'refused': context.refused}
    _print(context, result)
    return result, 1 if context.refused else 0


def _print(context, result):
    rows = []
    for coll in result['collections']:
        names = sorted(set(coll['type_map']) | set(coll['classes']))
        classes = ', '.join(
            '%s (%d)' % (text.shown(name), coll['classes'].get(name, 0))
            for name in names) or '-'
        where = text.shown(coll['collection'])
        if coll['database'] != result['database']:
            where = '%s.%s' % (text.shown(coll['database']), where)
        rows.append([where, coll['documents'], _size(coll['bytes']),
                     classes])
    context.say_refused()
    context.say('Database %s' % ', '.join(
        text.shown(name) for name in result['databases']))
    context.say(walk.table(rows, ['collection', 'documents', 'size',
                                  'classes (documents)']))
    context.say()
    context.say('Root entries (%s.%s): %d' % (
        text.shown(result['root_database']), walk.ROOT_COLLECTION,
        len(result['root'])))
    for entry in result['root']:
        ref = entry['ref']
        if isinstance(ref, DBRef):
            target = '%s %s' % (text.shown(ref.collection),
                                text.quoted(ref.id))
            if ref.database not in (None, result['root_database']):
                target = '%s.%s' % (text.shown(ref.database), target)
        else:
            target = text.quoted(ref)
        name = (text.shown(entry['name']) if 'id' not in entry else
                '(no name: _id=%s)' % text.quoted(entry['id']))
        context.say('  %s -> %s' % (name, target))
