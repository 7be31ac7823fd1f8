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
import configparser
import contextlib
import importlib
import importlib.util
import json
import os
import sys
import warnings

from pymongo.errors import PyMongoError

from mongopersist import fileserver, interfaces, metadata
from mongopersist.cli import check, gc, indexes, inspect, rename, upgrade

URI_VARIABLE = 'MONGODB_URI'
#: The section of a settings file read by default (Paste/Pyramid's).
DEFAULT_SECTION = 'app:main'

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
        help='MongoDB connection string, or file://DIR for a directory '
             'store (default: $%s)' % URI_VARIABLE)
    group.add_argument(
        '--database', '-d', default=default,
        help="the application's database (default: the URI's database)")
    group.add_argument(
        '--config', default=default, metavar='FILE',
        help="the application's settings file (.ini): its mongopersist.* "
             'settings give the server, database and trusted modules '
             '(--uri, --database and --trust still win)')
    group.add_argument(
        '--section', default=default, metavar='NAME',
        help='the section of --config to read (default: %s)'
             % DEFAULT_SECTION)
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

    def data_manager(self):
        """A data manager on the command's databases (no server
        transactions), loading only what ``--trust`` allows."""
        from mongopersist.datamanager import MongoDataManager
        return MongoDataManager(
            self.client, default_database=self.database,
            root_database=self.root_database, transactions='never',
            trusted_modules=self.registry.trusted_modules)

    def say(self, text=''):
        """Print a line of the human-readable output."""
        if not self.json:
            print(text, file=self.out)


def _settings_store(options):
    """The ``mongopersist.Store`` of the ``--config`` file's settings
    (``mongopersist.store_from_settings``)."""
    import mongopersist
    path = options.config
    section = options.section or DEFAULT_SECTION
    parser = configparser.ConfigParser(
        defaults={'here': os.path.dirname(os.path.abspath(path))})
    try:
        with open(path, encoding='utf-8') as f:
            parser.read_file(f)
        settings = dict(parser.items(section))
    except (OSError, configparser.Error) as error:
        raise UsageError('cannot read section [%s] of %s: %s' % (
            section, path, error))
    try:
        return mongopersist.store_from_settings(settings)
    except interfaces.ConfigurationError as error:
        raise UsageError('%s [%s]: %s' % (path, section, error))


def _connect(options, client):
    """The client to use (the given one, or one made from the options);
    fills in ``options.database`` and the ``--config`` file's settings.
    Returns ``(client, client to close or None)``."""
    own = None
    if options.config:
        with warnings.catch_warnings():
            # An in-memory store is what the file says; nothing to warn.
            warnings.simplefilter('ignore')
            store = _settings_store(options)
        options.database = options.database or store.database
        options.trust = list(options.trust or ()) + list(
            store.trusted_modules)
        if client is None and not options.uri:
            return store.client, store
        store.close()
    uri = options.uri or os.environ.get(URI_VARIABLE)
    if client is None:
        if not uri:
            raise UsageError('no server: give --uri or set %s' % URI_VARIABLE)
        if fileserver.is_file_uri(uri):
            client, own = _file_client(uri)
        else:
            import pymongo
            client = own = pymongo.MongoClient(uri)
    if not options.database:
        default = None
        if fileserver.is_file_uri(uri) and own is not None:
            try:
                default = _only_database(client, uri)
            except BaseException:
                own.close()
                raise
        elif uri and not fileserver.is_file_uri(uri):
            from pymongo.uri_parser import parse_uri
            default = parse_uri(uri).get('database')
        if not default:
            raise UsageError('no database: give --database, or name one in '
                             'the URI (mongodb://host/DATABASE)')
        options.database = default
    return client, own


def _file_client(uri):
    """A client of the server of a ``file://`` store, and the lease to
    close (the application may be using the store at the same time)."""
    try:
        lease = fileserver.lease(fileserver.directory(uri))
    except interfaces.ConfigurationError as error:
        raise UsageError(str(error))
    return lease.client(), lease


def _only_database(client, uri):
    """The one application database of a ``file://`` store, else
    ``UsageError`` naming those there are."""
    names = sorted(set(client.list_database_names())
                   - {'admin', 'config', 'local'})
    if len(names) == 1:
        return names[0]
    shown = ', '.join(names[:10]) + (
        ' and %d more' % (len(names) - 10) if len(names) > 10 else '')
    raise UsageError('no database: give --database (%s holds %s)' % (
        uri, shown or 'none yet'))


def _fill_defaults(options):
    for name in ('uri', 'database', 'root_database', 'json', 'no_progress',
                 'imports', 'trust', 'config', 'section'):
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
        client, own_client = _connect(options, client)
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
