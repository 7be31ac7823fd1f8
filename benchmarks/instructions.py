"""Instructions per benchmark person of the codec, with callgrind.

Timings on a shared machine move by tens of percent between runs;
instruction counts do not.  This script runs one codec step over
``--n`` benchmark people (after one warm-up person) inside
``functools.reduce``, so that callgrind counts that step only::

    PYTHONHASHSEED=0 valgrind --tool=callgrind \\
        --toggle-collect=functools_reduce --callgrind-out-file=OUT \\
        python -m benchmarks.instructions serialize
    callgrind_annotate OUT | grep 'PROGRAM TOTALS'     # / --n

or all steps at once, printed per person: ``python -m benchmarks.instructions
--all`` (runs valgrind itself).  Steps:

``serialize``     ``ObjectWriter.get_document`` of a new person
``deserialize``   a stored person's document (decoded) to its object:
                  what queries do per result (``_object_from_document``)
``encode``        ``bson.encode`` of the document ``serialize`` makes
``decode``        ``bson.decode`` of that document, stored
``encode-plain``  ``bson.encode`` of raw PyMongo's equal plain dict
``decode-plain``  ``bson.decode`` of it

Set ``MONGOPERSIST_PURE_PYTHON=1`` to count the pure-Python code.
"""
import argparse
import functools
import os
import re
import subprocess
import sys
import tempfile

STEPS = ('serialize', 'deserialize', 'encode', 'decode', 'encode-plain',
         'decode-plain')


def _setup(step, n):
    """The step as ``work(item)`` and the items, one more than ``n`` (the
    first warms the memos up)."""
    import bson
    import transaction

    from benchmarks import model
    from benchmarks.systems import raw
    from mongopersist import testing
    from mongopersist.datamanager import MongoDataManager

    client = testing.client()
    client.drop_database('mp_instructions')
    tm = transaction.TransactionManager()

    def data_manager():
        return MongoDataManager(client, default_database='mp_instructions',
                                transaction_manager=tm)

    dataset = model.Dataset(n + 1)
    if step.endswith('-plain'):
        system = raw.RawPyMongo.__new__(raw.RawPyMongo)
        system.dataset = dataset
        docs = system._person_docs(system._address_docs(), with_id=True)
        if step == 'encode-plain':
            return bson.encode, docs
        return bson.decode, [bson.encode(doc) for doc in docs]
    dm = data_manager()
    addresses = dataset.persistent_addresses()
    people = dataset.persistent_people(addresses)
    for obj in addresses + people:
        dm.insert(obj)
    writer = dm._writer
    if step == 'serialize':
        return writer.get_document, people
    docs = [writer.get_document(person) for person in people]
    if step == 'encode':
        return bson.encode, docs
    data = [bson.encode(doc) for doc in docs]
    if step == 'decode':
        return bson.decode, data
    tm.commit()         # the type map knows the collection's class
    dm = data_manager()
    collection = model.PERSON_COLLECTION

    to_object = functools.partial(dm._object_from_document,
                                  'mp_instructions', collection)
    return to_object, [bson.decode(raw_doc) for raw_doc in data]


def run(step, n):
    work, items = _setup(step, n)
    work(items[0])
    functools.reduce(lambda _, item: work(item), items[1:], None)


def count(step, n):
    """Instructions per person of ``step`` (runs callgrind)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, 'callgrind.out')
        env = dict(os.environ, PYTHONHASHSEED='0')
        subprocess.run(
            ['valgrind', '--tool=callgrind',
             '--toggle-collect=functools_reduce',
             '--callgrind-out-file=%s' % out, sys.executable, '-m',
             'benchmarks.instructions', step, '--n', str(n)],
            env=env, check=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        report = subprocess.run(['callgrind_annotate', out], check=True,
                                capture_output=True, text=True).stdout
    total = re.search(r'([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS', report)
    return int(total.group(1).replace(',', '')) // n


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m benchmarks.instructions')
    parser.add_argument('step', nargs='?', choices=STEPS)
    parser.add_argument('--n', type=int, default=500)
    parser.add_argument('--all', action='store_true',
                        help='count every step under callgrind, print them')
    args = parser.parse_args(argv)
    if args.all:
        for step in STEPS:
            print('%-13s %9s' % (step, '{:,}'.format(count(step, args.n))),
                  flush=True)
    elif args.step:
        run(args.step, args.n)
    else:
        parser.error('a step, or --all')


if __name__ == '__main__':
    main()
