/*
 * qmplex._decode: the two usual lines of a QMP receive, decoded in C.
 *
 * Protocol._handle_lines (src/qmplex/core/protocol.py) is the reference: for each line
 * the splitter reported it decodes the JSON and appends what the line meant to the
 * receive's result list. Two kinds of line make up nearly every busy stream:
 *
 *   (a) a routed event line (tag >= route_base: the splitter matched its "event" name
 *       against the route table): it becomes
 *       Event(names[tag - route_base], data if type(data) is dict else {},
 *             msg.get("timestamp"));
 *   (b) a reply line tagged KIND_RETURN that decodes to a dict with a "return" member
 *       and an "id" member that is in flight: its token is popped from the in-flight
 *       dict and it becomes Reply(token, True, msg["return"]).
 *
 * decode() does exactly that for a run of such lines, one C call per run, and stops at
 * the first line that is anything else, returning its index: the Python loop handles
 * that line itself (it knows every rule) and calls decode() again at the next routed
 * or reply line. So the Python loop stays the reference and the fallback, and decode()
 * reports nothing: a line it does not like (another kind, a name index out of range,
 * invalid JSON, not an object, no "return", no "id", an id not in flight or
 * unhashable) is left to Python, which decodes it again and says what it is.
 * Exceptions the Python loop would let through propagate from here too: an exception
 * from loads other than the configured decode error (MemoryError, say), and one other
 * than TypeError from hashing or comparing an id. Bad arguments (not the peer's bytes:
 * a span outside buf, a wrong type) raise TypeError or ValueError.
 *
 * Values: Event and Reply are tuple subclasses. Each is made as tuple.__new__(cls,
 * items) makes it: tuple's own tp_new (PyType_GetSlot) called with the subclass,
 * which allocates through the subclass's tp_alloc, fills the items, resets the hash
 * cache of 3.14 and tracks the object for the GC. configure() checks once, through
 * the real tuple.__new__, that this is allowed for both types. Nothing here touches a
 * tuple's layout (allocating with tp_alloc and filling it by hand would leave 3.14's
 * cached hash zero instead of "not computed").
 *
 * API: built against the Limited API of 3.10 (build.py defines Py_LIMITED_API=0x030A0000
 * from requires-python, for every entry of STABLE_ABI_EXTENSIONS), so one abi3 binary
 * serves CPython 3.10 and later; only a free-threaded interpreter, which has no abi3,
 * gets a build against the full API.
 * Only functions of the stable ABI, none deprecated: borrowed references from
 * PyDict_GetItemWithError, PyList_GetItem and PyTuple_GetItem are used while the
 * container is held and nothing else runs.
 *
 * GIL: this module relies on the GIL. decode() runs Python code (loads, and an id's
 * __hash__/__eq__ through the in-flight dict) between reads of borrowed references,
 * and the buffer, the span list and the result list are the caller's, unlocked. The
 * module says so with Py_mod_gil = Py_MOD_GIL_USED where that slot exists (3.13+,
 * full API), so a free-threaded interpreter enables the GIL when it imports it; abi3
 * modules cannot be loaded by a free-threaded interpreter at all.
 *
 * State: multi-phase initialisation; what configure() sets lives in the module's state
 * (one per module object, so per interpreter), never in a static variable.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "lines.h" /* QMPLEX_KIND_RETURN, shared with the splitter */

typedef struct {
    /* Set by configure(); NULL until then. */
    PyObject *loads;        /* orjson.loads: bytes -> object */
    PyObject *event_type;   /* qmplex Event: a tuple subclass */
    PyObject *reply_type;   /* qmplex Reply: a tuple subclass */
    PyObject *decode_error; /* what loads raises for invalid JSON */
    Py_ssize_t route_base;  /* tag of the first route (framing.ROUTE_BASE) */
    /* Set when the module is executed. */
    newfunc tuple_new; /* tuple's tp_new: what tuple.__new__(cls, items) runs */
    PyObject *s_data;
    PyObject *s_timestamp;
    PyObject *s_return;
    PyObject *s_id;
} decode_state;

static decode_state *
get_state(PyObject *module)
{
    return (decode_state *)PyModule_GetState(module);
}

/* tuple.__new__(type, items) for a tuple subclass that configure() accepted. Steals
 * items (which may be NULL after a failed PyTuple_Pack: the error is kept). */
