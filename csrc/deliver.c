/*
 * qmplex._deliver: the protocol's loop over routed event lines, in C.
 *
 * qmplex.protocol.Protocol._handle_lines hands a run of routed event lines (framing
 * tag >= ROUTE_BASE) to deliver(): for each it decodes the line with the configured
 * loads (orjson.loads), builds the Event (a tuple subclass: name, data, raw timestamp)
 * and calls the line's handler, exactly as the Python loop does, without a bytecode
 * per step. Anything unusual goes back to the Python loop, which stays the reference:
 *
 *   - a line that is not routed, or that loads() refuses with the configured decode
 *     error (the Python loop reports it), or that does not decode to a dict;
 *   - the connection closed by a handler (the protocol's state became CLOSED);
 *   - a handler (un)subscribed (the router's version moved): the Python loop swaps
 *     the handlers for the table's general dispatch and calls deliver() again.
 *
 * A handler raising an Exception is reported through the configured failed(handler),
 * called with the exception as the one being handled (sys.exc_info()), as the Python
 * loop's "except Exception: callback_failed(handler)" does; a BaseException that is
 * not an Exception (KeyboardInterrupt, SystemExit) propagates.
 *
 * Lines are pulled from the same iterator as the Python loop's zip() (three ints per
 * line: tag, start, end), so when deliver() returns, the loop goes on after the last
 * line deliver() took.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* What deliver() returns first: why it stopped. Same values in protocol.py. */
enum {
    DELIVER_EXHAUSTED = 0, /* no line left */
    DELIVER_LINE = 1,      /* (tag, start, end) is for the Python loop */
    DELIVER_CLOSED = 2,    /* a handler ended the connection */
    DELIVER_CHANGED = 3,   /* a handler changed the subscriptions */
};

static struct {
    PyObject *loads;
    PyTypeObject *event_type;
    PyObject *failed;
    PyObject *closed;
    PyObject *decode_error;
    Py_ssize_t route_base;
    PyObject *s_data;
    PyObject *s_timestamp;
    PyObject *s_version;
    PyObject *s_state;
} cfg;

static PyObject *
stopped(int code, Py_ssize_t tag, Py_ssize_t start, Py_ssize_t end)
{
    return Py_BuildValue("(innn)", code, tag, start, end);
}

/* Call cfg.failed(handler) with the raised exception as the handled one. */
static int
report_failure(PyObject *handler)
{
    PyObject *type, *value, *tb, *old_type, *old_value, *old_tb, *res;

    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    PyErr_GetExcInfo(&old_type, &old_value, &old_tb);
    PyErr_SetExcInfo(type, value, tb); /* steals the three */
    res = PyObject_CallOneArg(cfg.failed, handler);
    PyErr_SetExcInfo(old_type, old_value, old_tb);
    if (res == NULL)
        return -1;
    Py_DECREF(res);
    return 0;
}

/* Pull the next line's three ints from the iterator. 1: got one; 0: exhausted; -1:
 * error. */
static int
next_line(PyObject *fields, Py_ssize_t *out)
{
    for (int i = 0; i < 3; i++) {
        PyObject *item = PyIter_Next(fields);
        if (item == NULL)
            return PyErr_Occurred() ? -1 : 0;
        out[i] = PyLong_AsSsize_t(item);
        Py_DECREF(item);
        if (out[i] == -1 && PyErr_Occurred())
            return -1;
    }
    return 1;
}

PyDoc_STRVAR(deliver_doc,
"deliver(buf, tag, start, end, fields, names_at, handlers_at, router, version, proto)\n"
"--\n\n"
"Deliver the routed event line (tag, start, end) of buf and those after it pulled\n"
"from fields; return (code, tag, start, end): why it stopped, and the line it\n"
"stopped at when code is 1. See csrc/deliver.c.");

