/* mongopersist._speedups: the compiled hot paths of mongopersist.
 *
 * Every function here mirrors a Python function of mongopersist, named in
 * its comment.  The Python code stays the reference: it runs when this
 * module is absent or MONGOPERSIST_PURE_PYTHON is set, and the whole test
 * suite passes either way.  The compiled code handles the common shapes
 * itself (plain dicts and arrays of BSON scalars, references, dates,
 * value objects stored as their attributes, the per-object bookkeeping of
 * loading) and calls the Python code for anything else at the point where
 * the Python code would: unusual shapes, custom serializers, and every
 * error.  It raises no error of its own making (but MemoryError and the
 * like): the Python helpers it calls raise them, so messages, field paths
 * and the documents named are the same.
 *
 * The compiled methods replace the Python ones on their classes
 * (mongopersist/speedups.py installs them), which stay as
 * ``_python_<name>``: a compiled method that cannot handle a call hands
 * it, unchanged, to its Python version.  Methods of the library's objects
 * (data manager, cache, reader, ...) that the compiled code inlines are
 * inlined only while the object's class has the library's own
 * (``inlined_ok``): a subclass or a patch overriding one gets it called.
 *
 * The Python objects the code uses (classes, memo dicts, sentinels) are
 * handed over once by ``bind()``.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <structmember.h>

#if PY_VERSION_HEX >= 0x030D0000
#define LOOKUP_ATTR(obj, name, result) PyObject_GetOptionalAttr(obj, name, result)
#else
#define LOOKUP_ATTR(obj, name, result) _PyObject_LookupAttr(obj, name, result)
#endif

#ifndef Py_T_OBJECT_EX
#define Py_T_OBJECT_EX T_OBJECT_EX
#endif
#ifndef Py_READONLY
#define Py_READONLY READONLY
#endif

/* ------------------------------------------------------------------ */
/* Interned names.                                                      */

#define STRINGS(X) \
    X(s_write, "_write") X(s_write_dict, "_write_dict") \
    X(s_write_list, "_write_list") X(s_write_plain, "_write_plain") \
    X(s_deepest, "deepest") X(s_untracked, "untracked") X(s_path, "path") \
    X(s_located, "_located") X(s_jar, "_jar") X(s_p_jar, "_p_jar") \
    X(s_p_oid, "_p_oid") X(s_p_mongo_doc_object, "_p_mongo_doc_object") \
    X(s_data, "data") X(s_dump, "dump") X(s_py_type, "_py_type") \
    X(s_iso, "iso") X(s_id, "_id") X(s_sub_object, "_p_mongo_sub_object") \
    X(s_dict, "__dict__") X(s_class, "__class__") X(s_name, "__name__") \
    X(s_stored_value, "stored_value") X(s_read_dict, "_read_dict") \
    X(s_load, "load") X(s_type_registry, "type_registry") \
    X(s_resolved, "_resolved") X(s_generation, "_generation") \
    X(s_resolve, "resolve") X(s_value, "value") X(s_new, "__new__") \
    X(s_update, "update") X(s_fromisoformat, "fromisoformat") \
    X(s_ordinal, "ordinal") X(s_serializers, "_serializers") \
    X(s_py_persistent_type, "_py_persistent_type") \
    X(s_py_factory, "_py_factory") X(s_py_state, "_py_state") \
    X(s_py_new_args, "_py_new_args") X(s_py_listitems, "_py_listitems") \
    X(s_py_dictitems, "_py_dictitems") X(s_builtins_dict, "builtins.dict") \
    X(s_items, "items") X(s_dbref_database, "_DBRef__database") \
    X(s_dbref_collection, "_DBRef__collection") \
    X(s_datetime_date, "datetime.date") X(s_getstate, "__getstate__") \
    X(s_SERIALIZERS, "SERIALIZERS") X(s_slotnames, "__slotnames__") \
    X(s_p_state, "_p_state") X(s_p_status, "_p_status") \
    X(s_REGISTRY, "REGISTRY") X(s_persistent_kind, "persistent") \
    X(s_objects, "_objects") X(s_used, "_used") X(s_held, "_held") \
    X(s_gone, "_gone") X(s_cache, "_cache") X(s_validator, "_validator") \
    X(s_validated, "_validated") X(s_batches, "_batches") \
    X(s_collecting, "_collecting") X(s_closed, "_closed") \
    X(s_thread, "_thread") X(s_check_thread, "_check_thread") \
    X(s_use, "use") X(s_load_new, "_load_new") \
    X(s_default_database, "default_database") X(s_ghost, "ghost") \
    X(s_found, "found") X(s_reader, "_reader") X(s_docs, "docs") \
    X(s_documents_read, "_documents_read") X(s_py_serial, "_py_serial") \
    X(s_invalidated, "_invalidated") X(s_activated, "_activated") \
    X(s_p_serial, "_p_serial") X(s_class_of_document, "_class_of_document") \
    X(s_prefetched, "_prefetched") X(s_p_activate, "_p_activate") \
    X(s_types, "_types") X(s_registry, "registry") \
    X(s_use_document, "use_document") \
    X(s_needs_validation, "needs_validation") X(s_start, "start") \
    X(s_stop, "stop") X(s_group_of, "_group_of") X(s_document, "document") \
    X(s_activate, "_activate") X(s_setstate_name, "__setstate__") \
    X(s_get_state, "get_state") X(s_set_ghost_state, "set_ghost_state") \
    X(s_fresh, "fresh") X(s_used_method, "used") X(s_get, "get") \
    X(s_append, "append") X(s_pop, "pop") X(s_of, "of") \
    X(s_py_get_document, "_python_get_document") \
    X(s_py_get_state, "_python_get_state") \
    X(s_py_read_fields, "_python__read_fields") \
    X(s_py_read_value, "_python__read_value") \
    X(s_py_load, "_python_load") \
    X(s_py_object_from_document, "_python__object_from_document") \
    X(s_py_setstate, "_python_setstate") \
    X(s_py_register, "_python_register") X(s_register, "register") \
    X(s_deleted, "_deleted") X(s_transaction_manager, "transaction_manager") \
    X(s_joined, "_joined") X(s_join_txn, "_join_txn")

#define DECLARE_STRING(var, text) static PyObject *var;
STRINGS(DECLARE_STRING)

/* ------------------------------------------------------------------ */
/* What bind() hands over.                                             */

/* mongopersist.serialize (and what it uses) */
static PyObject *NATIVE_TYPES;        /* frozenset of types */
static PyObject *SAFE_KEYS;           /* _safe_keys (a set) */
static PyObject *IS_KNOWN_SAFE_KEY;   /* _is_known_safe_key */
static PyObject *META_FIELDS;         /* DOCUMENT_META_FIELDS */
static PyObject *FIELD_NAMES;         /* _FIELD_NAMES memo */
static PyObject *PLAIN_CLASSES;       /* _plain_classes memo */
static PyObject *SETSTATES;           /* _SETSTATES memo */
static PyObject *SETSTATE_OF;         /* _setstate_of */
static PyObject *CHECK_NAMES;         /* _check_names */
static PyObject *LOCATE;              /* _locate */
static PyObject *ATTRIBUTE_NAME_ERROR;/* _attribute_name_error */
static PyObject *CHECK_WRITABLE;      /* _check_writable_state */
static PyObject *MALFORMED_VALUE;     /* _malformed_value */
static PyObject *MALFORMED;           /* MALFORMED (a tuple of classes) */
static PyObject *NOT_PLAIN;           /* _NOT_PLAIN */
static PyObject *PERSISTENT_DICT;     /* PersistentDict */
static PyObject *PERSISTENT_LIST;     /* PersistentList */
static PyObject *UNSTORABLE;          /* _Unstorable */
static PyObject *SERIALIZE_DICT;      /* vars(serialize): SERIALIZERS */
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
/* persistent, broken, metadata, bson, and the data manager's helpers */
static PyObject *PERSISTENT_TYPE;     /* persistent.Persistent */
static PyObject *PERSISTENT_BROKEN;   /* broken.PersistentBroken */
static PyObject *PERSISTENT_GETSTATE; /* Persistent.__getstate__ */
static PyObject *PERSISTENT_SETSTATE; /* Persistent.__setstate__ */
static PyObject *CLASS_SETTINGS;      /* metadata.CLASS_SETTINGS */
static PyObject *SHARD_KEYS;          /* metadata._shard_keys memo */
static PyObject *METADATA_DICT;       /* vars(metadata) */
static PyObject *TYPE_REGISTRY;       /* metadata.TypeRegistry */
static PyObject *OID_TYPE;            /* metadata.OID */
static PyObject *EMPTY_KWARGS;        /* metadata._NO_EXTRA_FIELDS */
static PyObject *DBREF_TYPE;          /* bson.dbref.DBRef */
static PyObject *OBJECTID_TYPE;       /* bson.objectid.ObjectId */
static PyObject *INT64_TYPE;          /* bson.int64.Int64 */
static PyObject *STORED_SERIAL;       /* conflict.stored_serial */
static PyObject *RAISE_LOCATED;       /* datamanager._raise_located */
static PyObject *SHARDING_REMEMBER;   /* sharding.remember */
static PyObject *GET_DOTTED_NAME;     /* metadata.get_dotted_name */
static PyObject *REFUSE_ID;           /* references.refuse_id */
static PyObject *OBJECT_NEW;          /* object.__new__ */
static PyObject *PERSISTENT_NEW;      /* Persistent.__new__ */
static PyObject *UNREFERENCEABLE;     /* cache.unreferenceable */

typedef struct {
    const char *name;
    PyObject **slot;
} Bound;

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
    {"serialize_dict", &SERIALIZE_DICT},
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
    {"persistent_setstate", &PERSISTENT_SETSTATE},
    {"CLASS_SETTINGS", &CLASS_SETTINGS},
    {"_shard_keys", &SHARD_KEYS},
    {"metadata_dict", &METADATA_DICT},
    {"TypeRegistry", &TYPE_REGISTRY},
    {"OID", &OID_TYPE},
    {"EMPTY_KWARGS", &EMPTY_KWARGS},
    {"DBRef", &DBREF_TYPE},
    {"ObjectId", &OBJECTID_TYPE},
    {"Int64", &INT64_TYPE},
    {"stored_serial", &STORED_SERIAL},
    {"_raise_located", &RAISE_LOCATED},
    {"sharding_remember", &SHARDING_REMEMBER},
    {"get_dotted_name", &GET_DOTTED_NAME},
    {"refuse_id", &REFUSE_ID},
    {"object_new", &OBJECT_NEW},
    {"persistent_new", &PERSISTENT_NEW},
    {"unreferenceable", &UNREFERENCEABLE},
    {NULL, NULL}
};

static long MAX_NESTING = 100;
static int bound = 0;
static PyObject *EMPTY_TUPLE;
static PyTypeObject *DATE_TYPE, *DATETIME_TYPE;

/* ------------------------------------------------------------------ */
/* Errors.                                                              */

/* The exception being raised, normalized, taken out of the way. */
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
    return c->value == NULL ? 0 : PyObject_IsInstance(c->value, cls);
}

/* An error raised while handling ``c`` (in an ``except`` or ``finally``
 * block of the Python code) replaces it, with it as its __context__. */
static void
raised_while_handling(Caught *c)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value != NULL && c->value != NULL && value != c->value) {
        PyException_SetContext(value, c->value);
        c->value = NULL;
    }
    drop_caught(c);
    PyErr_Restore(type, value, tb);
}

/* Raise the exception instance ``error`` in the handler of ``context``:
 * its __context__ is ``context`` (and its __cause__ with ``cause``: a
 * ``raise error from context``). */
static void
raise_in_handler(PyObject *error, PyObject *context, int cause)
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

/* Call ``func(*args)`` as the Python code does from an ``except`` block
 * handling ``handled``: an exception it raises gets it as __context__. */
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
/* Small helpers.                                                      */

/* ``ref()`` of a weak reference: the object (a new reference), or None
 * when it is gone. */
static PyObject *
weak_target(PyObject *ref)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *obj;
    int alive = PyWeakref_GetRef(ref, &obj);
    if (alive < 0)
        return NULL;
    return alive ? obj : Py_NewRef(Py_None);
#else
    return Py_NewRef(PyWeakref_GetObject(ref));
#endif
}

static int
get_long_attr(PyObject *obj, PyObject *name, long *result)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL)
        return -1;
    *result = PyLong_AsLong(value);
    Py_DECREF(value);
    return (*result == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int
call_ignoring_result(PyObject *result)
{
    if (result == NULL)
        return -1;
    Py_DECREF(result);
    return 0;
}

/* Classes whose methods the compiled code inlines: inlined only while
 * the class of the object has the library's own functions (checked
 * once per class and version of it).  Instance attributes are not looked
 * at: the library sets no methods on instances. */
typedef struct {
    PyObject *names;        /* tuple of method names */
    PyObject *originals;    /* tuple of the library's functions */
    PyTypeObject *type;     /* the last class checked (not owned) */
    unsigned int tag;       /* its version tag then */
    int ok;
} Inlined;

static Inlined INLINED_READER, INLINED_WRITER, INLINED_JAR, INLINED_CACHE,
    INLINED_VALIDATOR, INLINED_BATCHES, INLINED_TYPEMAP, INLINED_OBJECTID;

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
/* Attributes of persistent objects.  persistent's C getattr and setattr */
/* (Per_getattro, Per_setattro) encode each name to UTF-8 to look at its */
/* prefix, then, for ``_p_`` names and ``__dict__``, do the generic      */
/* lookup and nothing else: that is what these do, without the encoding, */
/* for objects whose class uses them.                                    */

static getattrofunc per_getattro;
static setattrofunc per_setattro;

/* ``obj.name`` for a ``_p_`` name or ``__dict__`` */
static PyObject *
p_get(PyObject *obj, PyObject *name)
{
    if (per_getattro != NULL && Py_TYPE(obj)->tp_getattro == per_getattro)
        return PyObject_GenericGetAttr(obj, name);
    return PyObject_GetAttr(obj, name);
}

/* ``obj.name = value`` for a ``_p_`` name */
static int
p_set(PyObject *obj, PyObject *name, PyObject *value)
{
    if (per_setattro != NULL && Py_TYPE(obj)->tp_setattro == per_setattro)
        return PyObject_GenericSetAttr(obj, name, value);
    return PyObject_SetAttr(obj, name, value);
}

/* ``bool(getattr(cls, name, False))``: for a class whose metaclass is
 * ``type``, what its namespaces hold under ``name`` (getattr returns a
 * value that is not a descriptor as it is).  -1 with an exception. */
static int
class_flag(PyTypeObject *cls, PyObject *name)
{
    PyObject *found;
    int truth;
    if (Py_IS_TYPE(cls, &PyType_Type)) {
        found = _PyType_Lookup(cls, name);
        if (found == NULL)
            return PyErr_Occurred() ? -1 : 0;
        if (Py_TYPE(found)->tp_descr_get == NULL)
            return PyObject_IsTrue(found);
    }
    if (LOOKUP_ATTR((PyObject *)cls, name, &found) < 0)
        return -1;
    if (found == NULL)
        return 0;
    truth = PyObject_IsTrue(found);
    Py_DECREF(found);
    return truth;
}

/* ``cls.__new__(cls)``: called directly where ``cls.__new__`` is
 * ``object.__new__`` or persistent's, which make the instance with the
 * class's ``tp_new`` (and nothing else). */
static PyObject *
new_instance(PyObject *cls)
{
    PyObject *new, *result;
    if (PyType_Check(cls) && Py_IS_TYPE(cls, &PyType_Type)) {
        PyTypeObject *type = (PyTypeObject *)cls;
        new = _PyType_Lookup(type, s_new);
        if (new != NULL && (new == OBJECT_NEW || new == PERSISTENT_NEW)
                && PyCFunction_Check(new)) {
            PyObject *owner = PyCFunction_GET_SELF(new);
            if (owner != NULL && PyType_Check(owner)
                    && type->tp_new == ((PyTypeObject *)owner)->tp_new
                    && type->tp_new != NULL)
                return type->tp_new(type, EMPTY_TUPLE, NULL);
        }
    }
    new = PyObject_GetAttr(cls, s_new);
    if (new == NULL)
        return NULL;
    result = PyObject_CallOneArg(new, cls);
    Py_DECREF(new);
    return result;
}

/* ------------------------------------------------------------------ */
/* Oids.  metadata.OID subclasses bson's DBRef, whose fields are slots; */
/* OID adds _hash, _doc and routing.  The offsets are read from the     */
/* member descriptors once; without them (another PyMongo), oids are    */
/* made by calling the class.                                           */

static Py_ssize_t off_collection = -1, off_id = -1, off_database = -1,
    off_kwargs = -1, off_hash = -1, off_doc = -1, off_routing = -1,
    off_objectid = -1;
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
        if (member->type == Py_T_OBJECT_EX && !(member->flags & Py_READONLY))
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
 * other.binary``), in Python.  Checked on a sample at bind(). */
