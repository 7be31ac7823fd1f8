"""Counters on findAndModify: ``dm.next_sequence(name)``."""
import threading

import pytest
import transaction

from mongopersist import interfaces, sequence
from tests.sharded_model import Account


def test_values_count_up_per_name(dm, db):
    assert [dm.next_sequence('posts') for _ in range(3)] == [1, 2, 3]
    assert dm.next_sequence('invoices') == 1
    assert dm.next_sequence('posts', step=10) == 13
    stored = {d['_id']: d['value']
              for d in db[sequence.SEQUENCE_COLLECTION].find()}
    assert stored == {'posts': 13, 'invoices': 1}


def test_values_serve_as_ids(dm, db, make_dm):
    account = Account('a@example.com')
    dm.insert(account, oid=dm.next_sequence('accounts'))
    transaction.commit()
    assert db['accounts'].find_one()['_id'] == 1
    assert make_dm().load(account._p_oid).email == 'a@example.com'


def test_an_abort_leaves_a_gap_never_a_repeat(dm):
    dm.insert(Account('a'), oid=dm.next_sequence('accounts'))
    transaction.abort()
    assert dm.next_sequence('accounts') == 2


def test_concurrent_callers_never_share_a_value(client, dbname, make_dm,
                                                concurrent_upserts):
    values = []
    lock = threading.Lock()

    def work():
        dm = make_dm(transaction_manager=transaction.TransactionManager())
        got = [dm.next_sequence('shared') for _ in range(25)]
        with lock:
            values.extend(got)
    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(values) == list(range(1, 101))


def test_bad_names_and_steps(dm, db):
    for name in ('', None, 5):
        with pytest.raises(TypeError):
            dm.next_sequence(name)
    for step in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            dm.next_sequence('x', step=step)
    db[sequence.SEQUENCE_COLLECTION].insert_one({'_id': 'bad', 'value': 'x'})
    with pytest.raises(interfaces.StoredDataError) as info:
        dm.next_sequence('bad')
    assert 'persistence_sequences' in str(info.value)


class _NoDocumentOnce:
    """A collection whose first upsert answers with no document, as a
    server that lost the race to create the counter may (SecantusDB did
    under concurrent first calls)."""

    def __init__(self, coll, answers_missing=1):
        self._coll = coll
        self.missing = answers_missing

    def find_one_and_update(self, *args, **kwargs):
        doc = self._coll.find_one_and_update(*args, **kwargs)
        if self.missing:
            self.missing -= 1
            return None
        return doc


def test_an_upsert_answered_with_no_document_is_asked_again(
        dm, db, monkeypatch):
    coll = _NoDocumentOnce(db[sequence.SEQUENCE_COLLECTION])
    monkeypatch.setattr(dm, '_raw_collection', lambda *args: coll)
    # The first answer is lost: its value is skipped, never given twice.
    assert dm.next_sequence('posts') == 2
    coll.missing = 2
    with pytest.raises(interfaces.MongoPersistError, match='no document'):
        dm.next_sequence('posts')