static PyObject *
make_value(decode_state *st, PyObject *type, PyObject *items)
{
    PyObject *args, *value;

    if (items == NULL)
        return NULL;
    args = PyTuple_Pack(1, items);
    Py_DECREF(items);
    if (args == NULL)
        return NULL;
    value = st->tuple_new((PyTypeObject *)type, args, NULL);
    Py_DECREF(args);
    return value;
}

/* The Event of a routed line's decoded msg (a dict), or NULL with an exception. */
static PyObject *
make_event(decode_state *st, PyObject *msg, PyObject *name)
{
    PyObject *data, *timestamp, *items;

    data = PyDict_GetItemWithError(msg, st->s_data); /* borrowed */
    if (data == NULL && PyErr_Occurred())
        return NULL;
    timestamp = PyDict_GetItemWithError(msg, st->s_timestamp); /* borrowed */
    if (timestamp == NULL) {
        if (PyErr_Occurred())
            return NULL;
        timestamp = Py_None; /* msg.get("timestamp") */
    }
    if (data != NULL && PyDict_CheckExact(data)) {
        items = PyTuple_Pack(3, name, data, timestamp);
    } else {
        PyObject *empty = PyDict_New(); /* none, or not an object: {} */
        if (empty == NULL)
            return NULL;
        items = PyTuple_Pack(3, name, empty, timestamp);
        Py_DECREF(empty);
    }
    return make_value(st, st->event_type, items);
}

/* The Reply of a KIND_RETURN line's decoded msg (a dict), its token popped from
 * in_flight; NULL without an exception when the line is left to Python (no "return",
 * no "id", an id not in flight or unhashable); NULL with one on an error the Python
 * loop would not catch either. */
static PyObject *
make_reply(decode_state *st, PyObject *msg, PyObject *in_flight)
{
    PyObject *value, *cid, *token, *items;

    value = PyDict_GetItemWithError(msg, st->s_return); /* borrowed */
    if (value == NULL)
        return NULL;
    cid = PyDict_GetItemWithError(msg, st->s_id); /* borrowed */
    if (cid == NULL)
        return NULL; /* no id: the oldest command's, which Python finds */
    token = PyDict_GetItemWithError(in_flight, cid); /* borrowed */
    if (token == NULL) {
        /* Not in flight (a stale reply), or unhashable: Python's pop() catches
         * KeyError and TypeError and notes a StaleReply. */
        if (PyErr_Occurred() && PyErr_ExceptionMatches(PyExc_TypeError))
            PyErr_Clear();
        return NULL;
    }
    Py_INCREF(token);
    if (PyDict_DelItem(in_flight, cid) < 0) {
        Py_DECREF(token);
        return NULL;
    }
    items = PyTuple_Pack(3, token, Py_True, value);
    Py_DECREF(token);
    return make_value(st, st->reply_type, items);
}

/* The three ints of line index in spans. */
static int
read_span(PyObject *spans, Py_ssize_t index, Py_ssize_t field, Py_ssize_t *value)
{
    PyObject *item = PyList_GetItem(spans, 3 * index + field); /* borrowed */

    if (item == NULL)
        return -1;
    *value = PyLong_AsSsize_t(item);
    if (*value == -1 && PyErr_Occurred())
        return -1;
    return 0;
}

PyDoc_STRVAR(decode_doc,
"decode(buf, spans, index, names, in_flight, out, /)\n"
"--\n\n"
"Decode the routed event lines and the in-flight replies of buf, from line index on,\n"
"appending an Event or a Reply to out for each; return the index of the first line\n"
"left to the caller (len(spans) // 3 when none is). See csrc/decode.c.\n\n"
"buf: bytes or bytearray; spans: the splitter's list, three ints per line (tag,\n"
"start, end); names: the route table's names (a tuple); in_flight: the protocol's\n"
"dict id -> token (the ids of the replies decoded are removed from it); out: a list.");

