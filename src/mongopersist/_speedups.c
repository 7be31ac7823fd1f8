/* mongopersist._speedups: the compiled hot paths of mongopersist.
 *
 * Every function here mirrors a Python function of mongopersist (named in
 * its comment), which stays the reference: the pure-Python code runs when
 * this module is absent or MONGOPERSIST_PURE_PYTHON is set, and the suite
 * passes either way.  The compiled code handles the common shapes itself
 * (plain dicts and arrays of BSON scalars, references, value objects
 * stored as their attributes, the per-object bookkeeping of loading) and
 * calls the Python implementation for anything else, at the point where
 * the Python code would: unusual shapes, custom serializers, every error.
 * It raises no error of its own making (but MemoryError and the like):
 * the Python helpers it calls raise them, so messages, field paths and
 * documents named are the same.
 *
 * Objects of the library (data manager, cache, reader, ...) are used
 * through their Python attributes; methods the compiled code inlines are
 * inlined only while the object's class still has the library's own
 * (``inlined_ok``): a subclass or a patched class that overrides one gets
 * the method called.
 *
 * Python objects the code needs (classes, memo dicts, sentinels) are handed
 * over once by ``bind()`` (see mongopersist/speedups.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <structmember.h>
#include <stdint.h>

#if PY_VERSION_HEX >= 0x030D0000
#define LOOKUP_ATTR(obj, name, result) PyObject_GetOptionalAttr(obj, name, result)
#else
#define LOOKUP_ATTR(obj, name, result) _PyObject_LookupAttr(obj, name, result)
#endif

#ifndef Py_T_OBJECT_EX
#define Py_T_OBJECT_EX T_OBJECT_EX
#endif

/* ------------------------------------------------------------------ */
/* What bind() hands over.                                             */

typedef struct {
    const char *name;
    PyObject **slot;
} Bound;

/* mongopersist.serialize */
static PyObject *NATIVE_TYPES;        /* frozenset of types */
static PyObject *SAFE_KEYS;           /* set: _safe_keys */
static PyObject *IS_KNOWN_SAFE_KEY;   /* _is_known_safe_key */
static PyObject *META_FIELDS;         /* DOCUMENT_META_FIELDS */
static PyObject *FIELD_NAMES;         /* _FIELD_NAMES memo dict */
static PyObject *PLAIN_CLASSES;       /* _plain_classes memo dict */
static PyObject *SETSTATES;           /* _SETSTATES memo dict */
static PyObject *SETSTATE_OF;         /* _setstate_of */
static PyObject *CHECK_NAMES;         /* _check_names */
static PyObject *LOCATE;              /* _locate */
static PyObject *ATTRIBUTE_NAME_ERROR;/* _attribute_name_error */
static PyObject *CHECK_WRITABLE;      /* _check_writable_state */
static PyObject *MALFORMED_VALUE;     /* _malformed_value */
static PyObject *MALFORMED;           /* MALFORMED tuple */
static PyObject *NOT_PLAIN;           /* _NOT_PLAIN */
static PyObject *PERSISTENT_DICT;     /* serialize.PersistentDict */
static PyObject *PERSISTENT_LIST;     /* serialize.PersistentList */
static PyObject *UNSTORABLE;          /* _Unstorable */
static PyObject *LEGACY_DICT_DATA;    /* legacy.DICT_DATA */
static PyObject *LEGACY_CONSTANT;     /* legacy.PY_CONSTANT */
static PyObject *WRITERS;             /* serializers.WRITERS */
static PyObject *WRITE_DATE;          /* serializers.write_date */
static PyObject *READERS;             /* serializers.READERS */
static PyObject *READ_DATE;           /* serializers.read_date */
static PyObject *STANDALONE_READERS;  /* serializers.STANDALONE_READERS */
static PyObject *MAX_NESTING_OBJ;     /* limits.MAX_NESTING */
static PyObject *NOT_HANDLED;         /* speedups.NOT_HANDLED */
/* mongopersist.interfaces */
static PyObject *STORED_DATA_ERROR;
static PyObject *CIRCULAR_ERROR;
static PyObject *MONGOPERSIST_ERROR;
/* persistent, broken, metadata */
static PyObject *PERSISTENT_TYPE;     /* persistent.Persistent */
static PyObject *PERSISTENT_BROKEN;   /* broken.PersistentBroken */
static PyObject *PERSISTENT_GETSTATE; /* persistent.Persistent.__getstate__ */
static PyObject *CLASS_SETTINGS;      /* metadata.CLASS_SETTINGS */
static PyObject *SHARD_KEYS;          /* metadata._shard_keys memo */
static PyObject *METADATA_DICT;       /* vars(metadata): _generation */
static PyObject *TYPE_REGISTRY;       /* metadata.TypeRegistry */
static PyObject *OID_TYPE;            /* metadata.OID */
static PyObject *DBREF_TYPE;          /* bson.dbref.DBRef */
static PyObject *EMPTY_KWARGS;        /* metadata._NO_EXTRA_FIELDS */
static PyObject *OBJECTID_TYPE;       /* bson.objectid.ObjectId */

static Bound BOUND[] = {
    {"NATIVE_TYPES", &NATIVE_TYPES},
    {"_safe_keys", &SAFE_KEYS},
    {"_is_known_safe_key", &IS_KNOWN_SAFE_KEY},
    {"DOCUMENT_META_FIELDS", &META_FIELDS},
    {"_FIELD_NAMES", &FIELD_NAMES},
    {"_plain_classes", &PLAIN_CLASSES},
    {"_SETSTATES", &SETSTATES},
    {"_setstate_of", &SETSTATE_OF},
    {"_check_names", &CHECK_NAMES},
    {"_locate", &LOCATE},
    {"_attribute_name_error", &ATTRIBUTE_NAME_ERROR},
    {"_check_writable_state", &CHECK_WRITABLE},
    {"_malformed_value", &MALFORMED_VALUE},
    {"MALFORMED", &MALFORMED},
    {"_NOT_PLAIN", &NOT_PLAIN},
    {"PersistentDict", &PERSISTENT_DICT},
    {"PersistentList", &PERSISTENT_LIST},
    {"_Unstorable", &UNSTORABLE},
    {"LEGACY_DICT_DATA", &LEGACY_DICT_DATA},
    {"LEGACY_CONSTANT", &LEGACY_CONSTANT},
    {"WRITERS", &WRITERS},
    {"write_date", &WRITE_DATE},
    {"READERS", &READERS},
    {"read_date", &READ_DATE},
    {"STANDALONE_READERS", &STANDALONE_READERS},
    {"MAX_NESTING", &MAX_NESTING_OBJ},
    {"NOT_HANDLED", &NOT_HANDLED},
    {"StoredDataError", &STORED_DATA_ERROR},
    {"CircularReferenceError", &CIRCULAR_ERROR},
    {"MongoPersistError", &MONGOPERSIST_ERROR},
    {"Persistent", &PERSISTENT_TYPE},
    {"PersistentBroken", &PERSISTENT_BROKEN},
    {"persistent_getstate", &PERSISTENT_GETSTATE},
    {"CLASS_SETTINGS", &CLASS_SETTINGS},
    {"_shard_keys", &SHARD_KEYS},
    {"metadata_dict", &METADATA_DICT},
    {"TypeRegistry", &TYPE_REGISTRY},
    {"OID", &OID_TYPE},
    {"DBRef", &DBREF_TYPE},
    {"EMPTY_KWARGS", &EMPTY_KWARGS},
    {"ObjectId", &OBJECTID_TYPE},
    {NULL, NULL}
};

static long MAX_NESTING = 100;
static int bound = 0;

/* Interned strings. */
static PyObject *s_write, *s_write_dict, *s_write_list, *s_write_plain,
    *s_deepest, *s_untracked, *s_path, *s_located, *s_jar, *s_p_jar,
    *s_p_oid, *s_p_mongo_doc_object, *s_data, *s_dump, *s_py_type,
    *s_iso, *s_isoformat, *s_id, *s_sub_object, *s_dict, *s_class,
    *s_name, *s_stored_value, *s_read_dict, *s_load, *s_registry,
    *s_type_registry, *s_resolved, *s_generation, *s_resolve, *s_value,
    *s_new, *s_update, *s_fromisoformat, *s_ordinal, *s_serializers,
    *s_py_persistent_type, *s_py_factory, *s_py_state, *s_py_new_args,
    *s_py_listitems, *s_py_dictitems, *s_builtins_dict, *s_items,
    *s_dbref_id, *s_dbref_collection, *s_dbref_database, *s_dbref_kwargs,
    *s_hash, *s_doc, *s_routing, *s_datetime_date, *s_getstate;

static PyObject *EMPTY_TUPLE;

/* ------------------------------------------------------------------ */
/* Small helpers.                                                      */

/* Raise ``error`` (an exception instance) with ``context`` as its
 * __context__ (and __cause__ if ``cause``), as ``raise error [from
 * context]`` in an ``except`` block does.  Steals neither. */
static void
raise_with_context(PyObject *error, PyObject *context, int cause)
{
    if (context != NULL && context != error) {
        Py_INCREF(context);
        PyException_SetContext(error, context);
        if (cause) {
            Py_INCREF(context);
            PyException_SetCause(error, context);
        }
    }
    PyErr_SetObject((PyObject *)Py_TYPE(error), error);
}

/* The current exception, normalized (a new reference in *value); NULL
 * members where there is none. */
typedef struct {
    PyObject *type, *value, *tb;
} Caught;

static void
catch_error(Caught *c)
{
    PyErr_Fetch(&c->type, &c->value, &c->tb);
    PyErr_NormalizeException(&c->type, &c->value, &c->tb);
    if (c->tb != NULL && c->value != NULL)
        PyException_SetTraceback(c->value, c->tb);
}

static void
rethrow(Caught *c)
{
    PyErr_Restore(c->type, c->value, c->tb);
    c->type = c->value = c->tb = NULL;
}

static void
drop_caught(Caught *c)
{
    Py_CLEAR(c->type);
    Py_CLEAR(c->value);
    Py_CLEAR(c->tb);
}

static int
caught_is(Caught *c, PyObject *cls)
{
    if (c->value == NULL)
        return 0;
    return PyObject_IsInstance(c->value, cls);
}

/* obj.name as a C long (the writer's ``deepest``). */
static int
get_long_attr(PyObject *obj, PyObject *name, long *result)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL)
        return -1;
    *result = PyLong_AsLong(value);
    Py_DECREF(value);
    if (*result == -1 && PyErr_Occurred())
        return -1;
    return 0;
}

/* Classes whose methods the compiled code inlines: the methods are
 * inlined only while the class of the object has the library's own
 * (checked once per class and version of it).  Instance attributes are
 * not looked at: the library never sets methods on instances. */
typedef struct {
    PyObject *names;        /* tuple of method names */
    PyObject *originals;    /* tuple of the library's functions */
    PyTypeObject *type;     /* last class checked (not owned) */
    unsigned int tag;       /* its version tag then */
    int ok;
} Inlined;

static Inlined INLINED_READER, INLINED_JAR, INLINED_CACHE,
    INLINED_VALIDATOR, INLINED_BATCHES, INLINED_TYPEMAP, INLINED_WRITER;

static int
inlined_ok(PyObject *obj, Inlined *inlined)
{
    PyTypeObject *type = Py_TYPE(obj);
    Py_ssize_t i;
    int ok = 1;
    if (inlined->names == NULL)
        return 0;
    if (inlined->type == type && inlined->tag != 0
            && type->tp_version_tag == inlined->tag
            && PyType_HasFeature(type, Py_TPFLAGS_VALID_VERSION_TAG))
        return inlined->ok;
    for (i = 0; i < PyTuple_GET_SIZE(inlined->names); i++) {
        if (_PyType_Lookup(type, PyTuple_GET_ITEM(inlined->names, i))
                != PyTuple_GET_ITEM(inlined->originals, i)) {
            ok = 0;
            break;
        }
    }
    inlined->type = type;
    inlined->tag = PyType_HasFeature(type, Py_TPFLAGS_VALID_VERSION_TAG)
        ? type->tp_version_tag : 0;
    inlined->ok = ok;
    return ok;
}

/* ------------------------------------------------------------------ */
/* OID slots (metadata.OID subclasses bson's DBRef, whose fields are    */
/* slots; OID adds _hash, _doc and routing).  Their offsets are read    */
/* from the member descriptors once; without them (another PyMongo),    */
/* oids are made by calling the class.                                 */

static Py_ssize_t off_collection = -1, off_id = -1, off_database = -1,
    off_kwargs = -1, off_hash = -1, off_doc = -1, off_routing = -1;
static int oid_slots = 0;

static Py_ssize_t
slot_offset(PyObject *cls, const char *name)
{
    PyObject *descr = PyObject_GetAttrString(cls, name);
    Py_ssize_t offset = -1;
    if (descr == NULL) {
        PyErr_Clear();
        return -1;
    }
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type == Py_T_OBJECT_EX && !(member->flags & READONLY))
            offset = member->offset;
    }
    Py_DECREF(descr);
    return offset;
}

static PyObject *
slot_get(PyObject *obj, Py_ssize_t offset)
{
    return *(PyObject **)((char *)obj + offset);
}

static void
slot_set(PyObject *obj, Py_ssize_t offset, PyObject *value)
{
    PyObject **where = (PyObject **)((char *)obj + offset);
    PyObject *old = *where;
    Py_XINCREF(value);
    *where = value;
    Py_XDECREF(old);
}

/* bson's ObjectId hashes and compares as its 12 bytes (``__hash__``:
 * ``hash(self.__id)``; ``__eq__`` with another ObjectId: ``self.__id ==
 * other.binary``), in Python; the oids of documents hash and compare
 * their ids all the time.  Checked at bind() on a sample. */
static Py_ssize_t off_objectid = -1;
static int objectid_fast = 0;
static Inlined INLINED_OBJECTID;

static int
is_plain_objectid(PyObject *value)
{
    return objectid_fast && Py_IS_TYPE(value, (PyTypeObject *)OBJECTID_TYPE)
        && inlined_ok(value, &INLINED_OBJECTID)
        && slot_get(value, off_objectid) != NULL
        && PyBytes_CheckExact(slot_get(value, off_objectid));
}

/* ``hash(value)`` */
static Py_hash_t
value_hash(PyObject *value)
{
    if (is_plain_objectid(value))
        return PyObject_Hash(slot_get(value, off_objectid));
    return PyObject_Hash(value);
}

/* ``a == b`` (a new reference) */
static PyObject *
value_eq(PyObject *a, PyObject *b)
{
    if (is_plain_objectid(a) && is_plain_objectid(b))
        return PyObject_RichCompare(slot_get(a, off_objectid),
                                    slot_get(b, off_objectid), Py_EQ);
    return PyObject_RichCompare(a, b, Py_EQ);
}

/* ``hash((a, b, c, d))``, as tuplehash computes it (xxHash lanes, see
 * CPython's Objects/tupleobject.c); checked against it at bind(), else
 * the tuple is made and hashed. */
#if SIZEOF_PY_UHASH_T > 4
#define XXPRIME_1 ((Py_uhash_t)11400714785074694791ULL)
#define XXPRIME_2 ((Py_uhash_t)14029467366897019727ULL)
#define XXPRIME_5 ((Py_uhash_t)2870177450012600261ULL)
#define XXROTATE(x) ((x << 31) | (x >> 33))
#else
#define XXPRIME_1 ((Py_uhash_t)2654435761UL)
#define XXPRIME_2 ((Py_uhash_t)2246822519UL)
#define XXPRIME_5 ((Py_uhash_t)374761393UL)
#define XXROTATE(x) ((x << 13) | (x >> 19))
#endif