static int objectid_fast = 0;

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

/* ``hash((a, b, c, d))`` as CPython's tuplehash computes it (xxHash
 * lanes, Objects/tupleobject.c); checked against it at bind(), else the
 * tuple is made and hashed. */
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
 * it for a str collection and database (or None): the DBRef slots, no
 * extra fields, the hash of ``(collection, id, database, ())``, no
 * document, no routing.  NULL with TypeError for an unhashable id, as
 * the class raises. */
static PyObject *
new_oid(PyObject *collection, PyObject *id, PyObject *database)
{
    PyObject *oid, *hash;
    Py_hash_t h;
    if (!oid_slots || !PyUnicode_CheckExact(collection)
            || !(database == Py_None || PyUnicode_CheckExact(database)))
        return PyObject_CallFunctionObjArgs(OID_TYPE, collection, id,
                                            database, NULL);
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

/* ``OID.of(dbref, database)`` (its extra fields left out). */
static PyObject *
oid_of(PyObject *dbref, PyObject *database)
{
    if (oid_slots && Py_IS_TYPE(dbref, (PyTypeObject *)DBREF_TYPE)) {
        PyObject *collection = slot_get(dbref, off_collection),
            *id = slot_get(dbref, off_id), *db = slot_get(dbref, off_database),
            *result;
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
    return PyObject_CallMethodObjArgs(OID_TYPE, s_of, dbref, database, NULL);
}

/* ``(ref.database, ref.collection)`` as new references */
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

/* metadata.OID's hash and equality, as its Python methods compute them
 * (``__hash__`` returns ``_hash``; ``__eq__`` compares two oids by their
 * fields, anything else as DBRef does).  Oids are keys of every dict of
 * the data manager. */
static hashfunc oid_python_hash;
static richcmpfunc oid_python_richcompare;

static Py_hash_t
oid_hash(PyObject *self)
{
    if (oid_slots && Py_IS_TYPE(self, (PyTypeObject *)OID_TYPE)) {
        PyObject *h = slot_get(self, off_hash);
        if (h != NULL && PyLong_CheckExact(h)) {
            Py_hash_t value = PyLong_AsSsize_t(h);
            if (value != -1)
                return value;
            PyErr_Clear();
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
    /* self._hash == other._hash and ...: the first false value, or the
     * last */
    for (i = 0; i < 4; i++) {
        int truth;
        Py_XDECREF(result);
        result = value_eq(slot_get(self, offsets[i]),
                          slot_get(other, offsets[i]));
        if (result == NULL || i == 3)
            break;
        truth = PyObject_IsTrue(result);
        if (truth < 0) {
            Py_CLEAR(result);
            break;
        }
        if (!truth)
            break;
    }
    return result;
}

/* ------------------------------------------------------------------ */
/* The writer: mirrors serialize.ObjectWriter.get_document and _write   */
/* (and the methods _write calls) for writers without custom            */
/* serializers.                                                         */

/* ``kind in NATIVE_TYPES``, remembered per type (a frozenset: its
 * answers never change); the types remembered are kept alive. */
#define NATIVE_CACHE 16
static PyObject *native_types_seen[NATIVE_CACHE];
static char native_answers[NATIVE_CACHE];

static int
is_native_type(PyTypeObject *kind)
{
    size_t slot = ((size_t)kind >> 4) % NATIVE_CACHE;
    int answer;
    if (native_types_seen[slot] == (PyObject *)kind)
        return native_answers[slot];
    answer = PySet_Contains(NATIVE_TYPES, (PyObject *)kind);
    if (answer < 0)
        return -1;
    Py_INCREF(kind);
    Py_XSETREF(native_types_seen[slot], (PyObject *)kind);
    native_answers[slot] = (char)answer;
    return answer;
}

/* ``kind in NATIVE_TYPES or (kind is int and INT64_MIN <= value <=
 * INT64_MAX)``: stored as it is.  1, 0, or -1 with an exception. */
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
    return is_native_type(kind);
}

typedef struct {
    PyObject *writer;     /* the ObjectWriter (borrowed) */
    PyObject *jar;        /* writer._jar (owned) */
    /* The values being written, outermost first: the Python code's
     * ``stack`` (their ids), made for Python only when it is called. */
    PyObject **entered;
    Py_ssize_t depth, room;
    long deepest;         /* writer.deepest, kept here between calls */
    int untracked;        /* writer.untracked */
} Writer;

/* Give the writer object the counts kept here (before Python code that
 * reads them runs, and at the end). */
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

/* The Python ``stack``: the set of the ids of the values entered. */
static PyObject *
w_stack(Writer *w)
{
    PyObject *stack = PySet_New(NULL);
    Py_ssize_t i;
    if (stack == NULL)
        return NULL;
    for (i = 0; i < w->depth; i++) {
        PyObject *id = PyLong_FromVoidPtr(w->entered[i]);
        if (id == NULL || PySet_Add(stack, id) < 0) {
            Py_XDECREF(id);
            Py_DECREF(stack);
            return NULL;
        }
        Py_DECREF(id);
    }
    return stack;
}

/* Call a Python method of the writer with the state kept here:
 * ``name(value, pobj, stack, custom)`` or, with ``extra``, ``name(value,
 * extra, pobj, stack, custom)`` (``_write_plain``); ``name(value)``
 * without ``pobj`` (``jar.dump``: the writer's jar). */
static PyObject *
w_python(Writer *w, PyObject *name, PyObject *value, PyObject *extra,
         PyObject *pobj)
{
    PyObject *result = NULL, *stack = NULL, *custom = NULL;
    Caught c = {NULL, NULL, NULL};
    if (w_store(w) < 0)
        return NULL;
    if (pobj == NULL)
        result = PyObject_CallMethodOneArg(w->jar, name, value);
    else {
        stack = w_stack(w);
        custom = stack == NULL ? NULL : PyList_New(0);
        if (custom == NULL) {
            Py_XDECREF(stack);
            return NULL;
        }
        if (extra == NULL)
            result = PyObject_CallMethodObjArgs(w->writer, name, value, pobj,
                                                stack, custom, NULL);
        else
            result = PyObject_CallMethodObjArgs(w->writer, name, value,
                                                extra, pobj, stack, custom,
                                                NULL);
        Py_DECREF(stack);
        Py_DECREF(custom);
    }
    if (result == NULL)
        catch_error(&c);
    if (w_load(w) < 0) {
        Py_XDECREF(result);
        raised_while_handling(&c);
        return NULL;
    }
    if (result == NULL)
        rethrow(&c);
    return result;
}

/* ``_enter(obj, stack)``: 1 entered, 0 when entering would raise (a
 * cycle, too deep: the caller hands the value to Python, which raises),
 * -1 on error. */
static int
w_enter(Writer *w, PyObject *obj)
{
    Py_ssize_t i;
    for (i = 0; i < w->depth; i++) {
        if (w->entered[i] == obj)
            return 0;
    }
    if (w->depth >= w->deepest) {
        if (w->depth >= MAX_NESTING)
            return 0;
        w->deepest = w->depth + 1;
    }
    if (w->depth >= w->room) {
        Py_ssize_t room = w->room * 2 + 8;
        PyObject **more = PyMem_Realloc(w->entered, room * sizeof(PyObject *));
        if (more == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        w->entered = more;
        w->room = room;
    }
    w->entered[w->depth++] = obj;
    return 1;
}

/* ``stack.discard(id(obj))`` of the value entered last. */
static void
w_leave(Writer *w, PyObject *obj)
{
    if (w->depth > 0 && w->entered[w->depth - 1] == obj)
        w->depth--;
}

/* ``_write_item``'s except clauses, for the error raised writing the
 * value at ``where`` (a key or an index): an ``_Unstorable`` gets
 * ``str(where)`` appended to its path, a ``CircularReferenceError``
 * prepended. */
static void
w_item_error(PyObject *where)
{
    Caught c;
    PyObject *path = NULL, *text = NULL, *new_path = NULL;
    int is_unstorable, is_circular;
    catch_error(&c);
    is_unstorable = caught_is(&c, UNSTORABLE);
    is_circular = is_unstorable ? 0 : caught_is(&c, CIRCULAR_ERROR);
    if (is_unstorable < 0 || is_circular < 0) {
        raised_while_handling(&c);
        return;
    }
    if (!is_unstorable && !is_circular) {
        rethrow(&c);
        return;
    }
    path = PyObject_GetAttr(c.value, s_path);
    text = path == NULL ? NULL : PyObject_Str(where);
    if (text == NULL)
        goto failed;
    if (is_unstorable) {
        if (call_ignoring_result(PyObject_CallMethodOneArg(path, s_append,
                                                           text)) < 0)
            goto failed;
    }
    else {
        PyObject *head = PyList_New(1);
        int truth;
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
    Py_DECREF(path);
    Py_DECREF(text);
    Py_XDECREF(new_path);
    rethrow(&c);
    return;
failed:
    Py_XDECREF(path);
    Py_XDECREF(text);
    Py_XDECREF(new_path);
    raised_while_handling(&c);
}

static PyObject *w_value(Writer *w, PyObject *value, PyObject *pobj);

/* ``self._write_item(value, where, ...)`` (a value not stored as is). */
static PyObject *
w_item(Writer *w, PyObject *value, PyObject *where, PyObject *pobj)
{
    PyObject *result = w_value(w, value, pobj);
    if (result == NULL)
        w_item_error(where);
    return result;
}

/* The fields of a dict of safe keys (``_write_dict``'s loop, and
 * ``_add_state``'s): ``into[key] = value as stored``.  Iterates as
 * ``dict.items()`` does (a dict changed meanwhile raises). */
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
            stored = NULL;
        else if (as_is)
            stored = Py_NewRef(value);
        else
            stored = w_item(w, value, key, pobj);
        if (stored == NULL || PyDict_SetItem(into, key, stored) < 0) {
            Py_XDECREF(stored);
            Py_DECREF(key);
            Py_DECREF(value);
            return -1;
        }
        Py_DECREF(stored);
        Py_DECREF(key);
        Py_DECREF(value);
        if (PyDict_GET_SIZE(source) != size) {
            PyErr_SetString(PyExc_RuntimeError,
                            "dictionary changed size during iteration");
            return -1;
        }
    }
    return 0;
}

/* Whether every key of the dict ``obj`` is a safe key (``_all_safe_keys``:
 * the memo, asking Python about keys it does not know yet). */
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

/* ``_write_dict`` */
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
         * Python writes it, from ``_enter`` on. */
        w_leave(w, obj);
        return safe < 0 ? NULL : w_python(w, s_write_dict, obj, NULL, pobj);
    }
    result = PyDict_New();
    if (result == NULL || w_fields(w, obj, result, pobj) < 0)
        Py_CLEAR(result);
    w_leave(w, obj);
    return result;
}

/* ``_write_list`` of a list or tuple */
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
        goto done;
    for (index = 0; index < PySequence_Fast_GET_SIZE(obj); index++) {
        PyObject *item = PySequence_Fast_GET_ITEM(obj, index), *stored;
        int as_is;
        Py_INCREF(item);
        as_is = is_stored_as_is(item);
        if (as_is < 0)
            stored = NULL;
        else if (as_is)
            stored = Py_NewRef(item);
        else {
            PyObject *where = PyLong_FromSsize_t(index);
            stored = where == NULL ? NULL : w_item(w, item, where, pobj);
            Py_XDECREF(where);
        }
        Py_DECREF(item);
        if (stored == NULL || PyList_Append(result, stored) < 0) {
            Py_XDECREF(stored);
            Py_CLEAR(result);
            break;
        }
        Py_DECREF(stored);
    }
done:
    w_leave(w, obj);
    return result;
}

/* Whether the field-name memo of ``cls`` covers every key of the dict
 * ``state`` (``_FIELD_NAMES.get(cls, _NO_NAMES).issuperset(state)``). */
static int
names_known(PyObject *cls, PyObject *state)
{
    PyObject *known = PyDict_GetItemWithError(FIELD_NAMES, cls), *key, *value;
    Py_ssize_t pos = 0;
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
 * has only names the memos accept; Python writes the others. */
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
    entered = ok > 0 ? w_enter(w, obj) : ok;
    if (entered <= 0) {
        Py_DECREF(state);
        return entered < 0 ? NULL
            : w_python(w, s_write_plain, obj, name, pobj);
    }
    doc = PyDict_New();
    if (doc == NULL || PyDict_SetItem(doc, s_py_type, name) < 0
            || w_fields(w, state, doc, pobj) < 0)
        Py_CLEAR(doc);
    Py_DECREF(state);
    w_leave(w, obj);
    return doc;
}

/* ``_write_sub_object`` of a PersistentDict or PersistentList: attach it
 * to its owner, then write its data. */
static PyObject *
w_sub_object(Writer *w, PyObject *obj, PyObject *pobj, int is_dict)
{
    PyObject *data, *result;
    if (pobj != Py_None) {
        PyObject *jar = p_get(obj, s_p_jar);
        if (jar == NULL)
            return NULL;
        Py_DECREF(jar);
        if (jar != w->jar && p_set(obj, s_p_jar, w->jar) < 0)
            return NULL;
        if (p_set(obj, s_p_mongo_doc_object, pobj) < 0)
            return NULL;
    }
    data = PyObject_GetAttr(obj, s_data);
    if (data == NULL)
        return NULL;
    result = is_dict ? w_dict(w, data, pobj) : w_list(w, data, pobj);
    Py_DECREF(data);
    return result;
}

/* ``self._jar.dump(obj)``: for an object of this data manager whose
 * class has no shard key, its oid (``sharding.reference``). */
static PyObject *
w_reference(Writer *w, PyObject *obj)
{
    PyObject *jar, *oid, *key;
    if (!inlined_ok(w->jar, &INLINED_JAR))
        return w_python(w, s_dump, obj, NULL, NULL);
    jar = p_get(obj, s_p_jar);
    if (jar == NULL)
        return NULL;
    Py_DECREF(jar);
    if (jar != w->jar)
        return w_python(w, s_dump, obj, NULL, NULL);
    oid = p_get(obj, s_p_oid);
    if (oid == NULL)
        return NULL;
    key = oid == Py_None ? NULL
        : PyDict_GetItemWithError(SHARD_KEYS, (PyObject *)Py_TYPE(obj));
    if (key == Py_None)
        return oid;
    Py_DECREF(oid);
    if (key == NULL && PyErr_Occurred())
        return NULL;
    return w_python(w, s_dump, obj, NULL, NULL);
}

/* ``{'_py_type': 'datetime.date', 'iso': value.isoformat()}``
 * (``serializers.write_date``): YYYY-MM-DD */
static PyObject *
w_date(PyObject *value)
{
    char text[10];
    int year = PyDateTime_GET_YEAR(value), month = PyDateTime_GET_MONTH(value),
        day = PyDateTime_GET_DAY(value);
    PyObject *iso, *doc;
    text[0] = '0' + year / 1000 % 10;
    text[1] = '0' + year / 100 % 10;
    text[2] = '0' + year / 10 % 10;
    text[3] = '0' + year % 10;
    text[4] = '-';
    text[5] = '0' + month / 10;
    text[6] = '0' + month % 10;
    text[7] = '-';
    text[8] = '0' + day / 10;
    text[9] = '0' + day % 10;
    iso = PyUnicode_FromStringAndSize(text, 10);
    if (iso == NULL)
        return NULL;
    doc = PyDict_New();
    if (doc == NULL || PyDict_SetItem(doc, s_py_type, s_datetime_date) < 0
            || PyDict_SetItem(doc, s_iso, iso) < 0)
        Py_CLEAR(doc);
    Py_DECREF(iso);
    return doc;
}

