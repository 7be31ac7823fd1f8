"""The settings of a ``mongopersist.Store``: checked, and read from text.

``check_options`` turns the keyword arguments of ``mongopersist.connect``
into a ``StoreSettings``; ``from_text`` does the same for a flat mapping of
strings, as Pyramid/Paste ``.ini`` files give them::

    mongopersist.uri = mongodb://db1,db2/?replicaSet=rs0
    mongopersist.database = blog
    mongopersist.write_concern.w = majority
    mongopersist.read_preference = secondaryPreferred
    mongopersist.global_queries = warn

Every refusal is a ``ConfigurationError`` that names the setting.  Nothing
here talks to a server.

Credentials never reach a message, a log line or a ``repr``: ``mask_uri``
replaces the password of a URI (and secret URI options) with ``****``;
``scrub`` does it inside any text that may hold a URI or its password;
client options holding secrets (``password``, ...) are not echoed.
"""
import dataclasses
import re
import urllib.parse

from pymongo import ReadPreference
from pymongo.read_preferences import _ServerMode
from pymongo.write_concern import WriteConcern

from mongopersist import limits, sessions
from mongopersist.interfaces import ConfigurationError

PREFIX = 'mongopersist.'

#: The URI that selects the in-process stand-in (data in memory only).
MEMORY_URI = 'memory://'
#: URIs that name a directory served by SecantusDB (``fileserver``).
FILE_SCHEME = 'file://'

# Read preference names as PyMongo's URI option spells them, and in
# Python's spelling.
READ_PREFERENCES = {
    'primary': ReadPreference.PRIMARY,
    'primaryPreferred': ReadPreference.PRIMARY_PREFERRED,
    'secondary': ReadPreference.SECONDARY,
    'secondaryPreferred': ReadPreference.SECONDARY_PREFERRED,
    'nearest': ReadPreference.NEAREST,
}
READ_PREFERENCES.update({
    'primary_preferred': ReadPreference.PRIMARY_PREFERRED,
    'secondary_preferred': ReadPreference.SECONDARY_PREFERRED,
})

WRITE_CONCERN_KEYS = ('w', 'wtimeout', 'j')

UNACKNOWLEDGED = (
    'w=0 (unacknowledged writes) is refused: mongopersist must know that '
    'a write happened to detect conflicts (a conditional write that '
    'matched nothing), to take writes back on abort and to report what a '
    'failed commit wrote.  Use w=1 or w="majority"')

TRUE = ('true', 'yes', 'on', '1')
FALSE = ('false', 'no', 'off', '0')

#: What stands for a secret in messages.
MASK = '****'

# URI and client options whose values are secrets (lower case).
_SECRET_OPTION = re.compile(
    r'password|secret|token|authmechanismproperties', re.IGNORECASE)
_URI_OPTION = re.compile(r'([?&;])([^=&;]*)=([^&;]*)')


def _password_span(uri):
    """Where the password of ``uri`` is: ``(start, end)`` or ``None``.

    The user information ends at the last ``@`` (a password may hold an
    unescaped ``@``, ``/`` or ``?``: the whole of it is the password's,
    erring on the side of masking too much); the password starts after
    its first ``:``.  Text without ``://`` is searched whole.
    """
    scheme, sep, rest = uri.partition('://')
    offset = len(scheme) + len(sep) if sep else 0
    if not sep:
        rest = uri
    at = rest.rfind('@')
    if at < 0:
        return None
    colon = rest.find(':', 0, at)
    if colon < 0:
        return None
    return offset + colon + 1, offset + at


def mask_uri(uri):
    """Return ``uri`` with its password, and the values of secret options
    (``authMechanismProperties``, ...), replaced by ``****``:
    ``mongodb://user:****@host/db``.  Works on malformed URIs too."""
    if not isinstance(uri, str):
        return uri
    span = _password_span(uri)
    if span is not None:
        uri = uri[:span[0]] + MASK + uri[span[1]:]
    return _URI_OPTION.sub(
        lambda m: m.group(0) if not _SECRET_OPTION.search(m.group(2))
        else '%s%s=%s' % (m.group(1), m.group(2), MASK), uri)


def _secrets(uri):
    """The secrets of ``uri`` as they may appear in a message: the
    password as written and unescaped, the secret option values."""
    found = set()
    span = _password_span(uri)
    if span is not None:
        password = uri[span[0]:span[1]]
        found.update((password, urllib.parse.unquote(password),
                      urllib.parse.unquote_plus(password)))
    for match in _URI_OPTION.finditer(uri):
        if _SECRET_OPTION.search(match.group(2)):
            value = match.group(3)
            found.update((value, urllib.parse.unquote_plus(value)))
    found.discard('')
    return found


