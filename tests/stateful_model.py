"""Classes stored by tests/test_stateful.py, and how their state is compared.

An ``Item`` (or ``OtherItem``, stored in a second collection) document holds a scalar (``name``), a list (``tags``, a
``PersistentList`` stored inside the document), a dict (``data``, a
``PersistentDict`` stored inside the document) and a sub-object (``sub``,
``_p_mongo_sub_object``).  The model compares *fields*: a dict of hashable
values that an object and a stored document both reduce to.
"""
import persistent

from mongopersist.serialize import PersistentDict, PersistentList

COLLECTION = 'stateful_item'
#: ``OtherItem``: an ``Item`` in a collection of its own (the object cache
#: validates each collection at its first use in a transaction).
OTHER_COLLECTION = 'stateful_other'
COLLECTIONS = (COLLECTION, OTHER_COLLECTION)
FIELDS = ('name', 'tags', 'data', 'sub')


class Sub(persistent.Persistent):
    _p_mongo_sub_object = True

    def __init__(self, value):
        self.value = value


class Item(persistent.Persistent):
    _p_mongo_collection = COLLECTION

    def __init__(self, name, tags=(), data=None, sub=0):
        self.name = name
        self.tags = PersistentList(tags)
        self.data = PersistentDict(data or {})
        self.sub = Sub(sub)

    def __repr__(self):
        return '<Item %s %r>' % (getattr(self._p_oid, 'id', None), self.name)


class OtherItem(Item):
    _p_mongo_collection = OTHER_COLLECTION


def new_fields(name):
    return {'name': name, 'tags': (), 'data': (), 'sub': 0}


def object_fields(obj):
    """The fields of a live ``Item`` (activates it if it is a ghost)."""
    return {'name': obj.name, 'tags': tuple(obj.tags),
            'data': tuple(sorted(obj.data.items())), 'sub': obj.sub.value}


def document_fields(doc):
    """The fields of a stored ``Item`` document."""
    data = doc.get('data') or {}
    sub = doc.get('sub')
    return {'name': doc.get('name'), 'tags': tuple(doc.get('tags') or ()),
            'data': tuple(sorted((k, v) for k, v in data.items()
                                 if not k.startswith('_py_'))),
            'sub': sub.get('value') if isinstance(sub, dict) else sub}


# -- mutations: applied alike to a live object and to model fields ---------
# An operation is a tuple (kind, value); every kind always changes the
# object's state in memory (registering it), even when the value is equal.

def apply_to_object(obj, op):
    kind, value = op
    if kind == 'name':
        obj.name = value
    elif kind == 'append':
        obj.tags.append(value)
    elif kind == 'del_tag':
        if len(obj.tags):
            del obj.tags[0]
        else:
            obj.tags.append(value)
    elif kind == 'set_key':
        obj.data['k%d' % value] = value
    elif kind == 'del_key':
        key = 'k%d' % value
        if key in obj.data:
            del obj.data[key]
        else:
            obj.data[key] = value
    elif kind == 'sub':
        obj.sub.value = value
    elif kind == 'new_sub':
        obj.sub = Sub(value)
    else:
        raise AssertionError(kind)


def apply_to_fields(fields, op):
    kind, value = op
    fields = dict(fields)
    tags = list(fields['tags'])
    data = dict(fields['data'])
    if kind == 'name':
        fields['name'] = value
    elif kind == 'append':
        tags.append(value)
    elif kind == 'del_tag':
        if tags:
            del tags[0]
        else:
            tags.append(value)
    elif kind == 'set_key':
        data['k%d' % value] = value
    elif kind == 'del_key':
        key = 'k%d' % value
        if key in data:
            del data[key]
        else:
            data[key] = value
    elif kind in ('sub', 'new_sub'):
        fields['sub'] = value
    fields['tags'] = tuple(tags)
    fields['data'] = tuple(sorted(data.items()))
    return fields
