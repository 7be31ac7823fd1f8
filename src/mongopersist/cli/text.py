"""What the command line prints of stored data: escaped, bounded, masked.

Names and values in a database are chosen by whoever writes there.  Text
output shows them with every character that is not printable escaped
(``limits.escape``: ESC, which would drive the operator's terminal, shows
as ``\\x1b``) and bounded (``limits.excerpt``, ``limits.quote``: about
``LIMIT`` characters, then ``...(N more)``).  Credentials in a connection
string are masked in every message (``settings.mask_uri``).
"""
import re

from mongopersist import limits, settings

#: Characters of a stored value shown before ``...(N more)``.
LIMIT = limits.QUOTE_LIMIT

# A connection string in a message: scheme://..., up to white space or a
# quote (a password may hold '@', ':' and '/').
_URI = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s'"]*""")

escape = limits.escape
quoted = limits.quote


def shown(value, limit=LIMIT):
    """``value`` (a stored name: any value, as ``str``) for text output:
    escaped and bounded (``limits.excerpt``)."""
    return limits.excerpt(value if isinstance(value, str) else str(value),
                          limit)


def mask_credentials(text):
    """``text`` with the password of every connection string in it
    masked (``mongodb://user:****@host``)."""
    return _URI.sub(lambda found: settings.mask_uri(found.group(0)), text)


def line(text):
    """A message for the terminal: credentials masked, every character
    but the newlines between lines escaped (the last safeguard: values in
    it are escaped and bounded where they are formatted)."""
    return '\n'.join(escape(part) for part in
                     mask_credentials(text).split('\n'))