static PyObject *
decode(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    decode_state *st = get_state(module);
    PyObject *buf, *spans, *names, *in_flight, *out;
    const char *base = NULL;
    Py_ssize_t size = 0, count, index, nnames, route_base;
    int is_bytes;

    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError, "decode() takes 6 arguments (%zd given)", nargs);
        return NULL;
    }
    if (st->loads == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "qmplex._decode: configure() was not called");
        return NULL;
    }
    buf = args[0];
    spans = args[1];
    names = args[3];
    in_flight = args[4];
    out = args[5];
    is_bytes = PyBytes_Check(buf);
    if (!is_bytes && !PyByteArray_Check(buf)) {
        PyErr_SetString(PyExc_TypeError, "decode(): buf must be bytes or bytearray");
        return NULL;
    }
    if (!PyList_Check(spans) || !PyTuple_Check(names) || !PyDict_CheckExact(in_flight)
            || !PyList_Check(out)) {
        PyErr_SetString(PyExc_TypeError,
                        "decode(): spans must be a list, names a tuple, in_flight a dict "
                        "and out a list");
        return NULL;
    }
    count = PyList_Size(spans) / 3;
    index = PyLong_AsSsize_t(args[2]);
    if (index == -1 && PyErr_Occurred())
        return NULL;
    if (index < 0 || index > count) {
        PyErr_Format(PyExc_ValueError, "decode(): index %zd out of range(0, %zd)",
                     index, count + 1);
        return NULL;
    }
    if (is_bytes) {
        base = PyBytes_AsString(buf);
        size = PyBytes_Size(buf);
        if (base == NULL)
            return NULL;
    }
    nnames = PyTuple_Size(names);
    route_base = st->route_base;

    for (; index < count; index++) {
        Py_ssize_t tag, start, end;
        PyObject *text, *msg, *value;
        int routed, rc;

        if (read_span(spans, index, 0, &tag) < 0)
            return NULL;
        routed = tag >= route_base;
        if (routed ? tag - route_base >= nnames : tag != QMPLEX_KIND_RETURN)
            break; /* another kind of line, or a route the names do not have */
        if (read_span(spans, index, 1, &start) < 0 || read_span(spans, index, 2, &end) < 0)
            return NULL;
        if (!is_bytes) {
            /* A bytearray may have been resized by the loads of the line before. */
            base = PyByteArray_AsString(buf);
            size = PyByteArray_Size(buf);
        }
        if (start < 0 || end < start || end > size) {
            PyErr_Format(PyExc_ValueError,
                         "decode(): line %zd (%zd, %zd) is outside buf (%zd bytes)",
                         index, start, end, size);
            return NULL;
        }
        text = PyBytes_FromStringAndSize(base + start, end - start);
        if (text == NULL)
            return NULL;
        msg = PyObject_CallFunctionObjArgs(st->loads, text, NULL);
        Py_DECREF(text);
        if (msg == NULL) {
            if (!PyErr_ExceptionMatches(st->decode_error))
                return NULL;
            PyErr_Clear();
            break; /* invalid JSON: the Python loop reports it (or fails the connection) */
        }
        if (!PyDict_CheckExact(msg)) {
            Py_DECREF(msg);
            break;
        }
        if (routed)
            value = make_event(st, msg, PyTuple_GetItem(names, tag - route_base));
        else
            value = make_reply(st, msg, in_flight);
        Py_DECREF(msg);
        if (value == NULL) {
            if (PyErr_Occurred())
                return NULL;
            break;
        }
        rc = PyList_Append(out, value);
        Py_DECREF(value);
        if (rc < 0)
            return NULL;
    }
    return PyLong_FromSsize_t(index);
}

/* Raise TypeError unless tuple.__new__(type, ()) is allowed (type is a tuple subclass
 * whose nearest static base creating its instances is tuple): what make_value relies
 * on. Checked by the real tuple.__new__, once. */
static int
check_tuple_type(PyObject *type, const char *what)
{
    PyObject *tuple_new, *empty, *probe;

    if (!PyType_Check(type) || !PyType_IsSubtype((PyTypeObject *)type, &PyTuple_Type)) {
        PyErr_Format(PyExc_TypeError, "configure(): %s must be a tuple subclass", what);
        return -1;
    }
    tuple_new = PyObject_GetAttrString((PyObject *)&PyTuple_Type, "__new__");
    if (tuple_new == NULL)
        return -1;
    empty = PyTuple_New(0);
    if (empty == NULL) {
        Py_DECREF(tuple_new);
        return -1;
    }
    probe = PyObject_CallFunctionObjArgs(tuple_new, type, empty, NULL);
    Py_DECREF(empty);
    Py_DECREF(tuple_new);
    if (probe == NULL)
        return -1;
    Py_DECREF(probe);
    return 0;
}

static void
set_ref(PyObject **slot, PyObject *value)
{
    PyObject *old = *slot;

    *slot = Py_NewRef(value);
    Py_XDECREF(old);
}

