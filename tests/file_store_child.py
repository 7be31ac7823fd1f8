"""An application process on a ``file://`` store, for tests/test_fileserver.py.

Run as ``python -m tests.file_store_child COMMAND DIRECTORY DATABASE
[ARGUMENT]``; it prints one JSON line per step to stdout:

``write VALUE``
    stores ``root['counter'] = Counter(VALUE)`` and ends.
``count N``
    adds one to ``root['counter'].value`` N times, each in a unit of work
    of its own (``store.transaction()``, retried on conflicts).
``commit-and-wait VALUE``
    stores ``root['counter'] = Counter(VALUE)``, says ``committed``, and
    waits (to be killed).
``hold``
    stores a counter, says ``ready``, and waits for a line on stdin; then
    adds one, says ``done`` and ends.
``connect``
    connects and reports the ``ConfigurationError`` it gets, if any.
"""
import json
import os
import sys
import time

import mongopersist
from tests.model import Counter

ATTEMPTS = 200


def say(**message):
    sys.stdout.write(json.dumps(message) + '\n')
    sys.stdout.flush()


def connect(directory, database):
    return mongopersist.connect('file://' + directory, database=database,
                                trusted_modules=['tests.model'],
                                attempts=ATTEMPTS)


def store_counter(store, value):
    for attempt in store.transaction():
        with attempt as dm:
            dm.root['counter'] = Counter(value)


def increment(store):
    for attempt in store.transaction():
        with attempt as dm:
            dm.root['counter'].value += 1


def main(command, directory, database, argument=None):
    if command == 'connect':
        try:
            connect(directory, database).close()
        except mongopersist.ConfigurationError as error:
            say(error=str(error), setting=error.setting)
            return
        say(connected=True)
        return
    store = connect(directory, database)
    if command == 'write':
        store_counter(store, int(argument))
        say(step='written', pid=os.getpid())
    elif command == 'count':
        for _ in range(int(argument)):
            increment(store)
        say(step='counted')
    elif command == 'commit-and-wait':
        store_counter(store, int(argument))
        say(step='committed', pid=os.getpid())
        time.sleep(600)
    elif command == 'hold':
        store_counter(store, 1)
        say(step='ready')
        sys.stdin.readline()
        increment(store)
        say(step='done')
    store.close()


if __name__ == '__main__':
    main(*sys.argv[1:])
