"""The ``mongopersist`` command: look after a database of stored objects.

``main(argv=None, client=None) -> int`` runs one command and returns the
exit code (0: fine, 1: problems found or left, 2: usage or connection
error); the console script ``mongopersist`` and ``python -m mongopersist``
call it.  Tests and applications pass ``client`` (any PyMongo-compatible
client, such as the stand-in of ``mongopersist.testing``) instead of a URI.

Each command lives in a module of this package: ``inspect``, ``check``,
``rename`` (``rename-class``), ``indexes`` (``ensure-indexes``), ``gc`` and
``upgrade`` (``upgrade-format``); ``walk`` holds what they share (walking
collections with a progress bar, conditional rewrites).
``docs/operations.rst`` shows each with its output.
"""
import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import sys

from pymongo.errors import PyMongoError

from mongopersist import interfaces, metadata
from mongopersist.cli import check, gc, indexes, inspect, rename, upgrade

URI_VARIABLE = 'MONGODB_URI'

COMMANDS = {
    'inspect': inspect,
    'check': check,
    'rename-class': rename,
    'ensure-indexes': indexes,
    'gc': gc,
    'upgrade-format': upgrade,
}

#: Exit codes: all well; problems found (or left after writing); usage,
#: connection or server error.
EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad options or no database to work on (exit code 2)."""


def _common_options(parser, default):
    """Options every command takes, before or after the command name."""
    group = parser.add_argument_group('connection and output')
    group.add_argument(
        '--uri', default=default,
        help='MongoDB connection string (default: $%s)' % URI_VARIABLE)
    group.add_argument(
        '--database', '-d', default=default,
        help="the application's database (default: the URI's database)")
    group.add_argument(
        '--root-database', default=default,
        help='database of the root and type map (default: --database)')
    group.add_argument(
        '--json', action='store_true', default=default,
        help='print the result as JSON (and no progress bar)')
    group.add_argument(
        '--no-progress', action='store_true', default=default,
        help='no progress bar (it is only shown on a terminal anyway)')
    group.add_argument(
        '--import', dest='imports', action='append', default=default,
        metavar='MODULE',
        help='import MODULE first (it may register types and aliases)')
    group.add_argument(
        '--trust', action='append', default=default, metavar='PREFIX',
        help='allow loading classes of modules under PREFIX '
             '(see metadata.trust_modules)')


def build_parser():
    """The ``argparse`` parser of the command line."""
    parser = argparse.ArgumentParser(
        prog='mongopersist',
        description='Inspect, check and maintain a database of objects '
                    'stored by mongopersist.')
    _common_options(parser, None)
    commands = parser.add_subparsers(dest='command', metavar='COMMAND')
    commands.required = True
    for name, module in COMMANDS.items():
        sub = commands.add_parser(
            name, help=module.HELP, description=module.__doc__.split(
                '\n\n')[0].strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter)
        # Given after the command name they win; not given, the values
        # before it stay.
        _common_options(sub, argparse.SUPPRESS)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


class Context:
    """What a command works with: the client, databases, the registry,
    and where its output goes."""

    def __init__(self, options, client, out, err):
        self.options = options
        self.client = client
        self.out = out
        self.err = err
        self.database = options.database
        self.root_database = options.root_database or options.database
        self.json = bool(options.json)
        self.registry = metadata.TypeRegistry(
            trusted_modules=options.trust or (), parent=metadata.REGISTRY)
        self.progress_enabled = not (options.json or options.no_progress)

    def progress(self, iterable, total=None, description=None):
        """``iterable`` with a progress bar on a terminal (see ``walk``)."""
        from mongopersist.cli import walk
        return walk.progress(self, iterable, total, description)

    def say(self, text=''):
        """Print a line of the human-readable output."""
        if not self.json:
            print(text, file=self.out)


def _connect(options, client):
    uri = options.uri or os.environ.get(URI_VARIABLE)
    if client is None:
        if not uri:
            raise UsageError('no server: give --uri or set %s' % URI_VARIABLE)
        import pymongo
        client = pymongo.MongoClient(uri)
    if not options.database:
        default = None
        if uri:
            from pymongo.uri_parser import parse_uri
            default = parse_uri(uri).get('database')
        if not default:
            raise UsageError('no database: give --database, or name one in '
                             'the URI (mongodb://host/DATABASE)')
        options.database = default
    return client


def _fill_defaults(options):
    for name in ('uri', 'database', 'root_database', 'json', 'no_progress',
                 'imports', 'trust'):
        if not hasattr(options, name):
            setattr(options, name, None)


def main(argv=None, client=None, out=None, err=None):
    """Run the ``mongopersist`` command line; return the exit code.

    ``argv`` defaults to ``sys.argv[1:]``; ``client`` to a
    ``pymongo.MongoClient`` for ``--uri`` or ``$MONGODB_URI``; ``out`` and
    ``err`` to ``sys.stdout`` and ``sys.stderr``.
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    parser = build_parser()
    try:
        # --help and usage errors go where the caller wants output to go.
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            options = parser.parse_args(argv)
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else EXIT_USAGE
    _fill_defaults(options)
    own_client = None
    try:
        for module in options.imports or ():
            importlib.import_module(module)
        if client is None:
            client = own_client = _connect(options, None)
        else:
            _connect(options, client)
        context = Context(options, client, out, err)
        for prefix in options.trust or ():
            if importlib.util.find_spec(prefix.partition('.')[0]) is None:
                print('mongopersist: warning: --trust %s: no such module on '
                      'the path (is it on PYTHONPATH?); its classes stay '
                      'refused' % prefix, file=err)
        result, code = options.run(context)
    except UsageError as error:
        print('mongopersist: error: %s' % error, file=err)
        return EXIT_USAGE
    except ImportError as error:
        print('mongopersist: error: cannot import: %s' % error, file=err)
        return EXIT_USAGE
    except interfaces.MongoPersistError as error:
        print('mongopersist: error: %s' % error, file=err)
        return EXIT_PROBLEMS
    except PyMongoError as error:
        # Cannot connect, not allowed, bad URI: nothing was checked.
        print('mongopersist: error: %s: %s' % (type(error).__name__, error),
              file=err)
        return EXIT_USAGE
    finally:
        if own_client is not None:
            own_client.close()
    if context.json:
        json.dump(result, out, indent=2, sort_keys=True, default=to_json)
        out.write('\n')
    return code


def main_exit():
    """The console script: exit with ``main()``'s code."""
    sys.exit(main())


def to_json(value):
    """JSON for the BSON values in results (ids, references, dates)."""
    from bson import json_util
    return json.loads(json_util.dumps(value))
