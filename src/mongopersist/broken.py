"""Placeholders for stored data whose class cannot be loaded.

With ``MongoDataManager(..., broken_objects=True)``, a stored name that is
unknown or not allowed (see ``docs/security.rst``) does not fail loading:

* a value or sub-object inside a document loads as a ``Broken`` instance,
  which keeps the stored name and the stored value exactly as read; writing
  the document that holds it writes that value back unchanged;
* a top-level object loads as an instance of ``persistent_broken_class(name)``
  (a ``PersistentBroken`` subclass), which keeps the document's fields.

Both are read-only, as ZODB's broken objects are: they let an application
list and repair what it cannot load, and nothing named by the stored data
is imported or called.
"""
import copy

import persistent

from mongopersist import interfaces, limits


class BrokenModified(interfaces.MongoPersistError, TypeError):
    """A broken placeholder was changed (they are read-only)."""


class Broken:
    """A stored value whose class could not be loaded.

    ``__Broken_name__`` is the stored class (or factory) name and
    ``__Broken_state__`` the stored value (a dict, as read from MongoDB,
    references included as ``DBRef``).  Instances are read-only.
    """

    __slots__ = ('__Broken_name__', '__Broken_state__')

    def __init__(self, name, state):
        object.__setattr__(self, '__Broken_name__', name)
        object.__setattr__(self, '__Broken_state__', state)

    def __setattr__(self, name, value):
        raise BrokenModified('%r is a placeholder for stored data of an '
                             'unknown class and cannot be changed' % self)

    def __delattr__(self, name):
        raise BrokenModified('%r cannot be changed' % self)

    def __reduce_ex__(self, protocol):
        raise BrokenModified('%r cannot be pickled or copied' % self)

    def __eq__(self, other):
        if type(other) is not Broken:
            return NotImplemented
        return (self.__Broken_name__ == other.__Broken_name__
                and self.__Broken_state__ == other.__Broken_state__)

    __hash__ = None

    def __repr__(self):
        return '<Broken %s>' % (limits.excerpt(self.__Broken_name__),)

    def __mongopersist_state__(self):
        """Return the stored value to write back (a deep copy)."""
        return copy.deepcopy(self.__Broken_state__)


def stored_state(obj):
    """Return (a copy of) what ``obj``, a broken placeholder, was read from.

    For a ``Broken`` value, the stored sub-document; for a
    ``PersistentBroken`` object, the document's fields (without ``_id``).
    """
    if isinstance(obj, Broken):
        return copy.deepcopy(obj.__Broken_state__)
    if isinstance(obj, PersistentBroken):
        obj._p_activate()
        return copy.deepcopy(obj.__dict__.get('__Broken_state__', {}))
    raise TypeError('%r is not a broken placeholder' % (obj,))


def is_broken(obj):
    """Return true if ``obj`` is a placeholder for an unloadable class."""
    return isinstance(obj, (Broken, PersistentBroken))


class PersistentBroken(persistent.Persistent):
    """A top-level stored object whose class could not be loaded.

    The data manager makes ghosts of ``persistent_broken_class(name)``;
    loading keeps the document's fields (as stored) in ``__Broken_state__``.
    Attributes other than ``_p_``/``_v_`` ones cannot be set, and the object
    cannot be marked changed, so its document is never written.
    """

    __Broken_name__ = None

    def __setstate__(self, state):
        self.__dict__['__Broken_state__'] = dict(state or {})

    def __getstate__(self):
        return copy.deepcopy(self.__dict__.get('__Broken_state__', {}))

    def __setattr__(self, name, value):
        if name == '_p_changed' and value:
            raise BrokenModified('%r cannot be changed' % self)
        if name.startswith(('_p_', '_v_')):
            return super().__setattr__(name, value)
        raise BrokenModified('%r is a placeholder for a stored object of an '
                             'unknown class and cannot be changed' % self)

    def __delattr__(self, name):
        if name.startswith(('_p_', '_v_')):
            return super().__delattr__(name)
        raise BrokenModified('%r cannot be changed' % self)

    def __repr__(self):
        return '<PersistentBroken %s %s>' % (
            limits.excerpt(self.__Broken_name__), limits.quote(self._p_oid))


_classes = {}


def persistent_broken_class(name):
    """Return the ``PersistentBroken`` subclass standing for stored ``name``.

    One class per name (cached), so ghosts can be made with
    ``cls.__new__(cls)`` as for any persistent class, and
    ``metadata.get_dotted_name(cls)`` gives back ``name``.
    """
    cls = _classes.get(name)
    if cls is None:
        short = str(name).rpartition('.')[2] or 'Broken'
        if not short.isidentifier():
            short = 'Broken'
        cls = type(short, (PersistentBroken,), {
            '__Broken_name__': name, '__module__': __name__,
            '__qualname__': 'PersistentBroken[%s]' % name})
        cls = _classes.setdefault(name, cls)
    return cls
