"""The events containers fire: ``zope.lifecycleevent``'s, when installed.

Adding an item to a container fires ``ObjectAddedEvent`` (or
``ObjectMovedEvent`` for an item that was in another place), removing one
``ObjectRemovedEvent``, and each of them is followed by a
``ContainerModifiedEvent`` of the container, as ``zope.container`` does,
so that subscribers (catalog indexing, timestamps) work with mongopersist
containers.  The events are ``zope.lifecycleevent``'s, sent with
``zope.event.notify``; ``ContainerModifiedEvent`` is ``zope.container``'s
when that package is installed, else this module's (an
``ObjectModifiedEvent`` providing ``IContainerModifiedEvent``).

These packages come with the extra ``mongopersist[zope]``.  Without them
containers work the same and fire nothing (``enabled()`` is false).
Subscribers registered for an object and an event (``zope.component``'s
``@adapter(IMyItem, IObjectAddedEvent)``) are called when
``zope.component`` dispatches object events (its ``objectEventNotify``
handler registered, as its ``configure.zcml`` does).
"""
try:
    import zope.event
    from zope.lifecycleevent import (ObjectAddedEvent, ObjectModifiedEvent,
                                     ObjectMovedEvent, ObjectRemovedEvent)
    from zope.lifecycleevent.interfaces import IObjectModifiedEvent
except ImportError:     # pragma: no cover (the extra is not installed)
    zope_event = None
    ObjectAddedEvent = ObjectMovedEvent = ObjectRemovedEvent = None
    ContainerModifiedEvent = IContainerModifiedEvent = None
else:
    zope_event = zope.event
    try:
        from zope.container.contained import ContainerModifiedEvent
        from zope.container.interfaces import IContainerModifiedEvent
    except ImportError:
        import zope.interface

        class IContainerModifiedEvent(IObjectModifiedEvent):
            """The items of a container changed (one was added, removed
            or renamed): ``zope.container``'s interface of that name."""

        @zope.interface.implementer(IContainerModifiedEvent)
        class ContainerModifiedEvent(ObjectModifiedEvent):
            """The items of ``object``, a container, changed."""
    try:
        # Object events reach the subscribers of (object, event) pairs.
        import zope.component.event  # noqa: F401
    except ImportError:     # pragma: no cover (zope.component is optional)
        pass


def enabled():
    """Whether containers fire events (``zope.lifecycleevent`` and
    ``zope.event`` are installed)."""
    return zope_event is not None


def notify(event):
    """Send ``event`` to the subscribers (``zope.event.notify``)."""
    zope_event.notify(event)


def added(item, container, name, old_parent=None, old_name=None):
    """Fire the event of ``item`` put into ``container`` under ``name``:
    ``ObjectMovedEvent`` for an item that was somewhere else
    (``old_parent``), ``ObjectAddedEvent`` for a new one."""
    if zope_event is None:
        return
    if old_parent is None:
        notify(ObjectAddedEvent(item, container, name))
    else:
        notify(ObjectMovedEvent(item, old_parent, old_name, container, name))


def removed(item, container, name):
    """Fire ``ObjectRemovedEvent`` of ``item`` taken out of ``container``
    (where it was named ``name``)."""
    if zope_event is not None:
        notify(ObjectRemovedEvent(item, container, name))


def container_modified(container):
    """Fire ``ContainerModifiedEvent`` of ``container`` (after the events
    of its items)."""
    if zope_event is not None:
        notify(ContainerModifiedEvent(container))
