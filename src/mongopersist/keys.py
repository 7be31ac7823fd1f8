"""Keys are values, never queries.

``dm.root`` and a ``MongoCollectionMapping`` find an entry with the filter
``{field: key}``.  MongoDB reads a dict in that place as operators
(``{'$ne': 'guest'}`` matches every other entry), a regular expression as
a pattern and a list as "any of": a caller's key of such a type would
return, overwrite or delete entries it does not name.  So a key must be a
*scalar* of the mapping's key type, checked before any query is sent:

* ``dm.root``: ``str`` (text that can be stored: no lone surrogates);
* a ``MongoCollectionMapping``: ``__mongo_key_type__``, ``str`` unless the
  subclass declares another type (or a tuple of types) among
  ``KEY_TYPES``; ``bool`` keys only where ``bool`` is declared (MongoDB
  does not take ``True`` for ``1``), ``int`` keys only within BSON's 64
  bits.

A key of another type raises ``interfaces.InvalidKeyError`` (a
``KeyError`` and a ``TypeError``) on lookup, setting and deletion, and
``key in mapping`` is ``False``; nothing is sent to the server.
"""
import datetime
import uuid

from bson.objectid import ObjectId

from mongopersist import interfaces, limits

#: The types a mapping may declare as its key type: values a filter
#: compares for equality (subclasses too, e.g. ``bson.int64.Int64``).
KEY_TYPES = (str, int, float, bool, bytes, ObjectId, datetime.datetime,
             uuid.UUID)

_INT64 = (-2 ** 63, 2 ** 63 - 1)


def key_types(declared, owner):
    """Return ``declared`` (a type or a tuple of types) as a tuple of key
    types; raise ``TypeError`` if one of them is not a scalar type a
    filter compares for equality (``KEY_TYPES``).  ``owner`` names the
    mapping class in the message."""
    types = declared if isinstance(declared, tuple) else (declared,)
    for kind in types:
        if not (isinstance(kind, type) and issubclass(kind, KEY_TYPES)):
            raise TypeError(
                '%s cannot have the key type %s: keys are values compared '
                'for equality, of the types %s (a dict, list or pattern '
                'would be read as a query)' % (
                    owner, limits.quote(declared),
                    ', '.join(kind.__name__ for kind in KEY_TYPES)))
    return types


def is_key(key, types=(str,)):
    """Whether ``key`` is a key of a mapping whose key types are
    ``types`` (as ``key_types`` returns them)."""
    if type(key) is str and str in types:
        return limits.is_text(key)
    if not isinstance(key, types):
        return False
    if isinstance(key, bool):
        return any(issubclass(kind, bool) for kind in types)
    if isinstance(key, int):
        return _INT64[0] <= key <= _INT64[1]
    if isinstance(key, str):
        return limits.is_text(key)
    return True


def check_key(key, types=(str,), owner='the mapping'):
    """Return ``key`` if it is a key of the key types ``types``; raise
    ``interfaces.InvalidKeyError`` otherwise (``owner`` names the mapping
    in the message)."""
    if is_key(key, types):
        return key
    names = ' or '.join(kind.__name__ for kind in types)
    if key is None:
        message = ('None cannot be a key of %s: keys are %s values'
                   % (owner, names))
    else:
        message = ('%s is not a key of %s: keys are %s values, compared '
                   'for equality, never queries' % (
                       limits.quote(key), owner, names))
    raise interfaces.InvalidKeyError(message)