static int tuple_hash_known = 0;

static Py_hash_t
hash4(PyObject *a, PyObject *b, PyObject *c, PyObject *d)
{
    PyObject *items[4];
    Py_uhash_t acc = XXPRIME_5;
    int i;
    if (!tuple_hash_known) {
        PyObject *key = PyTuple_Pack(4, a, b, c, d);
        Py_hash_t h;
        if (key == NULL)
            return -1;
        h = PyObject_Hash(key);
        Py_DECREF(key);
        return h;
    }
    items[0] = a;
    items[1] = b;
    items[2] = c;
    items[3] = d;
    for (i = 0; i < 4; i++) {
        Py_uhash_t lane = (Py_uhash_t)value_hash(items[i]);
        if (lane == (Py_uhash_t)-1)
            return -1;
        acc += lane * XXPRIME_2;
        acc = XXROTATE(acc);
        acc *= XXPRIME_1;
    }
    acc += 4 ^ (XXPRIME_5 ^ 3527539UL);
    if (acc == (Py_uhash_t)-1)
        return 1546275796;
    return (Py_hash_t)acc;
}

/* ``metadata.OID(collection, id, database)``, as ``OID.__init__`` makes
 * it for str collection and database (or None): the DBRef slots, the
 * hash of ``(collection, id, database, ())``, no document, no routing.
 * NULL with TypeError for an unhashable id, as the class raises. */
static PyObject *
new_oid(PyObject *collection, PyObject *id, PyObject *database)
{
    PyObject *oid, *key, *hash;
    Py_hash_t h;
    if (!oid_slots || !PyUnicode_CheckExact(collection)
            || !(database == Py_None || PyUnicode_CheckExact(database)))
        return PyObject_CallFunctionObjArgs(OID_TYPE, collection, id,
                                            database, NULL);
    (void)key;
    h = hash4(collection, id, database, EMPTY_TUPLE);
    if (h == -1)
        return NULL;
    hash = PyLong_FromSsize_t(h);
    if (hash == NULL)
        return NULL;
    oid = ((PyTypeObject *)OID_TYPE)->tp_alloc((PyTypeObject *)OID_TYPE, 0);
    if (oid == NULL) {
        Py_DECREF(hash);
        return NULL;
    }
    slot_set(oid, off_collection, collection);
    slot_set(oid, off_id, id);
    slot_set(oid, off_database, database);
    slot_set(oid, off_kwargs, EMPTY_KWARGS);
    slot_set(oid, off_hash, hash);
    slot_set(oid, off_doc, Py_None);
    slot_set(oid, off_routing, Py_None);
    Py_DECREF(hash);
    return oid;
}

/* ------------------------------------------------------------------ */
/* The writer: mirrors serialize.ObjectWriter.get_document and _write   */
/* for documents without custom serializers.                           */

typedef struct {
    PyObject *writer;     /* the ObjectWriter (borrowed) */
    PyObject *jar;        /* writer._jar (owned) */
    PyObject *stack;      /* ids of the values entered (owned set) */
    PyObject *custom;     /* the (empty) custom serializers (owned) */
    long deepest;         /* writer.deepest, kept here between calls */
    int untracked;        /* writer.untracked */
} Writer;

/* Give the writer object the counts kept here (before Python code
 * that reads them runs, and at the end). */
static int
w_store(Writer *w)
{
    PyObject *deepest = PyLong_FromLong(w->deepest);
    int result;
    if (deepest == NULL)
        return -1;
    result = PyObject_SetAttr(w->writer, s_deepest, deepest);
    Py_DECREF(deepest);
    if (result < 0)
        return -1;
    return PyObject_SetAttr(w->writer, s_untracked,
                            w->untracked ? Py_True : Py_False);
}

static int
w_load(Writer *w)
{
    PyObject *untracked;
    int truth;
    if (get_long_attr(w->writer, s_deepest, &w->deepest) < 0)
        return -1;
    untracked = PyObject_GetAttr(w->writer, s_untracked);
    if (untracked == NULL)
        return -1;
    truth = PyObject_IsTrue(untracked);
    Py_DECREF(untracked);
    if (truth < 0)
        return -1;
    w->untracked = truth;
    return 0;
}

/* Call the Python method ``name`` of the writer: ``name(value, pobj,
 * stack, custom)`` or, with ``extra``, ``name(value, extra, pobj, stack,
 * custom)`` (``_write_plain``). */
static PyObject *
w_python(Writer *w, PyObject *name, PyObject *value, PyObject *extra,
         PyObject *pobj)
{
    PyObject *result;
    Caught c = {NULL, NULL, NULL};
    if (w_store(w) < 0)
        return NULL;
    if (extra == NULL)
        result = PyObject_CallMethodObjArgs(w->writer, name, value, pobj,
                                            w->stack, w->custom, NULL);
    else
        result = PyObject_CallMethodObjArgs(w->writer, name, value, extra,
                                            pobj, w->stack, w->custom,
                                            NULL);
    if (result == NULL)
        catch_error(&c);
    if (w_load(w) < 0) {
        Py_XDECREF(result);
        drop_caught(&c);
        return NULL;
    }
    if (result == NULL)
        rethrow(&c);
    return result;
}

/* ``_enter``: 1 when entered, 0 when entering would raise (a cycle, too
 * deep): the caller then hands the value to Python, which raises. */
static int
w_enter(Writer *w, PyObject *obj)
{
    PyObject *id = PyLong_FromVoidPtr(obj);
    Py_ssize_t depth;
    int found;
    if (id == NULL)
        return -1;
    found = PySet_Contains(w->stack, id);
    if (found != 0) {
        Py_DECREF(id);
        return found < 0 ? -1 : 0;
    }
    depth = PySet_GET_SIZE(w->stack);
    if (depth >= w->deepest) {
        if (depth >= MAX_NESTING) {
            Py_DECREF(id);
            return 0;
        }
        w->deepest = depth + 1;
    }
    found = PySet_Add(w->stack, id);
    Py_DECREF(id);
    return found < 0 ? -1 : 1;
}

/* ``stack.discard(id(obj))``, keeping any exception set. */
static int
w_leave(Writer *w, PyObject *obj)
{
    PyObject *type, *value, *tb;
    PyObject *id;
    int result;
    PyErr_Fetch(&type, &value, &tb);
    id = PyLong_FromVoidPtr(obj);
    result = id == NULL ? -1 : PySet_Discard(w->stack, id);
    Py_XDECREF(id);
    if (type != NULL) {
        if (result < 0) {
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
            return -1;
        }
        PyErr_Restore(type, value, tb);
        return -1;
    }
    return result < 0 ? -1 : 0;
}

/* ``_write_item``'s except clauses, for the error raised writing the
 * value found at ``where`` (a key or an index). */
static void
w_item_error(PyObject *where)
{
    Caught c;
    PyObject *path = NULL, *text = NULL, *new_path = NULL;
    int is_unstorable, is_circular;
    catch_error(&c);
    is_unstorable = caught_is(&c, UNSTORABLE);
    if (is_unstorable < 0)
        goto failed;
    if (is_unstorable) {
        path = PyObject_GetAttr(c.value, s_path);
        text = path == NULL ? NULL : PyObject_Str(where);
        if (text == NULL)
            goto failed;
        if (PyList_Check(path)) {
            if (PyList_Append(path, text) < 0)
                goto failed;
        }
        else {
            PyObject *r = PyObject_CallMethod(path, "append", "O", text);
            if (r == NULL)
                goto failed;
            Py_DECREF(r);
        }
        goto done;
    }
    is_circular = caught_is(&c, CIRCULAR_ERROR);
    if (is_circular < 0)
        goto failed;
    if (is_circular) {
        PyObject *head;
        int truth;
        path = PyObject_GetAttr(c.value, s_path);
        if (path == NULL)
            goto failed;
        text = PyObject_Str(where);
        if (text == NULL)
            goto failed;
        head = PyList_New(1);
        if (head == NULL)
            goto failed;
        Py_INCREF(text);
        PyList_SET_ITEM(head, 0, text);
        truth = PyObject_IsTrue(path);
        if (truth < 0) {
            Py_DECREF(head);
            goto failed;
        }
        if (truth) {
            new_path = PyNumber_Add(head, path);
            Py_DECREF(head);
        }
        else
            new_path = head;
        if (new_path == NULL
                || PyObject_SetAttr(c.value, s_path, new_path) < 0)
            goto failed;
    }
done:
    Py_XDECREF(path);
    Py_XDECREF(text);
    Py_XDECREF(new_path);
    rethrow(&c);
    return;
failed:
    Py_XDECREF(path);
    Py_XDECREF(text);
    Py_XDECREF(new_path);
    {
        /* The handler itself failed: its error, raised in the except
         * block, has the original as its context. */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (value != NULL && c.value != NULL) {
            PyException_SetContext(value, c.value);
            c.value = NULL;
        }
        PyErr_Restore(type, value, tb);
        drop_caught(&c);
    }
}

/* ``kind in NATIVE_TYPES or (kind is int and INT64_MIN <= value <=
 * INT64_MAX)``: 1, 0, or -1 with an exception. */
static int
is_stored_as_is(PyObject *value)
{
    PyTypeObject *kind = Py_TYPE(value);
    if (kind == &PyUnicode_Type || kind == &PyFloat_Type
            || value == Py_None || kind == &PyBool_Type)
        return 1;
    if (kind == &PyLong_Type) {
        int overflow;
        PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow == 0 && PyErr_Occurred())
            return -1;
        return overflow == 0;
    }
    return PySet_Contains(NATIVE_TYPES, (PyObject *)kind);
}

static PyObject *w_value(Writer *w, PyObject *value, PyObject *pobj);

/* ``self._write_item(value, where, ...)`` (value not stored as is). */
static PyObject *
w_item(Writer *w, PyObject *value, PyObject *where, PyObject *pobj)
{
    PyObject *result = w_value(w, value, pobj);
    if (result == NULL)
        w_item_error(where);
    return result;
}

/* The fields of a dict of safe keys (``_write_dict``'s loop, and
 * ``_add_state``'s): ``into[key] = value as stored``.  Iterates like
 * ``dict.items()`` (a dict changed meanwhile raises RuntimeError). */
static int
w_fields(Writer *w, PyObject *source, PyObject *into, PyObject *pobj)
{
    Py_ssize_t pos = 0, size = PyDict_GET_SIZE(source);
    PyObject *key, *value;
    while (PyDict_Next(source, &pos, &key, &value)) {
        PyObject *stored;
        int as_is;
        Py_INCREF(key);
        Py_INCREF(value);
        as_is = is_stored_as_is(value);
        if (as_is < 0)
            goto failed;
        if (as_is) {
            stored = value;
            Py_INCREF(stored);
        }
        else {
            stored = w_item(w, value, key, pobj);
            if (stored == NULL)
                goto failed;
        }
        if (PyDict_SetItem(into, key, stored) < 0) {
            Py_DECREF(stored);
            goto failed;
        }
        Py_DECREF(stored);
        Py_DECREF(key);
        Py_DECREF(value);
        if (PyDict_GET_SIZE(source) != size) {
            PyErr_SetString(PyExc_RuntimeError,
                            "dictionary changed size during iteration");
            return -1;
        }
        continue;
failed:
        Py_DECREF(key);
        Py_DECREF(value);
        return -1;
    }
    return 0;
}

/* Whether every key of the dict ``obj`` is a known safe key
 * (``_all_safe_keys``, answered by the memo, asking Python for keys it
 * does not know yet). */
static int
all_safe_keys(PyObject *obj)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(obj, &pos, &key, &value)) {
        int known = 0;
        if (PyUnicode_CheckExact(key)) {
            known = PySet_Contains(SAFE_KEYS, key);
            if (known < 0)
                return -1;
        }
        if (!known) {
            PyObject *answer = PyObject_CallOneArg(IS_KNOWN_SAFE_KEY, key);
            if (answer == NULL)
                return -1;
            known = PyObject_IsTrue(answer);
            Py_DECREF(answer);
            if (known <= 0)
                return known;
        }
    }
    return 1;
}

/* ``_write_dict`` of a plain dict. */
static PyObject *
w_dict(Writer *w, PyObject *obj, PyObject *pobj)
{
    PyObject *result;
    int entered, safe;
    if (!PyDict_CheckExact(obj))
        return w_python(w, s_write_dict, obj, NULL, pobj);
    entered = w_enter(w, obj);
    if (entered <= 0)
        return entered < 0 ? NULL
            : w_python(w, s_write_dict, obj, NULL, pobj);
    safe = all_safe_keys(obj);
    if (safe > 0) {
        int legacy = PyDict_Contains(obj, LEGACY_DICT_DATA);
        if (legacy != 0)
            safe = legacy < 0 ? -1 : 0;
    }
    if (safe <= 0) {
        /* Stored as ``builtins.dict`` items, or a legacy look-alike:
         * Python writes it (from ``_enter`` on). */
        if (w_leave(w, obj) < 0 || safe < 0)
            return NULL;
        return w_python(w, s_write_dict, obj, NULL, pobj);
    }
    result = PyDict_New();
    if (result == NULL || w_fields(w, obj, result, pobj) < 0) {
        Py_XDECREF(result);
        w_leave(w, obj);
        return NULL;
    }
    if (w_leave(w, obj) < 0) {
        Py_DECREF(result);
        return NULL;
    }
    return result;
}

/* ``_write_list`` of a list or tuple. */
static PyObject *
w_list(Writer *w, PyObject *obj, PyObject *pobj)
{
    PyObject *result;
    Py_ssize_t index;
    int entered;
    if (!PyList_CheckExact(obj) && !PyTuple_CheckExact(obj))
        return w_python(w, s_write_list, obj, NULL, pobj);
    entered = w_enter(w, obj);
    if (entered <= 0)
        return entered < 0 ? NULL
            : w_python(w, s_write_list, obj, NULL, pobj);
    result = PyList_New(0);
    if (result == NULL)
        goto failed;
    for (index = 0; index < PySequence_Fast_GET_SIZE(obj); index++) {
        PyObject *item = PySequence_Fast_GET_ITEM(obj, index);
        PyObject *stored;
        int as_is;
        Py_INCREF(item);
        as_is = is_stored_as_is(item);
        if (as_is < 0) {
            Py_DECREF(item);
            goto failed;
        }
        if (as_is) {
            stored = item;
        }
        else {
            PyObject *where = PyLong_FromSsize_t(index);
            if (where == NULL) {
                Py_DECREF(item);
                goto failed;
            }
            stored = w_item(w, item, where, pobj);
            Py_DECREF(where);
            Py_DECREF(item);
            if (stored == NULL)
                goto failed;
        }
        if (PyList_Append(result, stored) < 0) {
            Py_DECREF(stored);
            goto failed;
        }
        Py_DECREF(stored);
    }
    if (w_leave(w, obj) < 0) {
        Py_DECREF(result);
        return NULL;
    }
    return result;
failed:
    Py_XDECREF(result);
    w_leave(w, obj);
    return NULL;
}

/* The field-name memo of ``cls`` covers every key of ``state``
 * (``_FIELD_NAMES.get(cls, _NO_NAMES).issuperset(state)``). */
static int
names_known(PyObject *cls, PyObject *state)
{
    PyObject *known = PyDict_GetItemWithError(FIELD_NAMES, cls);
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    if (known == NULL)
        return PyErr_Occurred() ? -1 : PyDict_GET_SIZE(state) == 0;
    if (!PyAnySet_Check(known))
        return 0;
    while (PyDict_Next(state, &pos, &key, &value)) {
        int found = PySet_Contains(known, key);
        if (found <= 0)
            return found;
    }
    return 1;
}