/* ``_write``: the stored form of ``value``, part of ``pobj``'s document. */
static PyObject *
w_value(Writer *w, PyObject *value, PyObject *pobj)
{
    PyTypeObject *kind = Py_TYPE(value);
    PyObject *name;
    int found = is_stored_as_is(value);
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
        /* A leaf: no value to enter, but a level of the document. */
        PyObject *writer = PyDict_GetItemWithError(WRITERS, (PyObject *)kind);
        if (writer != WRITE_DATE)
            return (writer == NULL && PyErr_Occurred()) ? NULL
                : w_python(w, s_write, value, NULL, pobj);
        if (w->depth >= w->deepest) {
            /* ``self._enter(obj, stack); stack.discard(id(obj))`` */
            int entered = w_enter(w, value);
            if (entered <= 0)
                return entered < 0 ? NULL
                    : w_python(w, s_write, value, NULL, pobj);
            w_leave(w, value);
        }
        return w_date(value);
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
        int sub = class_flag(kind, s_sub_object);
        if (sub < 0)
            return NULL;
        if (!sub)
            return w_reference(w, value);
    }
    return w_python(w, s_write, value, NULL, pobj);
}

/* What ``get_document``'s loop raises for an error writing the field
 * ``name`` of ``obj``: ``self._located(failure, cls_name, name)`` for an
 * ``_Unstorable``; a ``CircularReferenceError`` with
 * ``cls_name.name.<its path>`` as path. */
static void
w_field_error(Writer *w, PyObject *obj, PyObject *name)
{
    Caught c;
    PyObject *cls = NULL, *cls_name = NULL;
    int is_unstorable, is_circular;
    catch_error(&c);
    is_unstorable = caught_is(&c, UNSTORABLE);
    is_circular = is_unstorable ? 0 : caught_is(&c, CIRCULAR_ERROR);
    if (is_unstorable < 0 || is_circular < 0) {
        raised_while_handling(&c);
        return;
    }
    if (!is_unstorable && !is_circular) {
        rethrow(&c);
        return;
    }
    cls = PyObject_GetAttr(obj, s_class);
    cls_name = cls == NULL ? NULL : PyObject_GetAttr(cls, s_name);
    Py_XDECREF(cls);
    if (cls_name == NULL)
        goto failed;
    if (is_unstorable) {
        PyObject *args[4] = {w->writer, c.value, cls_name, name};
        PyObject *error = PyObject_VectorcallMethod(
            s_located, args, 4, NULL);
        if (error == NULL)
            goto failed;
        raise_in_handler(error, c.value, 0);
        Py_DECREF(error);
        drop_caught(&c);
    }
    else {
        PyObject *path = PyObject_GetAttr(c.value, s_path), *parts, *dot,
            *joined;
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
        if (truth > 0)
            Py_SETREF(parts, PyNumber_Add(parts, path));
        Py_DECREF(path);
        if (truth < 0 || parts == NULL) {
            Py_XDECREF(parts);
            goto failed;
        }
        dot = PyUnicode_FromString(".");
        joined = dot == NULL ? NULL : PyUnicode_Join(dot, parts);
        Py_XDECREF(dot);
        Py_DECREF(parts);
        if (joined == NULL || PyObject_SetAttr(c.value, s_path, joined) < 0) {
            Py_XDECREF(joined);
            goto failed;
        }
        Py_DECREF(joined);
        rethrow(&c);
    }
    Py_DECREF(cls_name);
    return;
failed:
    Py_XDECREF(cls_name);
    raised_while_handling(&c);
}

/* ``type(obj).__getstate__(obj)`` where that is persistent's own (C):
 * for a loaded object of a class without slots, a copy of the instance
 * dict without its ``_p_`` and ``_v_`` names, made here as persistent
 * makes it; in any other case persistent's is called. */
static PyObject *
persistent_state(PyObject *obj)
{
    PyTypeObject *type = Py_TYPE(obj);
    PyObject *state_attr, *slotnames, **dictp, *copy, *key, *value;
    Py_ssize_t pos = 0;
    long state;
    if (per_getattro == NULL || type->tp_getattro != per_getattro)
        goto call;
    state_attr = p_get(obj, s_p_state);
    if (state_attr == NULL)
        return NULL;
    state = PyLong_AsLong(state_attr);
    Py_DECREF(state_attr);
    if (state == -1) {
        if (PyErr_Occurred())
            return NULL;
        goto call;                  /* a ghost: persistent loads it */
    }
    slotnames = PyDict_GetItemWithError(type->tp_dict, s_slotnames);
    if (slotnames == NULL) {
        if (PyErr_Occurred())
            return NULL;
        goto call;                  /* copyreg finds them (once) */
    }
    if (!PyList_CheckExact(slotnames) || PyList_GET_SIZE(slotnames) != 0)
        goto call;
    dictp = _PyObject_GetDictPtr(obj);
    if (dictp == NULL)
        goto call;
    copy = PyDict_New();
    if (copy == NULL || *dictp == NULL)
        return copy;
    while (PyDict_Next(*dictp, &pos, &key, &value)) {
        if (PyUnicode_Check(key) && PyUnicode_GET_LENGTH(key) >= 3
                && PyUnicode_READ_CHAR(key, 0) == '_'
                && PyUnicode_READ_CHAR(key, 2) == '_') {
            Py_UCS4 second = PyUnicode_READ_CHAR(key, 1);
            if (second == 'v' || second == 'p')
                continue;           /* volatile and persistent */
        }
        if (PyDict_SetItem(copy, key, value) < 0) {
            Py_DECREF(copy);
            return NULL;
        }
    }
    return copy;
call:
    return PyObject_CallOneArg(PERSISTENT_GETSTATE, obj);
}

/* Whether the module-level ``serialize.SERIALIZERS`` is empty. */
static int
no_process_serializers(void)
{
    PyObject *serializers = PyDict_GetItemWithError(SERIALIZE_DICT,
                                                    s_SERIALIZERS);
    if (serializers == NULL)
        return PyErr_Occurred() ? -1 : 0;
    return PyList_CheckExact(serializers) && PyList_GET_SIZE(serializers) == 0;
}

/* Whether ``obj.name`` is an empty list. */
static int
empty_list_attr(PyObject *obj, PyObject *name)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    int empty;
    if (value == NULL)
        return -1;
    empty = PyList_CheckExact(value) && PyList_GET_SIZE(value) == 0;
    Py_DECREF(value);
    return empty;
}

/* ``ObjectWriter.get_document(obj)`` for a writer of the library's class
 * without custom serializers; NOT_HANDLED, having done nothing, where
 * the Python code must write (another call, a broken placeholder, a
 * class with its own ``__getstate__``, a class setting set on the
 * instance, a state that is not a dict). */
static PyObject *
write_document(PyObject *writer, PyObject *obj)
{
    PyObject *state = NULL, *doc = NULL, *oid, *id, *instance_dict;
    PyObject *name, *value;
    PyTypeObject *kind = Py_TYPE(obj);
    Writer w = {writer, NULL, NULL, 0, 0, 1, 0};
    Py_ssize_t pos = 0, size;
    int found;

    if (!inlined_ok(writer, &INLINED_WRITER))
        return Py_NewRef(NOT_HANDLED);
    found = empty_list_attr(writer, s_serializers);
    if (found > 0)
        found = no_process_serializers();
    if (found <= 0)
        return found < 0 ? NULL : Py_NewRef(NOT_HANDLED);
    found = PyObject_IsInstance(obj, PERSISTENT_BROKEN);
    if (found != 0)
        return found < 0 ? NULL : Py_NewRef(NOT_HANDLED);
    if (_PyType_Lookup(kind, s_getstate) != PERSISTENT_GETSTATE)
        return Py_NewRef(NOT_HANDLED);
    instance_dict = p_get(obj, s_dict);
    if (instance_dict == NULL) {
        /* No __dict__ (slots): Python refuses the class. */
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return NULL;
        PyErr_Clear();
        return Py_NewRef(NOT_HANDLED);
    }
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
    /* ``type(obj).__getstate__`` is persistent's, which changes nothing:
     * NOT_HANDLED after it is still "nothing done". */
    state = persistent_state(obj);
    if (state == NULL)
        return NULL;
    if (!PyDict_CheckExact(state)) {
        Py_DECREF(state);
        return Py_NewRef(NOT_HANDLED);
    }
    oid = p_get(obj, s_p_oid);
    if (oid == NULL)
        goto failed_early;
    if (oid_slots && Py_IS_TYPE(oid, (PyTypeObject *)OID_TYPE)
            && slot_get(oid, off_id) != NULL)
        id = Py_NewRef(slot_get(oid, off_id));
    else
        id = PyObject_GetAttrString(oid, "id");
    Py_DECREF(oid);
    if (id == NULL)
        goto failed_early;
    doc = PyDict_New();
    if (doc == NULL || PyDict_SetItem(doc, s_id, id) < 0) {
        Py_DECREF(id);
        goto failed_early;
    }
    Py_DECREF(id);

    w.jar = PyObject_GetAttr(writer, s_jar);
    if (w.jar == NULL)
        goto failed_early;
    w.entered = PyMem_Malloc(8 * sizeof(PyObject *));
    if (w.entered == NULL) {
        PyErr_NoMemory();
        goto failed;
    }
    w.room = 8;
    w.entered[w.depth++] = obj;         /* stack = {id(obj)} */
    size = PyDict_GET_SIZE(state);
    while (PyDict_Next(state, &pos, &name, &value)) {
        PyObject *stored = NULL;
        int safe = 0, meta = 0;
        Py_INCREF(name);
        Py_INCREF(value);
        if (PyUnicode_CheckExact(name))
            safe = PySet_Contains(SAFE_KEYS, name);
        if (safe == 0) {
            PyObject *answer = PyObject_CallOneArg(IS_KNOWN_SAFE_KEY, name);
            safe = answer == NULL ? -1 : PyObject_IsTrue(answer);
            Py_XDECREF(answer);
        }
        if (safe > 0)
            meta = PySet_Contains(META_FIELDS, name);
        if (safe < 0 || meta < 0)
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
        if (PyDict_SetItem(doc, name, stored) < 0)
            goto failed_field;
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
        Py_XDECREF(stored);
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
        if (w_store(&w) < 0 || call_ignoring_result(
                PyObject_CallFunctionObjArgs(CHECK_WRITABLE, state, obj,
                                             NULL)) < 0)
            goto failed;
    }
    if (w_store(&w) < 0)
        goto failed;
    Py_DECREF(w.jar);
    PyMem_Free(w.entered);
    Py_DECREF(state);
    return doc;
failed:
    {
        Caught c;
        catch_error(&c);
        if (w_store(&w) < 0)
            raised_while_handling(&c);
        else
            rethrow(&c);
    }
    Py_XDECREF(w.jar);
    PyMem_Free(w.entered);
failed_early:
    Py_XDECREF(doc);
    Py_DECREF(state);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Reading: mirrors serialize.ObjectReader.get_state, _read_fields,     */
/* _read_value and _read_typed_value (without custom serializers), and  */
/* the data manager's per-object bookkeeping of loading (load,          */
/* _object_from_document, _activate, setstate) with what they use of    */
/* ObjectCache, CacheValidator, Batches and CollectionTypeMap.           */
/*                                                                      */
/* A context holds the objects of one call (the data manager's cache,  */
/* validator, batches, reader, registry), fetched at their first use:   */
/* they are the same objects the Python code fetches at each use.       */

typedef struct {
    PyObject *jar;          /* the data manager (owned) */
    PyObject *reader;       /* its reader (owned), or NULL */
    int reader_fast;        /* -1: not known yet */
    int jar_fast;           /* -1: not known yet */
    PyObject *cache, *validator, *batches, *registry, *gone;
} Ctx;

static void
ctx_init(Ctx *c, PyObject *jar, PyObject *reader)
{
    c->jar = Py_NewRef(jar);
    c->reader = reader == NULL ? NULL : Py_NewRef(reader);
    c->reader_fast = -1;
    c->jar_fast = -1;
    c->cache = c->validator = c->batches = c->registry = c->gone = NULL;
}

static void
ctx_clear(Ctx *c)
{
    Py_CLEAR(c->jar);
    Py_CLEAR(c->reader);
    Py_CLEAR(c->cache);
    Py_CLEAR(c->validator);
    Py_CLEAR(c->batches);
    Py_CLEAR(c->registry);
    Py_CLEAR(c->gone);
}

/* ``jar.<name>`` kept in the context (borrowed; NULL on error) */
static PyObject *
ctx_attr(Ctx *c, PyObject **slot, PyObject *name)
{
    if (*slot == NULL)
        *slot = PyObject_GetAttr(c->jar, name);
    return *slot;
}

#define CTX_CACHE(c) ctx_attr(c, &(c)->cache, s_cache)
#define CTX_VALIDATOR(c) ctx_attr(c, &(c)->validator, s_validator)
#define CTX_BATCHES(c) ctx_attr(c, &(c)->batches, s_batches)

static int
ctx_jar_fast(Ctx *c)
{
    if (c->jar_fast < 0)
        c->jar_fast = inlined_ok(c->jar, &INLINED_JAR);
    return c->jar_fast;
}

/* The reader (``jar._reader``), and whether the compiled code reads for
 * it: its class's methods are the library's and it has no custom
 * serializers (nor has the process). */
static PyObject *
ctx_reader(Ctx *c)
{
    if (c->reader == NULL)
        c->reader = PyObject_GetAttr(c->jar, s_reader);
    return c->reader;
}

static int
ctx_reader_fast(Ctx *c)
{
    if (c->reader_fast < 0) {
        PyObject *reader = ctx_reader(c);
        int fast;
        if (reader == NULL)
            return -1;
        fast = inlined_ok(reader, &INLINED_READER);
        if (fast)
            fast = empty_list_attr(reader, s_serializers);
        if (fast > 0)
            fast = no_process_serializers();
        if (fast < 0)
            return -1;
        c->reader_fast = fast;
    }
    return c->reader_fast;
}

/* ``self.registry``: the data manager's ``type_registry``, else the
 * process-wide one (borrowed; NULL on error). */
static PyObject *
ctx_registry(Ctx *c)
{
    PyObject *registry;
    if (c->registry != NULL)
        return c->registry;
    if (LOOKUP_ATTR(c->jar, s_type_registry, &registry) < 0)
        return NULL;
    if (registry == Py_None)
        Py_CLEAR(registry);
    if (registry == NULL) {
        registry = PyDict_GetItemWithError(METADATA_DICT, s_REGISTRY);
        if (registry == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_AttributeError, "REGISTRY");
            return NULL;
        }
        Py_INCREF(registry);
    }
    c->registry = registry;
    return registry;
}

/* ``registry.resolve(name, kind)`` from the registry's memo: a new
 * reference, or NULL (an exception set only on error) when the memo does
 * not have it under the current generation. */
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
    if (PyDict_CheckExact(resolved)) {
        key = PyTuple_Pack(2, name, kind);
        hit = key == NULL ? NULL : PyDict_GetItemWithError(resolved, key);
        Py_XDECREF(key);
        if (hit != NULL && PyTuple_CheckExact(hit)
                && PyTuple_GET_SIZE(hit) == 2) {
            generation = PyDict_GetItemWithError(METADATA_DICT, s_generation);
            if (generation != NULL) {
                int same = PyObject_RichCompareBool(PyTuple_GET_ITEM(hit, 0),
                                                    generation, Py_EQ);
                if (same > 0)
                    found = Py_NewRef(PyTuple_GET_ITEM(hit, 1));
            }
        }
    }
    Py_DECREF(resolved);
    return found;
}

/* ``registry.resolve(name, kind)`` */
static PyObject *
resolve(PyObject *registry, PyObject *name, PyObject *kind)
{
    PyObject *found = resolve_memo(registry, name, kind);
    if (found != NULL || PyErr_Occurred())
        return found;
    return PyObject_CallMethodObjArgs(registry, s_resolve, name, kind, NULL);
}

static PyObject *read_value(Ctx *c, PyObject *state, PyObject *obj);
static PyObject *load(Ctx *c, PyObject *dbref);

/* ``type(value) in _CONVERTED_STATES`` (dict, list, DBRef, OID) */
static int
is_converted(PyObject *value)
{
    PyTypeObject *kind = Py_TYPE(value);
    return kind == &PyDict_Type || kind == &PyList_Type
        || (PyObject *)kind == DBREF_TYPE || (PyObject *)kind == OID_TYPE;
}

