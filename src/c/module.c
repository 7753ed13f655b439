/* module.c — memipc._core, the Python boundary of the C core.
 *
 * The only C file that includes Python.h.  It parses arguments, checks every
 * offset that comes from Python against the buffer it indexes (bounds and
 * natural alignment) before forming a pointer, releases the GIL around every
 * call that can sleep, and turns `enum mi_result` / errno into exceptions in
 * one function, raise_for_result().
 *
 * Blocking calls follow CPython's semaphore.c: the absolute deadline is
 * computed once; each sleep is cut into slices of at most SLICE_NS so that a
 * Ctrl-C that lands just before the sleep starts (a window no syscall can
 * close) is still seen within 100 ms; after every slice or EINTR the GIL is
 * taken back and PyErr_CheckSignals() runs, so KeyboardInterrupt is raised
 * from the blocked call.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <stddef.h>

#include "atomic.h"
#include "futex.h"
#include "layout.h"
#include "ofd.h"
#include "result.h"

#define SLICE_NS INT64_C(50000000) /* 50 ms: half the Ctrl-C budget of SPEC §4 */

/* ---- errors ------------------------------------------------------------ */

static PyObject *corrupt_error_type(void)
{
    PyObject *module = PyImport_ImportModule("memipc._errors");
    if (module == NULL)
        return NULL;
    PyObject *type = PyObject_GetAttrString(module, "CorruptRegionError");
    Py_DECREF(module);
    return type;
}

/* The one place a result becomes an exception.  Returns NULL for convenience. */
static PyObject *raise_for_result(enum mi_result result, const char *what)
{
    switch (result) {
    case MI_OK:
    case MI_TIMEOUT:
    case MI_BUSY:
        PyErr_Format(PyExc_SystemError, "%s: result %d is not an error", what, (int)result);
        break;
    case MI_INTERRUPTED:
        if (!PyErr_Occurred())
            PyErr_SetFromErrno(PyExc_InterruptedError);
        break;
    case MI_CORRUPT: {
        PyObject *type = corrupt_error_type();
        if (type != NULL) {
            PyErr_Format(type, "%s: shared state failed validation", what);
            Py_DECREF(type);
        }
        break;
    }
    case MI_ERRNO: {
        int saved = errno;
        PyObject *message = PyUnicode_FromString(what);
        errno = saved;
        if (message != NULL) {
            PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, message);
            Py_DECREF(message);
        }
        break;
    }
    }
    return NULL;
}

/* ---- buffer addressing ------------------------------------------------- */

/* Check that [offset, offset+width) lies inside `view` and is naturally
 * aligned, and return the address.  Raises IndexError / ValueError. */
static void *word_address(Py_buffer *view, Py_ssize_t offset, Py_ssize_t width)
{
    if (offset < 0 || view->len < width || offset > view->len - width) {
        PyErr_Format(PyExc_IndexError,
                     "offset %zd with width %zd is outside the buffer of %zd bytes", offset, width,
                     view->len);
        return NULL;
    }
    char *address = (char *)view->buf + offset;
    if (((uintptr_t)address % (uintptr_t)width) != 0) {
        PyErr_Format(PyExc_ValueError,
                     "offset %zd is not aligned to %zd bytes; shared words must be naturally aligned",
                     offset, width);
        return NULL;
    }
    return address;
}

static int as_u64(PyObject *object, uint64_t *out)
{
    unsigned long long value = PyLong_AsUnsignedLongLong(object);
    if (value == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *out = (uint64_t)value;
    return 0;
}

static int as_u32(PyObject *object, uint32_t *out)
{
    uint64_t value;
    if (as_u64(object, &value) < 0)
        return -1;
    if (value > UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "value does not fit in 32 bits");
        return -1;
    }
    *out = (uint32_t)value;
    return 0;
}

/* timeout (seconds, float or None) → absolute CLOCK_MONOTONIC deadline, or -1
 * for "forever".  Returns -2 with an exception set on bad input. */
static int64_t deadline_from_timeout(PyObject *timeout)
{
    if (timeout == Py_None)
        return -1;
    double seconds = PyFloat_AsDouble(timeout);
    if (seconds == -1.0 && PyErr_Occurred())
        return -2;
    if (seconds != seconds) {
        PyErr_SetString(PyExc_ValueError, "timeout must be a number of seconds, not NaN");
        return -2;
    }
    if (seconds < 0)
        seconds = 0;
    if (seconds > 9.0e9) /* ~285 years: treat as forever rather than overflow */
        return -1;
    return mi_monotonic_ns() + (int64_t)(seconds * 1e9);
}