PyDoc_STRVAR(configure_doc,
"configure(loads, event_type, reply_type, decode_error, route_base, /)\n"
"--\n\n"
"Set what decode() uses: the JSON decoder, the Event and Reply types (tuple\n"
"subclasses, built as tuple.__new__(cls, items) builds them), the exception class\n"
"loads raises for invalid JSON, and the tag of the first route (framing.ROUTE_BASE).");

static PyObject *
configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    decode_state *st = get_state(module);
    Py_ssize_t route_base;

    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "configure() takes 5 arguments (%zd given)", nargs);
        return NULL;
    }
    if (!PyCallable_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "configure(): loads must be callable");
        return NULL;
    }
    if (check_tuple_type(args[1], "event_type") < 0
            || check_tuple_type(args[2], "reply_type") < 0)
        return NULL;
    if (!PyExceptionClass_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "configure(): decode_error must be an exception class");
        return NULL;
    }
    route_base = PyLong_AsSsize_t(args[4]);
    if (route_base == -1 && PyErr_Occurred())
        return NULL;
    if (route_base <= QMPLEX_KIND_RETURN) {
        PyErr_SetString(PyExc_ValueError,
                        "configure(): route_base must be above every line kind");
        return NULL;
    }
    set_ref(&st->loads, args[0]);
    set_ref(&st->event_type, args[1]);
    set_ref(&st->reply_type, args[2]);
    set_ref(&st->decode_error, args[3]);
    st->route_base = route_base;
    Py_RETURN_NONE;
}

static PyMethodDef decode_methods[] = {
    {"decode", (PyCFunction)(void (*)(void))decode, METH_FASTCALL, decode_doc},
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL, configure_doc},
    {NULL, NULL, 0, NULL},
};

static int
decode_exec(PyObject *module)
{
    decode_state *st = get_state(module);

    st->tuple_new = (newfunc)PyType_GetSlot(&PyTuple_Type, Py_tp_new);
    if (st->tuple_new == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "qmplex._decode: tuple has no tp_new");
        return -1;
    }
    st->s_data = PyUnicode_InternFromString("data");
    st->s_timestamp = PyUnicode_InternFromString("timestamp");
    st->s_return = PyUnicode_InternFromString("return");
    st->s_id = PyUnicode_InternFromString("id");
    if (st->s_data == NULL || st->s_timestamp == NULL || st->s_return == NULL
            || st->s_id == NULL)
        return -1;
    if (PyModule_AddIntConstant(module, "KIND_RETURN", QMPLEX_KIND_RETURN) < 0)
        return -1;
#ifdef Py_LIMITED_API
    if (PyModule_AddIntConstant(module, "LIMITED_API", Py_LIMITED_API) < 0)
        return -1;
#else
    if (PyModule_AddIntConstant(module, "LIMITED_API", 0) < 0)
        return -1;
#endif
    return 0;
}

static int
decode_traverse(PyObject *module, visitproc visit, void *arg)
{
    decode_state *st = get_state(module);

    if (st == NULL)
        return 0;
    Py_VISIT(st->loads);
    Py_VISIT(st->event_type);
    Py_VISIT(st->reply_type);
    Py_VISIT(st->decode_error);
    return 0;
}

static int
decode_clear(PyObject *module)
{
    decode_state *st = get_state(module);

    if (st == NULL)
        return 0;
    Py_CLEAR(st->loads);
    Py_CLEAR(st->event_type);
    Py_CLEAR(st->reply_type);
    Py_CLEAR(st->decode_error);
    Py_CLEAR(st->s_data);
    Py_CLEAR(st->s_timestamp);
    Py_CLEAR(st->s_return);
    Py_CLEAR(st->s_id);
    return 0;
}

static void
decode_free(void *module)
{
    decode_clear((PyObject *)module);
}

static PyModuleDef_Slot decode_slots[] = {
    {Py_mod_exec, (void *)decode_exec},
#ifdef Py_mod_multiple_interpreters
    /* Everything lives in the module's state: one per interpreter. */
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_mod_gil
    /* Relies on the GIL (see the top of this file). */
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef decode_module = {
    PyModuleDef_HEAD_INIT,
    "qmplex._decode",
    "The protocol's routed event lines and in-flight replies, decoded in C "
    "(see csrc/decode.c).",
    sizeof(decode_state),
    decode_methods,
    decode_slots,
    decode_traverse,
    decode_clear,
    decode_free,
};

PyMODINIT_FUNC
PyInit__decode(void)
{
    return PyModuleDef_Init(&decode_module);
}
