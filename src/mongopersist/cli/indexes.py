"""Create the indexes the classes of MODULEs declare.

Imports each module and, for every persistent class defined in it that
declares ``_p_mongo_indexes`` (a list of ``pymongo.IndexModel``), creates
the indexes its collection lacks, with the library's own
``ensure_indexes`` (``mongopersist.indexes``): nothing is ever dropped or
changed, and an existing index of a declared name or keys but other
options is a problem reported (exit code 1).  ``--dry-run`` lists what
would be created (``indexes.missing_indexes``) and creates nothing.  A
class stored in a database the command was not given
(``_p_mongo_database``) is a problem too: give that database with
``--database``.
"""
import importlib

import persistent
from pymongo.errors import OperationFailure

from mongopersist import indexes, interfaces, metadata
from mongopersist.cli import text, walk

HELP = 'import modules and create the indexes their classes declare'


def add_arguments(parser):
    parser.add_argument('modules', metavar='MODULE', nargs='+',
                        help='a module whose classes declare indexes')
    parser.add_argument('--dry-run', action='store_true',
                        help='list the indexes that would be created, '
                             'create nothing')


def declaring_classes(module):
    """The persistent classes of ``module`` that declare indexes."""
    found = []
    for value in vars(module).values():
        if (isinstance(value, type)
                and issubclass(value, persistent.Persistent)
                and value.__module__ == module.__name__
                and getattr(value, '_p_mongo_indexes', None)):
            found.append(value)
    return sorted(found, key=lambda cls: cls.__qualname__)


def run(context):
    dry_run = context.options.dry_run
    ensure = indexes.missing_indexes if dry_run else indexes.ensure_indexes
    dm = context.data_manager()
    rows = []
    problems = []
    for name in context.options.modules:
        module = importlib.import_module(name)
        for cls in declaring_classes(module):
            database = metadata.database_name(cls, context.database)
            where = '%s.%s' % (database, metadata.collection_name(cls))
            if context.outside(database):
                problems.append({
                    'class': metadata.get_dotted_name(cls),
                    'collection': where,
                    'error': 'stored in database %s, which this command was '
                             'not given (--database)' % text.quoted(
                                 database)})
                continue
            try:
                names = [index.name for index in ensure(dm, cls)]
            except (TypeError, interfaces.IndexConflictError,
                    OperationFailure) as error:
                problems.append({'class': metadata.get_dotted_name(cls),
                                 'collection': where, 'error': str(error)})
                continue
            rows.append({'class': metadata.get_dotted_name(cls),
                         'collection': where, 'indexes': names})
    result = {'dry_run': dry_run, 'classes': rows, 'problems': problems}
    verb = 'would create' if dry_run else 'created'
    if rows:
        context.say(walk.table(
            [[row['class'], row['collection'],
              ', '.join(row['indexes']) or '(all exist)'] for row in rows],
            ['class', 'collection', 'indexes ' + verb]))
    elif not problems:
        context.say('No class of %s declares indexes'
                    % ', '.join(context.options.modules))
    for problem in problems:
        context.say('Failed: %s (%s): %s' % (
            text.shown(problem['class']), text.shown(problem['collection']),
            text.shown(problem['error'], limit=1000)))
    return result, 1 if problems else 0
