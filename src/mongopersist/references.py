"""Which stored references loading follows, and which ids it takes.

A reference (``DBRef``) in a document names a database, a collection and
an ``_id`` chosen by whoever wrote the document; so does every document
read by a query (its ``_id``).  Before anything is read for a reference,
``check_reference`` refuses

* a database the data manager may not read (``RefusedReferenceError``):
  only its own databases, ``allowed_databases`` and the databases of
  classes known to the process;
* a collection name that is not one (empty, with NUL or ``$``, starting
  or ending with a dot, with ``..``, longer than MongoDB's 255 bytes of
  namespace; ``StoredDataError``) or that names a system collection
  (``system.*``; ``RefusedReferenceError``);
* an ``_id`` that is not a single value (``is_id``).

``is_id`` refuses an ``_id`` that a filter would read as a query or
that cannot be an identity: an embedded document (valid in MongoDB), an
array, a regular expression, or any value that cannot be hashed
(``Decimal128``, code).  Such a document or reference raises
``StoredDataError`` naming the document.
"""
import re
from collections.abc import Mapping, Set

from bson.code import Code
from bson.dbref import DBRef
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.regex import Regex

from mongopersist import interfaces, limits, metadata

# Values a filter reads as more than one value to compare with.
_NOT_VALUES = (Mapping, list, tuple, Set, DBRef, Regex, re.Pattern, Code)
# The usual ids, known good without further checks.
_PLAIN_IDS = frozenset([ObjectId, str, int, Int64])


def is_id(value):
    """Whether ``value`` can be the ``_id`` of a loaded document: a single
    hashable value that a filter compares for equality."""
    if type(value) in _PLAIN_IDS:
        return True
    if isinstance(value, _NOT_VALUES):
        return False
    try:
        hash(value)
    except TypeError:
        return False
    return True


def check_oid(oid):
    """Raise ``TypeError`` unless ``oid``, given to ``insert``, is
    ``None`` or can be an ``_id`` (writes filter on ``{'_id': oid}``)."""
    if oid is not None and not is_id(oid):
        raise TypeError('An oid must be a single value (a filter would read '
                        '%s as a query)' % limits.quote(oid))


def id_error(database, collection, doc):
    """The ``StoredDataError`` of a document read by a query whose
    ``_id`` cannot be an identity (``is_id``), or that has none."""
    if '_id' not in doc:
        return interfaces.StoredDataError(
            'A document was read without its _id',
            database=database, collection=collection)
    id = doc['_id']
    return interfaces.StoredDataError(
        'A stored _id must be a single value, not %s %s' % (
            type(id).__name__, limits.quote(id)),
        database=database, collection=collection, id=id, path='_id')


#: MongoDB's limit on ``<database>.<collection>``, in bytes of UTF-8.
MAX_NAMESPACE = 255


def collection_problem(database, name):
    """Why ``name`` cannot be the collection of a reference into
    ``database`` (``None`` if it can)."""
    if not name:
        return 'is empty'
    if '\x00' in name:
        return 'holds the NUL character'
    if '$' in name:
        return 'holds "$"'
    if name[0] == '.' or name[-1] == '.' or '..' in name:
        return 'has an empty part between dots'
    size = len(name) + len(database or '') + 1
    if size > MAX_NAMESPACE // 4 and len(('%s.%s' % (database, name)).encode(
            'utf-8', 'surrogatepass')) > MAX_NAMESPACE:
        return 'is longer than MongoDB allows (%d bytes with the ' \
               'database name)' % MAX_NAMESPACE
    return None


def check_reference(jar, ref):
    """Refuse the stored reference ``ref`` (an oid: database filled in)
    unless ``jar`` may follow it: see the module docstring.

    Raises before anything is read.  The error names the target when the
    reference is loaded directly; found in a document, it is located by
    the data manager at the document holding it.
    """
    database = ref.database
    if database not in jar._databases:
        known = {metadata.database_name(cls, None)
                 for cls in metadata.known_classes()}
        if database not in known:
            _refuse(jar, ref, interfaces.RefusedReferenceError(
                'A stored reference points into database %s, which this '
                'data manager may not read (allow it with '
                'allowed_databases=)' % limits.quote(database)))
        jar._databases.add(database)
    collection = ref.collection
    problem = collection_problem(database, collection)
    if problem is not None:
        _refuse(jar, ref, interfaces.StoredDataError(
            'A stored reference names the collection %s, which %s' % (
                limits.quote(collection), problem)))
    if collection.startswith('system.'):
        _refuse(jar, ref, interfaces.RefusedReferenceError(
            'A stored reference points to the system collection %s'
            % limits.quote(collection)))
    if not is_id(ref.id):
        refuse_id(jar, ref, database)


def refuse_id(jar, ref, database):
    """Raise ``StoredDataError`` for the reference ``ref`` (to
    ``database`` if it names none) whose ``_id`` cannot be an identity:
    its oid could not be made."""
    _refuse(jar, DBRef(ref.collection, ref.id, ref.database or database),
            interfaces.StoredDataError(
                'A stored reference\'s _id must be a single value, not %s '
                '%s' % (type(ref.id).__name__, limits.quote(ref.id))))


def _refuse(jar, ref, error):
    if not jar._documents_read:
        # Loaded directly, not found in a document: name the target.
        error.locate(ref.database, ref.collection, ref.id)
    raise error