/* ``raise _locate(error, container, items)`` for the error being raised
 * (a StoredDataError; others pass unchanged); ``items`` is
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
            raised_while_handling(&c);
        else
            rethrow(&c);
        return;
    }
    items = is_dict ? PyObject_CallMethodNoArgs(container, s_items)
        : PyObject_CallOneArg((PyObject *)&PyEnum_Type, container);
    if (items == NULL) {
        raised_while_handling(&c);
        return;
    }
    {
        PyObject *args[3] = {c.value, container, items};
        located = call_handling(c.value, LOCATE, args, 3);
    }
    Py_DECREF(items);
    if (located == NULL) {
        raised_while_handling(&c);
        return;
    }
    if (located == c.value) {
        Py_DECREF(located);
        rethrow(&c);
        return;
    }
    raise_in_handler(located, c.value, 0);
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
    if (is_stored < 0 || (is_stored > 0 && PyObject_SetAttr(
            c.value, s_stored_value, state) < 0)) {
        raised_while_handling(&c);
        return;
    }
    rethrow(&c);
}

/* The fields of the stored dict ``stored`` but those in ``skip`` (a set,
 * or NULL) or equal to ``leave_out`` (or NULL), each read:
 * ``_read_fields``'s comprehension and its ``_locate``. */
static PyObject *
read_fields(Ctx *c, PyObject *stored, PyObject *obj, PyObject *skip,
            PyObject *leave_out)
{
    PyObject *result = PyDict_New(), *key, *value;
    Py_ssize_t pos = 0, size = PyDict_GET_SIZE(stored);
    if (result == NULL)
        return NULL;
    while (PyDict_Next(stored, &pos, &key, &value)) {
        PyObject *read = NULL;
        int keep = 1;
        Py_INCREF(key);
        Py_INCREF(value);
        if (skip != NULL) {
            int in = PySet_Contains(skip, key);
            keep = in < 0 ? -1 : !in;
        }
        if (keep > 0 && leave_out != NULL)
            keep = PyObject_RichCompareBool(key, leave_out, Py_NE);
        if (keep > 0) {
            if (is_converted(value)) {
                read = read_value(c, value, obj);
                if (read == NULL)
                    locate_error(stored, 1);
            }
            else
                read = Py_NewRef(value);
            if (read == NULL || PyDict_SetItem(result, key, read) < 0)
                keep = -1;
            Py_XDECREF(read);
        }
        Py_DECREF(key);
        Py_DECREF(value);
        if (keep < 0) {
            Py_DECREF(result);
            return NULL;
        }
        if (PyDict_GET_SIZE(stored) != size) {
            PyErr_SetString(PyExc_RuntimeError,
                            "dictionary changed size during iteration");
            Py_DECREF(result);
            return NULL;
        }
    }
    return result;
}

/* The items of the stored array ``state``, each read. */
static PyObject *
read_items(Ctx *c, PyObject *state, PyObject *obj)
{
    PyObject *result = PyList_New(0);
    Py_ssize_t index;
    if (result == NULL)
        return NULL;
    for (index = 0; index < PyList_GET_SIZE(state); index++) {
        PyObject *item = PyList_GET_ITEM(state, index), *read;
        Py_INCREF(item);
        if (is_converted(item)) {
            read = read_value(c, item, obj);
            if (read == NULL)
                locate_error(state, 0);
        }
        else
            read = Py_NewRef(item);
        Py_DECREF(item);
        if (read == NULL || PyList_Append(result, read) < 0) {
            Py_XDECREF(read);
            Py_DECREF(result);
            return NULL;
        }
        Py_DECREF(read);
    }
    return result;
}

/* ``_check_names(names, cls)``: the memo when it covers them, else the
 * Python function (which raises for a refused name). */
static int
check_names(PyObject *names, PyObject *cls)
{
    int known = names_known(cls, names);
    if (known != 0)
        return known < 0 ? -1 : 0;
    return call_ignoring_result(
        PyObject_CallFunctionObjArgs(CHECK_NAMES, names, cls, NULL));
}

/* A date from stored ISO text ``YYYY-MM-DD`` (what
 * ``date.fromisoformat`` makes of it); NULL without an exception for
 * any other text (the caller asks ``fromisoformat``). */
static PyObject *
date_from_iso(PyObject *iso)
{
    const char *text;
    Py_ssize_t size;
    int i, year, month, day;
    if (!PyUnicode_IS_ASCII(iso) || PyUnicode_GET_LENGTH(iso) != 10)
        return NULL;
    text = (const char *)PyUnicode_DATA(iso);
    size = PyUnicode_GET_LENGTH(iso);
    (void)size;
    for (i = 0; i < 10; i++) {
        if (i == 4 || i == 7) {
            if (text[i] != '-')
                return NULL;
        }
        else if (text[i] < '0' || text[i] > '9')
            return NULL;
    }
    year = (text[0] - '0') * 1000 + (text[1] - '0') * 100
        + (text[2] - '0') * 10 + (text[3] - '0');
    month = (text[5] - '0') * 10 + (text[6] - '0');
    day = (text[8] - '0') * 10 + (text[9] - '0');
    return PyDate_FromDate(year, month, day);
}

/* ``serializers.read_date(state, None)``, the standalone reader of
 * ``datetime.date``: a date from its ISO text (``ordinal`` values are
 * read by the Python function). */
static PyObject *
read_date(PyObject *state)
{
    PyObject *iso, *date;
    int has = PyDict_Contains(state, s_ordinal);
    if (has != 0)
        return has < 0 ? NULL
            : PyObject_CallFunctionObjArgs(READ_DATE, state, Py_None, NULL);
    iso = PyDict_GetItemWithError(state, s_iso);
    if (iso == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetObject(PyExc_KeyError, s_iso);
        return NULL;
    }
    if (!PyUnicode_CheckExact(iso)) {
        PyErr_SetString(PyExc_TypeError, "a string was expected");
        return NULL;
    }
    date = date_from_iso(iso);
    if (date != NULL || PyErr_Occurred())
        return date;
    return PyObject_CallMethodOneArg((PyObject *)DATE_TYPE, s_fromisoformat,
                                     iso);
}

/* ``_read_typed_value(state, obj)``: a standalone built-in value, or a
 * value class stored as its attributes; NOT_PLAIN for anything else. */