/* ``_write_plain(obj, name, ...)`` for an instance whose ``__dict__``
 * has only names the field-name memo knows and the safe-key memo
 * accepts; anything else is written by Python. */
static PyObject *
w_plain(Writer *w, PyObject *obj, PyObject *name, PyObject *pobj)
{
    PyObject *state, *doc;
    int ok, entered;
    state = PyObject_GetAttr(obj, s_dict);
    if (state == NULL)
        return NULL;
    ok = PyDict_CheckExact(state);
    if (ok && PyDict_GET_SIZE(state) > 0) {
        ok = names_known((PyObject *)Py_TYPE(obj), state);
        if (ok > 0)
            ok = all_safe_keys(state);
    }
    if (ok <= 0) {
        Py_DECREF(state);
        return ok < 0 ? NULL
            : w_python(w, s_write_plain, obj, name, pobj);
    }
    entered = w_enter(w, obj);
    if (entered <= 0) {
        Py_DECREF(state);
        return entered < 0 ? NULL
            : w_python(w, s_write_plain, obj, name, pobj);
    }
    doc = PyDict_New();
    if (doc == NULL || PyDict_SetItem(doc, s_py_type, name) < 0
            || w_fields(w, state, doc, pobj) < 0) {
        Py_XDECREF(doc);
        Py_DECREF(state);
        w_leave(w, obj);
        return NULL;
    }
    Py_DECREF(state);
    if (w_leave(w, obj) < 0) {
        Py_DECREF(doc);
        return NULL;
    }
    return doc;
}

/* ``_write_sub_object`` of a PersistentDict or PersistentList: attach
 * it to its owner, then write its data. */
static PyObject *
w_sub_object(Writer *w, PyObject *obj, PyObject *pobj, int is_dict)
{
    PyObject *data, *result;
    if (pobj != Py_None) {
        PyObject *jar = PyObject_GetAttr(obj, s_p_jar);
        if (jar == NULL)
            return NULL;
        Py_DECREF(jar);
        if (jar != w->jar && PyObject_SetAttr(obj, s_p_jar, w->jar) < 0)
            return NULL;
        if (PyObject_SetAttr(obj, s_p_mongo_doc_object, pobj) < 0)
            return NULL;
    }
    data = PyObject_GetAttr(obj, s_data);
    if (data == NULL)
        return NULL;
    result = is_dict ? w_dict(w, data, pobj) : w_list(w, data, pobj);
    Py_DECREF(data);
    return result;
}

/* ``self._jar.dump(obj)`` for an object of this data manager without a
 * shard key: its oid (``sharding.reference``). */
static PyObject *
w_reference(Writer *w, PyObject *obj)
{
    PyObject *jar, *oid, *key;
    if (!inlined_ok(w->jar, &INLINED_JAR))
        goto python;
    jar = PyObject_GetAttr(obj, s_p_jar);
    if (jar == NULL)
        return NULL;
    Py_DECREF(jar);
    if (jar != w->jar)
        goto python;
    oid = PyObject_GetAttr(obj, s_p_oid);
    if (oid == NULL)
        return NULL;
    if (oid == Py_None) {
        Py_DECREF(oid);
        goto python;
    }
    key = PyDict_GetItemWithError(SHARD_KEYS, (PyObject *)Py_TYPE(obj));
    if (key == Py_None)
        return oid;
    Py_DECREF(oid);
    if (key == NULL && PyErr_Occurred())
        return NULL;
python:
    if (w_store(w) < 0)
        return NULL;
    {
        PyObject *result = PyObject_CallMethodOneArg(w->jar, s_dump, obj);
        Caught c = {NULL, NULL, NULL};
        if (result == NULL)
            catch_error(&c);
        if (w_load(w) < 0) {
            Py_XDECREF(result);
            drop_caught(&c);
            return NULL;
        }
        if (result == NULL)
            rethrow(&c);
        return result;
    }
}

static PyTypeObject *DATE_TYPE, *DATETIME_TYPE;

/* ``_write``: the stored form of ``value``, part of ``pobj``'s
 * document (no custom serializers). */
static PyObject *
w_value(Writer *w, PyObject *value, PyObject *pobj)
{
    PyTypeObject *kind = Py_TYPE(value);
    PyObject *name;
    int found;
    found = is_stored_as_is(value);
    if (found != 0)
        return found < 0 ? NULL : Py_NewRef(value);
    if (kind == &PyLong_Type)       /* beyond 64 bits */
        return w_python(w, s_write, value, NULL, pobj);
    if (kind == DATETIME_TYPE) {
        if (PyDateTime_DATE_GET_TZINFO(value) == Py_None
                && PyDateTime_DATE_GET_MICROSECOND(value) % 1000 == 0)
            return Py_NewRef(value);
        return w_python(w, s_write, value, NULL, pobj);
    }
    if (kind == DATE_TYPE) {
        /* A leaf value: a level of the document, nothing to enter. */
        PyObject *writer, *doc, *iso;
        char text[16];
        int year;
        writer = PyDict_GetItemWithError(WRITERS, (PyObject *)kind);
        if (writer != WRITE_DATE) {
            if (writer == NULL && PyErr_Occurred())
                return NULL;
            return w_python(w, s_write, value, NULL, pobj);
        }
        if (PySet_GET_SIZE(w->stack) >= w->deepest) {
            /* ``self._enter(obj, stack); stack.discard(id(obj))`` */
            long before = w->deepest;
            int entered = w_enter(w, value);
            if (entered < 0)
                return NULL;
            if (entered == 0) {
                w->deepest = before;
                return w_python(w, s_write, value, NULL, pobj);
            }
            if (w_leave(w, value) < 0)
                return NULL;
        }
        /* ``value.isoformat()`` of a date: YYYY-MM-DD */
        year = PyDateTime_GET_YEAR(value);
        snprintf(text, sizeof(text), "%04d-%02d-%02d", year,
                 PyDateTime_GET_MONTH(value), PyDateTime_GET_DAY(value));
        iso = PyUnicode_FromString(text);
        if (iso == NULL)
            return NULL;
        doc = PyDict_New();
        if (doc == NULL || PyDict_SetItem(doc, s_py_type, s_datetime_date) < 0
                || PyDict_SetItem(doc, s_iso, iso) < 0) {
            Py_XDECREF(doc);
            Py_DECREF(iso);
            return NULL;
        }
        Py_DECREF(iso);
        return doc;
    }
    name = PyDict_GetItemWithError(PLAIN_CLASSES, (PyObject *)kind);
    if (name != NULL && name != Py_None) {
        PyObject *result;
        w->untracked = 1;
        Py_INCREF(name);
        result = w_plain(w, value, name, pobj);
        Py_DECREF(name);
        return result;
    }
    if (name == NULL && PyErr_Occurred())
        return NULL;
    if (kind == &PyDict_Type) {
        w->untracked = 1;
        return w_dict(w, value, pobj);
    }
    if (kind == &PyList_Type) {
        w->untracked = 1;
        return w_list(w, value, pobj);
    }
    if (kind == &PyTuple_Type)
        return w_list(w, value, pobj);
    if ((PyObject *)kind == PERSISTENT_DICT)
        return w_sub_object(w, value, pobj, 1);
    if ((PyObject *)kind == PERSISTENT_LIST)
        return w_sub_object(w, value, pobj, 0);
    if (PyType_IsSubtype(kind, (PyTypeObject *)PERSISTENT_TYPE)) {
        PyObject *flag;
        int sub;
        if (LOOKUP_ATTR((PyObject *)kind, s_sub_object, &flag) < 0)
            return NULL;
        sub = flag == NULL ? 0 : PyObject_IsTrue(flag);
        Py_XDECREF(flag);
        if (sub < 0)
            return NULL;
        if (!sub)
            return w_reference(w, value);
    }
    return w_python(w, s_write, value, NULL, pobj);
}

/* The error ``get_document``'s loop raises for an error writing the
 * field ``name`` of ``obj``. */
static void
w_field_error(Writer *w, PyObject *obj, PyObject *name)
{
    Caught c;
    PyObject *cls_name = NULL;
    int is_unstorable, is_circular;
    catch_error(&c);
    is_unstorable = caught_is(&c, UNSTORABLE);
    is_circular = is_unstorable ? 0 : caught_is(&c, CIRCULAR_ERROR);
    if (is_unstorable < 0 || is_circular < 0) {
        drop_caught(&c);
        return;
    }
    if (!is_unstorable && !is_circular) {
        rethrow(&c);
        return;
    }
    {
        PyObject *cls = PyObject_GetAttr(obj, s_class);
        if (cls == NULL)
            goto failed;
        cls_name = PyObject_GetAttr(cls, s_name);
        Py_DECREF(cls);
        if (cls_name == NULL)
            goto failed;
    }
    if (is_unstorable) {
        /* raise self._located(failure, cls_name, name) */
        PyObject *error = PyObject_CallMethodObjArgs(
            w->writer, s_located, c.value, cls_name, name, NULL);
        if (error == NULL)
            goto failed;
        raise_with_context(error, c.value, 0);
        Py_DECREF(error);
        drop_caught(&c);
        Py_DECREF(cls_name);
        return;
    }
    else {
        /* error.path = '.'.join([cls_name, name] + (error.path or [])) */
        PyObject *path = PyObject_GetAttr(c.value, s_path);
        PyObject *parts, *joined, *dot;
        int truth;
        if (path == NULL)
            goto failed;
        parts = PyList_New(2);
        if (parts == NULL) {
            Py_DECREF(path);
            goto failed;
        }
        Py_INCREF(cls_name);
        PyList_SET_ITEM(parts, 0, cls_name);
        Py_INCREF(name);
        PyList_SET_ITEM(parts, 1, name);
        truth = PyObject_IsTrue(path);
        if (truth > 0) {
            PyObject *all = PyNumber_Add(parts, path);
            Py_DECREF(parts);
            parts = all;
        }
        Py_DECREF(path);
        if (truth < 0 || parts == NULL) {
            Py_XDECREF(parts);
            goto failed;
        }
        dot = PyUnicode_FromString(".");
        joined = dot == NULL ? NULL : PyUnicode_Join(dot, parts);
        Py_XDECREF(dot);
        Py_DECREF(parts);
        if (joined == NULL
                || PyObject_SetAttr(c.value, s_path, joined) < 0) {
            Py_XDECREF(joined);
            goto failed;
        }
        Py_DECREF(joined);
        Py_DECREF(cls_name);
        rethrow(&c);
        return;
    }
failed:
    Py_XDECREF(cls_name);
    {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (value != NULL && c.value != NULL) {
            PyException_SetContext(value, c.value);
            c.value = NULL;
        }
        PyErr_Restore(type, value, tb);
        drop_caught(&c);
    }
}

/* ``ObjectWriter.get_document(obj)`` without ``store_type`` and without
 * custom serializers (the caller checks).  Returns NOT_HANDLED, having
 * done nothing, for what the Python code must write (a broken
 * placeholder, a class with its own ``__getstate__``, a setting of the
 * class set on the instance, a state that is not a dict). */
static PyObject *
get_document(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *writer, *obj, *state = NULL, *doc = NULL, *oid, *id;
    PyObject *instance_dict;
    PyTypeObject *kind;
    Writer w;
    Py_ssize_t pos = 0, size;
    PyObject *name, *value;
    int found;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "get_document(writer, obj)");
        return NULL;
    }
    writer = args[0];
    obj = args[1];
    kind = Py_TYPE(obj);
    if (!inlined_ok(writer, &INLINED_WRITER))
        return Py_NewRef(NOT_HANDLED);
    found = PyObject_IsInstance(obj, PERSISTENT_BROKEN);
    if (found != 0)
        return found < 0 ? NULL : Py_NewRef(NOT_HANDLED);
    if (_PyType_Lookup(kind, s_getstate) != PERSISTENT_GETSTATE)
        return Py_NewRef(NOT_HANDLED);
    instance_dict = PyObject_GetAttr(obj, s_dict);
    if (instance_dict == NULL)
        return NULL;
    if (!PyDict_Check(instance_dict)) {
        Py_DECREF(instance_dict);
        return Py_NewRef(NOT_HANDLED);
    }
    {
        /* CLASS_SETTINGS.isdisjoint(obj.__dict__) */
        PyObject *iter = PyObject_GetIter(CLASS_SETTINGS), *setting;
        int disjoint = 1;
        if (iter == NULL) {
            Py_DECREF(instance_dict);
            return NULL;
        }
        while ((setting = PyIter_Next(iter)) != NULL) {
            int in = PyDict_Contains(instance_dict, setting);
            Py_DECREF(setting);
            if (in != 0) {
                disjoint = in < 0 ? -1 : 0;
                break;
            }
        }
        Py_DECREF(iter);
        Py_DECREF(instance_dict);
        if (disjoint < 0 || PyErr_Occurred())
            return NULL;
        if (!disjoint)
            return Py_NewRef(NOT_HANDLED);
    }
    state = PyObject_CallOneArg(PERSISTENT_GETSTATE, obj);
    if (state == NULL)
        return NULL;
    if (!PyDict_CheckExact(state)) {
        /* Only a dict of attributes can be stored: Python says so (the
         * ``__getstate__`` called is persistent's, which changes nothing). */
        Py_DECREF(state);
        return Py_NewRef(NOT_HANDLED);
    }
    oid = PyObject_GetAttr(obj, s_p_oid);
    if (oid == NULL) {
        Py_DECREF(state);
        return NULL;
    }
    if (oid_slots && Py_IS_TYPE(oid, (PyTypeObject *)OID_TYPE)) {
        id = slot_get(oid, off_id);
        Py_XINCREF(id);
        if (id == NULL)
            PyErr_SetString(PyExc_AttributeError, "_DBRef__id");
    }
    else
        id = PyObject_GetAttr(oid, s_id);
    Py_DECREF(oid);
    if (id == NULL) {
        Py_DECREF(state);
        return NULL;
    }
    doc = PyDict_New();
    if (doc == NULL || PyDict_SetItem(doc, s_id, id) < 0) {
        Py_DECREF(id);
        goto failed_early;
    }
    Py_DECREF(id);

    w.writer = writer;
    w.jar = PyObject_GetAttr(writer, s_jar);
    if (w.jar == NULL)
        goto failed_early;
    w.stack = PySet_New(NULL);
    w.custom = PyList_New(0);
    w.deepest = 1;
    w.untracked = 0;
    if (w.stack == NULL || w.custom == NULL)
        goto failed;
    {
        PyObject *id_obj = PyLong_FromVoidPtr(obj);
        if (id_obj == NULL || PySet_Add(w.stack, id_obj) < 0) {
            Py_XDECREF(id_obj);
            goto failed;
        }
        Py_DECREF(id_obj);
    }
    size = PyDict_GET_SIZE(state);
    while (PyDict_Next(state, &pos, &name, &value)) {
        PyObject *stored;
        int safe = 0, meta;
        Py_INCREF(name);
        Py_INCREF(value);
        if (PyUnicode_CheckExact(name)) {
            safe = PySet_Contains(SAFE_KEYS, name);
            if (safe < 0)
                goto failed_field;
        }
        if (!safe) {
            PyObject *answer = PyObject_CallOneArg(IS_KNOWN_SAFE_KEY, name);
            if (answer == NULL)
                goto failed_field;
            safe = PyObject_IsTrue(answer);
            Py_DECREF(answer);
            if (safe < 0)
                goto failed_field;
        }
        meta = safe ? PySet_Contains(META_FIELDS, name) : 0;
        if (meta < 0)
            goto failed_field;
        if (!safe || meta) {
            PyObject *error = PyObject_CallFunctionObjArgs(
                ATTRIBUTE_NAME_ERROR, obj, name, NULL);
            if (error != NULL) {
                PyErr_SetObject((PyObject *)Py_TYPE(error), error);
                Py_DECREF(error);
            }
            goto failed_field;
        }
        found = is_stored_as_is(value);
        if (found < 0)
            goto failed_field;
        if (found)
            stored = Py_NewRef(value);
        else {
            stored = w_value(&w, value, obj);
            if (stored == NULL) {
                w_field_error(&w, obj, name);
                goto failed_field;
            }
        }
        if (PyDict_SetItem(doc, name, stored) < 0) {
            Py_DECREF(stored);
            goto failed_field;
        }
        Py_DECREF(stored);
        Py_DECREF(name);
        Py_DECREF(value);
        if (PyDict_GET_SIZE(state) != size) {
            PyErr_SetString(PyExc_RuntimeError,
                            "dictionary changed size during iteration");
            goto failed;
        }
        continue;
failed_field:
        Py_DECREF(name);
        Py_DECREF(value);
        goto failed;
    }
    found = names_known((PyObject *)kind, state);
    if (found < 0)
        goto failed;
    if (!found) {
        /* A name reading would refuse: Python raises if there is one
         * (and remembers the others as fine). */
        PyObject *r;
        if (w_store(&w) < 0)
            goto failed;
        r = PyObject_CallFunctionObjArgs(CHECK_WRITABLE, state, obj, NULL);
        if (r == NULL)
            goto failed;
        Py_DECREF(r);
    }
    if (w_store(&w) < 0)
        goto failed;
    Py_DECREF(w.jar);
    Py_DECREF(w.stack);
    Py_DECREF(w.custom);
    Py_DECREF(state);
    return doc;
