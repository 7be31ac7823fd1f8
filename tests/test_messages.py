"""Messages of the library: stored values bounded, credentials masked
(issue 17).

Whoever can write to the database chooses the stored names, ids and
values that error messages quote; whoever mistypes a URI should not find
the password in a log.  ``limits.quote`` and ``limits.excerpt`` bound every
quoted stored value (about 200 characters, then ``...(N more)``);
``settings.mask_uri`` and ``settings.scrub`` take the password out of
messages about a URI.
"""
import logging
import re
import urllib.parse
import warnings

import pytest
import transaction
from bson.dbref import DBRef
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from mongopersist import broken, interfaces, limits, settings, store
from mongopersist.serialize import get_dotted_name
from tests.model import Person

PERSON = get_dotted_name(Person)

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


@hypothesis_settings(max_examples=50, deadline=None)
@given(st.one_of(st.text(max_size=2000), st.binary(max_size=2000),
                 st.lists(st.text(max_size=50), max_size=100)))
def test_quote_and_excerpt_are_bounded_and_printable(value):
    for text in (limits.quote(value), limits.excerpt(value)):
        assert len(text) <= limits.QUOTE_LIMIT + 30 + len('...(%d more)'
                                                       % 10 ** 6)
        assert text.isprintable() or not any(
            ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 for c in text)


# -- stored values in the library's messages --------------------------------
# Each test plants a huge stored value where a message quotes it.  Ids are
# 20 kB (MongoDB indexes _id); names and values 2 MB.
HUGE_ID = 'i' * 20000
LONG = 1500     # no message needs more than this


@pytest.fixture
def cdm(make_dm):
    return make_dm(detect_conflicts=True)


def test_a_huge_stored_serial_gives_a_short_message(dm, db, make_dm):
    # conflict.stored_serial sliced its argument tuple, not its message.
    dm.root['p'] = Person('p')
    transaction.commit()
    oid = dm.root['p']._p_oid
    db[PERSON].update_one({'_id': oid.id},
                          {'$set': {'_py_serial': 's' * BIG}})
    with pytest.raises(interfaces.StoredDataError) as raised:
        make_dm().root['p'].name
    assert len(str(raised.value)) < LONG
    assert MORE.search(raised.value.message)


def test_stored_data_error_bounds_the_id_it_names(dm, db, make_dm):
    db[PERSON].insert_one({'_id': HUGE_ID, 'name': 'x', '_py_serial': -1})
    with pytest.raises(interfaces.StoredDataError) as raised:
        make_dm().load(DBRef(PERSON, HUGE_ID, dm.default_database)).name
    assert raised.value.id == HUGE_ID
    assert len(str(raised.value)) < LONG


def test_a_missing_document_with_a_huge_id_gives_a_short_message(dm,
                                                                 make_dm):
    with pytest.raises(interfaces.DocumentNotFoundError) as raised:
        make_dm().load(DBRef(PERSON, HUGE_ID, dm.default_database)).name
    assert len(str(raised.value)) < LONG


def test_a_reference_to_a_huge_collection_name(dm, db, make_dm):
    dm.root['p'] = Person('p')
    transaction.commit()
    oid = dm.root['p']._p_oid
    db[PERSON].update_one({'_id': oid.id}, {'$set': {
        'friend': DBRef('c' * BIG, 1, dm.default_database)}})
    with pytest.raises(interfaces.StoredDataError) as raised:
        make_dm().root['p'].friend
    assert len(str(raised.value)) < LONG
    with pytest.raises(interfaces.StoredDataError) as raised:
        make_dm().load(DBRef('c' * BIG, 1, dm.default_database))
    assert len(str(raised.value)) < LONG


def test_a_root_entry_with_a_huge_name_and_no_reference(dm, db, make_dm):
    db['persistence_root'].insert_one({'name': 'n' * BIG, 'ref': 5})
    with pytest.raises(interfaces.StoredDataError) as raised:
        make_dm().root.refs()
    assert len(str(raised.value)) < LONG


