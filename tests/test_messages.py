"""Messages of the library: stored values bounded, credentials masked
(issue 17).

Whoever can write to the database chooses the stored names, ids and
values that error messages quote; whoever mistypes a URI should not find
the password in a log.  ``limits.quote`` and ``limits.excerpt`` bound every
quoted stored value (about 200 characters, then ``...(N more)``);
``settings.mask_uri`` and ``settings.scrub`` take the password out of
messages about a URI.
"""
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mongopersist import limits

BIG = 2 * 1024 * 1024
MORE = re.compile(r'\.\.\.\((\d+) more\)$')


# -- quote and excerpt ------------------------------------------------------
def test_quote_bounds_a_long_text_and_says_how_much_is_left_out():
    text = limits.quote('x' * BIG)
    assert len(text) < 250
    assert text.startswith("'xxx")
    assert int(MORE.search(text).group(1)) == BIG - limits.QUOTE_LIMIT


def test_quote_leaves_short_values_as_their_repr():
    for value in ('abc', b'abc', 12, None, {'a': [1, 2]}, '', 'x' * 200):
        assert limits.quote(value) == repr(value)


def test_quote_of_text_that_repr_escapes_stays_bounded():
    for value in ('\x00' * 300, b'\xff' * 300, '\U000e0001' * 300,
                  '\x00' * 150, bytearray(b'\x01' * 500)):
        text = limits.quote(value)
        assert len(text) < 250, text
        left_out = int(MORE.search(text).group(1))
        assert 0 < left_out < len(value)


def test_quote_of_a_large_structure_is_cut():
    text = limits.quote({'k%d' % n: 'v' * 100 for n in range(10000)})
    assert len(text) < 250 and MORE.search(text)


def test_quote_survives_a_failing_repr():
    class Bad:
        def __repr__(self):
            raise RuntimeError('no')
    assert limits.quote(Bad()) == '<Bad (repr failed: RuntimeError)>'


def test_excerpt_shows_text_as_it_is_bounded_and_escaped():
    assert limits.excerpt('my.collection') == 'my.collection'
    assert limits.excerpt('a\x1b[31mb\x07\u202e') == 'a\\x1b[31mb\\x07\\u202e'
    text = limits.excerpt('\x1b' * BIG)
    assert len(text) < 250 and '\x1b' not in text
    assert int(MORE.search(text).group(1)) == BIG - limits.QUOTE_LIMIT // 4
    assert limits.excerpt(None) == 'None'


@settings(max_examples=50, deadline=None)
@given(st.one_of(st.text(max_size=2000), st.binary(max_size=2000),
                 st.lists(st.text(max_size=50), max_size=100)))
def test_quote_and_excerpt_are_bounded_and_printable(value):
    for text in (limits.quote(value), limits.excerpt(value)):
        assert len(text) <= limits.QUOTE_LIMIT + 30 + len('...(%d more)'
                                                       % 10 ** 6)
        assert text.isprintable() or not any(
            ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 for c in text)