failed:
    {
        Caught c;
        catch_error(&c);
        if (w_store(&w) < 0)
            PyErr_Clear();
        rethrow(&c);
    }
    Py_XDECREF(w.jar);
    Py_XDECREF(w.stack);
    Py_XDECREF(w.custom);
failed_early:
    Py_XDECREF(doc);
    Py_DECREF(state);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Calling Python from an error path: the helper runs as if called in   */
/* the ``except`` block that caught ``handled`` (an exception it raises */
/* gets it as its __context__, as in the Python code).                 */

static PyObject *
call_handling(PyObject *handled, PyObject *func, PyObject *const *args,
              Py_ssize_t nargs)
{
    PyObject *type, *value, *tb, *result;
    PyErr_GetExcInfo(&type, &value, &tb);
    Py_INCREF((PyObject *)Py_TYPE(handled));
    Py_INCREF(handled);
    PyErr_SetExcInfo((PyObject *)Py_TYPE(handled), handled,
                     PyException_GetTraceback(handled));
    result = PyObject_Vectorcall(func, args, nargs, NULL);
    PyErr_SetExcInfo(type, value, tb);
    return result;
}

/* ------------------------------------------------------------------ */
/* The reader: mirrors serialize.ObjectReader.get_state, _read_fields,  */
/* _read_value and _read_typed_value without custom serializers, and    */
/* the data manager's load for the references read.                     */

static PyObject *REGISTRY_NAME;     /* 'REGISTRY' */
static PyObject *s_value_kind, *s_persistent_kind, *s_objects, *s_used,
    *s_held, *s_gone, *s_cache, *s_validator, *s_validated, *s_batches,
    *s_collecting, *s_closed, *s_thread, *s_check_thread, *s_use,
    *s_load_new, *s_default_database, *s_p_status, *s_p_state, *s_ghost,
    *s_found, *s_reader, *s_setstate, *s_docs;
static PyObject *REFUSE_ID;         /* references.refuse_id */
static PyObject *SERIALIZE_DICT;    /* vars(serialize): SERIALIZERS */

static PyObject *read_value(PyObject *reader, PyObject *jar,
                            PyObject *state, PyObject *obj);

/* ``type(value) in _CONVERTED_STATES`` */
static int
is_converted(PyObject *value)
{
    PyTypeObject *kind = Py_TYPE(value);
    return kind == &PyDict_Type || kind == &PyList_Type
        || (PyObject *)kind == DBREF_TYPE || (PyObject *)kind == OID_TYPE;
}

/* ``raise _locate(error, container, items)`` for the error being
 * raised (a StoredDataError; others pass unchanged).  ``items`` is
 * ``container.items()`` or ``enumerate(container)``. */
static void
locate_error(PyObject *container, int is_dict)
{
    Caught c;
    PyObject *items, *located;
    int is_stored;
    catch_error(&c);
    is_stored = caught_is(&c, STORED_DATA_ERROR);
    if (is_stored <= 0) {
        if (is_stored < 0)
            drop_caught(&c);
        else
            rethrow(&c);
        return;
    }
    if (is_dict)
        items = PyObject_CallMethodNoArgs(container, s_items);
    else
        items = PyObject_CallOneArg((PyObject *)&PyEnum_Type, container);
    if (items == NULL) {
        drop_caught(&c);
        return;
    }
    {
        PyObject *args[3] = {c.value, container, items};
        located = call_handling(c.value, LOCATE, args, 3);
    }
    Py_DECREF(items);
    if (located == NULL) {
        drop_caught(&c);
        return;
    }
    if (located == c.value) {
        Py_DECREF(located);
        rethrow(&c);
        return;
    }
    raise_with_context(located, c.value, 0);
    Py_DECREF(located);
    drop_caught(&c);
}

/* ``error.stored_value = state`` for a StoredDataError being raised. */
static void
mark_stored_value(PyObject *state)
{
    Caught c;
    int is_stored;
    catch_error(&c);
    is_stored = caught_is(&c, STORED_DATA_ERROR);
    if (is_stored > 0) {
        if (PyObject_SetAttr(c.value, s_stored_value, state) < 0) {
            drop_caught(&c);
            return;
        }
    }
    else if (is_stored < 0) {
        drop_caught(&c);
        return;
    }
    rethrow(&c);
}

/* The fields of the stored dict ``stored`` but ``skip`` (a set, or NULL),
 * each read (``_read_fields``'s comprehension). */
static PyObject *
read_dict_fields(PyObject *reader, PyObject *jar, PyObject *stored,
                 PyObject *obj, PyObject *skip, PyObject *leave_out)
{
    PyObject *result = PyDict_New();
    Py_ssize_t pos = 0, size = PyDict_GET_SIZE(stored);
    PyObject *key, *value;
    if (result == NULL)
        return NULL;
    while (PyDict_Next(stored, &pos, &key, &value)) {
        PyObject *read;
        Py_INCREF(key);
        Py_INCREF(value);
        if (skip != NULL) {
            int in = PySet_Contains(skip, key);
            if (in != 0) {
                Py_DECREF(key);
                Py_DECREF(value);
                if (in < 0)
                    goto failed;
                continue;
            }
        }
        if (leave_out != NULL) {
            int same = PyObject_RichCompareBool(key, leave_out, Py_NE);
            if (same <= 0) {
                Py_DECREF(key);
                Py_DECREF(value);
                if (same < 0)
                    goto failed;
                continue;
            }
        }
        if (is_converted(value)) {
            read = read_value(reader, jar, value, obj);
            if (read == NULL) {
                Py_DECREF(key);
                Py_DECREF(value);
                locate_error(stored, 1);
                goto failed;
            }
        }
        else
            read = Py_NewRef(value);
        if (PyDict_SetItem(result, key, read) < 0) {
            Py_DECREF(read);
            Py_DECREF(key);
            Py_DECREF(value);
            goto failed;
        }
        Py_DECREF(read);
        Py_DECREF(key);
        Py_DECREF(value);
        if (PyDict_GET_SIZE(stored) != size) {
            PyErr_SetString(PyExc_RuntimeError,
                            "dictionary changed size during iteration");
            goto failed;
        }
    }
    return result;
failed:
    Py_DECREF(result);
    return NULL;
}

/* The items of the stored array ``state``, each read. */
static PyObject *
read_list_items(PyObject *reader, PyObject *jar, PyObject *state,
                PyObject *obj)
{
    PyObject *result = PyList_New(0);
    Py_ssize_t index;
    if (result == NULL)
        return NULL;
    for (index = 0; index < PyList_GET_SIZE(state); index++) {
        PyObject *item = PyList_GET_ITEM(state, index);
        PyObject *read;
        Py_INCREF(item);
        if (is_converted(item)) {
            read = read_value(reader, jar, item, obj);
            Py_DECREF(item);
            if (read == NULL) {
                locate_error(state, 0);
                Py_DECREF(result);
                return NULL;
            }
        }
        else
            read = item;
        if (PyList_Append(result, read) < 0) {
            Py_DECREF(read);
            Py_DECREF(result);
            return NULL;
        }
        Py_DECREF(read);
    }
    return result;
}

/* ``registry.resolve(name, kind)``: the registry's memo when it has the
 * name under the current generation, else the registry's own method. */
static PyObject *
resolve(PyObject *registry, PyObject *name, PyObject *kind)
{
    if (PyUnicode_CheckExact(name)
            && Py_IS_TYPE(registry, (PyTypeObject *)TYPE_REGISTRY)) {
        PyObject *resolved = PyObject_GetAttr(registry, s_resolved);
        if (resolved == NULL)
            return NULL;
        if (PyDict_CheckExact(resolved)) {
            PyObject *key = PyTuple_Pack(2, name, kind), *hit;
            if (key == NULL) {
                Py_DECREF(resolved);
                return NULL;
            }
            hit = PyDict_GetItemWithError(resolved, key);
            Py_DECREF(key);
            if (hit != NULL && PyTuple_CheckExact(hit)
                    && PyTuple_GET_SIZE(hit) == 2) {
                PyObject *generation = PyDict_GetItemWithError(
                    METADATA_DICT, s_generation);
                if (generation != NULL) {
                    int same = PyObject_RichCompareBool(
                        PyTuple_GET_ITEM(hit, 0), generation, Py_EQ);
                    if (same > 0) {
                        PyObject *found = Py_NewRef(PyTuple_GET_ITEM(hit, 1));
                        Py_DECREF(resolved);
                        return found;
                    }
                    if (same < 0) {
                        Py_DECREF(resolved);
                        return NULL;
                    }
                }
            }
            if (PyErr_Occurred()) {
                Py_DECREF(resolved);
                return NULL;
            }
        }
        Py_DECREF(resolved);
    }
    return PyObject_CallMethodObjArgs(registry, s_resolve, name, kind, NULL);
}

/* ``self.registry``: the data manager's ``type_registry``, else the
 * process-wide one. */
static PyObject *
reader_registry(PyObject *jar)
{
    PyObject *registry;
    if (LOOKUP_ATTR(jar, s_type_registry, &registry) < 0)
        return NULL;
    if (registry != NULL && registry != Py_None)
        return registry;
    Py_XDECREF(registry);
    registry = PyDict_GetItemWithError(METADATA_DICT, REGISTRY_NAME);
    if (registry == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_AttributeError, "REGISTRY");
        return NULL;
    }
    return Py_NewRef(registry);
}

/* ``_check_names(names, cls)``: the memo when it covers them, else the
 * Python function (which raises for a refused name). */
static int
check_names(PyObject *names, PyObject *cls)
{
    PyObject *r;
    int known = names_known(cls, names);
    if (known != 0)
        return known < 0 ? -1 : 0;
    r = PyObject_CallFunctionObjArgs(CHECK_NAMES, names, cls, NULL);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* ``cls.__new__(cls)`` */
static PyObject *
new_instance(PyObject *cls)
{
    PyObject *new = PyObject_GetAttr(cls, s_new), *result;
    if (new == NULL)
        return NULL;
    result = PyObject_CallOneArg(new, cls);
    Py_DECREF(new);
    return result;
}

/* ``READERS['datetime.date'](state, None)`` when that is
 * ``serializers.read_date`` and the value has no ``ordinal``: a date
 * from its ISO text.  NOT_PLAIN where ``_read_typed_value`` returns it
 * (the reader raised). */
static PyObject *
read_date(PyObject *state)
{
    PyObject *iso, *date;
    int has = PyDict_Contains(state, s_ordinal);
    if (has != 0) {
        if (has < 0)
            return NULL;
        return PyObject_CallFunctionObjArgs(READ_DATE, state, Py_None, NULL);
    }
    iso = PyDict_GetItemWithError(state, s_iso);
    if (iso == NULL || !PyUnicode_CheckExact(iso)) {
        if (PyErr_Occurred())
            return NULL;
        return Py_NewRef(NOT_PLAIN);   /* KeyError, or TypeError */
    }
    date = PyObject_CallMethodOneArg((PyObject *)DATE_TYPE, s_fromisoformat,
                                     iso);
    return date;
}

/* ``_read_typed_value(state, obj)``. */
static PyObject *
read_typed_value(PyObject *reader, PyObject *jar, PyObject *state,
                 PyObject *obj)
{
    PyObject *name, *cls, *data = NULL, *value = NULL, *registry;
    int in;
    name = PyDict_GetItemWithError(state, s_py_type);
    if (name == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(NOT_PLAIN);
    if (!PyUnicode_CheckExact(name))
        return Py_NewRef(NOT_PLAIN);
    Py_INCREF(name);
    in = PySet_Contains(STANDALONE_READERS, name);
    if (in != 0) {
        PyObject *read, *result;
        if (in < 0)
            goto failed;
        read = PyDict_GetItemWithError(READERS, name);
        if (read == NULL) {
            /* READERS[name] raising KeyError (or another Exception):
             * ``except Exception: return _NOT_PLAIN``. */
            if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_Exception))
                goto failed;
            PyErr_Clear();
            Py_DECREF(name);
            return Py_NewRef(NOT_PLAIN);
        }
        Py_INCREF(read);
        if (read == READ_DATE)
            result = read_date(state);
        else
            result = PyObject_CallFunctionObjArgs(read, state, Py_None, NULL);
        Py_DECREF(read);
        if (result == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception))
                goto failed;
            PyErr_Clear();
            result = Py_NewRef(NOT_PLAIN);
        }
        Py_DECREF(name);
        return result;
    }
    in = PyDict_Contains(READERS, name);
    if (in == 0)
        in = PyObject_RichCompareBool(name, s_builtins_dict, Py_EQ);
    if (in == 0)
        in = PyDict_Contains(state, s_py_state);
    if (in == 0)
        in = PyDict_Contains(state, s_py_new_args);
    if (in == 0)
        in = PyDict_Contains(state, s_py_listitems);
    if (in == 0)
        in = PyDict_Contains(state, s_py_dictitems);
    if (in != 0) {
        Py_DECREF(name);
        return in < 0 ? NULL : Py_NewRef(NOT_PLAIN);
    }
    registry = reader_registry(jar);
    if (registry == NULL)
        cls = NULL;
    else {
        cls = resolve(registry, name, s_value_kind);
        Py_DECREF(registry);
    }
    if (cls == NULL) {
        if (PyErr_ExceptionMatches(STORED_DATA_ERROR)) {
            PyErr_Clear();
            Py_DECREF(name);
            return Py_NewRef(NOT_PLAIN);
        }
        goto failed;
    }
    data = read_dict_fields(reader, jar, state, obj, NULL, s_py_type);
    if (data == NULL) {
        Py_DECREF(cls);
        goto failed;
    }
    value = new_instance(cls);
    if (value == NULL)
        goto malformed;
    if (PyDict_GET_SIZE(data) > 0) {
        PyObject *setstate;
        if (check_names(data, cls) < 0)
            goto malformed;
        setstate = PyDict_GetItemWithError(SETSTATES, cls);
        if (setstate != NULL)
            Py_INCREF(setstate);
        else {
            if (PyErr_Occurred()) {
                if (!PyErr_ExceptionMatches(PyExc_TypeError))
                    goto malformed;
                PyErr_Clear();
            }
            setstate = PyObject_CallOneArg(SETSTATE_OF, cls);
            if (setstate == NULL)
                goto malformed;
        }
        if (setstate == Py_None) {
            PyObject *instance_dict = PyObject_GetAttr(value, s_dict);
            int r;
            Py_DECREF(setstate);
            if (instance_dict == NULL)
                goto malformed;
            r = PyDict_Check(instance_dict)
                ? PyDict_Update(instance_dict, data) : -2;
            if (r == -2) {
                PyObject *u = PyObject_CallMethodOneArg(instance_dict,
                                                        s_update, data);
                r = u == NULL ? -1 : 0;
                Py_XDECREF(u);
            }
            Py_DECREF(instance_dict);
            if (r < 0)
                goto malformed;
        }
        else {
            PyObject *r = PyObject_CallFunctionObjArgs(setstate, value, data,
                                                       NULL);
            Py_DECREF(setstate);
            if (r == NULL)
                goto malformed;
            Py_DECREF(r);
        }
    }
    Py_DECREF(cls);
    Py_DECREF(data);
    Py_DECREF(name);
    return value;
