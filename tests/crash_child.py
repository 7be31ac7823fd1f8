"""The process tests/test_crash.py kills in the middle of a commit.

Run as ``python -m tests.crash_child URI DATABASE SCENARIO``.  It commits a
set-up transaction, starts one that writes to two collections and SIGKILLs
itself just before the second write message of that transaction reaches
the server.  It prints one JSON line per step to stdout for the parent.
Scenarios ``commit`` and ``flush`` write without server transactions
(the journal records the intent); ``transaction`` is ``commit`` in a
server transaction (``transactions='always'``).
"""
import json
import os
import signal
import sys

import pymongo
import pymongo.collection
from bson import json_util
import transaction

from mongopersist import journal
from mongopersist.datamanager import MongoDataManager
from tests.model import Address, Person


def say(**message):
    sys.stdout.write(json.dumps(message, default=str) + '\n')
    sys.stdout.flush()


def die_at_data_write(number):
    """SIGKILL this process instead of sending the ``number``-th data write.

    Data writes are ``bulk_write``/``insert_many`` outside the journal.
    """
    sent = []

    def patch(name):
        original = getattr(pymongo.collection.Collection, name)

        def wrapper(coll, *args, **kwargs):
            if coll.name != journal.JOURNAL_COLLECTION:
                sent.append(coll.name)
                if len(sent) == number:
                    killed = dict(before=coll.name, sent=sent[:-1])
                    session = kwargs.get('session')
                    if session is not None:
                        # The session of a server transaction left open:
                        # the test ends it (killSessions) to clean up.
                        killed['lsid'] = json_util.dumps(session.session_id)
                    say(step='killed', **killed)
                    os.kill(os.getpid(), signal.SIGKILL)
            return original(coll, *args, **kwargs)
        setattr(pymongo.collection.Collection, name, wrapper)

    patch('bulk_write')
    patch('insert_many')


def main(uri, database, scenario):
    client = pymongo.MongoClient(
        uri, serverSelectionTimeoutMS=3000, connectTimeoutMS=3000,
        socketTimeoutMS=5000)
    mode = 'always' if scenario == 'transaction' else 'never'
    dm = MongoDataManager(client, default_database=database,
                          transactions=mode, detect_conflicts=True)
    dm.root['alice'] = Person('alice', address=Address('Berlin', '10115'))
    dm.root['bob'] = Person('bob')
    transaction.commit()
    alice, bob = dm.root['alice'], dm.root['bob']
    say(step='setup', alice=alice._p_oid.id, bob=bob._p_oid.id,
        address=alice.address._p_oid.id)

    if scenario in ('commit', 'transaction'):
        # Writes to 'address' (an insert and an update) and to the Person
        # collection (two updates), in one commit.
        alice.name = 'Alice'
        alice.address.city = 'Potsdam'
        new = Address('Hamburg', '20095')
        say(step='planned', new_address=dm.insert(new).id)
        bob.address = new
        die_at_data_write(2)
        transaction.commit()
    elif scenario == 'flush':
        # A query flushes the change of alice (journaled: the transaction
        # goes on after it); a second query flushes the address, and the
        # process dies before that second flush is sent.
        alice.name = 'Alice'
        dm.count(Person)
        alice.address.city = 'Potsdam'
        die_at_data_write(1)      # the next data write: the second step
        dm.count(Address)
    say(step='survived')


if __name__ == '__main__':
    main(*sys.argv[1:])
