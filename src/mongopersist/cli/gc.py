"""List (and with --apply remove) documents nobody can reach.

A document is reachable from the root entries through references
(``DBRef`` values at any depth), and from a reachable container: an item
of a ``MongoContainer`` holds a reference to its container in its parent
field (``parent``, or the fields given with ``--parent-key``).  Everything
else in the application's collections is unreachable.

This is for applications that reach their objects through references
only.  Documents found by queries, a ``MongoCollectionMapping`` or other
code that reads collections directly are unreachable in this sense: name
their collections with ``--keep``: their documents are then kept, and so
is what they reference.

The unreachable documents are counted by collection and class;
``--list`` lists each of them, ``--limit N`` the first N (with ``--json``
every one is listed unless ``--limit`` is given).

Without ``--apply`` nothing is removed (exit code 1 if something is
unreachable).  A root without entries makes everything unreachable; it is
taken for a mistake (a wrong ``--root-database``): ``--apply`` then removes
nothing and exits 1.  With it, each document is removed only if it is unchanged
since it was read (its ``_py_serial``, when it has one), and only if its
``_id`` is not an ``ObjectId`` made less than ``--min-age`` seconds ago
(default 300): a commit writes new objects before the objects that refer
to them, so a new document is unreachable for a moment.

Only the databases the command was given are walked.  A type-map entry or
a reference that points into another database means the application keeps
objects there, which may refer back: what looks unreachable may not be.
Such pointers are reported as refused, and ``--apply`` then removes
nothing (give ``--database`` for each database the application uses).
"""
import argparse
import datetime

from bson.dbref import DBRef
from bson.objectid import ObjectId

from mongopersist.cli import text, walk

#: Seconds an unreachable document with an ``ObjectId`` ``_id`` must have
#: existed before ``--apply`` removes it.
MIN_AGE = 300

HELP = 'list documents unreachable from the root (remove with --apply)'


def add_arguments(parser):
    parser.add_argument('--apply', action='store_true',
                        help='remove the unreachable documents')
    parser.add_argument('--dry-run', action='store_true',
                        help='list only (the default; wins over --apply)')
    parser.add_argument('--keep', action='append', default=[],
                        metavar='COLLECTION',
                        help='never list documents of COLLECTION (reached '
                             'by queries); repeatable')
    parser.add_argument('--min-age', type=float, default=MIN_AGE,
                        metavar='SECONDS',
                        help='with --apply, keep documents whose ObjectId '
                             '_id is younger than this (default: %(default)s;'
                             ' a new object is unreachable until the object '
                             'referring to it is written)')
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument('--list', action='store_true',
                       help='list every unreachable document (by default '
                            'they are counted by collection and class)')
    shown.add_argument('--limit', type=_count, default=None, metavar='N',
                       help='list the first N unreachable documents')
    parser.add_argument('--parent-key', action='append', default=None,
                        metavar='FIELD',
                        help="an item's reference to its container "
                             "(default: parent); repeatable")


def _count(value):
    """``--limit``: a whole number, 0 or more."""
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(
            'a whole number of documents (0 or more), not %s'
            % text.quoted(value))
    return number


def _node(ref, database):
    return (ref.database or database, ref.collection, _key(ref.id))


def _key(id):
    try:
        hash(id)
    except TypeError:
        return repr(id)
    return id


