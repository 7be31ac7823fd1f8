"""Where a command may read and write: the databases it was given.

A command works in the databases the operator named (``--database``, as
often as needed, and ``--root-database``; or the settings file's
database), never in one that stored data names.  Whatever points
elsewhere (a type-map entry, a name-map entry, a stored reference) is
reported by the command as refused and not followed: a writer of the
application's database cannot make ``gc --apply`` delete, or
``rename-class`` rewrite, another database's documents.

``ConfinedClient`` is the client every command works with: it hands out
the given databases only, so a command that strayed (a defect) gets
``OutsideDatabaseError`` instead of another database.  The name checks
say which stored names MongoDB accepts as database and collection names.
"""
import inspect

from pymongo.write_concern import WriteConcern

from mongopersist import interfaces
from mongopersist.cli import text

#: Characters MongoDB refuses in database names (on any platform).
_DATABASE_NAME_FORBIDDEN = frozenset('/\\. "$*<>:|?\x00')
#: MongoDB's longest database name, in bytes.
_DATABASE_NAME_BYTES = 63
#: MongoDB's longest namespace (database.collection), in bytes.
_NAMESPACE_BYTES = 255


class OutsideDatabaseError(interfaces.RefusedReferenceError):
    """A command asked for a database it was not given."""


def database_name_problem(name):
    """Why ``name`` is not a database name (``None`` if it is one)."""
    if not isinstance(name, str):
        return 'not a string'
    if not name:
        return 'empty'
    if _DATABASE_NAME_FORBIDDEN & set(name):
        return 'holds a character MongoDB refuses'
    if len(name.encode('utf-8', 'surrogatepass')) > _DATABASE_NAME_BYTES:
        return 'too long'
    return None


def collection_name_problem(name):
    """Why ``name`` is not a collection name (``None`` if it is one)."""
    if not isinstance(name, str):
        return 'not a string'
    if not name:
        return 'empty'
    if '\x00' in name or '$' in name:
        return 'holds a character MongoDB refuses'
    if name.startswith('.') or name.endswith('.') or '..' in name:
        return 'has an empty part'
    if len(name.encode('utf-8', 'surrogatepass')) > _NAMESPACE_BYTES:
        return 'too long'
    return None


def not_given(database, given):
    """The message for an ``OutsideDatabaseError``."""
    return ('database %s is not one of the databases this command was '
            'given (%s): left alone' % (
                text.quoted(database), ', '.join(
                    text.shown(name) for name in given)))


class ConfinedClient:
    """A client that hands out only the databases of ``given`` (an
    iterable of names); asking for another raises
    ``OutsideDatabaseError``.

    It has what the commands and a data manager use of a client: item
    access, ``get_database`` and the write concern.  Anything else (other
    clients' ``admin``, ``drop_database``, a database as an attribute) is
    not there.
    """

    def __init__(self, client, given):
        self._client = client
        self.given = tuple(dict.fromkeys(given))

    def _checked(self, name):
        if name not in self.given:
            raise OutsideDatabaseError(not_given(name, self.given))
        return name

    def __getitem__(self, name):
        return self._client[self._checked(name)]

    def get_database(self, name=None, *args, **kwargs):
        if name is None:
            name = self.given[0]
        return self._client.get_database(self._checked(name), *args,
                                         **kwargs)

    def get_default_database(self, *args, **kwargs):
        return self.get_database(self.given[0])

    @property
    def write_concern(self):
        # Looked up on the class: the stand-in makes a database of any
        # attribute it does not have.
        if inspect.getattr_static(type(self._client), 'write_concern',
                                  None) is None:
            return None
        concern = self._client.write_concern
        return concern if isinstance(concern, WriteConcern) else None

    def __getattr__(self, name):
        raise AttributeError(
            '%s has no %r: a command uses given databases only' % (
                type(self).__name__, name))