def scrub(text, uri):
    """Return ``text`` (a message about ``uri``) without ``uri``'s
    credentials: ``uri`` itself masked (``mask_uri``), any other
    appearance of its password or secret options replaced by ``****``."""
    if not isinstance(uri, str) or not uri:
        return text
    text = text.replace(uri, mask_uri(uri))
    for secret in sorted(_secrets(uri), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _shown_option(name, value):
    """The value of client option ``name`` for a message."""
    if isinstance(name, str) and _SECRET_OPTION.search(name):
        return MASK
    if isinstance(value, str) and '@' in value:
        return repr(mask_uri(value))
    return repr(value)


@dataclasses.dataclass
class StoreSettings:
    """What a ``Store`` is made of, checked (see ``Store`` for each)."""

    uri: str = None
    database: str = None
    detect_conflicts: bool = True
    transactions: str = 'auto'
    write_concern: WriteConcern = None
    read_preference: _ServerMode = None
    trusted_modules: tuple = ()
    allowed_databases: tuple = ()
    broken_objects: bool = False
    cache_size: int = None
    pool_size: int = 7
    attempts: int = 3
    global_queries: str = None
    client_options: dict = dataclasses.field(default_factory=dict)

    @property
    def in_memory(self):
        """Whether the in-process stand-in was chosen."""
        return self.uri == MEMORY_URI

    def __repr__(self):
        # The URI's password and secret client options, masked.
        fields = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == 'uri':
                text = repr(mask_uri(value))
            elif field.name == 'client_options':
                text = '{%s}' % ', '.join(
                    '%r: %s' % (name, _shown_option(name, option))
                    for name, option in value.items())
            else:
                text = repr(value)
            fields.append('%s=%s' % (field.name, text))
        return '%s(%s)' % (type(self).__name__, ', '.join(fields))

    @property
    def directory(self):
        """The absolute directory of a ``file://`` store, else ``None``."""
        from mongopersist import fileserver
        if fileserver.is_file_uri(self.uri):
            return fileserver.directory(self.uri)
        return None


STORE_OPTIONS = tuple(field.name for field in dataclasses.fields(
    StoreSettings) if field.name != 'client_options')


def check_options(uri=None, client_options=None, **options):
    """Return the ``StoreSettings`` of ``connect``'s arguments.

    Keywords other than the store's own settings are options of
    ``pymongo.MongoClient`` (``serverSelectionTimeoutMS=5000``, ...),
    checked by PyMongo here; ``client_options`` gives them as a mapping.
    """
    client_options = dict(client_options or {})
    for name in list(options):
        if name not in STORE_OPTIONS:
            client_options[name] = options.pop(name)
    found = StoreSettings(uri=_uri(uri))
    found.database = _database(options.pop('database', None))
    if found.database is None and found.uri is not None:
        found.database = _database(uri_database(found.uri), from_uri=True)
        if found.database is None:
            raise ConfigurationError(
                'name the database: database=... (mongopersist.database in '
                'settings) or in the URI (mongodb://host/NAME; a file:// '
                'URI names a directory, not a database)', 'database')
    for name in ('detect_conflicts', 'broken_objects'):
        if name in options:
            setattr(found, name, _flag(options.pop(name), name))
    found.transactions = _transactions(
        options.pop('transactions', found.transactions))
    found.write_concern = write_concern(options.pop('write_concern', None))
    found.read_preference = read_preference(
        options.pop('read_preference', None))
    for name in ('trusted_modules', 'allowed_databases'):
        setattr(found, name, _names(options.pop(name, ()), name))
    found.cache_size = _number(options.pop('cache_size', None), 'cache_size',
                               minimum=0, optional=True)
    found.pool_size = _number(options.pop('pool_size', found.pool_size),
                              'pool_size', minimum=0)
    found.attempts = _number(options.pop('attempts', found.attempts),
                             'attempts', minimum=1)
    found.global_queries = global_queries(options.pop('global_queries', None))
    assert not options, options
    found.client_options = _client_options(client_options)
    return found


def from_text(settings, prefix=PREFIX, default_uri=None):
    """Return the ``StoreSettings`` of a flat mapping of strings.

    Only keys starting with ``prefix`` are read (others belong to the
    application); an unknown key under ``prefix`` is refused, so that a
    misspelt setting is not silently ignored.  ``<prefix>client.<name>``
    passes ``<name>`` to ``pymongo.MongoClient``.  Without
    ``<prefix>uri``, ``default_uri``.
    """
    options, concern, client_options = {'uri': default_uri}, {}, {}
    for key, value in settings.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        part = name.partition('.')[2]
        if name.startswith('client.') and part:
            client_options[part] = value
            continue
        if name.startswith('write_concern.') and part in WRITE_CONCERN_KEYS:
            found = concern
        elif name in STORE_OPTIONS and name != 'write_concern':
            found, part = options, name
        else:
            raise ConfigurationError(
                'unknown setting %s; known settings are %s, %s and '
                '%sclient.<MongoClient option>' % (key, ', '.join(
                    prefix + n for n in STORE_OPTIONS
                    if n != 'write_concern'), ', '.join(
                    prefix + 'write_concern.' + k
                    for k in WRITE_CONCERN_KEYS), prefix), key)
        try:
            found[part] = _from_text(name, value)
        except ConfigurationError as error:
            raise ConfigurationError('%s: %s' % (key, error), key) from None
    if concern:
        options['write_concern'] = concern
    try:
        _client_options(client_options, label='client.')
        return check_options(client_options=client_options, **options)
    except ConfigurationError as error:
        setting = prefix + error.setting
        raise ConfigurationError('%s: %s' % (setting, error),
                                 setting) from None


def _from_text(name, value):
    """Turn the text ``value`` of setting ``name`` into a Python value."""
    if not isinstance(value, str):
        return value
    value = value.strip()
    if name in ('detect_conflicts', 'broken_objects', 'write_concern.j'):
        lowered = value.lower()
        if lowered in TRUE:
            return True
        if lowered in FALSE:
            return False
        raise ConfigurationError(
            '%s must be true or false, not %r' % (name, value), name)
    if name in ('cache_size', 'pool_size', 'attempts',
                'write_concern.wtimeout'):
        try:
            return int(value)
        except ValueError:
            raise ConfigurationError(
                '%s must be a whole number, not %r' % (name, value),
                name) from None
    if name == 'write_concern.w':
        return int(value) if value.lstrip('-').isdigit() else value
    if name in ('trusted_modules', 'allowed_databases'):
        return tuple(value.replace(',', ' ').split())
    return value


def _text(value, name):
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(
            '%s must be a non-empty string, not %r' % (name, value), name)
    return value.strip()


def _uri(uri):
    if uri is None:
        return None
    if not isinstance(uri, str) or not uri.strip():
        # Not echoed: it may hold a password.
        raise ConfigurationError(
            'uri must be a non-empty string, not %s' % (
                type(uri).__name__ if uri else limits.quote(uri)), 'uri')
    uri = uri.strip()
    # Imported here: ``python -m mongopersist.fileserver`` runs it.
    from mongopersist import fileserver
    if fileserver.is_file_uri(uri):
        fileserver.directory(uri)       # refuses a malformed one
        return uri
    if uri != MEMORY_URI and not uri.startswith(
            ('mongodb://', 'mongodb+srv://')):
        raise ConfigurationError(
            'uri must start with mongodb://, mongodb+srv:// or file://, or '
            'be %s, not %s' % (MEMORY_URI, limits.quote(mask_uri(uri))),
            'uri')
    return uri


def uri_database(uri):
    """The database named in the path of a MongoDB ``uri``, or ``None``
    (a ``file://`` URI's path is a directory).

    The path follows the hosts, after the user information (up to the
    last ``@`` before the options), so that a password holding ``/`` is
    not taken for it.
    """
    if uri.startswith(FILE_SCHEME):
        return None
    rest = uri.partition('://')[2]
    options = rest.find('?')
    at = rest.rfind('@', 0, len(rest) if options < 0 else options)
    path = rest[at + 1:].partition('/')[2].partition('?')[0]
    return path or None


def _database(name, from_uri=False):
    if name is None:
        return None
    name = _text(name, 'database')
    bad = set('/\\. "$') & set(name)
    if from_uri and '@' in name:
        # What follows the hosts holds an '@': the user information is
        # not escaped, and this "name" may be part of the password.
        raise ConfigurationError(
            'the URI\'s path holds "@" (escape the user name and password '
            'with urllib.parse.quote_plus)', 'database')
    if bad:
        raise ConfigurationError(
            '%s may not contain %s' % (
                'the database name in the URI' if from_uri else
                'database name %s' % limits.quote(name),
                ' '.join(repr(c) for c in sorted(bad))), 'database')
    return name


def _flag(value, name):
    if not isinstance(value, bool):
        raise ConfigurationError(
            '%s must be True or False, not %r' % (name, value), name)
    return value


def _transactions(mode):
    try:
        return sessions.check_mode(mode)
    except ValueError as error:
        raise ConfigurationError(str(error), 'transactions') from None


def _names(value, name):
    if isinstance(value, str):
        value = (value,)
    try:
        names = tuple(value)
    except TypeError:
        names = None
    if names is None or not all(isinstance(n, str) and n for n in names):
        raise ConfigurationError(
            '%s must be a sequence of names, not %r' % (name, value), name)
    return names


def _number(value, name, minimum, optional=False):
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or \
            value < minimum:
        raise ConfigurationError(
            '%s must be a whole number of at least %d, not %r'
            % (name, minimum, value), name)
    return value


def global_queries(value):
    """Return ``value`` as a global-query policy: ``'error'``, ``'warn'``
    or ``None`` (the process-wide one, ``sharding.global_queries``)."""
    from mongopersist.sharding import POLICIES
    if value is None or value in POLICIES:
        return value
    raise ConfigurationError(
        'global_queries must be one of %s, not %r (what a query of a '
        'sharded class that does not pin its shard key does)' % (
            ', '.join(POLICIES), value), 'global_queries')


def write_concern(value):
    """Return ``value`` as a ``WriteConcern``, refusing ``w=0``.

    ``value`` is a ``WriteConcern``, a mapping of its arguments
    (``{'w': 'majority', 'wtimeout': 5000, 'j': True}``), a number or a
    tag name (``w``), or ``None`` (the URI's, else the server's default).
    """
    if value is None:
        return None
    if isinstance(value, WriteConcern):
        concern = value
    else:
        if isinstance(value, (int, str)) and not isinstance(value, bool):
            value = {'w': value}
        if not isinstance(value, dict):
            raise ConfigurationError(
                'write_concern must be a WriteConcern, a mapping of w, '
                'wtimeout and j, or a value of w; not %r' % (value,),
                'write_concern')
        unknown = sorted(set(value) - set(WRITE_CONCERN_KEYS))
        if unknown:
            raise ConfigurationError(
                'unknown write concern setting %s; known are %s' % (
                    ', '.join(unknown), ', '.join(WRITE_CONCERN_KEYS)),
                'write_concern')
        try:
            concern = WriteConcern(**value)
        except (TypeError, ValueError) as error:
            raise ConfigurationError(
                'bad write concern %r: %s' % (value, error),
                'write_concern') from None
    if not concern.acknowledged:
        raise ConfigurationError(UNACKNOWLEDGED, 'write_concern')
    return concern


def read_preference(value):
    """Return ``value`` as a PyMongo read preference (``None`` stays).

    ``value`` is a read preference object or a mode name
    (``'secondaryPreferred'`` or ``'secondary_preferred'``).
    """
    if value is None or isinstance(value, _ServerMode):
        return value
    if isinstance(value, str) and value.strip() in READ_PREFERENCES:
        return READ_PREFERENCES[value.strip()]
    raise ConfigurationError(
        'read_preference must be one of %s, not %r' % (
            ', '.join(sorted(READ_PREFERENCES)), value), 'read_preference')


def _client_options(options, label=''):
    """Check options of ``pymongo.MongoClient`` the way PyMongo does
    (errors name the setting ``label + name``)."""
    from pymongo.common import validate
    from pymongo.errors import ConfigurationError as PyMongoConfiguration
    checked = {}
    for name, value in options.items():
        if name.lower() in ('w', 'wtimeoutms', 'journal', 'readpreference'):
            raise ConfigurationError(
                'give %s as write_concern or read_preference, not as a '
                'client option' % name, label + name)
        if isinstance(value, bool) and isinstance(name, str) and \
                name.lower().endswith('ms'):
            # PyMongo takes True for 1 ms and False for 0 (no wait).
            raise ConfigurationError(
                'bad MongoClient option %s=%r: a number of milliseconds, '
                'not a flag' % (name, value), label + name)
        try:
            validate(name, value)
        except (PyMongoConfiguration, TypeError, ValueError) as error:
            shown = _shown_option(name, value)
            text = str(error)
            if shown == MASK and isinstance(value, (str, bytes)):
                text = text.replace(repr(value), MASK).replace(
                    str(value), MASK)
            raise ConfigurationError(
                'bad MongoClient option %s=%s: %s' % (
                    name, shown, limits.excerpt(text)),
                label + name) from None
        checked[name] = value
    return checked


def refuse_unacknowledged(client):
    """Refuse a client whose write concern is ``w=0``."""
    concern = getattr(client, 'write_concern', None)
    if isinstance(concern, WriteConcern) and not concern.acknowledged:
        raise ConfigurationError(UNACKNOWLEDGED, 'write_concern')
