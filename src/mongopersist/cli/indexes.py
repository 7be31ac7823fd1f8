"""Create the indexes the classes of MODULEs declare.

Imports each module and, for every persistent class defined in it that
declares ``_p_mongo_indexes`` (a list of ``pymongo.IndexModel``), creates
those indexes on the class's collection (``create_indexes``: indexes that
exist with the same options are left alone; none is ever dropped).
"""
import importlib

import persistent
import pymongo
from pymongo.errors import OperationFailure

from mongopersist import metadata
from mongopersist.cli import walk

HELP = 'import modules and create the indexes their classes declare'


def add_arguments(parser):
    parser.add_argument('modules', metavar='MODULE', nargs='+',
                        help='a module whose classes declare indexes')
    parser.add_argument('--dry-run', action='store_true',
                        help='list the indexes, create nothing')


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


def ensure_indexes(client, database, cls, dry_run=False):
    """Create the indexes ``cls`` declares; return their names.

    (When the data manager offers ``ensure_indexes`` itself, this is where
    the command switches to it.)
    """
    models = list(cls._p_mongo_indexes)
    for model in models:
        if not isinstance(model, pymongo.IndexModel):
            raise TypeError('%s._p_mongo_indexes must hold pymongo.IndexModel '
                            'instances, not %r' % (cls.__name__, model))
    coll = client[metadata.database_name(cls, database)][
        metadata.collection_name(cls)]
    if dry_run:
        return [model.document['name'] for model in models]
    return coll.create_indexes(models)


def run(context):
    rows = []
    problems = []
    for name in context.options.modules:
        module = importlib.import_module(name)
        for cls in declaring_classes(module):
            where = '%s.%s' % (metadata.database_name(cls, context.database),
                               metadata.collection_name(cls))
            try:
                names = ensure_indexes(context.client, context.database, cls,
                                       context.options.dry_run)
            except (TypeError, OperationFailure) as error:
                problems.append({'class': metadata.get_dotted_name(cls),
                                 'collection': where, 'error': str(error)})
                continue
            rows.append({'class': metadata.get_dotted_name(cls),
                         'collection': where, 'indexes': names})
    result = {'dry_run': context.options.dry_run, 'classes': rows,
              'problems': problems}
    verb = 'would create' if context.options.dry_run else 'ensured'
    context.say(walk.table(
        [[row['class'], row['collection'], ', '.join(row['indexes'])]
         for row in rows], ['class', 'collection', 'indexes ' + verb]))
    for problem in problems:
        context.say('Failed: %(class)s (%(collection)s): %(error)s' % problem)
    return result, 1 if problems else 0
