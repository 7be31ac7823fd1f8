"""Show what is stored: collections, their classes, counts, sizes, root.

For each collection of the database (and of other databases the type map
names): the classes stored in it (from the type map and the documents'
``_py_persistent_type``), how many documents of each, and their size in
BSON; then the root entries.  Reads only.
"""
import bson

from mongopersist.cli import walk

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
        name = doc.get('_py_persistent_type', default)
        if not isinstance(name, str):
            name = '(unknown)' if name is None else '(malformed)'
        counts[name] = counts.get(name, 0) + 1
    return counts, size


def _size(number):
    for unit in ('B', 'kB', 'MB', 'GB'):
        if number < 1024 or unit == 'GB':
            return ('%d %s' % (number, unit) if unit == 'B'
                    else '%.1f %s' % (number, unit))
        number /= 1024.0


def run(context):
    type_map = {(entry.get('database'), entry.get('collection')):
                entry.get('types') for entry in walk.type_map_entries(context)}
    collections = []
    for database, name in walk.application_collections(context):
        types = type_map.get((database, name))
        types = list(types) if isinstance(types, list) else []
        counts, size = _class_counts(context, database, name, types)
        collections.append({
            'database': database, 'collection': name,
            'type_map': types, 'classes': counts,
            'documents': sum(counts.values()), 'bytes': size})
    root_coll = context.client[context.root_database][walk.ROOT_COLLECTION]
    root = []
    for doc in root_coll.find().sort('name'):
        ref = doc.get('ref')
        root.append({'name': doc.get('name'), 'ref': ref})
    result = {'database': context.database,
              'root_database': context.root_database,
              'collections': collections, 'root': root}
    _print(context, result)
    return result, 0


def _print(context, result):
    rows = []
    for coll in result['collections']:
        names = sorted(set(coll['type_map']) | set(coll['classes']))
        classes = ', '.join(
            '%s (%d)' % (name, coll['classes'].get(name, 0))
            for name in names) or '-'
        where = coll['collection'] if coll['database'] == result[
            'database'] else '%s.%s' % (coll['database'], coll['collection'])
        rows.append([where, coll['documents'], _size(coll['bytes']),
                     classes])
    context.say('Database %s' % result['database'])
    context.say(walk.table(rows, ['collection', 'documents', 'size',
                                  'classes (documents)']))
    context.say()
    context.say('Root entries (%s.%s): %d' % (
        result['root_database'], walk.ROOT_COLLECTION, len(result['root'])))
    for entry in result['root']:
        ref = entry['ref']
        target = ('%s %r' % (ref.collection, ref.id)
                  if hasattr(ref, 'collection') else repr(ref))
        context.say('  %s -> %s' % (entry['name'], target))