static PyObject *
deliver(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *buf, *fields, *names_at, *handlers_at, *router, *version, *proto;
    const char *base;
    Py_ssize_t size, line[3];

    (void)module;
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "deliver() takes 10 arguments");
        return NULL;
    }
    if (cfg.loads == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "qmplex._deliver is not configured");
        return NULL;
    }
    buf = args[0];
    fields = args[4];
    names_at = args[5];
    handlers_at = args[6];
    router = args[7];
    version = args[8];
    proto = args[9];
    if (PyBytes_CheckExact(buf)) {
        base = PyBytes_AS_STRING(buf);
        size = PyBytes_GET_SIZE(buf);
    } else if (PyByteArray_CheckExact(buf)) {
        base = PyByteArray_AS_STRING(buf);
        size = PyByteArray_GET_SIZE(buf);
    } else {
        PyErr_SetString(PyExc_TypeError, "deliver(): buf must be bytes or bytearray");
        return NULL;
    }
    if (!PyTuple_CheckExact(names_at) || !PyTuple_CheckExact(handlers_at)) {
        PyErr_SetString(PyExc_TypeError, "deliver(): names_at and handlers_at must be tuples");
        return NULL;
    }
    if (!PyIter_Check(fields)) {
        PyErr_SetString(PyExc_TypeError, "deliver(): fields must be an iterator");
        return NULL;
    }
    for (int i = 0; i < 3; i++) {
        line[i] = PyLong_AsSsize_t(args[1 + i]);
        if (line[i] == -1 && PyErr_Occurred())
            return NULL;
    }

    for (;;) {
        Py_ssize_t tag = line[0], start = line[1], end = line[2];
        PyObject *text, *msg, *data, *timestamp, *event, *name, *handler, *res, *now;
        int same, closed, got;

        if (tag < cfg.route_base)
            return stopped(DELIVER_LINE, tag, start, end);
        if (tag >= PyTuple_GET_SIZE(names_at) || tag >= PyTuple_GET_SIZE(handlers_at)
                || start < 0 || end < start || end > size) {
            PyErr_Format(PyExc_ValueError,
                         "deliver(): line (%zd, %zd, %zd) out of range", tag, start, end);
            return NULL;
        }
        /* A bytearray may move if a handler resized it: read it anew each line. */
        if (PyByteArray_CheckExact(buf)) {
            base = PyByteArray_AS_STRING(buf);
            size = PyByteArray_GET_SIZE(buf);
            if (end > size) {
                PyErr_SetString(PyExc_ValueError, "deliver(): buf shrank");
                return NULL;
            }
        }
        text = PyBytes_FromStringAndSize(base + start, end - start);
        if (text == NULL)
            return NULL;
        msg = PyObject_CallOneArg(cfg.loads, text);
        Py_DECREF(text);
        if (msg == NULL) {
            if (!PyErr_ExceptionMatches(cfg.decode_error))
                return NULL;
            PyErr_Clear();
            return stopped(DELIVER_LINE, tag, start, end); /* the loop reports it */
        }
        if (!PyDict_CheckExact(msg)) {
            Py_DECREF(msg);
            return stopped(DELIVER_LINE, tag, start, end);
        }
        data = PyDict_GetItemWithError(msg, cfg.s_data); /* borrowed */
        if (data == NULL && PyErr_Occurred())
            goto fail_msg;
        if (data != NULL && PyDict_CheckExact(data)) {
            Py_INCREF(data);
        } else {
            data = PyDict_New(); /* none, or not an object: {} as Event.from_message */
            if (data == NULL)
                goto fail_msg;
        }
        timestamp = PyDict_GetItemWithError(msg, cfg.s_timestamp); /* borrowed */
        if (timestamp == NULL) {
            if (PyErr_Occurred()) {
                Py_DECREF(data);
                goto fail_msg;
            }
            timestamp = Py_None;
        }
        Py_INCREF(timestamp);
        Py_DECREF(msg);
        /* tuple.__new__(Event, (name, data, timestamp)), without its argument parsing:
         * the subtype's own allocator, then the three items. */
        event = cfg.event_type->tp_alloc(cfg.event_type, 3);
        if (event == NULL) {
            Py_DECREF(data);
            Py_DECREF(timestamp);
            return NULL;
        }
        name = PyTuple_GET_ITEM(names_at, tag);
        Py_INCREF(name);
        PyTuple_SET_ITEM(event, 0, name);
        PyTuple_SET_ITEM(event, 1, data);
        PyTuple_SET_ITEM(event, 2, timestamp);

        handler = PyTuple_GET_ITEM(handlers_at, tag);
        Py_INCREF(handler); /* a handler may drop the last other reference to itself */
        res = PyObject_CallOneArg(handler, event);
        Py_DECREF(event);
        if (res == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception) || report_failure(handler) < 0) {
                Py_DECREF(handler);
                return NULL;
            }
        } else {
            Py_DECREF(res);
        }
        Py_DECREF(handler);

        now = PyObject_GetAttr(proto, cfg.s_state);
        if (now == NULL)
            return NULL;
        closed = now == cfg.closed;
        Py_DECREF(now);
        if (closed)
            return stopped(DELIVER_CLOSED, tag, start, end);
        now = PyObject_GetAttr(router, cfg.s_version);
        if (now == NULL)
            return NULL;
        same = PyObject_RichCompareBool(now, version, Py_EQ);
        Py_DECREF(now);
        if (same < 0)
            return NULL;
        if (!same)
            return stopped(DELIVER_CHANGED, tag, start, end);

        got = next_line(fields, line);
        if (got < 0)
            return NULL;
        if (got == 0)
            return stopped(DELIVER_EXHAUSTED, 0, 0, 0);
        continue;
