"""A module no test stores or registers a class of: loading its classes
needs ``--trust tests.trust_model`` (tests/test_cli.py).  Keep it so."""


class Untrusted:
    def __init__(self, size):
        self.size = size