/* ---- atomics ----------------------------------------------------------- */

static PyObject *core_load_u32(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer view;
    Py_ssize_t offset;
    if (!PyArg_ParseTuple(args, "y*n:load_u32", &view, &offset))
        return NULL;
    PyObject *result = NULL;
    uint32_t *word = word_address(&view, offset, 4);
    if (word != NULL)
        /* acquire: callers read data published before this word was stored. */
        result = PyLong_FromUnsignedLong(mi_load_acquire_u32(word));
    PyBuffer_Release(&view);
    return result;
}

static PyObject *core_load_u64(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer view;
    Py_ssize_t offset;
    if (!PyArg_ParseTuple(args, "y*n:load_u64", &view, &offset))
        return NULL;
    PyObject *result = NULL;
    uint64_t *word = word_address(&view, offset, 8);
    if (word != NULL)
        /* acquire: pairs with store_u64's release (e.g. the header magic). */
        result = PyLong_FromUnsignedLongLong(mi_load_acquire_u64(word));
    PyBuffer_Release(&view);
    return result;
}

static PyObject *core_store_u32(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer view;
    Py_ssize_t offset;
    PyObject *value_object;
    uint32_t value;
    if (!PyArg_ParseTuple(args, "w*nO:store_u32", &view, &offset, &value_object))
        return NULL;
    PyObject *result = NULL;
    uint32_t *word = word_address(&view, offset, 4);
    if (word != NULL && as_u32(value_object, &value) == 0) {
        /* release: everything this process wrote before is visible to a
         * reader that load_u32()s this value. */
        mi_store_release_u32(word, value);
        result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&view);
    return result;
}

static PyObject *core_store_u64(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer view;
    Py_ssize_t offset;
    PyObject *value_object;
    uint64_t value;
    if (!PyArg_ParseTuple(args, "w*nO:store_u64", &view, &offset, &value_object))
        return NULL;
    PyObject *result = NULL;
    uint64_t *word = word_address(&view, offset, 8);
    if (word != NULL && as_u64(value_object, &value) == 0) {
        /* release: publishes earlier writes (the header publishes by storing
         * its magic last through here). Pairs with load_u64's acquire. */
        mi_store_release_u64(word, value);
        result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&view);
    return result;
}

static PyObject *core_cas_u32(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer view;
    Py_ssize_t offset;
    PyObject *expected_object, *desired_object;
    uint32_t expected, desired;
    if (!PyArg_ParseTuple(args, "w*nOO:cas_u32", &view, &offset, &expected_object, &desired_object))
        return NULL;
    PyObject *result = NULL;
    uint32_t *word = word_address(&view, offset, 4);
    if (word != NULL && as_u32(expected_object, &expected) == 0 && as_u32(desired_object, &desired) == 0)
        /* acq_rel: a successful swap both consumes the state it replaced and
         * publishes what this process wrote before it. */
        result = PyBool_FromLong(mi_cas_acq_rel_u32(word, expected, desired));
    PyBuffer_Release(&view);
    return result;
}

static PyObject *core_cas_u64(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer view;
    Py_ssize_t offset;
    PyObject *expected_object, *desired_object;
    uint64_t expected, desired;
    if (!PyArg_ParseTuple(args, "w*nOO:cas_u64", &view, &offset, &expected_object, &desired_object))
        return NULL;
    PyObject *result = NULL;
    uint64_t *word = word_address(&view, offset, 8);
    if (word != NULL && as_u64(expected_object, &expected) == 0 && as_u64(desired_object, &desired) == 0)
        /* acq_rel: as cas_u32. */
        result = PyBool_FromLong(mi_cas_acq_rel_u64(word, expected, desired));
    PyBuffer_Release(&view);
    return result;
}

static PyObject *core_fetch_add_u32(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer view;
    Py_ssize_t offset;
    PyObject *delta_object;
    uint32_t delta;
    if (!PyArg_ParseTuple(args, "w*nO:fetch_add_u32", &view, &offset, &delta_object))
        return NULL;
    PyObject *result = NULL;
    uint32_t *word = word_address(&view, offset, 4);
    if (word != NULL && as_u32(delta_object, &delta) == 0)
        /* acq_rel: counters used as sequence numbers order the data around them. */
        result = PyLong_FromUnsignedLong(mi_fetch_add_acq_rel_u32(word, delta));
    PyBuffer_Release(&view);
    return result;
}