static PyObject *
read_typed_value(Ctx *c, PyObject *state, PyObject *obj)
{
    PyObject *name, *cls = NULL, *data = NULL, *value = NULL, *registry;
    int in;
    name = PyDict_GetItemWithError(state, s_py_type);
    if (name == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(NOT_PLAIN);
    if (!PyUnicode_CheckExact(name))
        return Py_NewRef(NOT_PLAIN);
    Py_INCREF(name);
    in = PySet_Contains(STANDALONE_READERS, name);
    if (in != 0) {
        /* try: return READERS[name](state, None)
         * except Exception: return _NOT_PLAIN */
        PyObject *read = NULL, *result = NULL;
        if (in > 0) {
            read = PyDict_GetItemWithError(READERS, name);
            if (read == NULL && !PyErr_Occurred())
                PyErr_SetObject(PyExc_KeyError, name);
        }
        if (read != NULL) {
            Py_INCREF(read);
            result = read == READ_DATE ? read_date(state)
                : PyObject_CallFunctionObjArgs(read, state, Py_None, NULL);
            Py_DECREF(read);
        }
        if (result == NULL && in > 0
                && PyErr_ExceptionMatches(PyExc_Exception)) {
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
    /* try: cls = self.registry.resolve(name, 'value')
     * except StoredDataError: return _NOT_PLAIN */
    registry = ctx_registry(c);
    if (registry != NULL)
        cls = resolve(registry, name, s_value);
    if (cls == NULL) {
        Py_DECREF(name);
        if (PyErr_ExceptionMatches(STORED_DATA_ERROR)) {
            PyErr_Clear();
            return Py_NewRef(NOT_PLAIN);
        }
        return NULL;
    }
    data = read_fields(c, state, obj, NULL, s_py_type);
    if (data == NULL)
        goto failed;
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
                PyErr_Clear();      /* an unhashable class */
            }
            setstate = PyObject_CallOneArg(SETSTATE_OF, cls);
            if (setstate == NULL)
                goto malformed;
        }
        if (setstate == Py_None) {
            PyObject *instance_dict = PyObject_GetAttr(value, s_dict);
            int r = -1;
            Py_DECREF(setstate);
            if (instance_dict != NULL) {
                r = PyDict_CheckExact(instance_dict)
                    ? PyDict_Update(instance_dict, data)
                    : call_ignoring_result(PyObject_CallMethodOneArg(
                        instance_dict, s_update, data));
                Py_DECREF(instance_dict);
            }
            if (r < 0)
                goto malformed;
        }
        else {
            int r = call_ignoring_result(
                PyObject_CallFunctionObjArgs(setstate, value, data, NULL));
            Py_DECREF(setstate);
            if (r < 0)
                goto malformed;
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
    {
        Caught e;
        int kind;
        catch_error(&e);
        kind = caught_is(&e, MONGOPERSIST_ERROR);
        if (kind == 0)
            kind = caught_is(&e, MALFORMED) > 0 ? 2 : 0;
        if (kind == 2) {
            PyObject *args[3] = {s_py_type, name, e.value};
            PyObject *error = call_handling(e.value, MALFORMED_VALUE, args, 3);
            if (error != NULL) {
                raise_in_handler(error, e.value, 1);
                Py_DECREF(error);
                drop_caught(&e);
            }
            else
                raised_while_handling(&e);
        }
        else if (kind < 0)
            raised_while_handling(&e);
        else
            rethrow(&e);
    }
failed:
    Py_DECREF(cls);
    Py_XDECREF(data);
    Py_XDECREF(value);
    Py_DECREF(name);
    return NULL;
}

/* A PersistentDict or PersistentList of ``data``, attached to ``obj``:
 * ``cls.__new__(cls)``, then ``value.data = data`` and (for an owner)
 * ``value._p_jar``, ``value._p_mongo_doc_object``.  A new persistent
 * object has no data manager: its attribute is set as persistent's
 * setattr sets it then (generically). */
static PyObject *
new_container(Ctx *c, PyObject *cls, PyObject *data, PyObject *obj)
{
    PyTypeObject *type = (PyTypeObject *)cls;
    PyObject *value = type->tp_new(type, EMPTY_TUPLE, NULL);
    if (value == NULL)
        return NULL;
    if ((per_setattro != NULL && type->tp_setattro == per_setattro
            ? PyObject_GenericSetAttr(value, s_data, data)
            : PyObject_SetAttr(value, s_data, data)) < 0
            || (obj != Py_None
                && (p_set(value, s_p_jar, c->jar) < 0
                    || p_set(value, s_p_mongo_doc_object, obj) < 0)))
        Py_CLEAR(value);
    return value;
}

/* ``_read_value(state, obj)`` */
static PyObject *
read_value(Ctx *c, PyObject *state, PyObject *obj)
{
    PyObject *data, *value, *cls;
    if (PyDict_CheckExact(state)) {
        int in = PyDict_Contains(state, s_py_type);
        if (in > 0) {
            value = read_typed_value(c, state, obj);
            if (value != NOT_PLAIN) {
                if (value == NULL)
                    goto failed;
                return value;
            }
            Py_DECREF(value);
        }
        else if (in == 0) {
            in = PyDict_Contains(state, s_py_persistent_type);
            if (in == 0)
                in = PyDict_Contains(state, s_py_factory);
            if (in == 0)
                in = PyDict_Contains(state, LEGACY_DICT_DATA);
            if (in == 0)
                in = PyDict_Contains(state, LEGACY_CONSTANT);
        }
        if (in < 0)
            goto failed;
        if (in) {
            value = PyObject_CallMethodObjArgs(c->reader, s_read_dict, state,
                                               obj, NULL);
            if (value == NULL)
                goto failed;
            return value;
        }
        data = read_fields(c, state, obj, NULL, NULL);
        cls = PERSISTENT_DICT;
    }
    else if (PyList_CheckExact(state)) {
        data = read_items(c, state, obj);
        cls = PERSISTENT_LIST;
    }
    else {
        value = load(c, state);
        if (value == NULL)
            goto failed;
        return value;
    }
    if (data == NULL)
        goto failed;
    value = new_container(c, cls, data, obj);
    Py_DECREF(data);
    return value;
failed:
    mark_stored_value(state);
    return NULL;
}

/* ``get_state(doc, obj)`` for an object that is not a broken placeholder
 * (NOT_HANDLED then). */
static PyObject *
get_state_impl(Ctx *c, PyObject *doc, PyObject *obj)
{
    PyObject *state;
    int broken = PyObject_IsInstance(obj, PERSISTENT_BROKEN);
    if (broken != 0)
        return broken < 0 ? NULL : Py_NewRef(NOT_HANDLED);
    state = read_fields(c, doc, obj, META_FIELDS, NULL);
    if (state != NULL && check_names(state, obj == Py_None ? PERSISTENT_TYPE
                                     : (PyObject *)Py_TYPE(obj)) < 0)
        Py_CLEAR(state);
    return state;
}

/* ``jar._check_thread()``: nothing unless closed or used from another
 * thread (then the method raises). */
static int
check_thread(PyObject *jar)
{
    PyObject *closed = PyObject_GetAttr(jar, s_closed), *thread;
    int truth;
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
        if (PyLong_CheckExact(thread)) {
            unsigned long ident = PyLong_AsUnsignedLong(thread);
            Py_DECREF(thread);
            if (ident == (unsigned long)-1 && PyErr_Occurred())
                PyErr_Clear();
            else if (ident == PyThread_get_thread_ident())
                return 0;
        }
        else
            Py_DECREF(thread);
    }
    return call_ignoring_result(PyObject_CallMethodNoArgs(jar,
                                                          s_check_thread));
}

/* ``jar._use(ref)``: check the thread; validate the held objects of the
 * collection of ``ref`` at its first use in the transaction
 * (``CacheValidator.use``: nothing once it is validated). */
static int
use(Ctx *c, PyObject *ref)
{
    PyObject *validator, *validated, *key;
    int in = 0;
    if (check_thread(c->jar) < 0)
        return -1;
    if (ref == Py_None)
        return 0;
    validator = CTX_VALIDATOR(c);
    if (validator == NULL)
        return -1;
    if (inlined_ok(validator, &INLINED_VALIDATOR)) {
        validated = PyObject_GetAttr(validator, s_validated);
        if (validated == NULL)
            return -1;
        if (PyAnySet_Check(validated)) {
            key = oid_key(ref);
            in = key == NULL ? -1 : PySet_Contains(validated, key);
            Py_XDECREF(key);
        }
        Py_DECREF(validated);
        if (in != 0)
            return in < 0 ? -1 : 0;
    }
    return call_ignoring_result(PyObject_CallMethodOneArg(validator, s_use,
                                                          ref));
}

/* ``cache.get(ref)``: the object (new reference), None, or NULL. */
static PyObject *
cache_get(Ctx *c, PyObject *ref)
{
    PyObject *cache = CTX_CACHE(c), *objects, *alive, *obj;
    if (cache == NULL)
        return NULL;
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
    Py_XINCREF(alive);
    Py_DECREF(objects);
    if (alive == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    if (alive == Py_None)
        return alive;
    if (PyWeakref_CheckRefExact(alive))
        obj = weak_target(alive);
    else
        obj = PyObject_CallNoArgs(alive);
    Py_DECREF(alive);
    return obj;
}

/* ``cache.used(ref, obj)``: kept alive until the transaction ends. */
static int
cache_used(Ctx *c, PyObject *ref, PyObject *obj)
{
    PyObject *cache = CTX_CACHE(c), *used;
    int result;
    if (cache == NULL)
        return -1;
    if (!inlined_ok(cache, &INLINED_CACHE))
        return call_ignoring_result(PyObject_CallMethodObjArgs(
            cache, s_used_method, ref, obj, NULL));
    used = PyObject_GetAttr(cache, s_used);
    if (used == NULL)
        return -1;
    result = PyObject_SetItem(used, ref, obj);
    Py_DECREF(used);
    return result;
}

/* ``cache[ref] = obj`` (``ObjectCache.__setitem__``): in the identity
 * map, used in this transaction, held in its collection. */
static int
cache_put(Ctx *c, PyObject *ref, PyObject *obj)
{
    PyObject *cache = CTX_CACHE(c), *alive = NULL, *objects = NULL,
        *used = NULL, *held_all = NULL, *key = NULL, *held;
    int result = -1;
    if (cache == NULL)
        return -1;
    if (!inlined_ok(cache, &INLINED_CACHE))
        return PyObject_SetItem(cache, ref, obj);
    if (c->gone == NULL && (c->gone = PyObject_GetAttr(cache, s_gone)) == NULL)
        return -1;
    alive = PyWeakref_NewRef(obj, c->gone);
    if (alive == NULL) {
        /* except TypeError: raise unreferenceable(obj, ref) from None */
        Caught e;
        PyObject *args[2] = {obj, ref}, *error;
        if (!PyErr_ExceptionMatches(PyExc_TypeError))
            return -1;
        catch_error(&e);
        error = call_handling(e.value, UNREFERENCEABLE, args, 2);
        if (error == NULL) {
            raised_while_handling(&e);
            return -1;
        }
        Py_INCREF(e.value);
        PyException_SetContext(error, e.value);
        PyException_SetCause(error, NULL);      /* from None */
        PyErr_SetObject((PyObject *)Py_TYPE(error), error);
        Py_DECREF(error);
        drop_caught(&e);
        return -1;
    }
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
    /* held = self._held.get(key); if held is None: held = ... = {} */
    held = PyDict_CheckExact(held_all)
        ? Py_XNewRef(PyDict_GetItemWithError(held_all, key))
        : PyObject_CallMethodOneArg(held_all, s_get, key);
    if (held == NULL && PyErr_Occurred())
        goto done;
    if (held == Py_None)
        Py_CLEAR(held);
    if (held == NULL) {
        held = PyDict_New();
        if (held == NULL || PyObject_SetItem(held_all, key, held) < 0) {
            Py_XDECREF(held);
            goto done;
        }
    }
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

/* ``batches.found(oid)``: a ghost loaded while reading joins the group
 * being collected. */
static int
batches_found(Ctx *c, PyObject *oid)
{
    PyObject *batches = CTX_BATCHES(c), *collecting;
    int result = 0;
    if (batches == NULL)
        return -1;
    if (!inlined_ok(batches, &INLINED_BATCHES))
        return call_ignoring_result(PyObject_CallMethodOneArg(batches,
                                                              s_found, oid));
    collecting = PyObject_GetAttr(batches, s_collecting);
    if (collecting == NULL)
        return -1;
    if (collecting != Py_None)
        result = PyList_CheckExact(collecting)
            ? PyList_Append(collecting, oid)
            : call_ignoring_result(PyObject_CallMethodOneArg(
                collecting, s_append, oid));
    Py_DECREF(collecting);
    return result;
}

/* ``batches.start()``: 1 if this call started a group, 0, or -1. */
static int
batches_start(Ctx *c)
{
    PyObject *batches = CTX_BATCHES(c), *collecting, *group;
    int result;
    if (batches == NULL)
        return -1;
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

/* ``batches.stop()``: the group collected, if of more than one ghost,
 * is the group of each of them. */
static int
batches_stop(Ctx *c)
{
    PyObject *batches = CTX_BATCHES(c), *group, *group_of;
    Py_ssize_t i;
    int result = 0;
    if (batches == NULL)
        return -1;
    if (!inlined_ok(batches, &INLINED_BATCHES))
        return call_ignoring_result(PyObject_CallMethodNoArgs(batches,
                                                              s_stop));
    group = PyObject_GetAttr(batches, s_collecting);
    if (group == NULL)
        return -1;
    if (PyObject_SetAttr(batches, s_collecting, Py_None) < 0) {
        Py_DECREF(group);
        return -1;
    }
    if (PyList_CheckExact(group) && PyList_GET_SIZE(group) > 1) {
        group_of = PyObject_GetAttr(batches, s_group_of);
        if (group_of == NULL)
            result = -1;
        for (i = 0; group_of != NULL && i < PyList_GET_SIZE(group); i++) {
            PyObject *oid = Py_NewRef(PyList_GET_ITEM(group, i));
            result = PyObject_SetItem(group_of, oid, group);
            Py_DECREF(oid);
            if (result < 0)
                break;
        }
        Py_XDECREF(group_of);
    }
    else if (group != Py_None && !PyList_CheckExact(group)) {
        /* Not a group ``start`` made: the Python loop's turn. */
        PyObject *iter = PyObject_GetIter(group), *oid;
        Py_ssize_t size = PyObject_Length(group);
        if (iter == NULL || size < 0)
            result = -1;
        else if (size > 1) {
            group_of = PyObject_GetAttr(batches, s_group_of);
            if (group_of == NULL)
                result = -1;
            while (result == 0 && (oid = PyIter_Next(iter)) != NULL) {
                result = PyObject_SetItem(group_of, oid, group);
                Py_DECREF(oid);
            }
            if (PyErr_Occurred())
                result = -1;
            Py_XDECREF(group_of);
        }
        Py_XDECREF(iter);
    }
    Py_DECREF(group);
    return result;
}

/* ``obj._p_status != 'ghost'``: 1, 0 or -1. */
static int
is_loaded(PyObject *obj)
{
    PyObject *status = p_get(obj, s_p_status);
    int result;
    if (status == NULL)
        return -1;
    result = PyObject_RichCompareBool(status, s_ghost, Py_NE);
    Py_DECREF(status);
    return result;
}

/* ``obj._p_state == persistent.GHOST`` (-1): 1, 0 or -1 on error. */
static int
is_ghost(PyObject *obj)
{
    PyObject *state = p_get(obj, s_p_state), *ghost;
    int result;
    if (state == NULL)
        return -1;
    if (PyLong_CheckExact(state)) {
        long value = PyLong_AsLong(state);
        Py_DECREF(state);
        if (value == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        return value == -1;
    }
    ghost = PyLong_FromLong(-1);
    result = ghost == NULL ? -1 : PyObject_RichCompareBool(state, ghost,
                                                           Py_EQ);
    Py_XDECREF(ghost);
    Py_DECREF(state);
    return result;
}

/* ``MongoDataManager.load(dbref)`` */
static PyObject *
load(Ctx *c, PyObject *stored)
{
    PyObject *obj = NULL, *ref = NULL, *dbref = Py_NewRef(stored);
    int plain, loaded, ghost;
    if (!ctx_jar_fast(c)) {
        Py_DECREF(dbref);
        return PyObject_CallMethodOneArg(c->jar, s_load, stored);
    }
    if (check_thread(c->jar) < 0)
        goto failed;
    /* Looked up as an oid, without the shard-key fields a stored
     * reference may carry (not part of its identity). */
    plain = Py_IS_TYPE(dbref, (PyTypeObject *)OID_TYPE);
    if (plain) {
        PyObject *db = oid_slots ? slot_get(dbref, off_database) : NULL;
        if (db == NULL) {
            db = PyObject_GetAttr(dbref, s_dbref_database);
            if (db == NULL)
                goto failed;
            Py_DECREF(db);
        }
        plain = db != Py_None;
    }
    if (!plain) {
        PyObject *default_db = PyObject_GetAttr(c->jar, s_default_database),
            *oid;
        if (default_db == NULL)
            goto failed;
        oid = oid_of(dbref, default_db);
        if (oid != NULL)
            Py_SETREF(dbref, oid);
        else if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            /* An _id that cannot be hashed: ``references.refuse_id``
             * raises. */
            Caught e;
            PyObject *args[3] = {c->jar, dbref, default_db}, *r;
            catch_error(&e);
            r = call_handling(e.value, REFUSE_ID, args, 3);
            if (r == NULL)
                raised_while_handling(&e);
            else
                drop_caught(&e);
            if (call_ignoring_result(r) < 0) {
                Py_DECREF(default_db);
                goto failed;
            }
        }
        else {
            Py_DECREF(default_db);
            goto failed;
        }
        Py_DECREF(default_db);
    }
    obj = cache_get(c, dbref);
    if (obj == NULL)
        goto failed;
    if (obj == Py_None) {
        Py_SETREF(obj, PyObject_CallMethodObjArgs(c->jar, s_load_new, dbref,
                                                  stored, NULL));
        if (obj == NULL)
            goto failed;
    }
    else {
        loaded = is_loaded(obj);
        if (loaded < 0)
            goto failed;
        if (loaded) {
            /* validated before it is used (a ghost: when it activates) */
            ref = p_get(obj, s_p_oid);
            if (ref == NULL || use(c, ref) < 0)
                goto failed;
            Py_CLEAR(ref);
        }
        ref = p_get(obj, s_p_oid);
        if (ref == NULL || cache_used(c, ref, obj) < 0)
            goto failed;
        Py_CLEAR(ref);
    }
    ghost = is_ghost(obj);
    if (ghost < 0)
        goto failed;
    if (ghost) {
        /* Found while reading a document: loads with its siblings. */
        ref = p_get(obj, s_p_oid);
        if (ref == NULL || batches_found(c, ref) < 0)
            goto failed;
        Py_CLEAR(ref);
    }
    Py_DECREF(dbref);
    return obj;
failed:
    Py_XDECREF(obj);
    Py_XDECREF(ref);
    Py_DECREF(dbref);
    return NULL;
}

/* ``jar._class_of_document(dbref, doc)`` for a document that names no
 * class, from what the process already knows (the type map entry of
 * the collection, its first class resolved before:
 * ``CollectionTypeMap.default_class``); NULL without an exception when
 * that is not enough (the caller calls the method). */
static PyObject *
known_class(Ctx *c, PyObject *db_name, PyObject *coll_name, PyObject *doc)
{
    PyObject *name, *typemap, *types_by_key = NULL, *key, *types,
        *registry = NULL, *cls = NULL;
    int in = PyDict_Contains(doc, s_py_persistent_type);
    if (in != 0)
        return NULL;
    typemap = PyObject_GetAttr(c->jar, s_types);
    if (typemap == NULL)
        return NULL;
    if (inlined_ok(typemap, &INLINED_TYPEMAP))
        types_by_key = PyObject_GetAttr(typemap, s_types);
    if (types_by_key != NULL && PyDict_CheckExact(types_by_key)) {
        key = PyTuple_Pack(2, db_name, coll_name);
        types = key == NULL ? NULL
            : PyDict_GetItemWithError(types_by_key, key);
        Py_XDECREF(key);
        if (types != NULL && PyList_CheckExact(types)
                && PyList_GET_SIZE(types) > 0) {
            name = Py_NewRef(PyList_GET_ITEM(types, 0));
            registry = PyObject_GetAttr(typemap, s_registry);
            if (registry != NULL)
                cls = resolve_memo(registry, name, s_persistent_kind);
            Py_XDECREF(registry);
            Py_DECREF(name);
        }
    }
    Py_XDECREF(types_by_key);
    Py_DECREF(typemap);
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
count_reading(PyObject *jar, long delta)
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

/* ``reader.set_ghost_state(obj, doc)``: ``type(obj).__setstate__(obj,
 * self.get_state(doc, obj))`` */
static int
set_ghost_state(Ctx *c, PyObject *obj, PyObject *doc)
{
    PyObject *state, *setstate, *r;
    int fast = ctx_reader_fast(c);
    if (fast < 0)
        return -1;
    if (!fast || !PyDict_CheckExact(doc))
        return call_ignoring_result(PyObject_CallMethodObjArgs(
            c->reader, s_set_ghost_state, obj, doc, NULL));
    state = get_state_impl(c, doc, obj);
    if (state == NOT_HANDLED)
        Py_SETREF(state, PyObject_CallMethodObjArgs(c->reader, s_get_state,
                                                    doc, obj, NULL));
    if (state == NULL)
        return -1;
    setstate = _PyType_Lookup(Py_TYPE(obj), s_setstate_name);
    if (setstate == PERSISTENT_SETSTATE)
        r = PyObject_CallFunctionObjArgs(setstate, obj, state, NULL);
    else {
        PyObject *method = PyObject_GetAttr((PyObject *)Py_TYPE(obj),
                                            s_setstate_name);
        r = method == NULL ? NULL
            : PyObject_CallFunctionObjArgs(method, obj, state, NULL);
        Py_XDECREF(method);
    }
    Py_DECREF(state);
    return call_ignoring_result(r);
}

/* ``MongoDataManager._activate(obj, doc)`` for a dict ``doc``: fill
 * ``obj`` from it (the references read load together), keep the
 * document and the serial. */
static int
activate(Ctx *c, PyObject *obj, PyObject *doc)
{
    PyObject *ref, *serial = NULL, *name, *docs;
    int grouping, result;
    ref = p_get(obj, s_p_oid);
    if (ref == NULL)
        return -1;
    if (count_reading(c->jar, 1) < 0) {
        Py_DECREF(ref);
        return -1;
    }
    /* try: */
    serial = PyDict_GetItemWithError(doc, s_py_serial);
    if (serial != NULL && (PyLong_CheckExact(serial)
                           || (PyObject *)Py_TYPE(serial) == INT64_TYPE)
            && _PyLong_Sign(serial) >= 0)
        Py_INCREF(serial);
    else if (serial == NULL && !PyErr_Occurred())
        serial = PyLong_FromLong(0);
    else if (serial != NULL)
        serial = PyObject_CallOneArg(STORED_SERIAL, doc);     /* raises */
    if (serial == NULL)
        goto failed;
    name = PyDict_GetItemWithError(doc, s_py_persistent_type);
    if (name == NULL && PyErr_Occurred())
        goto failed;
    if (name != NULL) {
        PyObject *own;
        int differs;
        Py_INCREF(name);
        own = PyObject_CallOneArg(GET_DOTTED_NAME, (PyObject *)Py_TYPE(obj));
        differs = own == NULL ? -1
            : PyObject_RichCompareBool(name, own, Py_NE);
        Py_XDECREF(own);
        Py_DECREF(name);
        if (differs < 0)
            goto failed;
        if (differs) {
            /* The ghost was made before the collection was shared. */
            PyObject *cls = PyObject_CallMethodObjArgs(
                c->jar, s_class_of_document, ref, doc, NULL);
            if (cls == NULL)
                goto failed;
            result = PyObject_SetAttr(obj, s_class, cls);
            Py_DECREF(cls);
            if (result < 0)
                goto failed;
        }
    }
    /* The references read from one document load together. */
    grouping = batches_start(c);
    if (grouping < 0)
        goto failed;
    result = ctx_reader(c) == NULL ? -1 : set_ghost_state(c, obj, doc);
    if (grouping) {
        Caught e = {NULL, NULL, NULL};
        if (result < 0)
            catch_error(&e);
        if (batches_stop(c) < 0) {
            if (result < 0)
                raised_while_handling(&e);
            result = -1;
        }
        else if (result < 0)
            rethrow(&e);
    }
    if (result < 0)
        goto failed;
    /* finally: */
    if (count_reading(c->jar, -1) < 0)
        goto out;
    {
        /* sharding.remember(ref, type(obj), doc) */
        PyObject *key = PyDict_GetItemWithError(SHARD_KEYS,
                                                (PyObject *)Py_TYPE(obj));
        if (key != Py_None && (PyErr_Occurred() || call_ignoring_result(
                PyObject_CallFunctionObjArgs(SHARDING_REMEMBER, ref,
                                             (PyObject *)Py_TYPE(obj), doc,
                                             NULL)) < 0))
            goto out;
    }
    if (CTX_CACHE(c) == NULL)
        goto out;
    docs = PyObject_GetAttr(c->cache, s_docs);
    if (docs == NULL)
        goto out;
    result = PyObject_SetItem(docs, ref, doc);
    Py_DECREF(docs);
    if (result < 0 || PyObject_SetAttr(c->jar, s_invalidated, Py_False) < 0
            || PyObject_SetAttr(c->jar, s_activated, Py_True) < 0)
        goto out;
    {
        PyObject *bytes = p64(serial);
        if (bytes == NULL)
            goto out;
        result = p_set(obj, s_p_serial, bytes);
        Py_DECREF(bytes);
        if (result < 0)
            goto out;
    }
    Py_DECREF(serial);
    Py_DECREF(ref);
    return 0;
out:
    Py_XDECREF(serial);
    Py_DECREF(ref);
    return -1;
failed:
    /* except BaseException as error: _raise_located(error, ref)
     * finally: self._documents_read -= 1 */
    Py_XDECREF(serial);
    {
        Caught e;
        PyObject *args[2], *r;
        catch_error(&e);
        args[0] = e.value;
        args[1] = ref;
        r = call_handling(e.value, RAISE_LOCATED, args, 2);
        if (r != NULL) {            /* it raises; were it not to, re-raise */
            Py_DECREF(r);
            rethrow(&e);
        }
        else
            raised_while_handling(&e);
        catch_error(&e);
        if (count_reading(c->jar, -1) < 0)
            raised_while_handling(&e);
        else
            rethrow(&e);
    }
    Py_DECREF(ref);
    return -1;
}

/* ``MongoDataManager._object_from_document(db_name, coll_name, doc)``;
 * NOT_HANDLED, having done nothing it would not do again to the same
 * effect, where the Python code must run: a document that is not a dict
 * or has no usable _id, a class with its own __setstate__. */
static PyObject *
object_from_document(Ctx *c, PyObject *db_name, PyObject *coll_name,
                     PyObject *doc)
{
    PyObject *id, *dbref, *obj = NULL, *cls = NULL, *validator;
    if (!PyDict_CheckExact(doc) || !ctx_jar_fast(c))
        return Py_NewRef(NOT_HANDLED);
    id = PyDict_GetItemWithError(doc, s_id);
    if (id == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(NOT_HANDLED);
    dbref = new_oid(coll_name, id, db_name);
    if (dbref == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_TypeError))
            return NULL;
        PyErr_Clear();
        return Py_NewRef(NOT_HANDLED);
    }
    /* self._use_document(dbref) */
    if (check_thread(c->jar) < 0 || (validator = CTX_VALIDATOR(c)) == NULL)
        goto failed;
    {
        int needed = 1;
        if (inlined_ok(validator, &INLINED_VALIDATOR)) {
            PyObject *needs = PyObject_GetAttr(validator, s_needs_validation);
            needed = needs == NULL ? -1 : PyObject_IsTrue(needs);
            Py_XDECREF(needs);
        }
        if (needed > 0)
            needed = call_ignoring_result(PyObject_CallMethodOneArg(
                validator, s_use_document, dbref));
        if (needed < 0)
            goto failed;
    }
    obj = cache_get(c, dbref);
    if (obj == NULL)
        goto failed;
    if (obj == Py_None) {
        PyObject *setstate;
        Py_CLEAR(obj);
        cls = known_class(c, db_name, coll_name, doc);
        if (cls == NULL) {
            if (PyErr_Occurred())
                goto failed;
            cls = PyObject_CallMethodObjArgs(c->jar, s_class_of_document,
                                             dbref, doc, NULL);
            if (cls == NULL)
                goto failed;
        }
        setstate = PyObject_GetAttr(cls, s_setstate_name);
        if (setstate == NULL)
            goto failed;
        Py_DECREF(setstate);
        if (setstate != PERSISTENT_SETSTATE) {
            /* Filled as a ghost being activated: Python does it. */
            Py_DECREF(cls);
            Py_DECREF(dbref);
            return Py_NewRef(NOT_HANDLED);
        }
        obj = new_instance(cls);
        if (obj == NULL || p_set(obj, s_p_jar, c->jar) < 0
                || p_set(obj, s_p_oid, dbref) < 0 || cache_put(c, dbref, obj) < 0)
            goto failed;
        if (activate(c, obj, doc) < 0) {
            /* Not filled: forget it (a new load reads it again). */
            Caught e;
            catch_error(&e);
            if (PyObject_DelItem(c->cache, dbref) < 0)
                raised_while_handling(&e);
            else
                rethrow(&e);
            goto failed;
        }
        Py_DECREF(cls);
        Py_DECREF(dbref);
        return obj;
    }
    if (cache_used(c, dbref, obj) < 0)
        goto failed;
    {
        int ghost = is_ghost(obj);
        if (ghost < 0)
            goto failed;
        if (ghost) {
            /* Activated through persistent (it stops being a ghost);
             * setstate takes this document instead of reading it. */
            PyObject *prefetched = PyObject_GetAttr(c->jar, s_prefetched),
                *method;
            int r = prefetched == NULL ? -1
                : PyObject_SetItem(prefetched, dbref, doc);
            Py_XDECREF(prefetched);
            method = r < 0 ? NULL : p_get(obj, s_p_activate);
            if (method == NULL
                    || call_ignoring_result(PyObject_CallNoArgs(method)) < 0) {
                Py_XDECREF(method);
                goto failed;
            }
            Py_DECREF(method);
        }
    }
    Py_DECREF(dbref);
    return obj;
failed:
    Py_XDECREF(cls);
    Py_XDECREF(obj);
    Py_DECREF(dbref);
    return NULL;
}

/* ``MongoDataManager.setstate(obj)`` */
static int
load_ghost(Ctx *c, PyObject *obj)
{
    PyObject *ref, *prefetched, *doc = NULL;
    int fresh = 0, result = -1;
    ref = p_get(obj, s_p_oid);
    if (ref == NULL)
        return -1;
    /* doc = self._prefetched.pop(ref, None) */
    prefetched = PyObject_GetAttr(c->jar, s_prefetched);
    if (prefetched == NULL)
        goto done;
    doc = PyObject_CallMethodObjArgs(prefetched, s_pop, ref, Py_None, NULL);
    Py_DECREF(prefetched);
    if (doc == NULL)
        goto done;
    if (doc == Py_None)
        Py_CLEAR(doc);
    else {
        PyObject *validator = CTX_VALIDATOR(c), *known;
        if (validator == NULL)
            goto done;
        known = PyObject_GetAttr(validator, s_fresh);
        if (known == NULL)
            goto done;
        fresh = PySequence_Contains(known, ref);
        Py_DECREF(known);
        if (fresh < 0)
            goto done;
    }
    if ((doc == NULL || !fresh) && use(c, ref) < 0)
        goto done;
    if (doc == NULL) {
        /* Validated in this transaction, or loaded or written in it. */
        PyObject *docs;
        if (CTX_CACHE(c) == NULL)
            goto done;
        docs = PyObject_GetAttr(c->cache, s_docs);
        if (docs == NULL)
            goto done;
        doc = PyObject_CallMethodOneArg(docs, s_get, ref);
        Py_DECREF(docs);
        if (doc == NULL)
            goto done;
        if (doc == Py_None)
            Py_CLEAR(doc);
    }
    if (doc == NULL) {
        /* Read with its siblings (``mongopersist.batching``). */
        if (CTX_BATCHES(c) == NULL)
            goto done;
        doc = PyObject_CallMethodOneArg(c->batches, s_document, ref);
        if (doc == NULL)
            goto done;
    }
    if (PyDict_CheckExact(doc)) {
        if (activate(c, obj, doc) < 0)
            goto done;
    }
    else if (call_ignoring_result(PyObject_CallMethodObjArgs(
            c->jar, s_activate, obj, doc, NULL)) < 0)
        goto done;
    result = cache_used(c, ref, obj);
done:
    Py_XDECREF(doc);
    Py_DECREF(ref);
    return result;
}

/* ``MongoDataManager.register(obj)``: 0 done, -1 error, 1 for the
 * Python method (by hand, with a new object: nothing done yet). */
static PyObject *STALE_CHANGE;        /* datamanager._stale_change */
static PyObject *STALE_OWNER;         /* datamanager._stale_owner */

/* Raise ``factory(*args)`` (an exception the Python code raises). */
static int
raise_made(PyObject *factory, PyObject *a, PyObject *b)
{
    PyObject *error = PyObject_CallFunctionObjArgs(factory, a, b, NULL);
    if (error != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(error), error);
        Py_DECREF(error);
    }
    return -1;
}

/* ``d[id(obj)] = obj`` for the dict attribute ``name`` of the jar. */
static int
set_by_id(PyObject *jar, const char *name, PyObject *obj)
{
    PyObject *d = PyObject_GetAttrString(jar, name), *id;
    int result = -1;
    if (d == NULL)
        return -1;
    id = PyLong_FromVoidPtr(obj);
    if (id != NULL)
        result = PyObject_SetItem(d, id, obj);
    Py_XDECREF(id);
    Py_DECREF(d);
    return result;
}

static int
register_change(Ctx *c, PyObject *obj)
{
    PyObject *owner = NULL, *target, *ref = NULL, *value = NULL;
    int loaded, result = -1;
    if (LOOKUP_ATTR(obj, s_p_mongo_doc_object, &owner) < 0)
        return -1;
    if (owner == Py_None)
        Py_CLEAR(owner);
    if (owner == NULL) {
        PyObject *jar_of;
        if (LOOKUP_ATTR(obj, s_p_jar, &jar_of) < 0)
            return -1;
        Py_XDECREF(jar_of);
        if (jar_of != c->jar)
            return 1;                   /* by hand: ``insert`` */
    }
    target = owner != NULL ? owner : obj;
    loaded = is_loaded(target);
    if (loaded < 0)
        goto done;
    ref = p_get(target, s_p_oid);
    if (ref == NULL || use(c, ref) < 0)
        goto done;
    if (loaded) {
        int now = is_loaded(target);
        if (now < 0)
            goto done;
        if (!now) {
            PyObject *jar_t = p_get(target, s_p_jar), *oid_t;
            if (jar_t == NULL)
                goto done;
            Py_DECREF(jar_t);
            oid_t = p_get(target, s_p_oid);
            if (oid_t == NULL)
                goto done;
            Py_DECREF(oid_t);
            if (jar_t == c->jar && oid_t != Py_None) {
                /* Validated just now and found stale. */
                raise_made(STALE_CHANGE, target, NULL);
                goto done;
            }
        }
    }
    if (owner != NULL && owner != obj) {
        PyObject *owner_jar = p_get(owner, s_p_jar);
        int owner_loaded;
        if (owner_jar == NULL)
            goto done;
        if (owner_jar != c->jar) {
            /* Taken back or stored elsewhere: written with its owner. */
            result = owner_jar == Py_None ? 0 : call_ignoring_result(
                PyObject_CallMethodOneArg(owner_jar, s_register, owner));
            Py_DECREF(owner_jar);
            goto done;
        }
        Py_DECREF(owner_jar);
        owner_loaded = is_loaded(owner);
        if (owner_loaded < 0)
            goto done;
        if (!owner_loaded) {
            raise_made(STALE_OWNER, obj, owner);
            goto done;
        }
        if (set_by_id(c->jar, "_changed_sub", obj) < 0)
            goto done;
        obj = owner;
    }
    Py_CLEAR(ref);
    ref = p_get(obj, s_p_oid);
    value = ref == NULL ? NULL : PyObject_GetAttr(c->jar, s_deleted);
    if (value == NULL)
        goto done;
    {
        int in = PySequence_Contains(value, ref);
        Py_CLEAR(value);
        if (in != 0) {
            result = in < 0 ? -1 : 0;   /* its removal is written */
            goto done;
        }
    }
    if (set_by_id(c->jar, "_registered", obj) < 0)
        goto done;
    /* self._join_txn(): nothing to do once joined to the running
     * transaction */
    if (check_thread(c->jar) < 0)
        goto done;
    {
        PyObject *manager = PyObject_GetAttr(c->jar, s_transaction_manager),
            *txn, *joined;
        txn = manager == NULL ? NULL : PyObject_CallMethodNoArgs(manager,
                                                                 s_get);
        Py_XDECREF(manager);
        joined = txn == NULL ? NULL : PyObject_GetAttr(c->jar, s_joined);
        if (joined == NULL) {
            Py_XDECREF(txn);
            goto done;
        }
        Py_DECREF(joined);
        Py_DECREF(txn);
        result = joined == txn ? 0 : call_ignoring_result(
            PyObject_CallMethodNoArgs(c->jar, s_join_txn));
    }
done:
    Py_XDECREF(owner);
    Py_XDECREF(ref);
    return result;
}

/* ------------------------------------------------------------------ */
/* The commit's comparison of documents: mirrors commit.same_value and  */
/* commit.changed_fields.                                               */

static PyObject *STAMPS;              /* commit._STAMPS */
static PyObject *PY_RESTORED;         /* serialize.PY_RESTORED */
static PyObject *CHANGED_FIELDS_PY;   /* commit.changed_fields (Python) */

static PyObject *same_value_impl(PyObject *a, PyObject *b);

/* ``all(k in b and same_value(v, b[k]) for k, v in a.items())`` */
static int
same_items(PyObject *a, PyObject *b)
{
    Py_ssize_t pos = 0, size = PyDict_GET_SIZE(a);
    PyObject *key, *value;
    while (PyDict_Next(a, &pos, &key, &value)) {
        PyObject *other, *same;
        int truth;
        Py_INCREF(key);
        Py_INCREF(value);
        other = PyDict_GetItemWithError(b, key);
        if (other == NULL) {
            Py_DECREF(key);
            Py_DECREF(value);
            return PyErr_Occurred() ? -1 : 0;
        }
        Py_INCREF(other);
        same = same_value_impl(value, other);
        Py_DECREF(other);
        Py_DECREF(key);
        Py_DECREF(value);
        if (same == NULL)
            return -1;
        truth = PyObject_IsTrue(same);
        Py_DECREF(same);
        if (truth <= 0)
            return truth;
        if (PyDict_GET_SIZE(a) != size) {
            PyErr_SetString(PyExc_RuntimeError,
                            "dictionary changed size during iteration");
            return -1;
        }
    }
    return 1;
}

static PyObject *
same_value_impl(PyObject *a, PyObject *b)
{
    PyTypeObject *kind_a = Py_TYPE(a), *kind_b = Py_TYPE(b);
    int check;
    if (kind_a == &PyDict_Type || kind_b == &PyDict_Type) {
        if (kind_a != kind_b || PyDict_GET_SIZE(a) != PyDict_GET_SIZE(b))
            Py_RETURN_FALSE;
        check = same_items(a, b);
        return check < 0 ? NULL : PyBool_FromLong(check);
    }
    if (kind_a == &PyList_Type || kind_b == &PyList_Type) {
        Py_ssize_t i;
        if (kind_a != kind_b || PyList_GET_SIZE(a) != PyList_GET_SIZE(b))
            Py_RETURN_FALSE;
        for (i = 0; i < PyList_GET_SIZE(a) && i < PyList_GET_SIZE(b); i++) {
            PyObject *x = Py_NewRef(PyList_GET_ITEM(a, i)),
                *y = Py_NewRef(PyList_GET_ITEM(b, i)), *same;
            same = same_value_impl(x, y);
            Py_DECREF(x);
            Py_DECREF(y);
            if (same == NULL)
                return NULL;
            check = PyObject_IsTrue(same);
            Py_DECREF(same);
            if (check < 0)
                return NULL;
            if (!check)
                Py_RETURN_FALSE;
        }
        Py_RETURN_TRUE;
    }
    if (kind_a == &PyFloat_Type && kind_b == &PyFloat_Type) {
        double x = PyFloat_AS_DOUBLE(a), y = PyFloat_AS_DOUBLE(b);
        if (x != x)
            return PyBool_FromLong(y != y);
        return PyBool_FromLong(x == y && copysign(1.0, x) == copysign(1.0, y));
    }
    if (kind_a != kind_b) {
        int ref_a = PyObject_IsInstance(a, DBREF_TYPE), ref_b;
        if (ref_a < 0)
            return NULL;
        if (ref_a) {
            ref_b = PyObject_IsInstance(b, DBREF_TYPE);
            if (ref_b < 0)
                return NULL;
            if (ref_b)
                return PyObject_RichCompare(a, b, Py_EQ);
        }
        check = PyObject_IsInstance(a, (PyObject *)&PyBool_Type);
        if (check == 0)
            check = PyObject_IsInstance(b, (PyObject *)&PyBool_Type);
        if (check != 0)
            return check < 0 ? NULL : Py_NewRef(Py_False);
        check = PyObject_IsInstance(a, (PyObject *)&PyLong_Type);
        if (check > 0)
            check = PyObject_IsInstance(b, (PyObject *)&PyLong_Type);
        if (check <= 0)
            return check < 0 ? NULL : Py_NewRef(Py_False);
    }
    return PyObject_RichCompare(a, b, Py_EQ);
}

/* commit.same_value(a, b) */
static PyObject *
same_value(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "same_value(a, b)");
        return NULL;
    }
    return same_value_impl(args[0], args[1]);
}

/* commit.changed_fields(doc, loaded): (to_set, to_unset) */
static PyObject *
changed_fields(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *doc, *loaded, *to_set = NULL, *to_unset = NULL, *key, *value,
        *empty = NULL, *result;
    Py_ssize_t pos = 0, size;
    if (nargs != 2 || !bound || !PyDict_CheckExact(args[0])
            || !PyDict_CheckExact(args[1]))
        return PyObject_Vectorcall(CHANGED_FIELDS_PY, args, nargs, NULL);
    doc = args[0];
    loaded = args[1];
    to_set = PyDict_New();
    if (to_set == NULL)
        return NULL;
    size = PyDict_GET_SIZE(doc);
    while (PyDict_Next(doc, &pos, &key, &value)) {
        int changed;
        Py_INCREF(key);
        Py_INCREF(value);
        changed = PyObject_RichCompareBool(key, s_id, Py_NE);
        if (changed > 0) {
            int in = PySet_Contains(STAMPS, key);
            changed = in < 0 ? -1 : !in;
        }
        if (changed > 0) {
            PyObject *old = PyDict_GetItemWithError(loaded, key);
            if (old != NULL) {
                PyObject *same;
                Py_INCREF(old);
                same = same_value_impl(value, old);
                Py_DECREF(old);
                changed = same == NULL ? -1 : !PyObject_IsTrue(same);
                Py_XDECREF(same);
            }
            else if (PyErr_Occurred())
                changed = -1;
        }
        if (changed > 0 && PyDict_SetItem(to_set, key, value) < 0)
            changed = -1;
        Py_DECREF(key);
        Py_DECREF(value);
        if (changed < 0)
            goto failed;
        if (PyDict_GET_SIZE(doc) != size) {
            PyErr_SetString(PyExc_RuntimeError,
                            "dictionary changed size during iteration");
            goto failed;
        }
    }
    to_unset = PyDict_New();
    empty = PyUnicode_New(0, 0);
    if (to_unset == NULL || empty == NULL)
        goto failed;
    pos = 0;
    size = PyDict_GET_SIZE(loaded);
    while (PyDict_Next(loaded, &pos, &key, &value)) {
        int gone;
        Py_INCREF(key);
        gone = PyDict_Contains(doc, key);
        gone = gone < 0 ? -1 : !gone;
        if (gone > 0)
            gone = PyObject_RichCompareBool(key, s_id, Py_NE);
        if (gone > 0) {
            int in = PySet_Contains(STAMPS, key);
            gone = in < 0 ? -1 : !in;
        }
        if (gone > 0)
            gone = PyObject_RichCompareBool(key, PY_RESTORED, Py_NE);
        if (gone > 0 && PyDict_SetItem(to_unset, key, empty) < 0)
            gone = -1;
        Py_DECREF(key);
        if (gone < 0)
            goto failed;
        if (PyDict_GET_SIZE(loaded) != size) {
            PyErr_SetString(PyExc_RuntimeError,
                            "dictionary changed size during iteration");
            goto failed;
        }
    }
    Py_DECREF(empty);
    result = PyTuple_Pack(2, to_set, to_unset);
    Py_DECREF(to_set);
    Py_DECREF(to_unset);
    return result;
failed:
    Py_XDECREF(to_set);
    Py_XDECREF(to_unset);
    Py_XDECREF(empty);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* limits.bson_size(doc): ``len(bson.encode(doc))`` without encoding,   */
/* for documents of the common BSON types (dicts with str keys, lists,  */
/* str, int, bool, float, None, bytes, ObjectId, datetime, oids and     */
/* DBRefs without extra fields, Int64); anything else, and anything    */
/* bson would refuse, is measured by encoding it (which raises).         */

static PyObject *BSON_SIZE_PY;        /* limits.bson_size (Python) */

#define NOT_MEASURED (-2)

/* The UTF-8 length of a str (NOT_MEASURED: a surrogate, or a NUL where
 * ``key``: bson would refuse it). */
static Py_ssize_t
utf8_size(PyObject *text, int key)
{
    Py_ssize_t i, n = PyUnicode_GET_LENGTH(text), size = 0;
    int kind;
    const void *data;
    if (PyUnicode_IS_ASCII(text)) {
        if (key && memchr(PyUnicode_DATA(text), 0, n) != NULL)
            return NOT_MEASURED;
        return n;
    }
    kind = PyUnicode_KIND(text);
    data = PyUnicode_DATA(text);
    for (i = 0; i < n; i++) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, i);
        if (ch == 0 && key)
            return NOT_MEASURED;
        if (ch < 0x80)
            size += 1;
        else if (ch < 0x800)
            size += 2;
        else if (ch >= 0xD800 && ch <= 0xDFFF)
            return NOT_MEASURED;
        else if (ch < 0x10000)
            size += 3;
        else
            size += 4;
    }
    return size;
}

