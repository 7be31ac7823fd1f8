"""The data manager's root: named entry points into the object graph."""
from collections.abc import MutableMapping

from bson.dbref import DBRef

from mongopersist import interfaces, keys, limits


class Root(MutableMapping):
    """A mapping of names to persistent objects.

    Each entry is stored as ``{'name': name, 'ref': DBRef(...)}`` in the
    root collection.  Setting an entry writes it (and the object, if it is
    new or changed) at once; an aborted transaction takes it back.

    Names are ``str``: a name is a value, never a query.  Any other key
    (``{'$ne': 'guest'}``, a number, ``None``) raises
    ``interfaces.InvalidKeyError`` (a ``KeyError`` and a ``TypeError``)
    before a query is sent, and ``key in root`` is ``False``
    (``mongopersist.keys``).
    """

    def __init__(self, jar, database, collection):
        self._jar = jar
        self.database = database
        self.collection = collection
        self._index_ready = False

    @property
    def _coll(self):
        return self._jar._raw_collection(self.database, self.collection)

    def _ensure_index(self):
        if not self._index_ready:
            self._coll.create_index('name', unique=True)
            self._index_ready = True

    def _check_name(self, name):
        keys.check_key(name, owner='dm.root')

    def __getitem__(self, name):
        self._check_name(name)
        doc = self._coll.find_one({'name': name}, session=self._jar._session)
        if doc is None:
            raise KeyError(name)
        # Errors about what the entry points to name the entry.
        with self._jar._reading(DBRef(self.collection, doc.get('_id'),
                                      self.database)):
            return self._jar.load(self._ref(doc))

    def _ref(self, doc):
        """The reference of a stored entry; ``StoredDataError`` if it has
        none (a hand-edited or damaged entry)."""
        ref = doc.get('ref')
        if not isinstance(ref, DBRef):
            raise interfaces.StoredDataError(
                'The root entry %s holds no reference (ref is %s)' % (
                    limits.quote(doc.get('name')), type(ref).__name__),
                database=self.database, collection=self.collection,
                id=doc.get('_id'), path='ref')
        return ref

    def __setitem__(self, name, obj):
        self._check_name(name)
        self._ensure_index()
        ref = self._jar._store_now(obj)
        self._jar._journal.before_root_write(self.collection, name)
        previous = self._coll.find_one_and_update(
            {'name': name}, {'$set': {'ref': ref}}, upsert=True,
            session=self._jar._session)
        self._jar._round_trips += 1
        self._jar._remember_root_change(self.collection, name, previous, ref)

    def __delitem__(self, name):
        self._check_name(name)
        self._jar._journal.before_root_write(self.collection, name)
        previous = self._coll.find_one_and_delete(
            {'name': name}, session=self._jar._session)
        self._jar._round_trips += 1
        if previous is None:
            # Nothing deleted, but the intent is journaled: the end of the
            # transaction clears it.
            self._jar._join_txn()
            raise KeyError(name)
        self._jar._remember_root_change(self.collection, name, previous, None)

    def __contains__(self, name):
        if not keys.is_key(name):
            return False
        return self._coll.count_documents(
            {'name': name}, limit=1, session=self._jar._session) > 0

    def __iter__(self):
        """Iterate the names.  An entry without a name, or whose name is
        not text, raises ``StoredDataError`` (naming it) from ``next()``
        in its place; calling ``next()`` again carries on with the next
        entry."""
        return _Names(self, self._coll.find(
            {}, {'name': 1}, session=self._jar._session))

    def _name(self, doc):
        """The name of the stored entry ``doc``; ``StoredDataError`` if
        it has none, or one that is not a name."""
        name = doc.get('name')
        if not keys.is_key(name):
            raise interfaces.StoredDataError(
                'A root entry has %s' % (
                    'no name' if 'name' not in doc else 'the name %s, not '
                    'text' % limits.quote(name)),
                database=self.database, collection=self.collection,
                id=doc.get('_id'), path='name')
        return name

    def __len__(self):
        return self._coll.count_documents({}, session=self._jar._session)

    def keys(self):
        """Return the list of entry names."""
        return list(self)

    def refs(self):
        """Return a dict of entry names to the stored ``DBRef``."""
        return {self._name(doc): self._ref(doc) for doc in self._coll.find(
            {}, session=self._jar._session)}

    def __repr__(self):
        return '<Root %s.%s>' % (self.database, self.collection)


class _Names:
    """The names of the root entries, from a cursor over them.

    A malformed entry raises ``StoredDataError`` from ``next()``; the
    cursor stays where it is, so the next call carries on (code that lists
    the root can report a bad entry and go on).
    """

    __slots__ = ('_root', '_cursor')

    def __init__(self, root, cursor):
        self._root = root
        self._cursor = cursor

    def __iter__(self):
        return self

    def __next__(self):
        return self._root._name(next(self._cursor))