static PyObject *core_fetch_add_u64(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer view;
    Py_ssize_t offset;
    PyObject *delta_object;
    uint64_t delta;
    if (!PyArg_ParseTuple(args, "w*nO:fetch_add_u64", &view, &offset, &delta_object))
        return NULL;
    PyObject *result = NULL;
    uint64_t *word = word_address(&view, offset, 8);
    if (word != NULL && as_u64(delta_object, &delta) == 0)
        /* acq_rel: as fetch_add_u32. */
        result = PyLong_FromUnsignedLongLong(mi_fetch_add_acq_rel_u64(word, delta));
    PyBuffer_Release(&view);
    return result;
}

/* ---- futex ------------------------------------------------------------- */

static PyObject *core_futex_wait(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    static char *keywords[] = {"buffer", "offset", "expected", "timeout", NULL};
    Py_buffer view;
    Py_ssize_t offset;
    PyObject *expected_object;
    PyObject *timeout = Py_None;
    uint32_t expected;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*nO|O:futex_wait", keywords, &view, &offset,
                                     &expected_object, &timeout))
        return NULL;
    PyObject *result = NULL;
    uint32_t *word = word_address(&view, offset, 4);
    if (word == NULL || as_u32(expected_object, &expected) < 0)
        goto done;
    int64_t deadline_ns = deadline_from_timeout(timeout);
    if (deadline_ns == -2)
        goto done;
    for (;;) {
        int64_t now_ns = mi_monotonic_ns();
        if (deadline_ns >= 0 && now_ns >= deadline_ns) {
            result = Py_NewRef(Py_False);
            break;
        }
        int64_t slice_deadline_ns = now_ns + SLICE_NS;
        if (deadline_ns >= 0 && deadline_ns < slice_deadline_ns)
            slice_deadline_ns = deadline_ns;
        enum mi_result outcome;
        Py_BEGIN_ALLOW_THREADS
        outcome = mi_futex_wait(word, expected, slice_deadline_ns);
        Py_END_ALLOW_THREADS
        if (outcome == MI_OK) {
            result = Py_NewRef(Py_True);
            break;
        }
        if (outcome == MI_ERRNO) {
            raise_for_result(outcome, "futex_wait");
            break;
        }
        /* MI_TIMEOUT of a slice, or MI_INTERRUPTED: deliver Ctrl-C, go on. */
        if (PyErr_CheckSignals() < 0)
            break;
    }
done:
    PyBuffer_Release(&view);
    return result;
}

static PyObject *core_futex_wake(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    static char *keywords[] = {"buffer", "offset", "count", NULL};
    Py_buffer view;
    Py_ssize_t offset;
    int count = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*n|i:futex_wake", keywords, &view, &offset, &count))
        return NULL;
    PyObject *result = NULL;
    uint32_t *word = word_address(&view, offset, 4);
    if (word != NULL) {
        int woken = mi_futex_wake(word, count);
        if (woken < 0)
            raise_for_result(MI_ERRNO, "futex_wake");
        else
            result = PyLong_FromLong(woken);
    }
    PyBuffer_Release(&view);
    return result;
}

/* ---- OFD locks --------------------------------------------------------- */

static int lock_type_from_int(int value, enum mi_lock_type *out)
{
    if (value != MI_LOCK_READ && value != MI_LOCK_WRITE && value != MI_LOCK_UNLOCK) {
        PyErr_Format(PyExc_ValueError, "lock type must be LOCK_READ, LOCK_WRITE or LOCK_UNLOCK, not %d", value);
        return -1;
    }
    *out = (enum mi_lock_type)value;
    return 0;
}

static PyObject *core_ofd_lock(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    static char *keywords[] = {"fd", "start", "length", "type", "wait", NULL};
    int fd, type_value, wait = 0;
    long long start, length;
    enum mi_lock_type type;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iLLi|p:ofd_lock", keywords, &fd, &start, &length,
                                     &type_value, &wait))
        return NULL;
    if (lock_type_from_int(type_value, &type) < 0)
        return NULL;
    if (start < 0 || length < 0) {
        PyErr_SetString(PyExc_ValueError, "lock range must not be negative");
        return NULL;
    }
    for (;;) {
        enum mi_result outcome;
        Py_BEGIN_ALLOW_THREADS
        outcome = mi_ofd_lock(fd, start, length, type, wait);
        Py_END_ALLOW_THREADS
        if (outcome == MI_OK)
            Py_RETURN_TRUE;
        if (outcome == MI_BUSY)
            Py_RETURN_FALSE;
        if (outcome == MI_INTERRUPTED) {
            if (PyErr_CheckSignals() < 0)
                return NULL;
            continue;
        }
        return raise_for_result(outcome, "ofd_lock");
    }
}