def test_a_conflict_on_a_document_with_a_huge_id(cdm, make_dm, db):
    person = Person('p')
    cdm.insert(person, oid=HUGE_ID)
    transaction.commit()
    tm = transaction.TransactionManager()
    other = make_dm(detect_conflicts=True, transaction_manager=tm)
    person.name = 'mine'
    other.load(person._p_oid).name = 'theirs'
    tm.commit()
    with pytest.raises(interfaces.ConflictError) as raised:
        transaction.commit()
    assert len(str(raised.value)) < LONG


def test_an_unrestored_abort_logs_a_short_line(cdm, make_dm, db, caplog):
    person = Person('p')
    cdm.insert(person, oid=HUGE_ID)
    transaction.commit()
    person.name = 'flushed'
    cdm.flush()
    tm = transaction.TransactionManager()
    other = make_dm(detect_conflicts=True, transaction_manager=tm)
    other.load(person._p_oid).name = 'theirs'
    tm.commit()
    with caplog.at_level(logging.WARNING, logger='mongopersist'):
        transaction.abort()
    assert 'not taken back' in caplog.text
    assert all(len(record.getMessage()) < LONG for record in caplog.records)


def test_a_broken_placeholder_with_a_huge_name(dm, db, make_dm):
    dm.root['p'] = Person('p')
    transaction.commit()
    oid = dm.root['p']._p_oid
    db[PERSON].update_one({'_id': oid.id}, {'$set': {
        'extra': {'_py_type': 'gone.' + 'x' * BIG}}})
    placeholder = make_dm(broken_objects=True).root['p'].extra
    assert len(repr(placeholder)) < LONG
    with pytest.raises(broken.BrokenModified) as raised:
        placeholder.x = 1
    assert len(str(raised.value)) < LONG


def test_a_commit_error_lists_a_bounded_number_of_references():
    refs = [DBRef('c', 'i%d' % n + 'x' * 1000, 'db') for n in range(5000)]
    error = interfaces.CommitError('failed', written=refs, not_written=refs)
    assert len(str(error)) < 2 * LONG
    assert error.written == refs


# -- credentials ------------------------------------------------------------
SECRET = 's3cr3t-Pa55'


def message_of(call, *args, **kwargs):
    with pytest.raises(interfaces.ConfigurationError) as raised:
        call(*args, **kwargs)
    return str(raised.value)


@pytest.mark.parametrize('uri, masked', [
    ('mongodb://user:%s@host/db' % SECRET, 'mongodb://user:****@host/db'),
    ('mongodb+srv://user:%s@cluster.example.com/db?w=1' % SECRET,
     'mongodb+srv://user:****@cluster.example.com/db?w=1'),
    ('mongodb://user:p/ss@w@rd@h1,h2/db', 'mongodb://user:****@h1,h2/db'),
    ('mongdb:/user:%s@host' % SECRET, 'mongdb:****@host'),
    ('mongodb://user@host/db', 'mongodb://user@host/db'),
    ('mongodb://host:27017/db?appName=x', 'mongodb://host:27017/db?appName=x'),
    ('mongodb://host/db?authMechanism=MONGODB-AWS&authMechanismProperties='
     'AWS_SESSION_TOKEN:%s' % SECRET,
     'mongodb://host/db?authMechanism=MONGODB-AWS&authMechanismProperties='
     '****'),
])
def test_mask_uri(uri, masked):
    assert settings.mask_uri(uri) == masked


def test_a_mistyped_scheme_does_not_echo_the_password():
    text = message_of(settings.check_options,
                      uri='mongdb://user:%s@host/db' % SECRET)
    assert SECRET not in text
    assert 'mongdb://user:****@host/db' in text