malformed:
    /* except MongoPersistError: raise
     * except MALFORMED as error:
     *     raise _malformed_value(PY_TYPE, name, error) from error */
    Py_DECREF(cls);
    Py_XDECREF(data);
    Py_XDECREF(value);
    {
        Caught c;
        int kind;
        catch_error(&c);
        kind = caught_is(&c, MONGOPERSIST_ERROR);
        if (kind == 0)
            kind = caught_is(&c, MALFORMED) ? 2 : 0;
        if (kind == 2) {
            PyObject *args[3] = {s_py_type, name, c.value};
            PyObject *error = call_handling(c.value, MALFORMED_VALUE, args, 3);
            if (error != NULL) {
                raise_with_context(error, c.value, 1);
                Py_DECREF(error);
                drop_caught(&c);
            }
            else
                drop_caught(&c);
        }
        else if (kind < 0)
            drop_caught(&c);
        else
            rethrow(&c);
    }
failed:
    Py_DECREF(name);
    return NULL;
}

static PyObject *load(PyObject *jar, PyObject *dbref);

/* ``_read_value(state, obj)`` */
static PyObject *
read_value(PyObject *reader, PyObject *jar, PyObject *state, PyObject *obj)
{
    PyObject *data, *value, *cls;
    if (PyDict_CheckExact(state)) {
        int in = PyDict_Contains(state, s_py_type);
        if (in < 0)
            goto failed;
        if (in) {
            value = read_typed_value(reader, jar, state, obj);
            if (value == NULL)
                goto failed;
            if (value != NOT_PLAIN)
                return value;
            Py_DECREF(value);
            value = PyObject_CallMethodObjArgs(reader, s_read_dict, state,
                                               obj, NULL);
            if (value == NULL)
                goto failed;
            return value;
        }
        in = PyDict_Contains(state, s_py_persistent_type);
        if (in == 0)
            in = PyDict_Contains(state, s_py_factory);
        if (in == 0)
            in = PyDict_Contains(state, LEGACY_DICT_DATA);
        if (in == 0)
            in = PyDict_Contains(state, LEGACY_CONSTANT);
        if (in != 0) {
            if (in < 0)
                goto failed;
            value = PyObject_CallMethodObjArgs(reader, s_read_dict, state,
                                               obj, NULL);
            if (value == NULL)
                goto failed;
            return value;
        }
        data = read_dict_fields(reader, jar, state, obj, NULL, NULL);
        if (data == NULL)
            goto failed;
        cls = PERSISTENT_DICT;
    }
    else if (PyList_CheckExact(state)) {
        data = read_list_items(reader, jar, state, obj);
        if (data == NULL)
            goto failed;
        cls = PERSISTENT_LIST;
    }
    else {
        value = load(jar, state);
        if (value == NULL)
            goto failed;
        return value;
    }
    value = ((PyTypeObject *)cls)->tp_new((PyTypeObject *)cls, EMPTY_TUPLE,
                                          NULL);
    if (value == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    if (PyObject_SetAttr(value, s_data, data) < 0) {
        Py_DECREF(data);
        Py_DECREF(value);
        return NULL;
    }
    Py_DECREF(data);
    if (obj != Py_None) {
        if (PyObject_SetAttr(value, s_p_jar, jar) < 0
                || PyObject_SetAttr(value, s_p_mongo_doc_object, obj) < 0) {
            Py_DECREF(value);
            return NULL;
        }
    }
    return value;
failed:
    mark_stored_value(state);
    return NULL;
}

/* ``ObjectReader.get_state(doc, obj)`` for an object that is not a
 * broken placeholder (NOT_HANDLED then). */
static PyObject *
get_state_impl(PyObject *reader, PyObject *jar, PyObject *doc, PyObject *obj)
{
    PyObject *state, *cls;
    int broken = PyObject_IsInstance(obj, PERSISTENT_BROKEN);
    if (broken != 0)
        return broken < 0 ? NULL : Py_NewRef(NOT_HANDLED);
    state = read_dict_fields(reader, jar, doc, obj, META_FIELDS, NULL);
    if (state == NULL)
        return NULL;
    cls = obj == Py_None ? PERSISTENT_TYPE : (PyObject *)Py_TYPE(obj);
    if (check_names(state, cls) < 0) {
        Py_DECREF(state);
        return NULL;
    }
    return state;
}

/* Whether the reader reads without custom serializers with the
 * library's own methods: then the compiled code reads for it. */
static int
reader_ok(PyObject *reader, PyObject **jar)
{
    PyObject *serializers;
    int empty;
    if (!inlined_ok(reader, &INLINED_READER))
        return 0;
    serializers = PyObject_GetAttr(reader, s_serializers);
    if (serializers == NULL)
        return -1;
    empty = PyList_CheckExact(serializers) && PyList_GET_SIZE(serializers) == 0;
    Py_DECREF(serializers);
    if (!empty)
        return 0;
    /* ... nor process-wide ones (serialize.SERIALIZERS) */
    serializers = PyDict_GetItemString(SERIALIZE_DICT, "SERIALIZERS");
    if (serializers == NULL || !PyList_CheckExact(serializers)
            || PyList_GET_SIZE(serializers) != 0)
        return 0;
    *jar = PyObject_GetAttr(reader, s_jar);
    return *jar == NULL ? -1 : 1;
}

/* ------------------------------------------------------------------ */
/* The data manager's per-object bookkeeping of loading: mirrors        */
/* MongoDataManager.load, _object_from_document, _activate, setstate    */
/* and what they use of ObjectCache, CacheValidator and Batches.         */

static PyObject *SETSTATE_PERSISTENT; /* persistent.Persistent.__setstate__ */
static PyObject *STORED_SERIAL;       /* conflict.stored_serial */
static PyObject *INT64_TYPE;          /* bson.int64.Int64 */
static PyObject *RAISE_LOCATED;       /* datamanager._raise_located */
static PyObject *SHARDING_REMEMBER;   /* sharding.remember */
static PyObject *GET_DOTTED_NAME;     /* metadata.get_dotted_name */
static PyObject *s_documents_read, *s_py_serial, *s_invalidated,
    *s_activated, *s_p_serial, *s_class_of_document, *s_prefetched,
    *s_p_activate, *s_types, *s_types_cache, *s_registry_attr,
    *s_use_document, *s_needs_validation, *s_start, *s_stop,
    *s_group_of, *s_document, *s_activate, *s_new_ghost, *s_setstate_name,
    *s_get_state, *s_set_ghost_state, *s_fresh, *s_used_name, *s_get;

/* The database and collection of an oid (``ref.database``,
 * ``ref.collection``), as new references. */
static int
oid_place(PyObject *ref, PyObject **database, PyObject **collection)
{
    if (oid_slots && (Py_IS_TYPE(ref, (PyTypeObject *)OID_TYPE)
                      || Py_IS_TYPE(ref, (PyTypeObject *)DBREF_TYPE))) {
        *database = slot_get(ref, off_database);
        *collection = slot_get(ref, off_collection);
        if (*database != NULL && *collection != NULL) {
            Py_INCREF(*database);
            Py_INCREF(*collection);
            return 0;
        }
    }
    *database = PyObject_GetAttr(ref, s_dbref_database);
    if (*database == NULL)
        return -1;
    *collection = PyObject_GetAttr(ref, s_dbref_collection);
    if (*collection == NULL) {
        Py_CLEAR(*database);
        return -1;
    }
    return 0;
}

/* ``(ref.database, ref.collection)`` */
static PyObject *
oid_key(PyObject *ref)
{
    PyObject *database, *collection, *key;
    if (oid_place(ref, &database, &collection) < 0)
        return NULL;
    key = PyTuple_Pack(2, database, collection);
    Py_DECREF(database);
    Py_DECREF(collection);
    return key;
}

/* ``jar._check_thread()``: nothing to do unless closed or used from
 * another thread (then the method raises). */
static int
check_thread(PyObject *jar)
{
    PyObject *closed, *thread;
    int truth;
    closed = PyObject_GetAttr(jar, s_closed);
    if (closed == NULL)
        return -1;
    truth = PyObject_IsTrue(closed);
    Py_DECREF(closed);
    if (truth < 0)
        return -1;
    if (!truth) {
        thread = PyObject_GetAttr(jar, s_thread);
        if (thread == NULL)
            return -1;
        if (thread == Py_None) {
            Py_DECREF(thread);
            return 0;
        }
        {
            unsigned long ident = PyLong_AsUnsignedLong(thread);
            Py_DECREF(thread);
            if (ident == (unsigned long)-1 && PyErr_Occurred())
                PyErr_Clear();
            else if (ident == PyThread_get_thread_ident())
                return 0;
        }
    }
    {
        PyObject *r = PyObject_CallMethodNoArgs(jar, s_check_thread);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    return 0;
}

/* ``jar._use(ref)``: check the thread; validate the collection of ref
 * at its first use in the transaction (``CacheValidator.use``). */
static int
use(PyObject *jar, PyObject *ref)
{
    PyObject *validator, *validated, *key;
    int in;
    if (check_thread(jar) < 0)
        return -1;
    if (ref == Py_None)
        return 0;
    validator = PyObject_GetAttr(jar, s_validator);
    if (validator == NULL)
        return -1;
    if (inlined_ok(validator, &INLINED_VALIDATOR)) {
        validated = PyObject_GetAttr(validator, s_validated);
        if (validated == NULL)
            goto failed;
        key = oid_key(ref);
        if (key == NULL) {
            Py_DECREF(validated);
            goto failed;
        }
        in = PyAnySet_Check(validated) ? PySet_Contains(validated, key) : 0;
        Py_DECREF(key);
        Py_DECREF(validated);
        if (in != 0) {
            Py_DECREF(validator);
            return in < 0 ? -1 : 0;
        }
    }
    {
        PyObject *r = PyObject_CallMethodOneArg(validator, s_use, ref);
        Py_DECREF(validator);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        return 0;
    }
failed:
    Py_DECREF(validator);
    return -1;
}

/* ``cache.get(ref)``: the object (a new reference), None, or NULL with
 * an exception. */
static PyObject *
cache_get(PyObject *cache, PyObject *ref)
{
    PyObject *objects, *alive, *obj;
    if (!inlined_ok(cache, &INLINED_CACHE))
        return PyObject_CallMethodOneArg(cache, s_get, ref);
    objects = PyObject_GetAttr(cache, s_objects);
    if (objects == NULL)
        return NULL;
    if (!PyDict_CheckExact(objects)) {
        Py_DECREF(objects);
        return PyObject_CallMethodOneArg(cache, s_get, ref);
    }
    alive = PyDict_GetItemWithError(objects, ref);
    if (alive == NULL) {
        Py_DECREF(objects);
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    }
    Py_INCREF(alive);
    Py_DECREF(objects);
    if (alive == Py_None) {
        return alive;
    }
    if (PyWeakref_CheckRefExact(alive)) {
        obj = PyWeakref_GetObject(alive);
        Py_INCREF(obj);
    }
    else
        obj = PyObject_CallNoArgs(alive);
    Py_DECREF(alive);
    return obj;
}

/* ``cache.used(ref, obj)``: kept alive until the transaction ends. */
static int
cache_used(PyObject *cache, PyObject *ref, PyObject *obj)
{
    PyObject *used;
    int result;
    if (!inlined_ok(cache, &INLINED_CACHE)) {
        PyObject *r = PyObject_CallMethodObjArgs(cache, s_used_name, ref, obj,
                                                 NULL);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        return 0;
    }
    used = PyObject_GetAttr(cache, s_used);
    if (used == NULL)
        return -1;
    result = PyObject_SetItem(used, ref, obj);
    Py_DECREF(used);
    return result;
}

/* ``cache[ref] = obj`` (``ObjectCache.__setitem__``). */
static int
cache_put(PyObject *cache, PyObject *ref, PyObject *obj)
{
    PyObject *gone, *alive = NULL, *objects = NULL, *used = NULL,
        *held_all = NULL, *key = NULL, *held;
    int result = -1;
    if (!inlined_ok(cache, &INLINED_CACHE))
        return PyObject_SetItem(cache, ref, obj);
    gone = PyObject_GetAttr(cache, s_gone);
    if (gone == NULL)
        return -1;
    alive = PyWeakref_NewRef(obj, gone);
    Py_DECREF(gone);
    if (alive == NULL)
        return -1;
    objects = PyObject_GetAttr(cache, s_objects);
    if (objects == NULL || PyObject_SetItem(objects, ref, alive) < 0)
        goto done;
    used = PyObject_GetAttr(cache, s_used);
    if (used == NULL || PyObject_SetItem(used, ref, obj) < 0)
        goto done;
    key = oid_key(ref);
    held_all = key == NULL ? NULL : PyObject_GetAttr(cache, s_held);
    if (held_all == NULL)
        goto done;
    if (!PyDict_CheckExact(held_all)) {
        PyErr_SetString(PyExc_TypeError, "ObjectCache._held is not a dict");
        goto done;
    }
    held = PyDict_GetItemWithError(held_all, key);
    if (held == NULL) {
        if (PyErr_Occurred())
            goto done;
        held = PyDict_New();
        if (held == NULL)
            goto done;
        if (PyDict_SetItem(held_all, key, held) < 0) {
            Py_DECREF(held);
            goto done;
        }
    }
    else
        Py_INCREF(held);
    result = PyObject_SetItem(held, ref, alive);
    Py_DECREF(held);
done:
    Py_XDECREF(alive);
    Py_XDECREF(objects);
    Py_XDECREF(used);
    Py_XDECREF(held_all);
    Py_XDECREF(key);
    return result;
}

/* ``jar._batches.found(oid)`` */
static int
batches_found(PyObject *jar, PyObject *oid)
{
    PyObject *batches = PyObject_GetAttr(jar, s_batches), *collecting;
    int result = 0;
    if (batches == NULL)
        return -1;
    if (!inlined_ok(batches, &INLINED_BATCHES)) {
        PyObject *r = PyObject_CallMethodOneArg(batches, s_found, oid);
        Py_DECREF(batches);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        return 0;
    }
    collecting = PyObject_GetAttr(batches, s_collecting);
    Py_DECREF(batches);
    if (collecting == NULL)
        return -1;
    if (collecting != Py_None) {
        if (PyList_CheckExact(collecting))
            result = PyList_Append(collecting, oid);
        else {
            PyObject *r = PyObject_CallMethod(collecting, "append", "O", oid);
            result = r == NULL ? -1 : 0;
            Py_XDECREF(r);
        }
    }
    Py_DECREF(collecting);
    return result;
}

/* ``obj._p_status != 'ghost'``: 1, 0 or -1. */
static int
is_loaded(PyObject *obj)
{
    PyObject *status = PyObject_GetAttr(obj, s_p_status);
    int result;
    if (status == NULL)
        return -1;
    result = PyObject_RichCompareBool(status, s_ghost, Py_NE);
    Py_DECREF(status);
    return result;
}

/* ``obj._p_state == persistent.GHOST``: 1, 0 or -1. */
static int
is_ghost(PyObject *obj)
{
    PyObject *state = PyObject_GetAttr(obj, s_p_state);
    long value;
    if (state == NULL)
        return -1;
    if (!PyLong_CheckExact(state)) {
        PyObject *ghost = PyLong_FromLong(-1);
        int result = ghost == NULL ? -1
            : PyObject_RichCompareBool(state, ghost, Py_EQ);
        Py_XDECREF(ghost);
        Py_DECREF(state);
        return result;
    }
    value = PyLong_AsLong(state);
    Py_DECREF(state);
    if (value == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return value == -1;
}

/* ``OID.of(dbref, database)`` for a plain DBRef (its extra fields left
 * out); NULL with the exception the class raises. */
static PyObject *
oid_of(PyObject *dbref, PyObject *database)
{
    PyObject *collection, *id, *db, *result;
    if (oid_slots && Py_IS_TYPE(dbref, (PyTypeObject *)DBREF_TYPE)) {
        collection = slot_get(dbref, off_collection);
        id = slot_get(dbref, off_id);
        db = slot_get(dbref, off_database);
        if (collection != NULL && id != NULL && db != NULL) {
            int truth = PyObject_IsTrue(db);
            if (truth < 0)
                return NULL;
            Py_INCREF(collection);
            Py_INCREF(id);
            Py_INCREF(db);
            result = new_oid(collection, id, truth ? db : database);
            Py_DECREF(collection);
            Py_DECREF(id);
            Py_DECREF(db);
            return result;
        }
    }
    return PyObject_CallMethod(OID_TYPE, "of", "OO", dbref, database);
}

/* ``MongoDataManager.load(dbref)`` */
static PyObject *
load(PyObject *jar, PyObject *stored)
{
    PyObject *cache = NULL, *obj = NULL, *ref = NULL, *dbref;
    int loaded, ghost, plain;
    if (!inlined_ok(jar, &INLINED_JAR))
        return PyObject_CallMethodOneArg(jar, s_load, stored);
    if (check_thread(jar) < 0)
        return NULL;
    cache = PyObject_GetAttr(jar, s_cache);
    if (cache == NULL)
        return NULL;
    dbref = Py_NewRef(stored);
    plain = Py_IS_TYPE(dbref, (PyTypeObject *)OID_TYPE);
    if (plain) {
        PyObject *db = PyObject_GetAttr(dbref, s_dbref_database);
        if (db == NULL)
            goto failed;
        plain = db != Py_None;
        Py_DECREF(db);
    }
    if (!plain) {
        PyObject *default_db = PyObject_GetAttr(jar, s_default_database);
        PyObject *oid;
        if (default_db == NULL)
            goto failed;
        oid = oid_of(dbref, default_db);
        if (oid != NULL) {
            Py_DECREF(dbref);
            dbref = oid;
        }
        else if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            /* An _id that cannot be hashed: ``references.refuse_id``
             * raises. */
            Caught c;
            PyObject *args[3] = {jar, dbref, default_db};
            PyObject *r;
            catch_error(&c);
            r = call_handling(c.value, REFUSE_ID, args, 3);
            drop_caught(&c);
            if (r == NULL) {
                Py_DECREF(default_db);
                goto failed;
            }
            Py_DECREF(r);
        }
        else {
            Py_DECREF(default_db);
            goto failed;
        }
        Py_DECREF(default_db);
    }
    obj = cache_get(cache, dbref);
    if (obj == NULL)
        goto failed;
    if (obj == Py_None) {
        Py_DECREF(obj);
        obj = PyObject_CallMethodObjArgs(jar, s_load_new, dbref, stored,
                                         NULL);
        if (obj == NULL)
            goto failed;
    }
    else {
        loaded = is_loaded(obj);
        if (loaded < 0)
            goto failed;
        if (loaded) {
            ref = PyObject_GetAttr(obj, s_p_oid);
            if (ref == NULL || use(jar, ref) < 0)
                goto failed;
            Py_CLEAR(ref);
        }
        ref = PyObject_GetAttr(obj, s_p_oid);
        if (ref == NULL || cache_used(cache, ref, obj) < 0)
            goto failed;
        Py_CLEAR(ref);
    }
    ghost = is_ghost(obj);
    if (ghost < 0)
        goto failed;
    if (ghost) {
        ref = PyObject_GetAttr(obj, s_p_oid);
        if (ref == NULL || batches_found(jar, ref) < 0)
            goto failed;
        Py_CLEAR(ref);
    }
    Py_DECREF(cache);
    Py_DECREF(dbref);
    return obj;
failed:
    Py_XDECREF(cache);
    Py_XDECREF(obj);
    Py_XDECREF(ref);
    Py_DECREF(dbref);
    return NULL;
}

/* ``registry.resolve(name, kind)`` from the registry's memo only: a new
 * reference, or NULL (an exception set only on error) when the memo
 * does not have it. */
static PyObject *
resolve_memo(PyObject *registry, PyObject *name, PyObject *kind)
{
    PyObject *resolved, *key, *hit, *generation, *found = NULL;
    if (!PyUnicode_CheckExact(name)
            || !Py_IS_TYPE(registry, (PyTypeObject *)TYPE_REGISTRY))
        return NULL;
    resolved = PyObject_GetAttr(registry, s_resolved);
    if (resolved == NULL)
        return NULL;
    if (!PyDict_CheckExact(resolved)) {
        Py_DECREF(resolved);
        return NULL;
    }
    key = PyTuple_Pack(2, name, kind);
    if (key == NULL) {
        Py_DECREF(resolved);
        return NULL;
    }
    hit = PyDict_GetItemWithError(resolved, key);
    Py_DECREF(key);
    if (hit != NULL && PyTuple_CheckExact(hit) && PyTuple_GET_SIZE(hit) == 2) {
        generation = PyDict_GetItemWithError(METADATA_DICT, s_generation);
        if (generation != NULL) {
            int same = PyObject_RichCompareBool(PyTuple_GET_ITEM(hit, 0),
                                                generation, Py_EQ);
            if (same > 0)
                found = Py_NewRef(PyTuple_GET_ITEM(hit, 1));
        }
    }
    Py_DECREF(resolved);
    return found;
}

/* ``jar._class_of_document(dbref, doc)`` for a document that names no
 * class, from the type map and registry the process already read
 * (``CollectionTypeMap.default_class``); NULL without an exception when
 * they do not have it (the caller calls the method). */
static PyObject *
known_class(PyObject *jar, PyObject *db_name, PyObject *coll_name,
            PyObject *doc)
{
    PyObject *name, *typemap, *cache, *key, *types, *registry, *cls;
    name = PyDict_GetItemWithError(doc, s_py_persistent_type);
    if (name != NULL || PyErr_Occurred())
        return NULL;
    typemap = PyObject_GetAttr(jar, s_types);
    if (typemap == NULL)
        return NULL;
    if (!inlined_ok(typemap, &INLINED_TYPEMAP)) {
        Py_DECREF(typemap);
        return NULL;
    }
    cache = PyObject_GetAttr(typemap, s_types);
    if (cache == NULL || !PyDict_CheckExact(cache)) {
        Py_XDECREF(cache);
        Py_DECREF(typemap);
        return NULL;
    }
    key = PyTuple_Pack(2, db_name, coll_name);
    types = key == NULL ? NULL : PyDict_GetItemWithError(cache, key);
    Py_XDECREF(key);
    if (types == NULL || !PyList_CheckExact(types)
            || PyList_GET_SIZE(types) == 0) {
        Py_DECREF(cache);
        Py_DECREF(typemap);
        return NULL;
    }
    name = Py_NewRef(PyList_GET_ITEM(types, 0));
    Py_DECREF(cache);
    registry = PyObject_GetAttr(typemap, s_registry_attr);
    Py_DECREF(typemap);
    if (registry == NULL) {
        Py_DECREF(name);
        return NULL;
    }
    cls = resolve_memo(registry, name, s_persistent_kind);
    Py_DECREF(registry);
    Py_DECREF(name);
    return cls;
}

/* ``int(serial).to_bytes(8, 'big')`` */
static PyObject *
p64(PyObject *serial)
{
    unsigned long long value = PyLong_AsUnsignedLongLong(serial);
    unsigned char bytes[8];
    int i;
    if (value == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    for (i = 7; i >= 0; i--) {
        bytes[i] = (unsigned char)(value & 0xff);
        value >>= 8;
    }
    return PyBytes_FromStringAndSize((const char *)bytes, 8);
}

/* ``jar._documents_read += delta`` */
static int
count_reading(PyObject *jar, int delta)
{
    long count;
    PyObject *value;
    int result;
    if (get_long_attr(jar, s_documents_read, &count) < 0)
        return -1;
    value = PyLong_FromLong(count + delta);
    if (value == NULL)
        return -1;
    result = PyObject_SetAttr(jar, s_documents_read, value);
    Py_DECREF(value);
    return result;
}

/* ``batches.start()``: 1 if this call started a group, 0, -1. */
static int
batches_start(PyObject *batches)
{
    PyObject *collecting, *group;
    int result;
    if (!inlined_ok(batches, &INLINED_BATCHES)) {
        PyObject *r = PyObject_CallMethodNoArgs(batches, s_start);
        if (r == NULL)
            return -1;
        result = PyObject_IsTrue(r);
        Py_DECREF(r);
        return result;
    }
    collecting = PyObject_GetAttr(batches, s_collecting);
    if (collecting == NULL)
        return -1;
    Py_DECREF(collecting);
    if (collecting != Py_None)
        return 0;
    group = PyList_New(0);
    if (group == NULL)
        return -1;
    result = PyObject_SetAttr(batches, s_collecting, group);
    Py_DECREF(group);
    return result < 0 ? -1 : 1;
}

/* ``batches.stop()`` */
static int
batches_stop(PyObject *batches)
{
    PyObject *group, *group_of;
    Py_ssize_t i, size;
    int result = 0;
    if (!inlined_ok(batches, &INLINED_BATCHES)) {
        PyObject *r = PyObject_CallMethodNoArgs(batches, s_stop);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        return 0;
    }
    group = PyObject_GetAttr(batches, s_collecting);
    if (group == NULL)
        return -1;
    if (PyObject_SetAttr(batches, s_collecting, Py_None) < 0) {
        Py_DECREF(group);
        return -1;
    }
    if (group == Py_None || !PyList_CheckExact(group)
            || PyList_GET_SIZE(group) <= 1) {
        if (group != Py_None && !PyList_CheckExact(group)) {
            /* Not what ``start`` made: the Python loop does it. */
            PyObject *r = PyObject_CallMethodNoArgs(batches, s_stop);
            Py_XDECREF(r);
            result = r == NULL ? -1 : 0;
        }
        Py_DECREF(group);
        return result;
    }
    group_of = PyObject_GetAttr(batches, s_group_of);
    if (group_of == NULL) {
        Py_DECREF(group);
        return -1;
    }
    size = PyList_GET_SIZE(group);
    for (i = 0; i < size && i < PyList_GET_SIZE(group); i++) {
        PyObject *oid = PyList_GET_ITEM(group, i);
        Py_INCREF(oid);
        result = PyObject_SetItem(group_of, oid, group);
        Py_DECREF(oid);
        if (result < 0)
            break;
    }
    Py_DECREF(group_of);
    Py_DECREF(group);
    return result;
}

/* ``reader.set_ghost_state(obj, doc)``: ``type(obj).__setstate__(obj,
 * reader.get_state(doc, obj))`` */
static int
set_ghost_state(PyObject *reader, PyObject *obj, PyObject *doc)
{
    PyObject *jar = NULL, *state, *setstate, *r;
    int ok = reader_ok(reader, &jar);
    if (ok < 0)
        return -1;
    if (!ok || !PyDict_CheckExact(doc)) {
        Py_XDECREF(jar);
        r = PyObject_CallMethodObjArgs(reader, s_set_ghost_state, obj, doc,
                                       NULL);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        return 0;
    }
    state = get_state_impl(reader, jar, doc, obj);
    Py_DECREF(jar);
    if (state == NULL)
        return -1;
    if (state == NOT_HANDLED) {
        Py_DECREF(state);
        state = PyObject_CallMethodObjArgs(reader, s_get_state, doc, obj,
                                           NULL);
        if (state == NULL)
            return -1;
    }
    setstate = _PyType_Lookup(Py_TYPE(obj), s_setstate_name);
    if (setstate == SETSTATE_PERSISTENT)
        r = PyObject_CallFunctionObjArgs(setstate, obj, state, NULL);
    else {
        PyObject *method = PyObject_GetAttr((PyObject *)Py_TYPE(obj),
                                            s_setstate_name);
        if (method == NULL) {
            Py_DECREF(state);
            return -1;
        }
        r = PyObject_CallFunctionObjArgs(method, obj, state, NULL);
        Py_DECREF(method);
    }
    Py_DECREF(state);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* ``MongoDataManager._activate(obj, doc)`` */
static int
activate(PyObject *jar, PyObject *obj, PyObject *doc)
{
    PyObject *ref, *serial, *name, *batches = NULL, *reader = NULL,
        *cache, *docs;
    int grouping = 0, result;
    ref = PyObject_GetAttr(obj, s_p_oid);
    if (ref == NULL)
        return -1;
    if (count_reading(jar, 1) < 0) {
        Py_DECREF(ref);
        return -1;
    }
    /* try: */
    serial = PyDict_GetItemWithError(doc, s_py_serial);
    if (serial == NULL) {
        if (PyErr_Occurred())
            goto failed;
        serial = PyLong_FromLong(0);
    }
    else {
        Py_INCREF(serial);
        if ((PyLong_CheckExact(serial)
                || (PyObject *)Py_TYPE(serial) == INT64_TYPE)
                && _PyLong_Sign(serial) >= 0)
            ;
        else {
            Py_DECREF(serial);
            serial = PyObject_CallOneArg(STORED_SERIAL, doc);
        }
    }
    if (serial == NULL)
        goto failed;
    name = PyDict_GetItemWithError(doc, s_py_persistent_type);
    if (name != NULL) {
        PyObject *own, *r;
        int differs;
        Py_INCREF(name);
        own = PyObject_CallOneArg(GET_DOTTED_NAME, (PyObject *)Py_TYPE(obj));
        differs = own == NULL ? -1
            : PyObject_RichCompareBool(name, own, Py_NE);
        Py_XDECREF(own);
        Py_DECREF(name);
        if (differs < 0)
            goto failed_serial;
        if (differs) {
            /* The ghost was made before the collection was shared. */
            PyObject *cls = PyObject_CallMethodObjArgs(
                jar, s_class_of_document, ref, doc, NULL);
            if (cls == NULL)
                goto failed_serial;
            r = PyObject_SetAttr(obj, s_class, cls) < 0 ? NULL : Py_None;
            Py_DECREF(cls);
            if (r == NULL)
                goto failed_serial;
        }
    }
    else if (PyErr_Occurred())
        goto failed_serial;
    batches = PyObject_GetAttr(jar, s_batches);
    if (batches == NULL)
        goto failed_serial;
    grouping = batches_start(batches);
    if (grouping < 0)
        goto failed_serial;
    reader = PyObject_GetAttr(jar, s_reader);
    result = reader == NULL ? -1 : set_ghost_state(reader, obj, doc);
    if (grouping) {
        if (result < 0) {
            Caught c;
            catch_error(&c);
            if (batches_stop(batches) < 0) {
                /* The finally clause's error replaces the first. */
                PyObject *t, *v, *tb;
                PyErr_Fetch(&t, &v, &tb);
                PyErr_NormalizeException(&t, &v, &tb);
                if (v != NULL && c.value != NULL) {
                    PyException_SetContext(v, c.value);
                    c.value = NULL;
                }
                drop_caught(&c);
                PyErr_Restore(t, v, tb);
            }
            else
                rethrow(&c);
        }
        else if (batches_stop(batches) < 0)
            result = -1;
    }
    Py_CLEAR(reader);
    Py_CLEAR(batches);
    if (result < 0)
        goto failed_serial;
    /* finally: */
    if (count_reading(jar, -1) < 0)
        goto out_serial;
    /* sharding.remember(ref, type(obj), doc) */
    {
        PyObject *key = PyDict_GetItemWithError(SHARD_KEYS,
                                                (PyObject *)Py_TYPE(obj));
        if (key != Py_None) {
            PyObject *r;
            if (key == NULL && PyErr_Occurred())
                goto out_serial;
            r = PyObject_CallFunctionObjArgs(SHARDING_REMEMBER, ref,
                                             (PyObject *)Py_TYPE(obj), doc,
                                             NULL);
            if (r == NULL)
                goto out_serial;
            Py_DECREF(r);
        }
    }
    cache = PyObject_GetAttr(jar, s_cache);
    if (cache == NULL)
        goto out_serial;
    docs = PyObject_GetAttr(cache, s_docs);
    Py_DECREF(cache);
    if (docs == NULL)
        goto out_serial;
    result = PyObject_SetItem(docs, ref, doc);
    Py_DECREF(docs);
    if (result < 0)
        goto out_serial;
    if (PyObject_SetAttr(jar, s_invalidated, Py_False) < 0
            || PyObject_SetAttr(jar, s_activated, Py_True) < 0)
        goto out_serial;
    {
        PyObject *bytes = p64(serial);
        if (bytes == NULL)
            goto out_serial;
        result = PyObject_SetAttr(obj, s_p_serial, bytes);
        Py_DECREF(bytes);
        if (result < 0)
            goto out_serial;
    }
    Py_DECREF(serial);
    Py_DECREF(ref);
    return 0;
out_serial:
    Py_DECREF(serial);
    Py_DECREF(ref);
    return -1;
failed_serial:
    Py_XDECREF(reader);
    Py_XDECREF(batches);
    Py_DECREF(serial);
failed:
    /* except BaseException as error: _raise_located(error, ref)
     * finally: self._documents_read -= 1 */
    {
        Caught c;
        PyObject *args[2];
        PyObject *r;
        catch_error(&c);
        args[0] = c.value;
        args[1] = ref;
        r = call_handling(c.value, RAISE_LOCATED, args, 2);
        Py_XDECREF(r);
        if (r != NULL)      /* it always raises; if not, go on raising */
            rethrow(&c);
        else
            drop_caught(&c);
        catch_error(&c);
        if (count_reading(jar, -1) < 0) {
            PyObject *t, *v, *tb;
            PyErr_Fetch(&t, &v, &tb);
            PyErr_NormalizeException(&t, &v, &tb);
            if (v != NULL && c.value != NULL) {
                PyException_SetContext(v, c.value);
                c.value = NULL;
            }
            drop_caught(&c);
            PyErr_Restore(t, v, tb);
        }
        else
            rethrow(&c);
    }
    Py_DECREF(ref);
    return -1;
}

/* Whether the data manager, its cache and its reader are the library's
 * own: then the compiled bookkeeping runs. */
static int
jar_ok(PyObject *jar)
{
    return inlined_ok(jar, &INLINED_JAR);
}

/* ``MongoDataManager._object_from_document(db_name, coll_name, doc)``;
 * NOT_HANDLED, having changed nothing, where the Python code must run
 * (a document without a usable _id, a class with its own __setstate__,
 * another data manager or cache class, a document that is not a dict). */
static PyObject *
object_from_document(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *jar, *db_name, *coll_name, *doc, *id, *dbref = NULL,
        *cache = NULL, *obj = NULL, *cls = NULL, *validator;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "object_from_document(jar, db, collection, doc)");
        return NULL;
    }
    jar = args[0];
    db_name = args[1];
    coll_name = args[2];
    doc = args[3];
    if (!PyDict_CheckExact(doc) || !jar_ok(jar))
        return Py_NewRef(NOT_HANDLED);
    id = PyDict_GetItemWithError(doc, s_id);
    if (id == NULL) {
        if (PyErr_Occurred())
            return NULL;
        return Py_NewRef(NOT_HANDLED);
    }
    dbref = new_oid(coll_name, id, db_name);
    if (dbref == NULL) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            return Py_NewRef(NOT_HANDLED);
        }
        return NULL;
    }
    /* self._use_document(dbref) */
    if (check_thread(jar) < 0)
        goto failed;
    validator = PyObject_GetAttr(jar, s_validator);
    if (validator == NULL)
        goto failed;
    {
        int needed = 1;
        if (inlined_ok(validator, &INLINED_VALIDATOR)) {
            PyObject *needs = PyObject_GetAttr(validator, s_needs_validation);
            needed = needs == NULL ? -1 : PyObject_IsTrue(needs);
            Py_XDECREF(needs);
        }
        if (needed > 0) {
            PyObject *r = PyObject_CallMethodOneArg(validator,
                                                    s_use_document, dbref);
            needed = r == NULL ? -1 : 0;
            Py_XDECREF(r);
        }
        Py_DECREF(validator);
        if (needed < 0)
            goto failed;
    }
    cache = PyObject_GetAttr(jar, s_cache);
    if (cache == NULL)
        goto failed;
    obj = cache_get(cache, dbref);
    if (obj == NULL)
        goto failed;
    if (obj == Py_None) {
        PyObject *setstate;
        Py_CLEAR(obj);
        cls = known_class(jar, db_name, coll_name, doc);
        if (cls == NULL) {
            if (PyErr_Occurred())
                goto failed;
            cls = PyObject_CallMethodObjArgs(jar, s_class_of_document,
                                             dbref, doc, NULL);
            if (cls == NULL)
                goto failed;
        }
        setstate = PyObject_GetAttr(cls, s_setstate_name);
        if (setstate == NULL)
            goto failed;
        Py_DECREF(setstate);
        if (setstate != SETSTATE_PERSISTENT) {
            /* Filled as a ghost being activated: Python does it (what
             * was done so far it does again, to the same effect). */
            Py_DECREF(cls);
            Py_DECREF(cache);
            Py_DECREF(dbref);
            return Py_NewRef(NOT_HANDLED);
        }
        obj = new_instance(cls);
        if (obj == NULL)
            goto failed;
        if (PyObject_SetAttr(obj, s_p_jar, jar) < 0
                || PyObject_SetAttr(obj, s_p_oid, dbref) < 0
                || cache_put(cache, dbref, obj) < 0)
            goto failed;
        if (activate(jar, obj, doc) < 0) {
            /* Not filled: forget it (a new load reads it again). */
            Caught c;
            catch_error(&c);
            if (PyObject_DelItem(cache, dbref) < 0) {
                PyObject *t, *v, *tb;
                PyErr_Fetch(&t, &v, &tb);
                PyErr_NormalizeException(&t, &v, &tb);
                if (v != NULL && c.value != NULL) {
                    PyException_SetContext(v, c.value);
                    c.value = NULL;
                }
                drop_caught(&c);
                PyErr_Restore(t, v, tb);
            }
            else
                rethrow(&c);
            goto failed;
        }
        Py_DECREF(cls);
        Py_DECREF(cache);
        Py_DECREF(dbref);
        return obj;
    }
    if (cache_used(cache, dbref, obj) < 0)
        goto failed;
    {
        int ghost = is_ghost(obj);
        if (ghost < 0)
            goto failed;
        if (ghost) {
            PyObject *prefetched = PyObject_GetAttr(jar, s_prefetched), *r;
            if (prefetched == NULL)
                goto failed;
            if (PyObject_SetItem(prefetched, dbref, doc) < 0) {
                Py_DECREF(prefetched);
                goto failed;
            }
            Py_DECREF(prefetched);
            r = PyObject_CallMethodNoArgs(obj, s_p_activate);
            if (r == NULL)
                goto failed;
            Py_DECREF(r);
        }
    }
    Py_DECREF(cache);
    Py_DECREF(dbref);
    return obj;
failed:
    Py_XDECREF(cls);
    Py_XDECREF(obj);
    Py_XDECREF(cache);
    Py_XDECREF(dbref);
    return NULL;
}