static PyObject *core_ofd_probe(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    static char *keywords[] = {"fd", "start", "length", "type", NULL};
    int fd, type_value = MI_LOCK_WRITE, held = 0;
    long long start, length;
    enum mi_lock_type type;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iLL|i:ofd_probe", keywords, &fd, &start, &length,
                                     &type_value))
        return NULL;
    if (lock_type_from_int(type_value, &type) < 0)
        return NULL;
    if (type == MI_LOCK_UNLOCK || start < 0 || length < 0) {
        PyErr_SetString(PyExc_ValueError, "probe a non-negative range with LOCK_READ or LOCK_WRITE");
        return NULL;
    }
    enum mi_result outcome = mi_ofd_probe(fd, start, length, type, &held);
    if (outcome != MI_OK)
        return raise_for_result(outcome, "ofd_probe");
    return PyBool_FromLong(held);
}

static PyObject *core_monotonic_ns(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyLong_FromLongLong(mi_monotonic_ns());
}

/* ---- module ------------------------------------------------------------ */

static PyMethodDef core_methods[] = {
    {"load_u32", core_load_u32, METH_VARARGS, "load_u32(buffer, offset) -> int: acquire load of a u32."},
    {"load_u64", core_load_u64, METH_VARARGS, "load_u64(buffer, offset) -> int: acquire load of a u64."},
    {"store_u32", core_store_u32, METH_VARARGS, "store_u32(buffer, offset, value): release store of a u32."},
    {"store_u64", core_store_u64, METH_VARARGS, "store_u64(buffer, offset, value): release store of a u64."},
    {"cas_u32", core_cas_u32, METH_VARARGS, "cas_u32(buffer, offset, expected, desired) -> bool (acq_rel)."},
    {"cas_u64", core_cas_u64, METH_VARARGS, "cas_u64(buffer, offset, expected, desired) -> bool (acq_rel)."},
    {"fetch_add_u32", core_fetch_add_u32, METH_VARARGS, "fetch_add_u32(buffer, offset, delta) -> old (acq_rel)."},
    {"fetch_add_u64", core_fetch_add_u64, METH_VARARGS, "fetch_add_u64(buffer, offset, delta) -> old (acq_rel)."},
    {"futex_wait", (PyCFunction)(void (*)(void))core_futex_wait, METH_VARARGS | METH_KEYWORDS,
     "futex_wait(buffer, offset, expected, timeout=None) -> bool: sleep while the u32 equals expected.\n"
     "True when woken (or the value differed), False when the timeout passed. Releases the GIL;\n"
     "raises KeyboardInterrupt within 100 ms of Ctrl-C."},
    {"futex_wake", (PyCFunction)(void (*)(void))core_futex_wake, METH_VARARGS | METH_KEYWORDS,
     "futex_wake(buffer, offset, count=1) -> int: wake up to count sleepers; returns how many woke."},
    {"ofd_lock", (PyCFunction)(void (*)(void))core_ofd_lock, METH_VARARGS | METH_KEYWORDS,
     "ofd_lock(fd, start, length, type, wait=False) -> bool: take/convert/drop an OFD byte-range lock."},
    {"ofd_probe", (PyCFunction)(void (*)(void))core_ofd_probe, METH_VARARGS | METH_KEYWORDS,
     "ofd_probe(fd, start, length, type=LOCK_WRITE) -> bool: is a conflicting lock held elsewhere?"},
    {"monotonic_ns", core_monotonic_ns, METH_NOARGS, "monotonic_ns() -> int: CLOCK_MONOTONIC in ns."},
    {NULL, NULL, 0, NULL},
};

static int add_row(PyObject *table, const char *name, size_t offset, size_t size)
{
    PyObject *row = Py_BuildValue("(nn)", (Py_ssize_t)offset, (Py_ssize_t)size);
    if (row == NULL)
        return -1;
    int rc = PyDict_SetItemString(table, name, row);
    Py_DECREF(row);
    return rc;
}

