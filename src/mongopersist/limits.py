"""Limits: MongoDB's on documents, and the library's on its messages.

A server refuses documents larger than 16 MB of BSON and documents nested
deeper than 100 levels (the document itself is the first level; every
embedded document or array adds one).  The stand-in (mongomock) knows
neither limit, so a document it accepts might fail only in production, and
the server's error holds the whole document.  ``check_document`` applies
both limits on every backend, at commit, before the first write, and
raises a short ``DocumentLimitError`` naming the object and attribute path.

Messages of the library quote stored values (names, ids, keys) that
anybody who can write to the database chooses: ``quote`` (a value, as its
``repr``) and ``excerpt`` (a text shown as it is) bound each to
``QUOTE_LIMIT`` characters, then say how much was left out, and
``excerpt`` escapes control characters so that a stored name cannot send
terminal escapes to whoever reads the message.
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
# The most characters of one part of a path shown.
_PATH_PART_LIMIT = 60

#: The most characters of one stored value a message shows.
QUOTE_LIMIT = 200

_SHORT_ESCAPES = {'\n': '\\n', '\r': '\\r', '\t': '\\t'}


def _escaped(char):
    if char.isprintable():
        return char
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    code = ord(char)
    if code < 0x100:
        return '\\x%02x' % code
    if code < 0x10000:
        return '\\u%04x' % code
    return '\\U%08x' % code


def escape(text):
    """``text`` with every character that is not printable (control
    characters such as ESC, which would drive a terminal, bidirectional
    overrides, line separators) escaped as ``repr`` writes it (``\\x1b``,
    ``\\u202e``); printable text unchanged."""
    if text.isprintable():
        return text
    return ''.join(_escaped(char) for char in text)


def _cut(text, limit, left_out=0):
    """``text`` cut to ``limit`` characters, then ``...(N more)`` (``N``:
    the characters cut off, plus ``left_out``)."""
    left_out += max(len(text) - limit, 0)
    if not left_out:
        return text
    return '%s...(%d more)' % (text[:limit], left_out)


def quote(value, limit=QUOTE_LIMIT):
    """Return ``repr(value)`` for a message, bounded: at most about
    ``limit`` characters, then ``...(N more)``.

    For any value a document may hold (a stored name, id, key or value):
    a 2 MB stored name gives a message of about ``limit`` characters.
    Text and bytes show the ``repr`` of their first characters (``N``
    counts the characters, or bytes, left out); other values their
    ``repr`` cut to ``limit`` (``N`` counts the characters of the
    ``repr`` left out).  ``repr`` escapes control characters.
    """
    if isinstance(value, (str, bytes, bytearray)):
        size = len(value)
        shown = min(size, limit)
        while True:
            text = repr(value[:shown])
            # Room for the quotes (and ``b``) around the characters.
            if len(text) <= limit + 3 or not shown:
                break
            shown = shown * limit // len(text)
        if shown == size:
            return text
        return '%s...(%d more)' % (text, size - shown)
    try:
        text = repr(value)
    except Exception as error:
        text = '<%s (repr failed: %s)>' % (type(value).__name__,
                                           type(error).__name__)
    return _cut(text, limit)


def excerpt(text, limit=QUOTE_LIMIT):
    """Return ``text`` (a stored name: of a class, collection, database)
    for a message as it is, not quoted, with what is not printable escaped
    (``escape``) and bounded as ``quote`` bounds it: the first characters,
    then ``...(N more)``.  Anything but a ``str`` is shown with
    ``quote``."""
    if not isinstance(text, str):
        return quote(text, limit)
    size = len(text)
    shown = min(size, limit)
    while True:
        part = escape(text[:shown])
        if len(part) <= limit or not shown:
            break
        shown = shown * limit // len(part)
    if shown == size:
        return part
    return '%s...(%d more)' % (part, size - shown)

def short_path(parts):
    """Join attribute path ``parts`` with dots, eliding a long middle;
    each part (a stored field name, maybe) is bounded (``excerpt``)."""
    parts = list(parts)
    shown = _PATH_PARTS_SHOWN
    elided = len(parts) - 2 * shown
    if elided > 0:
        parts = parts[:shown] + parts[-shown:]
    text = [excerpt(str(part), _PATH_PART_LIMIT) for part in parts]
    if elided > 0:
        text.insert(shown, '...(%d more)...' % elided)
    return '.'.join(text)


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


def _walk(doc):
    """``(path, value, depth)`` of ``doc`` (depth 1) and of every value
    nested in it, depth first."""
    stack = [(doc, 1, ())]
    while stack:
        value, depth, path = stack.pop()
        yield path, value, depth
        children = _children(value)
        if children is not None:
            for key, item in children:
                stack.append((item, depth + 1, path + (key,)))


def _deepest_path(doc, limit):
    """The field path to a value nested deeper than ``limit`` levels."""
    for path, value, depth in _walk(doc):
        if depth > limit and _children(value) is not None:
            return path
    return ()


def is_text(text):
    """Whether BSON can store the ``str`` ``text`` (UTF-8: no lone
    surrogates)."""
    if text.isascii():
        return True
    try:
        text.encode('utf-8')
    except UnicodeEncodeError:
        return False
    return True


def _not_text_path(doc):
    """The field path to the first name or value of ``doc`` that is not
    text BSON can store (``is_text``), or ``None``."""
    for path, value, _ in _walk(doc):
        if path and isinstance(path[-1], str) and not is_text(path[-1]) or \
                isinstance(value, str) and not is_text(value):
            return path
    return None


def _where(obj):
    oid = getattr(obj, '_p_oid', None)
    if oid is None:
        return type(obj).__name__
    return '%s (%s.%s _id=%s)' % (type(obj).__name__, excerpt(oid.database),
                                  excerpt(oid.collection), quote(oid.id))


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
        size = bson_size(doc)
    except InvalidDocument as error:
        raise interfaces.UnstorableObjectError(
            'Cannot store %s: %s' % (_where(obj), str(error)[:200]), obj)
    except UnicodeEncodeError:
        path = _not_text_path(doc)
        if path is None:
            raise
        raise interfaces.UnstorableObjectError(
            'Cannot store %s: %s is not text MongoDB can hold (it has a lone '
            'surrogate)' % (_where(obj), short_path(
                (type(obj).__name__,) + path)), obj, short_path(path)) \
            from None
    if size > MAX_DOCUMENT_SIZE:
        raise interfaces.DocumentLimitError(
            'Cannot store %s: its document would be %d bytes, over '
            'MongoDB\'s limit of %d bytes (16 MB)%s' % (
                _where(obj), size, MAX_DOCUMENT_SIZE, _largest(doc)), obj)
    return size


def bson_size(doc):
    """The size in bytes of the BSON that stores ``doc`` (``bson``'s errors
    for what it cannot store).  ``mongopersist._speedups`` measures the
    common types without encoding."""
    return len(bson.encode(doc))


def _largest(doc):
    """Name the largest top-level field, the likely culprit."""
    sizes = [(len(bson.encode({'v': value})), key)
             for key, value in doc.items() if key != '_id']
    if not sizes:
        return ''
    size, key = max(sizes)
    return '; its largest attribute is %s (%d bytes)' % (quote(key), size)