def test_a_password_with_a_slash_is_not_taken_for_the_database():
    # The path of 'mongodb://user:s3/cret@host/db' was read as the
    # database 'cret@host/db', quoted in the error.
    found = settings.from_text({
        'mongopersist.uri': 'mongodb://user:s3/cr3t@host/db'})
    assert found.database == 'db'
    assert 'cr3t' not in repr(found)
    text = message_of(settings.check_options,
                      uri='mongodb://user:a?b/cr3t@host/db')
    assert 'cr3t' not in text


def test_a_uri_pymongo_refuses_gives_a_masked_configuration_error():
    # A ValueError of PyMongo went out bare.
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        text = message_of(store.connect,
                          'mongodb://user:%s@host:notaport/db' % SECRET)
    assert SECRET not in text


def test_a_client_option_holding_a_secret_is_not_echoed():
    text = message_of(store.connect, 'mongodb://host/db',
                      password=SECRET.encode())
    assert SECRET not in text
    text = message_of(settings.from_text, {
        'mongopersist.uri': 'mongodb://host/db',
        'mongopersist.client.tlsCertificateKeyFilePassword': 5,
        'mongopersist.client.authMechanismProperties': SECRET + ',x'})
    assert SECRET not in text


def test_settings_repr_masks_the_password():
    found = settings.check_options(
        uri='mongodb://user:%s@host/db' % SECRET,
        client_options={'password': SECRET})
    assert SECRET not in repr(found)
    assert 'mongodb://user:****@host/db' in repr(found)


MARK = '\u2603'     # appears in no message of the library


def marked(text):
    """A password of which every piece of two or more characters holds
    the mark (whatever else it holds: @ / : ? % ...)."""
    return MARK + ''.join(char + MARK for char in text)


@given(
    scheme=st.sampled_from(['mongodb://', 'mongodb+srv://', 'mongdb://',
                            'mongodb:/', 'http://', '']),
    user=st.text(alphabet='abcXYZ09._-%@:/', min_size=1, max_size=6),
    password=st.text(max_size=12),
    quoted=st.booleans(),
    hosts=st.sampled_from(['host', 'h1,h2:27018', '[::1]:27017', 'host:x',
                           '', 'host:99999']),
    path=st.sampled_from(['', '/', '/db', '/d b', '/db?w=1',
                          '/db?appName=a@b', '/db?tls=maybe', '?w=1']),
    how=st.sampled_from(['check_options', 'from_text', 'connect']))
@hypothesis_settings(max_examples=120, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture])
def test_the_password_of_a_uri_never_appears_in_a_message(
        scheme, user, password, quoted, hosts, path, how, caplog):
    secret = marked(password)
    shown = urllib.parse.quote_plus(secret) if quoted else secret
    uri = '%s%s:%s@%s%s' % (scheme, user, shown, hosts, path)
    forms = {MARK, urllib.parse.quote_plus(MARK), urllib.parse.quote(MARK)}
    forms |= {form.lower() for form in forms}
    texts = []
    with warnings.catch_warnings(record=True) as caught, \
            caplog.at_level(logging.DEBUG):
        warnings.simplefilter('always')
        try:
            if how == 'check_options':
                result = settings.check_options(uri=uri, database='db')
            elif how == 'from_text':
                result = settings.from_text({'mongopersist.uri': uri})
            elif hosts.startswith('host:') or 'srv' in scheme:
                # connect() resolves SRV names and would connect: only
                # URIs it refuses before that.
                result = None
            else:
                result = store.connect(uri, connect=False,
                                       serverSelectionTimeoutMS=1)
                texts.append(repr(result))
                result.close()
        except interfaces.ConfigurationError as error:
            texts.append(str(error))
            texts.append(repr(error))
        else:
            texts.append(repr(result))
    texts.extend(str(warning.message) for warning in caught)
    texts.extend(record.getMessage() for record in caplog.records)
    for text in texts:
        for form in forms:
            assert form not in text, (uri, text)


def test_a_path_with_a_huge_field_name_is_bounded():
    path = limits.short_path(['Person', 'f' * BIG, 'x\x1by'] + list(range(50)))
    assert len(path) < LONG
    assert '\x1b' not in path