/* ``MongoDataManager.setstate(obj)``; NOT_HANDLED (nothing done) for a
 * data manager that is not the library's own. */
static PyObject *
setstate_entry(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *jar, *obj, *ref, *prefetched, *doc = NULL, *cache = NULL;
    int fresh = 0;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "setstate(jar, obj)");
        return NULL;
    }
    jar = args[0];
    obj = args[1];
    if (!jar_ok(jar))
        return Py_NewRef(NOT_HANDLED);
    ref = PyObject_GetAttr(obj, s_p_oid);
    if (ref == NULL)
        return NULL;
    prefetched = PyObject_GetAttr(jar, s_prefetched);
    if (prefetched == NULL)
        goto failed;
    if (PyDict_CheckExact(prefetched)) {
        /* self._prefetched.pop(ref, None) */
        doc = PyDict_GetItemWithError(prefetched, ref);
        if (doc != NULL) {
            Py_INCREF(doc);
            if (PyDict_DelItem(prefetched, ref) < 0) {
                Py_DECREF(prefetched);
                goto failed;
            }
            if (doc == Py_None)
                Py_CLEAR(doc);
        }
        else if (PyErr_Occurred()) {
            Py_DECREF(prefetched);
            goto failed;
        }
    }
    else {
        doc = PyObject_CallMethod(prefetched, "pop", "OO", ref, Py_None);
        if (doc == NULL) {
            Py_DECREF(prefetched);
            goto failed;
        }
        if (doc == Py_None)
            Py_CLEAR(doc);
    }
    Py_DECREF(prefetched);
    if (doc != NULL) {
        PyObject *validator = PyObject_GetAttr(jar, s_validator), *known;
        if (validator == NULL)
            goto failed;
        known = PyObject_GetAttr(validator, s_fresh);
        Py_DECREF(validator);
        if (known == NULL)
            goto failed;
        fresh = PySequence_Contains(known, ref);
        Py_DECREF(known);
        if (fresh < 0)
            goto failed;
    }
    if (doc == NULL || !fresh) {
        if (use(jar, ref) < 0)
            goto failed;
    }
    cache = PyObject_GetAttr(jar, s_cache);
    if (cache == NULL)
        goto failed;
    if (doc == NULL) {
        /* Validated in this transaction, or loaded or written in it. */
        PyObject *docs = PyObject_GetAttr(cache, s_docs);
        if (docs == NULL)
            goto failed;
        if (PyDict_CheckExact(docs)) {
            doc = PyDict_GetItemWithError(docs, ref);
            if (doc == Py_None)
                doc = NULL;
            Py_XINCREF(doc);
        }
        else {
            doc = PyObject_CallMethod(docs, "get", "O", ref);
            if (doc == Py_None)
                Py_CLEAR(doc);
        }
        Py_DECREF(docs);
        if (doc == NULL && PyErr_Occurred())
            goto failed;
    }
    if (doc == NULL) {
        /* Read with its siblings (``mongopersist.batching``). */
        PyObject *batches = PyObject_GetAttr(jar, s_batches);
        if (batches == NULL)
            goto failed;
        doc = PyObject_CallMethodOneArg(batches, s_document, ref);
        Py_DECREF(batches);
        if (doc == NULL)
            goto failed;
    }
    if (PyDict_CheckExact(doc)) {
        if (activate(jar, obj, doc) < 0)
            goto failed;
    }
    else {
        PyObject *r = PyObject_CallMethodObjArgs(jar, s_activate, obj, doc,
                                                 NULL);
        if (r == NULL)
            goto failed;
        Py_DECREF(r);
    }
    if (cache_used(cache, ref, obj) < 0)
        goto failed;
    Py_DECREF(cache);
    Py_DECREF(doc);
    Py_DECREF(ref);
    Py_RETURN_NONE;