#define ROW(table, type, field)                                                                  \
    add_row(table, #type "." #field, offsetof(struct type, field), sizeof(((struct type *)0)->field))

static PyObject *offsets_table(void)
{
    PyObject *table = PyDict_New();
    if (table == NULL)
        return NULL;
    if (ROW(table, mi_region_header, magic) < 0 || ROW(table, mi_region_header, abi_version) < 0
        || ROW(table, mi_region_header, header_bytes) < 0 || ROW(table, mi_region_header, kind) < 0
        || ROW(table, mi_region_header, flags) < 0 || ROW(table, mi_region_header, size_bytes) < 0
        || ROW(table, mi_region_header, data_offset) < 0 || ROW(table, mi_region_header, creator_pid) < 0
        || ROW(table, mi_region_header, attach_slot_count) < 0
        || ROW(table, mi_region_header, creator_start_ticks) < 0
        || ROW(table, mi_region_header, created_realtime_ns) < 0
        || ROW(table, mi_region_header, name_length) < 0 || ROW(table, mi_region_header, path_length) < 0
        || ROW(table, mi_region_header, attach_table_offset) < 0 || ROW(table, mi_region_header, name) < 0
        || ROW(table, mi_region_header, path) < 0 || ROW(table, mi_region_header, attach) < 0
        || ROW(table, mi_attach_slot, pid) < 0 || ROW(table, mi_attach_slot, start_ticks) < 0
        || ROW(table, mi_attach_slot, attached_realtime_ns) < 0
        || add_row(table, "mi_region_header", 0, sizeof(struct mi_region_header)) < 0
        || add_row(table, "mi_attach_slot", 0, sizeof(struct mi_attach_slot)) < 0) {
        Py_DECREF(table);
        return NULL;
    }
    return table;
}

/* Add `value` (a new reference, or NULL after a failure) under `name`. */
static int add_owned(PyObject *module, const char *name, PyObject *value)
{
    if (value == NULL)
        return -1;
    int rc = PyModule_AddObjectRef(module, name, value);
    Py_DECREF(value);
    return rc;
}

static int core_exec(PyObject *module)
{
    if (add_owned(module, "OFFSETS", offsets_table()) < 0
        || add_owned(module, "MAGIC", PyLong_FromUnsignedLongLong(MI_MAGIC)) < 0
        || PyModule_AddIntConstant(module, "ABI_VERSION", (long)MI_ABI_VERSION) < 0
        || PyModule_AddIntConstant(module, "HEADER_BYTES", MI_HEADER_BYTES) < 0
        || PyModule_AddIntConstant(module, "NAME_CAPACITY", MI_NAME_CAPACITY) < 0
        || PyModule_AddIntConstant(module, "PATH_CAPACITY", MI_PATH_CAPACITY) < 0
        || PyModule_AddIntConstant(module, "ATTACH_SLOTS", MI_ATTACH_SLOTS) < 0
        || PyModule_AddIntConstant(module, "FLAG_PERSIST", MI_FLAG_PERSIST) < 0
        || PyModule_AddIntConstant(module, "FLAG_FILE_BACKED", MI_FLAG_FILE_BACKED) < 0
        || PyModule_AddIntConstant(module, "KIND_REGION", MI_KIND_REGION) < 0
        || PyModule_AddIntConstant(module, "KIND_MUTEX", MI_KIND_MUTEX) < 0
        || PyModule_AddIntConstant(module, "KIND_SEMAPHORE", MI_KIND_SEMAPHORE) < 0
        || PyModule_AddIntConstant(module, "KIND_EVENT", MI_KIND_EVENT) < 0
        || PyModule_AddIntConstant(module, "KIND_CONDITION", MI_KIND_CONDITION) < 0
        || PyModule_AddIntConstant(module, "KIND_RWLOCK", MI_KIND_RWLOCK) < 0
        || PyModule_AddIntConstant(module, "KIND_QUEUE", MI_KIND_QUEUE) < 0
        || PyModule_AddIntConstant(module, "KIND_PUBSUB", MI_KIND_PUBSUB) < 0
        || PyModule_AddIntConstant(module, "KIND_RPC", MI_KIND_RPC) < 0
        || PyModule_AddIntConstant(module, "LOCK_READ", MI_LOCK_READ) < 0
        || PyModule_AddIntConstant(module, "LOCK_WRITE", MI_LOCK_WRITE) < 0
        || PyModule_AddIntConstant(module, "LOCK_UNLOCK", MI_LOCK_UNLOCK) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot core_slots[] = {
    {Py_mod_exec, (void *)core_exec},
    {0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "memipc._core",
    .m_doc = "memipc's C core: atomics on shared memory, futex wait/wake, OFD locks, layout tables.",
    .m_size = 0,
    .m_methods = core_methods,
    .m_slots = core_slots,
};

PyMODINIT_FUNC PyInit__core(void)
{
    return PyModuleDef_Init(&core_module);
}
