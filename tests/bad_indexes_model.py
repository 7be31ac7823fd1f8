"""A class whose index declaration is wrong (tests/test_cli.py)."""
import persistent


class Misdeclared(persistent.Persistent):
    _p_mongo_collection = 'misdeclared'
    _p_mongo_indexes = [{'key': 'name'}]