failed:
    Py_XDECREF(cache);
    Py_XDECREF(doc);
    Py_DECREF(ref);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Entry points of the reader.                                          */

/* ``ObjectReader.get_state(doc, obj)`` */
static PyObject *
get_state(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *jar = NULL, *result;
    int ok;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "get_state(reader, doc, obj)");
        return NULL;
    }
    if (!PyDict_CheckExact(args[1]))
        return Py_NewRef(NOT_HANDLED);
    ok = reader_ok(args[0], &jar);
    if (ok <= 0)
        return ok < 0 ? NULL : Py_NewRef(NOT_HANDLED);
    result = get_state_impl(args[0], jar, args[1], args[2]);
    Py_DECREF(jar);
    return result;
}

/* ``ObjectReader._read_fields(stored, obj, skip)`` */
static PyObject *
read_fields(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *jar = NULL, *skip, *result;
    int ok;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "read_fields(reader, stored, obj, skip)");
        return NULL;
    }
    skip = args[3];
    if (!PyDict_CheckExact(args[1]))
        return Py_NewRef(NOT_HANDLED);
    if (PyTuple_CheckExact(skip) && PyTuple_GET_SIZE(skip) == 0)
        skip = NULL;
    else if (!PyAnySet_CheckExact(skip))
        return Py_NewRef(NOT_HANDLED);
    ok = reader_ok(args[0], &jar);
    if (ok <= 0)
        return ok < 0 ? NULL : Py_NewRef(NOT_HANDLED);
    result = read_dict_fields(args[0], jar, args[1], args[2], skip, NULL);
    Py_DECREF(jar);
    return result;
}

/* ``ObjectReader._read_value(state, obj)`` */
static PyObject *
read_value_entry(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *jar = NULL, *result;
    int ok;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "read_value(reader, state, obj)");
        return NULL;
    }
    ok = reader_ok(args[0], &jar);
    if (ok <= 0)
        return ok < 0 ? NULL : Py_NewRef(NOT_HANDLED);
    result = read_value(args[0], jar, args[1], args[2]);
    Py_DECREF(jar);
    return result;
}

/* ``MongoDataManager.load(dbref)`` */
static PyObject *
load_entry(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "load(jar, dbref)");
        return NULL;
    }
    if (!jar_ok(args[0]))
        return Py_NewRef(NOT_HANDLED);
    return load(args[0], args[1]);
}

/* ------------------------------------------------------------------ */
/* metadata.OID's hash and equality, as its Python methods compute      */
/* them (``__hash__`` returns the hash kept in ``_hash``; ``__eq__``     */
/* compares two oids by their fields, anything else as DBRef does).     */
/* Oids are keys of every dict of the data manager: these are called   */
/* more than anything else.                                            */

static hashfunc oid_python_hash;
static richcmpfunc oid_python_richcompare;

static Py_hash_t
oid_hash(PyObject *self)
{
    if (oid_slots && Py_IS_TYPE(self, (PyTypeObject *)OID_TYPE)) {
        PyObject *h = slot_get(self, off_hash);
        if (h != NULL && PyLong_CheckExact(h)) {
            Py_hash_t value = PyLong_AsSsize_t(h);
            if (value == -1 && PyErr_Occurred())
                PyErr_Clear();
            else
                return value;
        }
    }
    return oid_python_hash(self);
}

