"""MongoDB's document limits, checked before anything is written.

A server refuses documents larger than 16 MB of BSON and documents nested
deeper than 100 levels (the document itself is the first level; every
embedded document or array adds one).  The stand-in (mongomock) knows
neither limit, so a document it accepts might fail only in production, and
the server's error holds the whole document.  ``check_document`` applies
both limits on every backend, at commit, before the first write, and
raises a short ``DocumentLimitError`` naming the object and attribute path.
"""
from collections.abc import Mapping

import bson
from bson.dbref import DBRef
from bson.errors import InvalidDocument

from mongopersist import interfaces

#: MongoDB's maximum BSON document size (``maxBsonObjectSize``).
MAX_DOCUMENT_SIZE = 16 * 1024 * 1024

#: Documents this close to the limit are measured again once complete.
NEAR_MAX_DOCUMENT_SIZE = MAX_DOCUMENT_SIZE - 64 * 1024

#: MongoDB's maximum nesting depth for stored documents.
MAX_NESTING = 100

#: The most levels of BSON nesting one value entered by the writer adds:
#: ``{'_py_type': 'builtins.dict', 'items': [[key, value]]}`` puts the
#: value three levels below the dict's owner.
LEVELS_PER_VALUE = 3

# Path parts shown in a message; deeper paths are cut in the middle.
_PATH_PARTS_SHOWN = 8

#: The most characters of a stored value a message quotes.
QUOTED_CHARACTERS = 200


def quoted(value, limit=QUOTED_CHARACTERS):
    """``repr(value)`` for a message, cut after ``limit`` characters
    (``...(N more)`` says how many were left out): a stored name or value
    quoted in an error may be megabytes long."""
    if type(value) is str and len(value) > limit:
        return '%s...(%d more)' % (repr(value[:limit]), len(value) - limit)
    text = repr(value)
    if len(text) > limit:
        return '%s...(%d more)' % (text[:limit], len(text) - limit)
    return text


def short_path(parts):
    """Join attribute path ``parts`` with dots, eliding a long middle."""
    parts = [str(part) for part in parts]
    if len(parts) > _PATH_PARTS_SHOWN * 2:
        parts = (parts[:_PATH_PARTS_SHOWN]
                 + ['...(%d more)...' % (len(parts) - 2 * _PATH_PARTS_SHOWN)]
                 + parts[-_PATH_PARTS_SHOWN:])
    return '.'.join(parts)


def _children(value):
    kind = type(value)
    if kind is dict:
        return value.items()
    if kind is list:
        return enumerate(value)
    if isinstance(value, DBRef):
        return value.as_doc().items()
    if isinstance(value, Mapping):
        return value.items()
    if isinstance(value, (list, tuple)):
        return enumerate(value)
    return None


def _is_container(value):
    kind = type(value)
    return (kind is dict or kind is list
            or isinstance(value, (Mapping, list, tuple, DBRef)))


def nesting_depth(doc, stop=MAX_NESTING):
    """Return the nesting depth of ``doc`` (a document is 1), counting
    no further than ``stop + 1``."""
    deepest = 1
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        for _, item in _children(value):
            if _is_container(item):
                if depth + 1 > deepest:
                    deepest = depth + 1
                    if deepest > stop:
                        return deepest
                stack.append((item, depth + 1))
    return deepest


def _deepest_path(doc, limit):
    """The field path to a value nested deeper than ``limit`` levels."""
    stack = [(doc, 1, ())]
    while stack:
        value, depth, path = stack.pop()
        children = _children(value)
        if children is None:
            continue
        if depth > limit:
            return path
        for key, item in children:
            stack.append((item, depth + 1, path + (key,)))
    return ()


def _where(obj):
    oid = getattr(obj, '_p_oid', None)
    if oid is None:
        return type(obj).__name__
    return '%s (%s.%s _id=%r)' % (type(obj).__name__, oid.database,
                                  oid.collection, oid.id)


def check_document(doc, obj, deepest=None):
    """Raise ``DocumentLimitError`` if MongoDB would refuse ``doc``.

    ``obj`` is the persistent object the document stores; the error names
    it and the attribute path, never the content.  ``deepest`` is the
    writer's count of nested values (``ObjectWriter.deepest``): when it
    bounds the document below the limit, the nesting is not measured.
    Returns the document's size in bytes of BSON.
    """
    if (deepest is None
            or 1 + (deepest - 1) * LEVELS_PER_VALUE > MAX_NESTING) and \
            nesting_depth(doc) > MAX_NESTING:
        path = _deepest_path(doc, MAX_NESTING)
        raise interfaces.DocumentLimitError(
            'Cannot store %s: %s is nested deeper than MongoDB\'s %d levels'
            % (_where(obj), short_path((type(obj).__name__,) + path),
               MAX_NESTING), obj, short_path(path))
    try:
        size = len(bson.encode(doc))
    except InvalidDocument as error:
        raise interfaces.UnstorableObjectError(
            'Cannot store %s: %s' % (_where(obj), str(error)[:200]), obj)
    if size > MAX_DOCUMENT_SIZE:
        raise interfaces.DocumentLimitError(
            'Cannot store %s: its document would be %d bytes, over '
            'MongoDB\'s limit of %d bytes (16 MB)%s' % (
                _where(obj), size, MAX_DOCUMENT_SIZE, _largest(doc)), obj)
    return size


def _largest(doc):
    """Name the largest top-level field, the likely culprit."""
    sizes = [(len(bson.encode({'v': value})), key)
             for key, value in doc.items() if key != '_id']
    if not sizes:
        return ''
    size, key = max(sizes)
    return '; its largest attribute is %r (%d bytes)' % (key, size)
