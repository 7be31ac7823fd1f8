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

A command works only in the databases it was given (``--database``,
repeatable, and ``--root-database``; or the settings file's database):
``reach`` holds the client that enforces it, and commands report what
stored data points elsewhere as refused (exit code 1).  ``text`` escapes,
bounds and masks what is printed.
"""
import argparse
import configparser
import contextlib
import importlib
import importlib.util
import io
import json
import os
import sys
import warnings

from bson import json_util
from pymongo.errors import PyMongoError, ServerSelectionTimeoutError

from mongopersist import (
    fileserver, interfaces, metadata, reachability, settings)
from mongopersist.cli import (
    check, gc, indexes, inspect, reach, rename, text, upgrade)

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

#: Commands that may run on a database that does not exist yet (they
#: create it); the others refuse one (a misspelt name, most likely).
MAY_CREATE_DATABASE = frozenset(['ensure-indexes'])

#: Why a ``memory://`` store is refused (after what names it).
IN_MEMORY = ('is an in-memory store (memory://): it lives in the memory of '
             'the process that made it, and no other process (this command '
             'included) can reach it.  Give the command the URI of its '
             'server (mongodb://...) or its directory (file://DIR)')

#: The URIs the command line takes (those of ``connect`` that another
#: process can reach).
URIS = ('give mongodb://HOST/DATABASE, mongodb+srv://HOST/DATABASE or '
        'file://DIR, as mongopersist.connect() takes them')

#: What ``--trust __main__`` is told.
TRUST_MAIN = (
    '--trust __main__: the classes of __main__ are those of the script that '
    'stored them (python script.py); no other process can load them, this '
    'command neither (inspect and gc do not need to).  Define them in a '
    'module, rename the stored name (mongopersist rename-class '
    '__main__.Person mymodule.Person) and --trust mymodule')

#: Where the command line's wait for a server is set.
WAIT_WHERE = ('the wait is the client option %s: give it in --uri '
              '(mongodb://host/?%s=5000), or as mongopersist.client.%s in '
              'the --config file' % ((reachability.WAIT_OPTION,) * 3))


class UsageError(Exception):
    """Bad options or no database to work on (exit code 2)."""


#: Options that may be given more than once, before and after the
#: command name (the values given after it are added).
REPEATABLE = ('database', 'imports', 'trust')
_AFTER = '_after_command'


def _common_options(parser, default):
    """Options every command takes, before or after the command name."""
    # Given after the command name, a repeatable option's values go to
    # a dest of their own and are added to those given before it.
    after = _AFTER if default is argparse.SUPPRESS else ''
    group = parser.add_argument_group('connection and output')
    group.add_argument(
        '--uri', default=default,
        help='MongoDB connection string, or file://DIR for a directory '
             'store (default: $%s)' % URI_VARIABLE)
    group.add_argument(
        '--database', '-d', dest='database' + after, action='append',
        default=default, metavar='NAME',
        help="a database of the application, the first its main one "
             "(default: the URI's database); repeatable.  The command "
             'reads and writes only these and --root-database')
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
        '--import', dest='imports' + after, action='append',
        default=default, metavar='MODULE',
        help='import MODULE first (it may register types and aliases)')
    group.add_argument(
        '--trust', dest='trust' + after, action='append', default=default,
        metavar='PREFIX',
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
    and where its output goes.

    ``databases`` are the ``--database`` names (the first is
    ``database``, the application's main one); ``given`` adds
    ``root_database``.  ``client`` hands out those only
    (``reach.ConfinedClient``).  ``refused`` lists what stored data points
    to outside them, or what is too malformed to use (see ``refuse``).
    """

    def __init__(self, options, client, out, err):
        self.options = options
        self.out = out
        self.err = err
        self.databases = list(dict.fromkeys(options.database))
        self.database = self.databases[0]
        self.root_database = options.root_database or self.database
        self.given = list(dict.fromkeys(
            self.databases + [self.root_database]))
        self.client = reach.ConfinedClient(client, self.given)
        self.json = bool(options.json)
        self.registry = metadata.TypeRegistry(
            trusted_modules=options.trust or (), parent=metadata.REGISTRY)
        self.progress_enabled = not (options.json or options.no_progress)
        self.refused = []
        #: How many of ``refused`` point into a database not given.
        self.outside_pointers = 0
        self._refused_at = set()
        self._type_map = None

    def refuse(self, database, collection, id, path, problem,
               outside=False):
        """Record stored data the command does not follow or use: where
        it is (the document and field) and why (``problem``, with stored
        values quoted by ``text.quoted``); ``outside``: it points into a
        database the command was not given.  Once per place."""
        key = (database, collection, repr(id), path)
        if key in self._refused_at:
            return
        self._refused_at.add(key)
        self.outside_pointers += bool(outside)
        self.refused.append({'database': database, 'collection': collection,
                             'id': id, 'path': path, 'problem': problem})

    def outside(self, database):
        """True if ``database`` is not one the command was given."""
        return database not in self.given

    def say_refused(self):
        """Print a line per refused item (the text output)."""
        for item in self.refused:
            self.say('Refused: %s.%s _id=%s field %s: %s' % (
                text.shown(item['database']),
                text.shown(item['collection']), text.quoted(item['id']),
                text.shown(item['path']), item['problem']))

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
            trusted_modules=self.registry.trusted_modules,
            allowed_databases=self.given)

    def say(self, line=''):
        """Print a line of the human-readable output (stored values in it
        escaped and bounded by the command; every control character is
        escaped here in any case)."""
        if not self.json:
            print(text.line(line), file=self.out)


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
        store = mongopersist.store_from_settings(settings)
    except (interfaces.ConfigurationError, PyMongoError, ValueError,
            TypeError) as error:
        raise UsageError('%s [%s]: %s' % (path, section, error))
    store._named_uri = 'mongopersist.uri' in settings
    return store