fail_msg:
        Py_DECREF(msg);
        return NULL;
    }
}

PyDoc_STRVAR(configure_doc,
"configure(loads, event_type, failed, closed, decode_error, route_base)\n"
"--\n\n"
"Set what deliver() uses: the decoder, the Event type (a tuple subclass), the\n"
"callable reporting a handler's exception, the protocol's CLOSED state, the\n"
"exception class of a line loads() refuses, and the framing's ROUTE_BASE.");

static PyObject *
configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t route_base;

    (void)module;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "configure() takes 6 arguments");
        return NULL;
    }
    if (!PyType_Check(args[1]) || !PyType_IsSubtype((PyTypeObject *)args[1], &PyTuple_Type)
            || !PyType_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError,
                        "configure(): event_type must be a tuple subclass and "
                        "decode_error an exception class");
        return NULL;
    }
    route_base = PyLong_AsSsize_t(args[5]);
    if (route_base == -1 && PyErr_Occurred())
        return NULL;
    if (route_base < 1) {
        PyErr_SetString(PyExc_ValueError, "configure(): route_base must be positive");
        return NULL;
    }
    Py_INCREF(args[0]);
    Py_XSETREF(cfg.loads, args[0]);
    Py_INCREF(args[1]);
    Py_XSETREF(cfg.event_type, (PyTypeObject *)args[1]);
    Py_INCREF(args[2]);
    Py_XSETREF(cfg.failed, args[2]);
    Py_INCREF(args[3]);
    Py_XSETREF(cfg.closed, args[3]);
    Py_INCREF(args[4]);
    Py_XSETREF(cfg.decode_error, args[4]);
    cfg.route_base = route_base;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"deliver", (PyCFunction)(void (*)(void))deliver, METH_FASTCALL, deliver_doc},
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL, configure_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "qmplex._deliver",
    "The protocol's loop over routed event lines, in C (see csrc/deliver.c).",
    -1,
    methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__deliver(void)
{
    PyObject *m;

    if (cfg.s_data == NULL) {
        cfg.s_data = PyUnicode_InternFromString("data");
        cfg.s_timestamp = PyUnicode_InternFromString("timestamp");
        cfg.s_version = PyUnicode_InternFromString("version");
        cfg.s_state = PyUnicode_InternFromString("state");
        if (cfg.s_data == NULL || cfg.s_timestamp == NULL || cfg.s_version == NULL
                || cfg.s_state == NULL)
            return NULL;
    }
    m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "EXHAUSTED", DELIVER_EXHAUSTED) < 0
            || PyModule_AddIntConstant(m, "LINE", DELIVER_LINE) < 0
            || PyModule_AddIntConstant(m, "CLOSED", DELIVER_CLOSED) < 0
            || PyModule_AddIntConstant(m, "CHANGED", DELIVER_CHANGED) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