static Py_ssize_t value_size(PyObject *value, int depth);

/* An element of a document: type byte, key (C string), value. */
static Py_ssize_t
element_size(PyObject *key, PyObject *value, int depth)
{
    Py_ssize_t key_size, size;
    if (!PyUnicode_CheckExact(key))
        return NOT_MEASURED;
    key_size = utf8_size(key, 1);
    if (key_size < 0)
        return key_size;
    size = value_size(value, depth);
    if (size < 0)
        return size;
    return 1 + key_size + 1 + size;
}

static Py_ssize_t
document_size(PyObject *doc, int depth)
{
    Py_ssize_t pos = 0, size = 5;
    PyObject *key, *value;
    if (depth > 120)
        return NOT_MEASURED;
    while (PyDict_Next(doc, &pos, &key, &value)) {
        Py_ssize_t element = element_size(key, value, depth + 1);
        if (element < 0)
            return element;
        size += element;
    }
    return size;
}

/* The length of the decimal text of ``index`` (an array's keys). */
static Py_ssize_t
index_size(Py_ssize_t index)
{
    Py_ssize_t digits = 1;
    while (index >= 10) {
        index /= 10;
        digits++;
    }
    return digits;
}

static Py_ssize_t
value_size(PyObject *value, int depth)
{
    PyTypeObject *kind = Py_TYPE(value);
    if (kind == &PyUnicode_Type) {
        Py_ssize_t size = utf8_size(value, 0);
        return size < 0 ? size : 4 + size + 1;
    }
    if (kind == &PyBool_Type)
        return 1;
    if (kind == &PyLong_Type) {
        int overflow;
        long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow != 0)
            return NOT_MEASURED;
        if (number == -1 && PyErr_Occurred())
            return -1;
        return (number >= -2147483648LL && number <= 2147483647LL) ? 4 : 8;
    }
    if (kind == &PyFloat_Type)
        return 8;
    if (value == Py_None)
        return 0;
    if (kind == &PyDict_Type)
        return document_size(value, depth);
    if (kind == &PyList_Type || kind == &PyTuple_Type) {
        Py_ssize_t i, size = 5;
        if (depth > 120)
            return NOT_MEASURED;
        for (i = 0; i < PySequence_Fast_GET_SIZE(value); i++) {
            Py_ssize_t item = value_size(PySequence_Fast_GET_ITEM(value, i),
                                         depth + 1);
            if (item < 0)
                return item;
            size += 1 + index_size(i) + 1 + item;
        }
        return size;
    }
    if (kind == &PyBytes_Type)
        return 4 + 1 + PyBytes_GET_SIZE(value);
    if ((PyObject *)kind == OBJECTID_TYPE)
        return 12;
    if (kind == DATETIME_TYPE)
        return 8;
    if ((PyObject *)kind == INT64_TYPE)
        return 8;
    if (oid_slots && ((PyObject *)kind == OID_TYPE
                      || (PyObject *)kind == DBREF_TYPE)) {
        /* as_doc(): {'$ref': collection, '$id': id[, '$db': database]} */
        PyObject *collection = slot_get(value, off_collection),
            *id = slot_get(value, off_id), *database = slot_get(value,
                                                                off_database),
            *kwargs = slot_get(value, off_kwargs);
        Py_ssize_t size = 5, part;
        if (collection == NULL || id == NULL || database == NULL
                || kwargs == NULL || !PyDict_CheckExact(kwargs)
                || PyDict_GET_SIZE(kwargs) != 0
                || !PyUnicode_CheckExact(collection))
            return NOT_MEASURED;
        part = value_size(collection, depth + 1);
        if (part < 0)
            return part;
        size += 1 + 5 + part;                       /* "$ref" */
        part = value_size(id, depth + 1);
        if (part < 0)
            return part;
        size += 1 + 4 + part;                       /* "$id" */
        if (database != Py_None) {
            if (!PyUnicode_CheckExact(database))
                return NOT_MEASURED;
            part = value_size(database, depth + 1);
            if (part < 0)
                return part;
            size += 1 + 4 + part;                   /* "$db" */
        }
        return size;
    }
    return NOT_MEASURED;
}