def _connect(options, client):
    """The client to use (the given one, or one made from the options);
    fills in ``options.database`` and the ``--config`` file's settings.
    Returns ``(client, client to close or None)``."""
    own = None
    options.database_given = bool(options.database)
    if options.config:
        with warnings.catch_warnings():
            # An in-memory store is what the file says; nothing to warn.
            warnings.simplefilter('ignore')
            store = _settings_store(options)
        # The settings' database is the one given (not its
        # allowed_databases: what references may point into is not what
        # a command should walk, or gc clean).
        options.database = options.database or [store.database]
        options.trust = list(options.trust or ()) + list(
            store.trusted_modules)
        if client is None and not options.uri:
            if store.in_memory:
                store.close()
                raise UsageError('%s [%s]: %s' % (
                    options.config, options.section or DEFAULT_SECTION,
                    'mongopersist.uri ' + IN_MEMORY if store._named_uri else
                    'no mongopersist.uri and no $%s: the store %s' % (
                        URI_VARIABLE, IN_MEMORY)))
            _check_names(options)
            return store.client, store
        store.close()
    uri = options.uri or os.environ.get(URI_VARIABLE)
    if client is None:
        if not uri:
            raise UsageError('no server: give --uri or set %s' % URI_VARIABLE)
        uri = _check_uri(uri, '--uri' if options.uri else '$' + URI_VARIABLE)
        if fileserver.is_file_uri(uri):
            client, own = _file_client(uri)
        else:
            import pymongo
            try:
                client = own = pymongo.MongoClient(uri)
            except (ValueError, TypeError) as error:
                # PyMongo says some of a URI's mistakes so (a bad port).
                raise UsageError('--uri: %s' % error)
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
            if own is not None:
                own.close()
            raise UsageError('no database: give --database, or name one in '
                             'the URI (mongodb://host/DATABASE)')
        options.database = [default]
    _check_names(options)
    return client, own


def _check_uri(uri, label):
    """``uri`` (given as ``label``) stripped, if the command line can
    reach what it names; else ``UsageError`` saying what it takes."""
    stripped = uri.strip()
    if stripped == settings.MEMORY_URI:
        raise UsageError('%s %s %s' % (label, settings.MEMORY_URI, IN_MEMORY))
    if not (stripped.startswith(('mongodb://', 'mongodb+srv://'))
            or fileserver.is_file_uri(stripped)):
        raise UsageError('%s %s: %s' % (
            label, text.quoted(settings.mask_uri(uri)), URIS))
    return stripped


def _check_databases(context, client):
    """Refuse a given database that does not exist (holds no
    collection), naming those the server holds."""
    for name in context.given:
        if context.client[name].list_collection_names():
            continue
        option = ('--database' if name in context.databases
                  else '--root-database')
        if context.options.config and name == context.database and \
                not context.options.database_given:
            option = 'mongopersist.database of %s' % context.options.config
        raise UsageError('database %s (%s) does not exist: it holds no '
                         'collection%s' % (text.quoted(name), option,
                                           _databases_there(client)))


def _databases_there(client):
    """``'; the server holds: a, b'`` (or ``''`` if it cannot tell)."""
    try:
        names = sorted(set(client.list_database_names())
                       - {'admin', 'config', 'local'})
    except Exception:
        return ''
    if not all(isinstance(name, str) for name in names):
        return ''
    shown = ', '.join(text.shown(name) for name in names[:10]) + (
        ' and %d more' % (len(names) - 10) if len(names) > 10 else '')
    return '; the server holds %s' % (shown or 'no database yet')


