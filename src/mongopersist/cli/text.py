"""What the command line prints of stored data: escaped, bounded, masked.

Names and values in a database are chosen by whoever writes there.  Text
output shows them with every character that is not printable (control
characters such as ESC, which would drive the operator's terminal, bidi
overrides, line separators) escaped as Python writes them (``\\x1b``,
``\\u202e``), and cut at ``LIMIT`` characters with ``...(N more)``.
Credentials in a connection string are masked in every message.
"""
import re

#: Characters of a stored value shown before ``...(N more)``.
LIMIT = 200

_HIDDEN_PASSWORD = '***'
# scheme://user:password@ (the password may hold '@' and ':'; the last
# '@' of the token ends it).  A token ends at white space or a quote.
_CREDENTIALS = re.compile(
    r"""(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s'"/:@]*):"""
    r"""[^\s'"]*@""")


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
    """``text`` with every character that is not printable escaped (a
    newline too); other text unchanged."""
    if text.isprintable():
        return text
    return ''.join(_escaped(char) for char in text)


def shown(value, limit=LIMIT):
    """``value`` (a stored name: any value, as ``str``) for text output:
    escaped, at most ``limit`` characters of it, then ``...(N more)``."""
    text = value if isinstance(value, str) else str(value)
    more = len(text) - limit
    if more > 0:
        return escape(text[:limit]) + '...(%d more)' % more
    return escape(text)


def quoted(value, limit=LIMIT):
    """``repr(value)`` (a stored value quoted in a message), at most
    ``limit`` characters, then ``...(N more)``."""
    text = repr(value)
    more = len(text) - limit
    if more > 0:
        return escape(text[:limit]) + '...(%d more)' % more
    return escape(text)


def mask_credentials(text):
    """``text`` with the password of every connection string in it
    replaced by ``***`` (``mongodb://user:***@host``)."""
    return _CREDENTIALS.sub(
        lambda found: '%s%s:%s@' % (found.group('scheme'),
                                    found.group('user'), _HIDDEN_PASSWORD),
        text)


def line(text):
    """A message for the terminal: credentials masked, every character
    but the newlines between lines escaped (the last safeguard: values in
    it are escaped and bounded where they are formatted)."""
    return '\n'.join(escape(part) for part in
                     mask_credentials(text).split('\n'))