/* limits.bson_size(doc) */
static PyObject *
bson_size(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t size;
    if (nargs != 1 || !bound || !PyDict_CheckExact(args[0]))
        return PyObject_Vectorcall(BSON_SIZE_PY, args, nargs, NULL);
    size = document_size(args[0], 0);
    if (size == -1)
        return NULL;
    if (size == NOT_MEASURED)
        return PyObject_Vectorcall(BSON_SIZE_PY, args, nargs, NULL);
    return PyLong_FromSsize_t(size);
}

/* ------------------------------------------------------------------ */
/* The cache at a transaction's end: mirrors cache._note_used and       */
/* cache._ghost_loaded, loops over every object used or loaded.         */

static PyObject *s_move_to_end, *s_p_invalidate;

/* cache._note_used(used, recent, loaded, size).  Where at least
 * ``size`` of the objects used are loaded, what ``recent`` keeps is the
 * last ``size`` of them, whatever it held: they are put in as such. */
static PyObject *s_clear, *s_popitem;

static PyObject *
note_used(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *used, *recent, *loaded, *ref, *obj, *live_refs = NULL,
        *live_objs = NULL, *last_false = NULL;
    Py_ssize_t pos = 0, size, keep, i, count;
    if (nargs != 4 || !PyDict_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError,
                        "note_used(used, recent, loaded, size)");
        return NULL;
    }
    used = args[0];
    recent = args[1];
    loaded = args[2];
    keep = PyLong_AsSsize_t(args[3]);
    if (keep == -1 && PyErr_Occurred())
        return NULL;
    live_refs = PyList_New(0);
    live_objs = PyList_New(0);
    if (live_refs == NULL || live_objs == NULL)
        goto failed;
    size = PyDict_GET_SIZE(used);
    while (PyDict_Next(used, &pos, &ref, &obj)) {
        int live;
        Py_INCREF(ref);
        Py_INCREF(obj);
        live = is_loaded(obj);
        if (live > 0 && (PyList_Append(live_refs, ref) < 0
                         || PyList_Append(live_objs, obj) < 0
                         || PyObject_SetItem(loaded, ref, Py_None) < 0))
            live = -1;
        Py_DECREF(ref);
        Py_DECREF(obj);
        if (live < 0)
            goto failed;
        if (PyDict_GET_SIZE(used) != size) {
            PyErr_SetString(PyExc_RuntimeError,
                            "dictionary changed size during iteration");
            goto failed;
        }
    }
    count = PyList_GET_SIZE(live_refs);
    i = 0;
    if (count >= keep) {
        /* Every entry held before goes, and the first of these. */
        if (call_ignoring_result(PyObject_CallMethodNoArgs(recent,
                                                           s_clear)) < 0)
            goto failed;
        i = count - keep;
    }
    for (; i < count; i++) {
        ref = PyList_GET_ITEM(live_refs, i);
        if (PyObject_SetItem(recent, ref, PyList_GET_ITEM(live_objs, i)) < 0
                || call_ignoring_result(PyObject_CallMethodOneArg(
                    recent, s_move_to_end, ref)) < 0)
            goto failed;
    }
    Py_CLEAR(live_refs);
    Py_CLEAR(live_objs);
    /* while len(recent) > size: recent.popitem(last=False) */
    for (;;) {
        Py_ssize_t length = PyObject_Length(recent);
        PyObject *kwnames, *argv[2];
        if (length < 0)
            goto failed;
        if (length <= keep)
            break;
        kwnames = Py_BuildValue("(s)", "last");
        if (kwnames == NULL)
            goto failed;
        argv[0] = recent;
        argv[1] = Py_False;
        last_false = PyObject_VectorcallMethod(s_popitem, argv,
                                               1,
                                               kwnames);
        Py_DECREF(kwnames);
        if (last_false == NULL)
            goto failed;
        Py_CLEAR(last_false);
    }
    Py_RETURN_NONE;
failed:
    Py_XDECREF(live_refs);
    Py_XDECREF(live_objs);
    return NULL;
}

/* cache._ghost_loaded(cache, refs, keep): turn the objects of ``refs``
 * that are loaded into ghosts, but those stored in the collections of
 * ``keep``; return those kept ({ref: None}). */
static PyObject *
ghost_loaded(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *cache, *refs, *keep, *kept, *objects = NULL;
    Py_ssize_t i;
    int any_kept;
    if (nargs != 3 || !PyList_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "ghost_loaded(cache, refs, keep)");
        return NULL;
    }
    cache = args[0];
    refs = args[1];
    keep = args[2];
    any_kept = PyObject_IsTrue(keep);
    if (any_kept < 0)
        return NULL;
    kept = PyDict_New();
    if (kept == NULL)
        return NULL;
    if (bound && inlined_ok(cache, &INLINED_CACHE)) {
        objects = PyObject_GetAttr(cache, s_objects);
        if (objects == NULL)
            goto failed;
        if (!PyDict_CheckExact(objects))
            Py_CLEAR(objects);
    }
    for (i = 0; i < PyList_GET_SIZE(refs); i++) {
        PyObject *ref = Py_NewRef(PyList_GET_ITEM(refs, i)), *obj;
        int live, keeping = 0;
        /* obj = self.get(ref) */
        if (objects != NULL) {
            PyObject *alive = PyDict_GetItemWithError(objects, ref);
            if (alive == NULL)
                obj = PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
            else if (alive == Py_None)
                obj = Py_NewRef(Py_None);
            else if (PyWeakref_CheckRefExact(alive))
                obj = weak_target(alive);
            else {
                Py_INCREF(alive);
                obj = PyObject_CallNoArgs(alive);
                Py_DECREF(alive);
            }
        }
        else
            obj = PyObject_CallMethodOneArg(cache, s_get, ref);
        if (obj == NULL) {
            Py_DECREF(ref);
            goto failed;
        }
        live = obj == Py_None ? 0 : is_loaded(obj);
        if (live > 0 && any_kept) {
            PyObject *key = oid_key(ref);
            keeping = key == NULL ? -1 : PySequence_Contains(keep, key);
            Py_XDECREF(key);
            if (keeping > 0 && PyDict_SetItem(kept, ref, Py_None) < 0)
                keeping = -1;
            if (keeping < 0)
                live = -1;
        }
        if (live > 0 && !keeping) {
            PyObject *method = p_get(obj, s_p_invalidate);
            live = method == NULL ? -1
                : call_ignoring_result(PyObject_CallNoArgs(method));
            Py_XDECREF(method);
        }
        Py_DECREF(obj);
        Py_DECREF(ref);
        if (live < 0)
            goto failed;
    }
    Py_XDECREF(objects);
    return kept;
failed:
    Py_XDECREF(objects);
    Py_DECREF(kept);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* The compiled methods.  Each takes the object as its first argument   */
/* and hands any call it does not handle (other arguments, another      */
/* class, NOT_HANDLED) to the Python method ``_python_<name>``.         */

static PyObject *
python_method(PyObject *name, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames)
{
    return PyObject_VectorcallMethod(name, args, nargs, kwnames);
}

/* ObjectWriter.get_document(self, obj, store_type=False) */
static PyObject *
m_get_document(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames)
{
    PyObject *result;
    if (nargs != 2 || kwnames != NULL || !bound)
        return python_method(s_py_get_document, args, nargs, kwnames);
    result = write_document(args[0], args[1]);
    if (result == NOT_HANDLED) {
        Py_DECREF(result);
        return python_method(s_py_get_document, args, nargs, kwnames);
    }
    return result;
}

/* The context of a call on the reader ``reader``: its data manager and
 * whether the compiled code reads for it (1), not (0), -1 on error. */
static int
reader_context(Ctx *c, PyObject *reader)
{
    PyObject *jar = PyObject_GetAttr(reader, s_jar);
    int fast;
    if (jar == NULL)
        return -1;
    ctx_init(c, jar, reader);
    Py_DECREF(jar);
    fast = ctx_reader_fast(c);
    if (fast <= 0)
        ctx_clear(c);
    return fast;
}