static PyObject *
oid_richcompare(PyObject *self, PyObject *other, int op)
{
    Py_ssize_t offsets[4];
    PyObject *result = NULL;
    int i;
    if (op != Py_EQ || !oid_slots
            || !Py_IS_TYPE(self, (PyTypeObject *)OID_TYPE)
            || !Py_IS_TYPE(other, (PyTypeObject *)OID_TYPE))
        return oid_python_richcompare(self, other, op);
    offsets[0] = off_hash;
    offsets[1] = off_id;
    offsets[2] = off_collection;
    offsets[3] = off_database;
    for (i = 0; i < 4; i++) {
        if (slot_get(self, offsets[i]) == NULL
                || slot_get(other, offsets[i]) == NULL)
            return oid_python_richcompare(self, other, op);
    }
    /* self._hash == other._hash and ... (the first false value, or the
     * last) */
    for (i = 0; i < 4; i++) {
        int truth;
        Py_XDECREF(result);
        result = value_eq(slot_get(self, offsets[i]),
                          slot_get(other, offsets[i]));
        if (result == NULL)
            return NULL;
        if (i == 3)
            break;
        truth = PyObject_IsTrue(result);
        if (truth < 0) {
            Py_DECREF(result);
            return NULL;
        }
        if (!truth)
            break;
    }
    return result;
}

/* ``accelerate_oid()``: give metadata.OID the compiled hash and
 * equality (its Python methods stay, and compute the same). */
static PyObject *
accelerate_oid(PyObject *module, PyObject *unused)
{
    PyTypeObject *type = (PyTypeObject *)OID_TYPE;
    if (!bound || !oid_slots)
        Py_RETURN_FALSE;
    if (type->tp_hash != oid_hash) {
        oid_python_hash = type->tp_hash;
        oid_python_richcompare = type->tp_richcompare;
        if (oid_python_hash == NULL || oid_python_richcompare == NULL)
            Py_RETURN_FALSE;
        type->tp_hash = oid_hash;
        type->tp_richcompare = oid_richcompare;
    }
    Py_RETURN_TRUE;
}

/* ------------------------------------------------------------------ */
/* bind(): the Python objects the compiled code uses.                   */

static int
set_inlined(Inlined *inlined, PyObject *spec)
{
    /* spec: (class, (method names...)) */
    PyObject *cls, *names, *originals;
    Py_ssize_t i;
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) != 2
            || !PyType_Check(PyTuple_GET_ITEM(spec, 0))
            || !PyTuple_Check(PyTuple_GET_ITEM(spec, 1))) {
        PyErr_SetString(PyExc_TypeError, "an inlined spec is (class, names)");
        return -1;
    }
    cls = PyTuple_GET_ITEM(spec, 0);
    names = PyTuple_GET_ITEM(spec, 1);
    originals = PyTuple_New(PyTuple_GET_SIZE(names));
    if (originals == NULL)
        return -1;
    for (i = 0; i < PyTuple_GET_SIZE(names); i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        PyObject *found;
        if (!PyUnicode_Check(name)) {
            Py_DECREF(originals);
            PyErr_SetString(PyExc_TypeError, "method names are str");
            return -1;
        }
        found = _PyType_Lookup((PyTypeObject *)cls, name);
        if (found == NULL) {
            Py_DECREF(originals);
            PyErr_Format(PyExc_AttributeError, "%S has no %U", cls, name);
            return -1;
        }
        Py_INCREF(found);
        PyTuple_SET_ITEM(originals, i, found);
    }
    Py_XSETREF(inlined->names, Py_NewRef(names));
    Py_XSETREF(inlined->originals, originals);
    inlined->type = NULL;
    inlined->tag = 0;
    return 0;
}

typedef struct {
    const char *name;
    Inlined *inlined;
} InlinedSpec;

static InlinedSpec INLINED[] = {
    {"inlined_reader", &INLINED_READER},
    {"inlined_writer", &INLINED_WRITER},
    {"inlined_jar", &INLINED_JAR},
    {"inlined_cache", &INLINED_CACHE},
    {"inlined_validator", &INLINED_VALIDATOR},
    {"inlined_batches", &INLINED_BATCHES},
    {"inlined_typemap", &INLINED_TYPEMAP},
    {NULL, NULL}
};

typedef struct {
    const char *name;
    PyObject **slot;
} More;

static More MORE[] = {
    {"persistent_setstate", &SETSTATE_PERSISTENT},
    {"stored_serial", &STORED_SERIAL},
    {"Int64", &INT64_TYPE},
    {"_raise_located", &RAISE_LOCATED},
    {"sharding_remember", &SHARDING_REMEMBER},
    {"get_dotted_name", &GET_DOTTED_NAME},
    {"refuse_id", &REFUSE_ID},
    {"serialize_dict", &SERIALIZE_DICT},
    {NULL, NULL}
};

static PyObject *
bind(PyObject *module, PyObject *names)
{
    Bound *b;
    More *m;
    InlinedSpec *spec;
    if (!PyDict_Check(names)) {
        PyErr_SetString(PyExc_TypeError, "bind(dict)");
        return NULL;
    }
    for (b = BOUND; b->name != NULL; b++) {
        PyObject *value = PyDict_GetItemString(names, b->name);
        if (value == NULL) {
            PyErr_Format(PyExc_KeyError, "bind() needs %s", b->name);
            return NULL;
        }
        Py_INCREF(value);
        Py_XSETREF(*b->slot, value);
    }
    for (m = MORE; m->name != NULL; m++) {
        PyObject *value = PyDict_GetItemString(names, m->name);
        if (value == NULL) {
            PyErr_Format(PyExc_KeyError, "bind() needs %s", m->name);
            return NULL;
        }
        Py_INCREF(value);
        Py_XSETREF(*m->slot, value);
    }
    for (spec = INLINED; spec->name != NULL; spec++) {
        PyObject *value = PyDict_GetItemString(names, spec->name);
        if (value == NULL) {
            PyErr_Format(PyExc_KeyError, "bind() needs %s", spec->name);
            return NULL;
        }
        if (set_inlined(spec->inlined, value) < 0)
            return NULL;
    }
    MAX_NESTING = PyLong_AsLong(MAX_NESTING_OBJ);
    if (MAX_NESTING == -1 && PyErr_Occurred())
        return NULL;
    if (!PyType_Check(OID_TYPE) || !PyType_Check(DBREF_TYPE)
            || !PyType_Check(PERSISTENT_DICT) || !PyType_Check(PERSISTENT_LIST)
            || !PyType_Check(PERSISTENT_TYPE) || !PyType_Check(TYPE_REGISTRY)) {
        PyErr_SetString(PyExc_TypeError, "bind(): classes expected");
        return NULL;
    }
    off_collection = slot_offset(DBREF_TYPE, "_DBRef__collection");
    off_id = slot_offset(DBREF_TYPE, "_DBRef__id");
    off_database = slot_offset(DBREF_TYPE, "_DBRef__database");
    off_kwargs = slot_offset(DBREF_TYPE, "_DBRef__kwargs");
    off_hash = slot_offset(OID_TYPE, "_hash");
    off_doc = slot_offset(OID_TYPE, "_doc");
    off_routing = slot_offset(OID_TYPE, "routing");
    oid_slots = off_collection >= 0 && off_id >= 0 && off_database >= 0
        && off_kwargs >= 0 && off_hash >= 0 && off_doc >= 0
        && off_routing >= 0
        && PyType_IsSubtype((PyTypeObject *)OID_TYPE,
                            (PyTypeObject *)DBREF_TYPE)
        && PyDict_CheckExact(EMPTY_KWARGS);
    {
        /* ObjectId's and tuples' hashes, as computed here, checked
         * against theirs on samples. */
        PyObject *sample, *bytes, *key;
        Py_hash_t mine, theirs;
        off_objectid = slot_offset(OBJECTID_TYPE, "_ObjectId__id");
        objectid_fast = 0;
        tuple_hash_known = 0;
        if (off_objectid >= 0
                && set_inlined(&INLINED_OBJECTID, PyDict_GetItemString(
                    names, "inlined_objectid")) == 0) {
            sample = PyObject_CallNoArgs(OBJECTID_TYPE);
            if (sample == NULL)
                return NULL;
            bytes = slot_get(sample, off_objectid);
            if (bytes != NULL && PyBytes_CheckExact(bytes)) {
                mine = PyObject_Hash(bytes);
                theirs = PyObject_Hash(sample);
                if (mine == -1 || theirs == -1) {
                    Py_DECREF(sample);
                    return NULL;
                }
                objectid_fast = mine == theirs;
            }
            key = PyTuple_Pack(4, s_value, sample, Py_None, EMPTY_TUPLE);
            if (key == NULL) {
                Py_DECREF(sample);
                return NULL;
            }
            theirs = PyObject_Hash(key);
            Py_DECREF(key);
            tuple_hash_known = 1;
            mine = hash4(s_value, sample, Py_None, EMPTY_TUPLE);
            Py_DECREF(sample);
            if (mine == -1 || theirs == -1)
                return NULL;
            tuple_hash_known = mine == theirs;
        }
        else
            PyErr_Clear();
    }
    bound = 1;
    return PyBool_FromLong(oid_slots);
}

static PyMethodDef methods[] = {
    {"bind", (PyCFunction)bind, METH_O,
     "bind(names): the Python objects the compiled code uses."},
    {"accelerate_oid", (PyCFunction)accelerate_oid, METH_NOARGS,
     "Give metadata.OID the compiled hash and equality."},
    {"get_document", (PyCFunction)(void (*)(void))get_document,
     METH_FASTCALL, "ObjectWriter.get_document(obj), compiled."},
    {"get_state", (PyCFunction)(void (*)(void))get_state, METH_FASTCALL,
     "ObjectReader.get_state(doc, obj), compiled."},
    {"read_fields", (PyCFunction)(void (*)(void))read_fields, METH_FASTCALL,
     "ObjectReader._read_fields(stored, obj, skip), compiled."},
    {"read_value", (PyCFunction)(void (*)(void))read_value_entry,
     METH_FASTCALL, "ObjectReader._read_value(state, obj), compiled."},
    {"load", (PyCFunction)(void (*)(void))load_entry, METH_FASTCALL,
     "MongoDataManager.load(dbref), compiled."},
    {"object_from_document",
     (PyCFunction)(void (*)(void))object_from_document, METH_FASTCALL,
     "MongoDataManager._object_from_document(db, collection, doc), "
     "compiled."},
    {"setstate", (PyCFunction)(void (*)(void))setstate_entry, METH_FASTCALL,
     "MongoDataManager.setstate(obj), compiled."},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "mongopersist._speedups",
    "The compiled hot paths of mongopersist (see mongopersist.speedups).",
    -1,
    methods
};

#define INTERN(var, text) \
    do { if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL; } while (0)

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL)
        return NULL;
    DATE_TYPE = PyDateTimeAPI->DateType;
    DATETIME_TYPE = PyDateTimeAPI->DateTimeType;
    EMPTY_TUPLE = PyTuple_New(0);
    if (EMPTY_TUPLE == NULL)
        return NULL;
    INTERN(s_write, "_write");
    INTERN(s_write_dict, "_write_dict");
    INTERN(s_write_list, "_write_list");
    INTERN(s_write_plain, "_write_plain");
    INTERN(s_deepest, "deepest");
    INTERN(s_untracked, "untracked");
    INTERN(s_path, "path");
    INTERN(s_located, "_located");
    INTERN(s_jar, "_jar");
    INTERN(s_p_jar, "_p_jar");
    INTERN(s_p_oid, "_p_oid");
    INTERN(s_p_mongo_doc_object, "_p_mongo_doc_object");
    INTERN(s_data, "data");
    INTERN(s_dump, "dump");
    INTERN(s_py_type, "_py_type");
    INTERN(s_iso, "iso");
    INTERN(s_isoformat, "isoformat");
    INTERN(s_id, "_id");
    INTERN(s_sub_object, "_p_mongo_sub_object");
    INTERN(s_dict, "__dict__");
    INTERN(s_class, "__class__");
    INTERN(s_name, "__name__");
    INTERN(s_stored_value, "stored_value");
    INTERN(s_read_dict, "_read_dict");
    INTERN(s_load, "load");
    INTERN(s_registry, "registry");
    INTERN(s_type_registry, "type_registry");
    INTERN(s_resolved, "_resolved");
    INTERN(s_generation, "_generation");
    INTERN(s_resolve, "resolve");
    INTERN(s_value, "value");
    INTERN(s_new, "__new__");
    INTERN(s_update, "update");
    INTERN(s_fromisoformat, "fromisoformat");
    INTERN(s_ordinal, "ordinal");
    INTERN(s_serializers, "_serializers");
    INTERN(s_py_persistent_type, "_py_persistent_type");
    INTERN(s_py_factory, "_py_factory");
    INTERN(s_py_state, "_py_state");
    INTERN(s_py_new_args, "_py_new_args");
    INTERN(s_py_listitems, "_py_listitems");
    INTERN(s_py_dictitems, "_py_dictitems");
    INTERN(s_builtins_dict, "builtins.dict");
    INTERN(s_items, "items");
    INTERN(s_dbref_id, "_DBRef__id");
    INTERN(s_dbref_collection, "_DBRef__collection");
    INTERN(s_dbref_database, "_DBRef__database");
    INTERN(s_dbref_kwargs, "_DBRef__kwargs");
    INTERN(s_hash, "_hash");
    INTERN(s_doc, "_doc");
    INTERN(s_routing, "routing");
    INTERN(s_datetime_date, "datetime.date");
    INTERN(s_getstate, "__getstate__");
    INTERN(REGISTRY_NAME, "REGISTRY");
    INTERN(s_value_kind, "value");
    INTERN(s_persistent_kind, "persistent");
    INTERN(s_objects, "_objects");
    INTERN(s_used, "_used");
    INTERN(s_held, "_held");
    INTERN(s_gone, "_gone");
    INTERN(s_cache, "_cache");
    INTERN(s_validator, "_validator");
    INTERN(s_validated, "_validated");
    INTERN(s_batches, "_batches");
    INTERN(s_collecting, "_collecting");
    INTERN(s_closed, "_closed");
    INTERN(s_thread, "_thread");
    INTERN(s_check_thread, "_check_thread");
    INTERN(s_use, "use");
    INTERN(s_load_new, "_load_new");
    INTERN(s_default_database, "default_database");
    INTERN(s_p_status, "_p_status");
    INTERN(s_p_state, "_p_state");
    INTERN(s_ghost, "ghost");
    INTERN(s_found, "found");
    INTERN(s_reader, "_reader");
    INTERN(s_setstate, "setstate");
    INTERN(s_docs, "docs");
    INTERN(s_documents_read, "_documents_read");
    INTERN(s_py_serial, "_py_serial");
    INTERN(s_invalidated, "_invalidated");
    INTERN(s_activated, "_activated");
    INTERN(s_p_serial, "_p_serial");
    INTERN(s_class_of_document, "_class_of_document");
    INTERN(s_prefetched, "_prefetched");
    INTERN(s_p_activate, "_p_activate");
    INTERN(s_types, "_types");
    INTERN(s_types_cache, "_types");
    INTERN(s_registry_attr, "registry");
    INTERN(s_use_document, "use_document");
    INTERN(s_needs_validation, "needs_validation");
    INTERN(s_start, "start");
    INTERN(s_stop, "stop");
    INTERN(s_group_of, "_group_of");
    INTERN(s_document, "document");
    INTERN(s_activate, "_activate");
    INTERN(s_new_ghost, "_new_ghost");
    INTERN(s_setstate_name, "__setstate__");
    INTERN(s_get_state, "get_state");
    INTERN(s_set_ghost_state, "set_ghost_state");
    INTERN(s_fresh, "fresh");
    INTERN(s_used_name, "used");
    INTERN(s_get, "get");
    return PyModule_Create(&module_def);
}