def _check_names(options):
    """Refuse a database option that MongoDB would refuse (before any
    database is asked for)."""
    for option, names in (('--database', options.database),
                          ('--root-database', [options.root_database]
                           if options.root_database is not None else [])):
        for name in names:
            problem = reach.database_name_problem(name)
            if problem is not None:
                raise UsageError('%s %s is not a database name (%s)' % (
                    option, text.quoted(name), problem))


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
    for name in REPEATABLE:
        after = getattr(options, name + _AFTER, None)
        if after:
            setattr(options, name, list(getattr(options, name) or ()) +
                    after)
        if hasattr(options, name + _AFTER):
            delattr(options, name + _AFTER)


def _module_found(name):
    """Whether the top-level module ``name`` is imported or importable
    (``__main__`` is, though it has no spec in the console script)."""
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _error(err, message):
    print(text.line('mongopersist: error: %s' % message), file=err)


def main(argv=None, client=None, out=None, err=None):
    """Run the ``mongopersist`` command line; return the exit code.

    ``argv`` defaults to ``sys.argv[1:]``; ``client`` to a
    ``pymongo.MongoClient`` for ``--uri`` or ``$MONGODB_URI``; ``out`` and
    ``err`` to ``sys.stdout`` and ``sys.stderr``.
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    parser = build_parser()
    # --help and usage errors go where the caller wants output to go,
    # escaped (argparse echoes arguments it does not know as they are).
    said, complained = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(said), \
                contextlib.redirect_stderr(complained):
            options = parser.parse_args(argv)
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else EXIT_USAGE
    finally:
        for stream, written in ((out, said), (err, complained)):
            if written.getvalue():
                stream.write(text.line(written.getvalue()))
    _fill_defaults(options)
    own_client = None
    try:
        for module in options.imports or ():
            importlib.import_module(module)
        client, own_client = _connect(options, client)
        context = Context(options, client, out, err)
        for prefix in options.trust or ():
            if not _module_found(prefix.partition('.')[0]):
                print(text.line(
                    'mongopersist: warning: --trust %s: no such module on '
                    'the path (is it on PYTHONPATH?); its classes stay '
                    'refused' % text.shown(prefix)), file=err)
            elif prefix.partition('.')[0] == '__main__':
                print(text.line('mongopersist: warning: ' + TRUST_MAIN),
                      file=err)
        if options.command not in MAY_CREATE_DATABASE:
            _check_databases(context, client)
        result, code = options.run(context)
        if context.json:
            # Extended JSON for BSON values (ids, references, dates, NaN):
            # valid JSON whatever is stored.
            data = json.loads(json_util.dumps(result))
            out.write(json.dumps(data, indent=2, sort_keys=True,
                                 allow_nan=False) + '\n')
    except UsageError as error:
        _error(err, error)
        return EXIT_USAGE
    except ImportError as error:
        _error(err, 'cannot import: %s' % error)
        return EXIT_USAGE
    except ServerSelectionTimeoutError as error:
        # Nothing was checked: which server, and how long it was waited for.
        _error(err, reachability.unreachable(
            client, error, options.uri or os.environ.get(URI_VARIABLE),
            where=WAIT_WHERE))
        return EXIT_USAGE
    except interfaces.MongoPersistError as error:
        _error(err, text.shown(str(error), limit=1000))
        return EXIT_PROBLEMS
    except PyMongoError as error:
        # Cannot connect, not allowed, bad URI: nothing was checked.
        _error(err, '%s: %s' % (type(error).__name__,
                                text.shown(str(error), limit=1000)))
        return EXIT_USAGE
    except Exception as error:
        # A defect of this command line, not of the data: say so in one
        # line rather than with a traceback.
        _error(err, '%s %s: %s (unexpected: please report it)' % (
            UNEXPECTED, type(error).__name__,
            text.shown(str(error), limit=1000)))
        return EXIT_USAGE
    finally:
        if own_client is not None:
            own_client.close()
    return code


#: How the one line about an unexpected error begins.
UNEXPECTED = 'internal error'


def main_exit():
    """The console script: exit with ``main()``'s code."""
    for stream in (sys.stdout, sys.stderr):
        # A name the terminal's encoding cannot show is escaped, not an
        # error.
        reconfigure = getattr(stream, 'reconfigure', None)
        if reconfigure is not None:
            reconfigure(errors='backslashreplace')
    sys.exit(main())


def to_json(value):
    """JSON for the BSON values in results (ids, references, dates)."""
    from bson import json_util
    return json.loads(json_util.dumps(value))