def run(context):
    options = context.options
    parent_keys = set(options.parent_key or ['parent'])
    keep = set(options.keep)
    edges = {}          # node -> referenced nodes
    children = {}       # container node -> items referencing it as parent
    docs = {}           # node -> the document's _id and _py_serial
    kept = []           # nodes of --keep collections: reached by queries
    type_map = {(entry['database'], entry['collection']): entry['types']
                for entry in walk.type_map_entries(context)}
    for database, collection in walk.application_collections(context):
        keeping = (collection in keep
                   or '%s.%s' % (database, collection) in keep)
        types = type_map.get((database, collection)) or ()
        default = types[0] if types else None
        for doc in walk.documents(context, database, collection):
            node = (database, collection, _key(doc['_id']))
            docs[node] = (doc['_id'], doc.get('_py_serial'),
                          walk.class_name(doc, default))
            if keeping:
                kept.append(node)
            targets = edges[node] = []
            for path, ref in walk.references(doc):
                if _refused(context, database, collection, doc['_id'],
                            path, ref):
                    continue
                target = _node(ref, database)
                targets.append(target)
                if path in parent_keys:
                    children.setdefault(target, []).append(node)
    root_coll = context.client[context.root_database][walk.ROOT_COLLECTION]
    todo = []
    for doc in root_coll.find():
        ref = doc.get('ref')
        if isinstance(ref, DBRef) and not _refused(
                context, context.root_database, walk.ROOT_COLLECTION,
                doc.get('_id'), 'ref', ref):
            todo.append(_node(ref, context.root_database))
    # A root without entries (a wrong --root-database, a root emptied by
    # mistake) makes every document unreachable: never remove them all.
    rootless = not todo and bool(docs)
    todo.extend(kept)
    reachable = set()
    while todo:
        node = todo.pop()
        if node in reachable:
            continue
        reachable.add(node)
        todo.extend(edges.get(node, ()))
        todo.extend(children.get(node, ()))
    unreachable = [node for node in docs if node not in reachable]
    unreachable.sort(key=repr)
    removed, changed, too_new = [], [], []
    applying = options.apply and not options.dry_run
    # Pointers into databases not given: the graph is incomplete.
    incomplete = context.outside_pointers > 0 or rootless
    if applying and not incomplete:
        born_before = datetime.datetime.now(datetime.timezone.utc) - \
            datetime.timedelta(seconds=max(options.min_age, 0))
        old_enough = []
        for node in unreachable:
            id = docs[node][0]
            if isinstance(id, ObjectId) and id.generation_time > born_before:
                too_new.append(node)
            else:
                old_enough.append(node)
        for node in context.progress(old_enough, len(old_enough),
                                     'removing'):
            database, collection, _ = node
            id, serial = docs[node][:2]
            old = {'_id': id}
            if serial is not None:
                old['_py_serial'] = serial
            coll = context.client[database][collection]
            if walk.Rewrite(coll).delete(old):
                removed.append(node)
            else:
                changed.append(node)
    listed = unreachable if options.limit is None else unreachable[
        :options.limit]
    result = {'database': context.database, 'databases': context.databases,
              'documents': len(docs),
              'reachable': len(docs) - len(unreachable),
              'unreachable_count': len(unreachable),
              'unreachable_by_class': _by_class(unreachable, docs),
              'unreachable': [_describe(node, docs) for node in listed],
              'applied': bool(applying and not incomplete),
              'removed': len(removed),
              'changed_since': [_describe(node, docs) for node in changed],
              'too_new': [_describe(node, docs) for node in too_new],
              'refused': context.refused}
    _print(context, result, options, applying and incomplete, rootless)
    if context.refused or applying and rootless:
        return result, 1
    if applying:
        return result, 1 if changed or too_new else 0
    return result, 1 if unreachable else 0


def _refused(context, database, collection, id, path, ref):
    """True (and recorded) if ``ref`` points into a database the command
    was not given; a reference to a malformed collection name points
    nowhere (nothing to follow, nothing to record)."""
    problem = walk.reference_problem(context, database, ref)
    if problem is None:
        return False
    kind, message = problem
    if kind == 'outside':
        context.refuse(database, collection, id, path, message, outside=True)
    return True


def _describe(node, docs):
    return {'database': node[0], 'collection': node[1],
            'id': docs[node][0], 'class': docs[node][2]}


def _by_class(nodes, docs):
    """How many of ``nodes`` per collection and class, sorted."""
    counts = {}
    for node in nodes:
        key = (node[0], node[1], docs[node][2])
        counts[key] = counts.get(key, 0) + 1
    return [{'database': database, 'collection': collection,
             'class': name, 'documents': count}
            for (database, collection, name), count in sorted(
                counts.items(), key=repr)]


def _where(context, database, collection):
    """A collection for the text output: its database named when it is
    not the main one."""
    if database == context.database:
        return text.shown(collection)
    return '%s.%s' % (text.shown(database), text.shown(collection))


def _print(context, result, options, refused_to_apply, rootless=False):
    context.say_refused()
    count = result['unreachable_count']
    context.say('%d documents, %d reachable from the root, %d unreachable' % (
        result['documents'], result['reachable'], count))
    if count:
        context.say('Unreachable, by collection and class:')
        context.say(walk.table(
            [[_where(context, c['database'], c['collection']),
              text.shown(c['class']), c['documents']]
             for c in result['unreachable_by_class']],
            ['collection', 'class', 'documents']))
        if options.list or options.limit:
            context.say(walk.table(
                [[_where(context, n['database'], n['collection']),
                  text.shown(n['class']), text.quoted(n['id'])]
                 for n in result['unreachable']],
                ['collection', 'class', '_id']))
            if len(result['unreachable']) < count:
                context.say('... and %d more (--list shows them all)' % (
                    count - len(result['unreachable'])))
        elif options.limit is None:
            context.say('List them with --list (or the first N with '
                        '--limit N)')
    if rootless:
        context.say('The root (%s.%s) has no entries: every document is '
                    'unreachable from it' % (
                        text.shown(context.root_database),
                        walk.ROOT_COLLECTION))
    if refused_to_apply and rootless:
        context.say('Nothing removed: a root without entries is taken for '
                    'a mistake (check --root-database); remove the '
                    'documents by hand if they really are garbage')
    elif refused_to_apply:
        context.say('Nothing removed: the databases the application uses '
                    'were not all given (see "Refused" above)')
    elif result['applied']:
        context.say('Removed %d documents' % result['removed'])
        if result['changed_since']:
            context.say('Not removed (changed since read): %d'
                        % len(result['changed_since']))
        if result['too_new']:
            context.say('Not removed (made less than %g s ago, --min-age): '
                        '%d' % (options.min_age, len(result['too_new'])))
    elif count:
        context.say('Nothing removed (dry run): run with --apply to remove')