/* ObjectReader.get_state(self, doc, obj) */
static PyObject *
m_get_state(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
            PyObject *kwnames)
{
    Ctx c;
    PyObject *result;
    int fast;
    if (nargs != 3 || kwnames != NULL || !bound || !PyDict_CheckExact(args[1]))
        return python_method(s_py_get_state, args, nargs, kwnames);
    fast = reader_context(&c, args[0]);
    if (fast <= 0)
        return fast < 0 ? NULL
            : python_method(s_py_get_state, args, nargs, kwnames);
    result = get_state_impl(&c, args[1], args[2]);
    ctx_clear(&c);
    if (result == NOT_HANDLED) {
        Py_DECREF(result);
        return python_method(s_py_get_state, args, nargs, kwnames);
    }
    return result;
}

/* ObjectReader._read_fields(self, stored, obj, skip=()) */
static PyObject *
m_read_fields(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames)
{
    Ctx c;
    PyObject *skip = NULL, *result;
    int fast;
    if ((nargs != 3 && nargs != 4) || kwnames != NULL || !bound
            || !PyDict_CheckExact(args[1]))
        return python_method(s_py_read_fields, args, nargs, kwnames);
    if (nargs == 4) {
        skip = args[3];
        if (PyTuple_CheckExact(skip) && PyTuple_GET_SIZE(skip) == 0)
            skip = NULL;
        else if (!PyAnySet_CheckExact(skip))
            return python_method(s_py_read_fields, args, nargs, kwnames);
    }
    fast = reader_context(&c, args[0]);
    if (fast <= 0)
        return fast < 0 ? NULL
            : python_method(s_py_read_fields, args, nargs, kwnames);
    /* (read_fields locates an error in the stored dict, as
     * ``_read_fields``'s ``except`` does) */
    result = read_fields(&c, args[1], args[2], skip, NULL);
    ctx_clear(&c);
    return result;
}

/* ObjectReader._read_value(self, state, obj) */
static PyObject *
m_read_value(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
             PyObject *kwnames)
{
    Ctx c;
    PyObject *result;
    int fast;
    if (nargs != 3 || kwnames != NULL || !bound)
        return python_method(s_py_read_value, args, nargs, kwnames);
    fast = reader_context(&c, args[0]);
    if (fast <= 0)
        return fast < 0 ? NULL
            : python_method(s_py_read_value, args, nargs, kwnames);
    result = read_value(&c, args[1], args[2]);
    ctx_clear(&c);
    return result;
}

/* MongoDataManager.load(self, dbref) */
static PyObject *
m_load(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
       PyObject *kwnames)
{
    Ctx c;
    PyObject *result;
    if (nargs != 2 || kwnames != NULL || !bound
            || !inlined_ok(args[0], &INLINED_JAR))
        return python_method(s_py_load, args, nargs, kwnames);
    ctx_init(&c, args[0], NULL);
    result = load(&c, args[1]);
    ctx_clear(&c);
    return result;
}

/* MongoDataManager._object_from_document(self, db_name, coll_name, doc) */
static PyObject *
m_object_from_document(PyObject *module, PyObject *const *args,
                       Py_ssize_t nargs, PyObject *kwnames)
{
    Ctx c;
    PyObject *result;
    if (nargs != 4 || kwnames != NULL || !bound)
        return python_method(s_py_object_from_document, args, nargs,
                             kwnames);
    ctx_init(&c, args[0], NULL);
    result = object_from_document(&c, args[1], args[2], args[3]);
    ctx_clear(&c);
    if (result == NOT_HANDLED) {
        Py_DECREF(result);
        return python_method(s_py_object_from_document, args, nargs,
                             kwnames);
    }
    return result;
}

/* MongoDataManager.setstate(self, obj) */
static PyObject *
m_setstate(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
           PyObject *kwnames)
{
    Ctx c;
    int result;
    if (nargs != 2 || kwnames != NULL || !bound
            || !inlined_ok(args[0], &INLINED_JAR))
        return python_method(s_py_setstate, args, nargs, kwnames);
    ctx_init(&c, args[0], NULL);
    result = load_ghost(&c, args[1]);
    ctx_clear(&c);
    if (result < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* MongoDataManager.register(self, obj) */
static PyObject *
m_register(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
           PyObject *kwnames)
{
    Ctx c;
    int result;
    if (nargs != 2 || kwnames != NULL || !bound
            || !inlined_ok(args[0], &INLINED_JAR))
        return python_method(s_py_register, args, nargs, kwnames);
    ctx_init(&c, args[0], NULL);
    result = register_change(&c, args[1]);
    ctx_clear(&c);
    if (result == 1)
        return python_method(s_py_register, args, nargs, kwnames);
    if (result < 0)
        return NULL;
    Py_RETURN_NONE;
}

#define METHOD(name, function, doc) \
    {name, (PyCFunction)(void (*)(void))function, \
     METH_FASTCALL | METH_KEYWORDS, doc}

static PyMethodDef compiled_methods[] = {
    METHOD("ObjectWriter.get_document", m_get_document,
           "ObjectWriter.get_document, compiled"),
    METHOD("ObjectReader.get_state", m_get_state,
           "ObjectReader.get_state, compiled"),
    METHOD("ObjectReader._read_fields", m_read_fields,
           "ObjectReader._read_fields, compiled"),
    METHOD("ObjectReader._read_value", m_read_value,
           "ObjectReader._read_value, compiled"),
    METHOD("MongoDataManager.load", m_load, "MongoDataManager.load, compiled"),
    METHOD("MongoDataManager._object_from_document", m_object_from_document,
           "MongoDataManager._object_from_document, compiled"),
    METHOD("MongoDataManager.setstate", m_setstate,
           "MongoDataManager.setstate, compiled"),
    METHOD("MongoDataManager.register", m_register,
           "MongoDataManager.register, compiled"),
    {NULL, NULL, 0, NULL}
};

/* ``methods()``: {'Class.name': method} of the compiled methods, each a
 * function binding like a Python one (an ``instancemethod``). */
static PyObject *
methods(PyObject *module, PyObject *unused)
{
    PyObject *result = PyDict_New();
    PyMethodDef *def;
    if (result == NULL)
        return NULL;
    for (def = compiled_methods; def->ml_name != NULL; def++) {
        PyObject *function = PyCFunction_NewEx(def, module, NULL), *method;
        if (function == NULL) {
            Py_DECREF(result);
            return NULL;
        }
        method = PyInstanceMethod_New(function);
        Py_DECREF(function);
        if (method == NULL || PyDict_SetItemString(result, def->ml_name,
                                                   method) < 0) {
            Py_XDECREF(method);
            Py_DECREF(result);
            return NULL;
        }
        Py_DECREF(method);
    }
    return result;
}

/* An oid's ``id``, ``collection`` and ``database``: DBRef's properties
 * return its slots (``self.__id``, ...), as these do. */
static PyObject *
oid_get_slot(PyObject *self, void *closure)
{
    Py_ssize_t offset = *(Py_ssize_t *)closure;
    PyObject *value = slot_get(self, offset);
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "an oid without its fields");
        return NULL;
    }
    return Py_NewRef(value);
}

static PyGetSetDef oid_fields[] = {
    {"id", oid_get_slot, NULL, "The _id the oid refers to (DBRef.id).",
     &off_id},
    {"collection", oid_get_slot, NULL,
     "The collection (DBRef.collection).", &off_collection},
    {"database", oid_get_slot, NULL, "The database (DBRef.database).",
     &off_database},
    {NULL, NULL, NULL, NULL, NULL}
};

/* ``accelerate_oid(flag)``: give metadata.OID the compiled hash,
 * equality and fields (its Python methods stay, and compute the same),
 * or (``False``) take them back. */
static PyObject *
accelerate_oid(PyObject *module, PyObject *flag)
{
    PyTypeObject *type = (PyTypeObject *)OID_TYPE;
    PyGetSetDef *field;
    int on = PyObject_IsTrue(flag);
    if (on < 0)
        return NULL;
    if (!bound || !oid_slots)
        Py_RETURN_FALSE;
    for (field = oid_fields; field->name != NULL; field++) {
        PyObject *own = PyDict_GetItemString(type->tp_dict, field->name);
        int result = 0;
        if (on && own == NULL) {
            PyObject *descr = PyDescr_NewGetSet(type, field);
            result = descr == NULL ? -1
                : PyObject_SetAttrString(OID_TYPE, field->name, descr);
            Py_XDECREF(descr);
        }
        else if (!on && own != NULL && Py_IS_TYPE(own, &PyGetSetDescr_Type))
            result = PyObject_DelAttrString(OID_TYPE, field->name);
        if (result < 0)
            return NULL;
    }
    if (on && type->tp_hash != oid_hash) {
        if (type->tp_hash == NULL || type->tp_richcompare == NULL)
            Py_RETURN_FALSE;
        oid_python_hash = type->tp_hash;
        oid_python_richcompare = type->tp_richcompare;
        type->tp_hash = oid_hash;
        type->tp_richcompare = oid_richcompare;
    }
    else if (!on && type->tp_hash == oid_hash) {
        type->tp_hash = oid_python_hash;
        type->tp_richcompare = oid_python_richcompare;
    }
    Py_RETURN_TRUE;
}

/* ------------------------------------------------------------------ */
/* bind()                                                               */

static int
set_inlined(Inlined *inlined, PyObject *spec)
{
    /* spec: (class, (method names...)) */
    PyObject *cls, *names, *originals;
    Py_ssize_t i;
    if (spec == NULL || !PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) != 2
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
        PyObject *name = PyTuple_GET_ITEM(names, i), *found;
        if (!PyUnicode_CheckExact(name)) {
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
        PyTuple_SET_ITEM(originals, i, Py_NewRef(found));
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
    {"inlined_objectid", &INLINED_OBJECTID},
    {NULL, NULL}
};

/* The samples bind() checks the hashes computed here with. */
static int
check_hashes(void)
{
    PyObject *sample = PyObject_CallNoArgs(OBJECTID_TYPE), *bytes, *key;
    Py_hash_t mine, theirs;
    objectid_fast = 0;
    tuple_hash_known = 0;
    if (sample == NULL)
        return -1;
    bytes = off_objectid >= 0 ? slot_get(sample, off_objectid) : NULL;
    if (bytes != NULL && PyBytes_CheckExact(bytes)) {
        mine = PyObject_Hash(bytes);
        theirs = PyObject_Hash(sample);
        if (mine == -1 || theirs == -1)
            goto failed;
        objectid_fast = mine == theirs;
    }
    key = PyTuple_Pack(4, s_value, sample, Py_None, EMPTY_TUPLE);
    if (key == NULL)
        goto failed;
    theirs = PyObject_Hash(key);
    Py_DECREF(key);
    tuple_hash_known = 1;
    mine = hash4(s_value, sample, Py_None, EMPTY_TUPLE);
    if (mine == -1 || theirs == -1)
        goto failed;
    tuple_hash_known = mine == theirs;
    Py_DECREF(sample);
    return 0;
failed:
    tuple_hash_known = objectid_fast = 0;
    Py_DECREF(sample);
    return -1;
}

static PyObject *
bind(PyObject *module, PyObject *names)
{
    Bound *b;
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
        Py_XSETREF(*b->slot, Py_NewRef(value));
    }
    for (spec = INLINED; spec->name != NULL; spec++) {
        if (set_inlined(spec->inlined,
                        PyDict_GetItemString(names, spec->name)) < 0)
            return NULL;
    }
    {
        struct { const char *name; PyObject **slot; } more[] = {
            {"_STAMPS", &STAMPS}, {"PY_RESTORED", &PY_RESTORED},
            {"changed_fields", &CHANGED_FIELDS_PY},
            {"bson_size", &BSON_SIZE_PY}, {"_stale_change", &STALE_CHANGE},
            {"_stale_owner", &STALE_OWNER}, {NULL, NULL}};
        int i;
        for (i = 0; more[i].name != NULL; i++) {
            PyObject *value = PyDict_GetItemString(names, more[i].name);
            if (value == NULL) {
                PyErr_Format(PyExc_KeyError, "bind() needs %s", more[i].name);
                return NULL;
            }
            Py_XSETREF(*more[i].slot, Py_NewRef(value));
        }
    }
    MAX_NESTING = PyLong_AsLong(MAX_NESTING_OBJ);
    if (MAX_NESTING == -1 && PyErr_Occurred())
        return NULL;
    if (!PyType_Check(OID_TYPE) || !PyType_Check(DBREF_TYPE)
            || !PyType_Check(OBJECTID_TYPE) || !PyType_Check(PERSISTENT_DICT)
            || !PyType_Check(PERSISTENT_LIST) || !PyType_Check(PERSISTENT_TYPE)
            || !PyType_Check(TYPE_REGISTRY)
            || !PyType_IsSubtype((PyTypeObject *)PERSISTENT_DICT,
                                 (PyTypeObject *)PERSISTENT_TYPE)
            || !PyType_IsSubtype((PyTypeObject *)PERSISTENT_LIST,
                                 (PyTypeObject *)PERSISTENT_TYPE)) {
        PyErr_SetString(PyExc_TypeError, "bind(): classes expected");
        return NULL;
    }
    if (PyType_HasFeature((PyTypeObject *)PERSISTENT_TYPE,
                          Py_TPFLAGS_HEAPTYPE)) {
        /* persistent in Python (PURE_PYTHON): attributes as usual */
        per_getattro = NULL;
        per_setattro = NULL;
    }
    else {
        per_getattro = ((PyTypeObject *)PERSISTENT_TYPE)->tp_getattro;
        per_setattro = ((PyTypeObject *)PERSISTENT_TYPE)->tp_setattro;
    }
    off_collection = slot_offset(DBREF_TYPE, "_DBRef__collection");
    off_id = slot_offset(DBREF_TYPE, "_DBRef__id");
    off_database = slot_offset(DBREF_TYPE, "_DBRef__database");
    off_kwargs = slot_offset(DBREF_TYPE, "_DBRef__kwargs");
    off_hash = slot_offset(OID_TYPE, "_hash");
    off_doc = slot_offset(OID_TYPE, "_doc");
    off_routing = slot_offset(OID_TYPE, "routing");
    off_objectid = slot_offset(OBJECTID_TYPE, "_ObjectId__id");
    oid_slots = off_collection >= 0 && off_id >= 0 && off_database >= 0
        && off_kwargs >= 0 && off_hash >= 0 && off_doc >= 0
        && off_routing >= 0
        && PyType_IsSubtype((PyTypeObject *)OID_TYPE,
                            (PyTypeObject *)DBREF_TYPE)
        && PyDict_CheckExact(EMPTY_KWARGS);
    if (check_hashes() < 0)
        return NULL;
    bound = 1;
    return PyBool_FromLong(oid_slots);
}

static PyMethodDef module_methods[] = {
    {"bind", (PyCFunction)bind, METH_O,
     "bind(names): the Python objects the compiled code uses."},
    {"methods", (PyCFunction)methods, METH_NOARGS,
     "The compiled methods, by 'Class.name'."},
    {"accelerate_oid", (PyCFunction)accelerate_oid, METH_O,
     "Give metadata.OID the compiled hash and equality."},
    {"same_value", (PyCFunction)(void (*)(void))same_value, METH_FASTCALL,
     "commit.same_value, compiled."},
    {"changed_fields", (PyCFunction)(void (*)(void))changed_fields,
     METH_FASTCALL, "commit.changed_fields, compiled."},
    {"bson_size", (PyCFunction)(void (*)(void))bson_size, METH_FASTCALL,
     "limits.bson_size, compiled."},
    {"_note_used", (PyCFunction)(void (*)(void))note_used, METH_FASTCALL,
     "cache._note_used, compiled."},
    {"_ghost_loaded", (PyCFunction)(void (*)(void))ghost_loaded,
     METH_FASTCALL, "cache._ghost_loaded, compiled."},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "mongopersist._speedups",
    "The compiled hot paths of mongopersist (see mongopersist.speedups).",
    -1,
    module_methods
};

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
#define INTERN_STRING(var, text) \
    if ((var = PyUnicode_InternFromString(text)) == NULL) \
        return NULL;
    STRINGS(INTERN_STRING)
    INTERN_STRING(s_move_to_end, "move_to_end")
    INTERN_STRING(s_p_invalidate, "_p_invalidate")
    INTERN_STRING(s_clear, "clear")
    INTERN_STRING(s_popitem, "popitem")
    return PyModule_Create(&module_def);
}
