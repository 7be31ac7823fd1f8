"""Canaries for ``tests/test_hostile.py``: code that loading must never run.

Every class and function here records in ``FIRED`` when it is constructed,
called or given state.  The module is imported (by the test), so a stored
name such as ``tests.canary.NewCanary`` resolves to a real object without
any import; but nothing here is ever stored through a data manager or
registered with ``mongopersist.metadata``, so a loader that follows the
rules (default-deny, ``docs/security.rst``) must refuse every one of them.

Keep it that way: do not store, register or trust anything from this
module in any test, or the hostile-document tests stop proving anything.
"""
import enum
import pickle

import persistent

#: What fired, in order (``fire`` appends; ``reset`` empties it).
FIRED = []


def fire(what='fired'):
    """Record that canary code ran."""
    FIRED.append(what)
    return what


def reset():
    del FIRED[:]


def canary_function(*args, **kwargs):
    """A plain function: stored as ``_py_factory`` it must not be called."""
    fire('canary_function')


class NewCanary:
    """Fires when an instance is created (``cls.__new__``)."""

    def __new__(cls, *args, **kwargs):
        fire('NewCanary.__new__')
        return super().__new__(cls)


class InitCanary:
    """Fires when called (``_py_factory`` naming a class)."""

    def __init__(self, *args, **kwargs):
        fire('InitCanary.__init__')


class SetstateCanary:
    """Fires when it is given state (``_fill`` / pickle protocol)."""

    def __setstate__(self, state):
        fire('SetstateCanary.__setstate__')
        self.__dict__.update(state)


class PersistentCanary(persistent.Persistent):
    """A top-level persistent class nobody stored or registered."""

    def __new__(cls, *args, **kwargs):
        fire('PersistentCanary.__new__')
        return super().__new__(cls)

    def __setstate__(self, state):
        fire('PersistentCanary.__setstate__')
        super().__setstate__(state)


class SubObjectCanary(persistent.Persistent):
    """A sub-object class (stored inside its owner) nobody allowed."""

    _p_mongo_sub_object = True

    def __new__(cls, *args, **kwargs):
        fire('SubObjectCanary.__new__')
        return super().__new__(cls)

    def __setstate__(self, state):
        fire('SubObjectCanary.__setstate__')
        super().__setstate__(state)


class _CanaryEnumMeta(enum.EnumMeta):
    """Fires when a member is looked up by name or by value."""

    def __getitem__(cls, name):
        fire('CanaryEnum[name]')
        return super().__getitem__(name)

    def __call__(cls, *args, **kwargs):
        fire('CanaryEnum(value)')
        return super().__call__(*args, **kwargs)


class CanaryEnum(enum.Enum, metaclass=_CanaryEnumMeta):
    """An enum nobody stored or registered."""

    A = 1
    B = 2


class _FiresWhenUnpickled:
    def __reduce__(self):
        return (fire, ('pickle.loads',))


#: A pickle whose loading calls ``fire('pickle.loads')`` (a harmless
#: stand-in for ``os.system``).
PICKLE_PAYLOAD = pickle.dumps(_FiresWhenUnpickled())

#: Python source that fires when ``exec``-ed or ``eval``-ed.
EXEC_PAYLOAD = "__import__('tests.canary', fromlist=['fire']).fire('exec')"
EVAL_PAYLOAD = "__import__('tests.canary', fromlist=['fire']).fire('eval')"

# Creating the enum class may have looked members up: start clean.
reset()
