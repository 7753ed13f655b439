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
#include "bus.h"
#include "futex.h"
#include "layout.h"
#include "ofd.h"
#include "result.h"
#include "ring.h"
#include "sync.h"

#define SLICE_NS INT64_C(50000000) /* 50 ms: half the Ctrl-C budget of SPEC §4 */

/* ---- errors ------------------------------------------------------------ */

/* Raise memipc's own `type_name` (from memipc._errors) with a formatted
 * message; always returns NULL.  The error classes live in Python, so the
 * one lookup happens here, not at every call site. */
static PyObject *raise_memipc_error(const char *type_name, const char *format, const char *what)
{
    PyObject *module = PyImport_ImportModule("memipc._errors");
    PyObject *type = module == NULL ? NULL : PyObject_GetAttrString(module, type_name);
    Py_XDECREF(module);
    if (type != NULL) {
        PyErr_Format(type, format, what);
        Py_DECREF(type);
    }
    return NULL;
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
    case MI_CORRUPT:
        raise_memipc_error("CorruptRegionError", "%s: shared state failed validation", what);
        break;
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


/* ---- synchronization objects ------------------------------------------- */

/* Map the sync-specific results; everything else goes to raise_for_result. */
static PyObject *raise_for_sync(int result, const char *what)
{
    switch (result) {
    case MI_DEADLOCK:
        PyErr_Format(PyExc_RuntimeError,
                     "%s: this thread already holds it; releasing first (or a reentrant design) is "
                     "needed, as re-acquiring would deadlock",
                     what);
        return NULL;
    case MI_NOT_OWNER:
        PyErr_Format(PyExc_RuntimeError, "%s: the calling thread does not hold it", what);
        return NULL;
    case MI_OVERFLOW:
        PyErr_Format(PyExc_ValueError, "%s: releasing would raise the count above its maximum", what);
        return NULL;
    default:
        return raise_for_result((enum mi_result)result, what);
    }
}

/* Address of a sync object of `size` bytes at `offset`, 8-byte aligned, with
 * its tag checked against `kind` (CorruptRegionError if another process
 * overwrote it). */
static void *sync_address(Py_buffer *view, Py_ssize_t offset, Py_ssize_t size, uint32_t kind, const char *what)
{
    if (offset < 0 || view->len < size || offset > view->len - size) {
        PyErr_Format(PyExc_IndexError, "%s: %zd bytes at offset %zd do not fit in the %zd-byte buffer", what,
                     size, offset, view->len);
        return NULL;
    }
    char *address = (char *)view->buf + offset;
    if ((uintptr_t)address % 8 != 0) {
        PyErr_Format(PyExc_ValueError, "%s: offset %zd is not 8-byte aligned", what, offset);
        return NULL;
    }
    if (view->readonly) {
        PyErr_Format(PyExc_TypeError, "%s: the buffer is read-only; sync objects need access='rw'", what);
        return NULL;
    }
    if (mi_sync_check_tag((const struct mi_sync_head *)address, kind) != MI_OK) {
        raise_for_result(MI_CORRUPT, what);
        return NULL;
    }
    return address;
}

typedef int (*blocking_operation)(void *object, struct mi_wait *wait, int *out);

static int op_mutex(void *object, struct mi_wait *wait, int *out)
{
    struct mi_mutex *mutex = object;
    return mi_owned_lock(&mutex->lock, &mutex->head, &mutex->spin_estimate, wait, out);
}
static int op_semaphore(void *object, struct mi_wait *wait, int *out)
{
    (void)out;
    return mi_semaphore_acquire(object, wait);
}
static int op_event(void *object, struct mi_wait *wait, int *out)
{
    (void)out;
    return mi_event_wait(object, wait);
}
static int op_read(void *object, struct mi_wait *wait, int *out)
{
    return mi_rwlock_acquire_read(object, wait, out);
}
static int op_write(void *object, struct mi_wait *wait, int *out)
{
    return mi_rwlock_acquire_write(object, wait, out);
}
static int op_condition(void *object, struct mi_wait *wait, int *out)
{
    return mi_condition_sleep(object, (uint32_t)*out, wait);
}

/* Run a blocking operation: one attempt with the GIL held (the uncontended
 * path pays no GIL release), then slices of at most SLICE_NS with the GIL
 * released, checking for Ctrl-C between slices.  Returns MI_OK,
 * MI_TIMEOUT, or -1 with a Python exception set (signal or error). */
static int run_blocking(blocking_operation operation, void *object, PyObject *timeout, int64_t spin_ns,
                        int *out, struct mi_wait *wait, const char *what)
{
    int64_t deadline_ns = deadline_from_timeout(timeout);
    if (deadline_ns == -2)
        return -1;
    int64_t now = mi_monotonic_ns();
    int nonblocking = deadline_ns >= 0 && deadline_ns <= now;
    *wait = (struct mi_wait){.deadline_ns = 0, .spin_ns = 0,
                             .next_check_ns = nonblocking ? 0 : now + 1000000};
    int result = operation(object, wait, out);
    if (result == MI_OK)
        return MI_OK;
    if (result != MI_TIMEOUT) {
        raise_for_sync(result, what);
        return -1;
    }
    if (nonblocking)
        return MI_TIMEOUT;
    wait->spin_ns = spin_ns;
    wait->start_ns = now;
    for (;;) {
        now = mi_monotonic_ns();
        if (deadline_ns >= 0 && now >= deadline_ns)
            return MI_TIMEOUT;
        int64_t slice = now + SLICE_NS;
        wait->deadline_ns = deadline_ns >= 0 && deadline_ns < slice ? deadline_ns : slice;
        Py_BEGIN_ALLOW_THREADS
        result = operation(object, wait, out);
        Py_END_ALLOW_THREADS
        if (result == MI_OK)
            return MI_OK;
        if (result != MI_TIMEOUT && result != MI_INTERRUPTED) {
            raise_for_sync(result, what);
            return -1;
        }
        if (PyErr_CheckSignals() < 0)
            return -1;
    }
}

static int parse_spin(PyObject *spin, int64_t *spin_ns)
{
    if (spin == Py_None) {
        *spin_ns = MI_SPIN_ADAPTIVE;
        return 0;
    }
    double seconds = PyFloat_AsDouble(spin);
    if (seconds == -1.0 && PyErr_Occurred())
        return -1;
    if (!(seconds >= 0) || seconds > 1.0) {
        PyErr_SetString(PyExc_ValueError, "spin must be None (adaptive) or 0..1 seconds");
        return -1;
    }
    *spin_ns = (int64_t)(seconds * 1e9);
    return 0;
}

/* ---- Sync: a handle on one sync object ----------------------------------
 *
 * Holds a buffer export on the mapping for its whole life (so the mapping
 * cannot be closed under it, and no per-call buffer acquisition is paid) and
 * the object's address.  Every call re-checks the object's tag, so a hostile
 * overwrite is CorruptRegionError, not undefined behaviour.  Methods use the
 * vectorcall convention: the uncontended acquire is a handful of loads and
 * one CAS after argument checks.
 */
typedef struct {
    PyObject_HEAD
    Py_buffer view;
    char *address;
    uint32_t kind;
    Py_ssize_t size;
    int open;
} SyncHandle;

static Py_ssize_t sync_size(uint32_t kind)
{
    switch (kind) {
    case MI_KIND_MUTEX:
        return sizeof(struct mi_mutex);
    case MI_KIND_SEMAPHORE:
        return sizeof(struct mi_semaphore);
    case MI_KIND_EVENT:
        return sizeof(struct mi_event);
    case MI_KIND_CONDITION:
        return sizeof(struct mi_condition);
    case MI_KIND_RWLOCK:
        return sizeof(struct mi_rwlock);
    default:
        return 0;
    }
}

static const char *kind_label(uint32_t kind)
{
    switch (kind) {
    case MI_KIND_MUTEX:
        return "Mutex";
    case MI_KIND_SEMAPHORE:
        return "Semaphore";
    case MI_KIND_EVENT:
        return "Event";
    case MI_KIND_CONDITION:
        return "Condition";
    default:
        return "RWLock";
    }
}

static PyObject *sync_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"buffer", "offset", "kind", NULL};
    PyObject *buffer;
    Py_ssize_t offset;
    unsigned int kind;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OnI:Sync", keywords, &buffer, &offset, &kind))
        return NULL;
    Py_ssize_t size = sync_size(kind);
    if (size == 0) {
        PyErr_Format(PyExc_ValueError, "kind %u is not a synchronization object", kind);
        return NULL;
    }
    SyncHandle *self = (SyncHandle *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    if (PyObject_GetBuffer(buffer, &self->view, PyBUF_WRITABLE) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->open = 1;
    self->address = sync_address(&self->view, offset, size, kind, kind_label(kind));
    if (self->address == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->kind = kind;
    self->size = size;
    return (PyObject *)self;
}

static void sync_release(SyncHandle *self)
{
    if (self->open) {
        self->open = 0;
        self->address = NULL;
        PyBuffer_Release(&self->view);
    }
}

static void sync_dealloc(SyncHandle *self)
{
    sync_release(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The object's address after checking the handle is open, of `kind`, and
 * that the shared tag is intact. */
static void *sync_object(SyncHandle *self, uint32_t kind, const char *what)
{
    if (!self->open) {
        raise_memipc_error("ClosedError", "%s: this handle is closed; open the object again", what);
        return NULL;
    }
    if (self->kind != kind) {
        PyErr_Format(PyExc_TypeError, "%s called on a %s", what, kind_label(self->kind));
        return NULL;
    }
    if (mi_sync_check_tag((const struct mi_sync_head *)self->address, kind) != MI_OK) {
        raise_for_result(MI_CORRUPT, what);
        return NULL;
    }
    return self->address;
}

static int check_nargs(const char *what, Py_ssize_t nargs, Py_ssize_t least, Py_ssize_t most)
{
    if (nargs < least || nargs > most) {
        PyErr_Format(PyExc_TypeError, "%s takes %zd to %zd arguments (%zd given)", what, least, most, nargs);
        return -1;
    }
    return 0;
}

static PyObject *sync_lock(SyncHandle *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("lock", nargs, 0, 2) < 0)
        return NULL;
    struct mi_mutex *mutex = sync_object(self, MI_KIND_MUTEX, "Mutex.acquire");
    if (mutex == NULL)
        return NULL;
    if (mi_owned_try_lock(&mutex->lock, &mutex->head))
        return PyLong_FromLong(0);
    int64_t spin_ns;
    if (parse_spin(nargs > 1 ? args[1] : Py_None, &spin_ns) < 0)
        return NULL;
    int owner_died = 0;
    struct mi_wait wait;
    int outcome = run_blocking(op_mutex, mutex, nargs > 0 ? args[0] : Py_None, spin_ns, &owner_died, &wait,
                               "Mutex.acquire");
    if (outcome < 0)
        return NULL;
    return PyLong_FromLong(outcome == MI_OK ? owner_died : -1);
}

static PyObject *sync_unlock(SyncHandle *self, PyObject *unused)
{
    (void)unused;
    struct mi_mutex *mutex = sync_object(self, MI_KIND_MUTEX, "Mutex.release");
    if (mutex == NULL)
        return NULL;
    int outcome = mi_owned_unlock(&mutex->lock);
    return outcome == MI_OK ? Py_NewRef(Py_None) : raise_for_sync(outcome, "Mutex.release");
}

static PyObject *sync_held(SyncHandle *self, PyObject *unused)
{
    (void)unused;
    struct mi_mutex *mutex = sync_object(self, MI_KIND_MUTEX, "Mutex.held");
    return mutex == NULL ? NULL : PyBool_FromLong(mi_owned_held_by_me(&mutex->lock));
}

static PyObject *sync_acquire(SyncHandle *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("acquire", nargs, 0, 2) < 0)
        return NULL;
    struct mi_semaphore *semaphore = sync_object(self, MI_KIND_SEMAPHORE, "Semaphore.acquire");
    int64_t spin_ns;
    if (semaphore == NULL || parse_spin(nargs > 1 ? args[1] : Py_None, &spin_ns) < 0)
        return NULL;
    int unused = 0;
    struct mi_wait wait;
    int outcome = run_blocking(op_semaphore, semaphore, nargs > 0 ? args[0] : Py_None, spin_ns, &unused, &wait,
                               "Semaphore.acquire");
    return outcome < 0 ? NULL : PyBool_FromLong(outcome == MI_OK);
}

static PyObject *sync_release_count(SyncHandle *self, PyObject *count_object)
{
    struct mi_semaphore *semaphore = sync_object(self, MI_KIND_SEMAPHORE, "Semaphore.release");
    uint32_t count;
    if (semaphore == NULL || as_u32(count_object, &count) < 0)
        return NULL;
    int outcome = mi_semaphore_release(semaphore, count);
    return outcome == MI_OK ? Py_NewRef(Py_None) : raise_for_sync(outcome, "Semaphore.release");
}

static PyObject *sync_wait(SyncHandle *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("wait", nargs, 0, 2) < 0)
        return NULL;
    struct mi_event *event = sync_object(self, MI_KIND_EVENT, "Event.wait");
    int64_t spin_ns;
    if (event == NULL || parse_spin(nargs > 1 ? args[1] : Py_None, &spin_ns) < 0)
        return NULL;
    if (mi_event_try(event))
        Py_RETURN_TRUE;
    int unused = 0;
    struct mi_wait wait;
    int outcome =
        run_blocking(op_event, event, nargs > 0 ? args[0] : Py_None, spin_ns, &unused, &wait, "Event.wait");
    return outcome < 0 ? NULL : PyBool_FromLong(outcome == MI_OK);
}

/* event_control(action): 0 set, 1 clear, 2 is_set, 3 try-consume, 4 register, 5 unregister */
static PyObject *sync_event_control(SyncHandle *self, PyObject *action_object)
{
    struct mi_event *event = sync_object(self, MI_KIND_EVENT, "Event");
    if (event == NULL)
        return NULL;
    long action = PyLong_AsLong(action_object);
    switch (action) {
    case 0:
        mi_event_set(event);
        Py_RETURN_NONE;
    case 1:
        mi_event_clear(event);
        Py_RETURN_NONE;
    case 2:
        /* acquire: a True answer comes with the setter's writes visible. */
        return PyBool_FromLong(mi_load_acquire_u32(&event->state) != 0);
    case 3:
        return PyBool_FromLong(mi_event_try(event));
    case 4:
        mi_event_register(event);
        Py_RETURN_NONE;
    case 5:
        mi_event_unregister(event);
        Py_RETURN_NONE;
    default:
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "unknown event action %ld", action);
        return NULL;
    }
}

/* condition_control(action, n=0): 0 prepare -> sequence, 1 done, 2 notify(n) */
static PyObject *sync_condition_control(SyncHandle *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("condition_control", nargs, 1, 2) < 0)
        return NULL;
    struct mi_condition *condition = sync_object(self, MI_KIND_CONDITION, "Condition");
    if (condition == NULL)
        return NULL;
    long action = PyLong_AsLong(args[0]);
    long count = nargs > 1 ? PyLong_AsLong(args[1]) : 0;
    if (PyErr_Occurred())
        return NULL;
    switch (action) {
    case 0:
        return PyLong_FromUnsignedLong(mi_condition_prepare(condition));
    case 1:
        mi_condition_done(condition);
        Py_RETURN_NONE;
    case 2:
        mi_condition_notify(condition, count < 0 ? 0 : count > INT_MAX ? INT_MAX : (int)count);
        Py_RETURN_NONE;
    default:
        PyErr_Format(PyExc_ValueError, "unknown condition action %ld", action);
        return NULL;
    }
}

static PyObject *sync_sleep(SyncHandle *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("sleep", nargs, 1, 2) < 0)
        return NULL;
    struct mi_condition *condition = sync_object(self, MI_KIND_CONDITION, "Condition.wait");
    uint32_t sequence;
    if (condition == NULL || as_u32(args[0], &sequence) < 0)
        return NULL;
    int carried = (int)sequence;
    struct mi_wait wait;
    int outcome =
        run_blocking(op_condition, condition, nargs > 1 ? args[1] : Py_None, 0, &carried, &wait, "Condition.wait");
    return outcome < 0 ? NULL : PyBool_FromLong(outcome == MI_OK);
}

static PyObject *sync_rw_acquire(SyncHandle *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("rw_acquire", nargs, 1, 3) < 0)
        return NULL;
    int write = PyObject_IsTrue(args[0]);
    const char *what = write ? "RWLock.acquire_write" : "RWLock.acquire_read";
    struct mi_rwlock *rwlock = write < 0 ? NULL : sync_object(self, MI_KIND_RWLOCK, what);
    int64_t spin_ns;
    if (rwlock == NULL || parse_spin(nargs > 2 ? args[2] : Py_None, &spin_ns) < 0)
        return NULL;
    int out = -1;
    struct mi_wait wait;
    int outcome = run_blocking(write ? op_write : op_read, rwlock, nargs > 1 ? args[1] : Py_None, spin_ns, &out,
                               &wait, what);
    if (write && outcome != MI_OK && wait.progress == 1)
        mi_rwlock_release_write(rwlock); /* gave up while waiting for readers: reopen */
    if (outcome < 0)
        return NULL;
    return PyLong_FromLong(outcome == MI_OK ? out : -1);
}

static PyObject *sync_rw_release(SyncHandle *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("rw_release", nargs, 1, 2) < 0)
        return NULL;
    int write = PyObject_IsTrue(args[0]);
    long slot = nargs > 1 ? PyLong_AsLong(args[1]) : -1;
    if (write < 0 || (slot == -1 && PyErr_Occurred()))
        return NULL;
    const char *what = write ? "RWLock.release_write" : "RWLock.release_read";
    struct mi_rwlock *rwlock = sync_object(self, MI_KIND_RWLOCK, what);
    if (rwlock == NULL)
        return NULL;
    int outcome = write ? mi_rwlock_release_write(rwlock)
                        : mi_rwlock_release_read(rwlock, slot < INT_MIN || slot > INT_MAX ? -1 : (int)slot);
    return outcome == MI_OK ? Py_NewRef(Py_None) : raise_for_sync(outcome, what);
}

static PyObject *sync_close(SyncHandle *self, PyObject *unused)
{
    (void)unused;
    sync_release(self);
    Py_RETURN_NONE;
}

static PyMethodDef sync_methods[] = {
    {"lock", (PyCFunction)(void (*)(void))sync_lock, METH_FASTCALL,
     "lock(timeout=None, spin=None) -> 0 acquired, 1 acquired (owner died), -1 timeout."},
    {"unlock", (PyCFunction)sync_unlock, METH_NOARGS, "unlock(): RuntimeError if not held by this thread."},
    {"held", (PyCFunction)sync_held, METH_NOARGS, "held() -> bool: held by this thread?"},
    {"acquire", (PyCFunction)(void (*)(void))sync_acquire, METH_FASTCALL,
     "acquire(timeout=None, spin=None) -> bool (semaphore)."},
    {"release", (PyCFunction)sync_release_count, METH_O, "release(n): ValueError beyond the maximum."},
    {"wait", (PyCFunction)(void (*)(void))sync_wait, METH_FASTCALL, "wait(timeout=None, spin=None) -> bool."},
    {"event_control", (PyCFunction)sync_event_control, METH_O,
     "event_control(action): 0 set, 1 clear, 2 is_set, 3 try, 4 register, 5 unregister."},
    {"condition_control", (PyCFunction)(void (*)(void))sync_condition_control, METH_FASTCALL,
     "condition_control(action, n=0): 0 prepare -> sequence, 1 done, 2 notify(n)."},
    {"sleep", (PyCFunction)(void (*)(void))sync_sleep, METH_FASTCALL,
     "sleep(sequence, timeout=None) -> bool: False on timeout."},
    {"rw_acquire", (PyCFunction)(void (*)(void))sync_rw_acquire, METH_FASTCALL,
     "rw_acquire(write, timeout=None, spin=None) -> reader slot / 0|1 (owner died) / -1."},
    {"rw_release", (PyCFunction)(void (*)(void))sync_rw_release, METH_FASTCALL, "rw_release(write, slot=-1)."},
    {"close", (PyCFunction)sync_close, METH_NOARGS, "close(): release the buffer (idempotent)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SyncHandleType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "memipc._core.Sync",
    .tp_basicsize = sizeof(SyncHandle),
    .tp_dealloc = (destructor)sync_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Sync(buffer, offset, kind): a handle on one sync object in shared memory.",
    .tp_methods = sync_methods,
    .tp_new = sync_new,
};


/* ---- Ring: a handle on one Queue ring ------------------------------------
 *
 * Like Sync, it holds a buffer export for its life.  The ring's parameters
 * are validated once at construction (mi_ring_validate) and kept here; the
 * shared copies are never trusted again.
 */
typedef struct {
    PyObject_HEAD
    Py_buffer view;
    struct mi_ring_view ring;
    Py_ssize_t base; /* offset of the control block in the buffer */
    int open;
} RingHandle;

#define BIG_COPY 262144 /* copies at least this large release the GIL */

static PyObject *ring_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"buffer", "offset", NULL};
    PyObject *buffer;
    Py_ssize_t offset;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "On:Ring", keywords, &buffer, &offset))
        return NULL;
    RingHandle *self = (RingHandle *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    if (PyObject_GetBuffer(buffer, &self->view, PyBUF_WRITABLE) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->open = 1;
    struct mi_ring *ring = sync_address(&self->view, offset, sizeof(struct mi_ring), MI_KIND_QUEUE, "Queue");
    if (ring == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    if (mi_ring_validate(ring, (uint64_t)(self->view.len - offset), &self->ring) != MI_OK) {
        raise_for_result(MI_CORRUPT, "Queue: ring parameters");
        Py_DECREF(self);
        return NULL;
    }
    self->base = offset;
    return (PyObject *)self;
}

static void ring_dealloc(RingHandle *self)
{
    if (self->open) {
        self->open = 0;
        PyBuffer_Release(&self->view);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static const struct mi_ring_view *ring_live(RingHandle *self, const char *what)
{
    if (!self->open) {
        raise_memipc_error("ClosedError", "%s: this queue handle is closed; open the queue again", what);
        return NULL;
    }
    if (mi_sync_check_tag(&self->ring.ring->head_block, MI_KIND_QUEUE) != MI_OK) {
        raise_for_result(MI_CORRUPT, what);
        return NULL;
    }
    return &self->ring;
}

static PyObject *raise_for_ring(int result, const char *what)
{
    if (result == MI_TOO_LARGE)
        return raise_memipc_error("MessageTooLargeError", "%s: the message is larger than the queue's max_message",
                                  what);
    return raise_for_sync(result, what);
}

struct reserve_args {
    const struct mi_ring_view *view;
    uint64_t length;
    uint64_t position;
};

static int op_reserve(void *object, struct mi_wait *wait, int *out)
{
    struct reserve_args *args = object;
    int result = mi_ring_reserve(args->view, args->length, wait, &args->position);
    *out = 0;
    return result == MI_FULL ? MI_TIMEOUT : result;
}

struct claim_args {
    const struct mi_ring_view *view;
    uint64_t position;
    uint32_t length;
};

static int op_claim(void *object, struct mi_wait *wait, int *out)
{
    struct claim_args *args = object;
    int result = mi_ring_claim(args->view, wait, &args->position, &args->length);
    *out = 0;
    return result == MI_EMPTY ? MI_TIMEOUT : result;
}

/* Reserve with the caller's timeout: MI_OK, MI_TIMEOUT (Full), -1 (exception). */
static int reserve_blocking(const struct mi_ring_view *view, uint64_t length, PyObject *timeout, int64_t spin_ns,
                            uint64_t *position)
{
    if (length > view->max_message) {
        raise_for_ring(MI_TOO_LARGE, "Queue.send");
        return -1;
    }
    struct reserve_args args = {view, length, 0};
    struct mi_wait wait;
    int unused;
    int outcome = run_blocking(op_reserve, &args, timeout, spin_ns, &unused, &wait, "Queue.send");
    *position = args.position;
    return outcome;
}

static int claim_blocking(const struct mi_ring_view *view, PyObject *timeout, int64_t spin_ns, uint64_t *position,
                          uint32_t *length)
{
    struct claim_args args = {view, 0, 0};
    struct mi_wait wait;
    int unused;
    int outcome = run_blocking(op_claim, &args, timeout, spin_ns, &unused, &wait, "Queue.recv");
    *position = args.position;
    *length = args.length;
    return outcome;
}

static void copy_maybe_without_gil(char *target, const char *source, size_t length)
{
    if (length >= BIG_COPY) {
        Py_BEGIN_ALLOW_THREADS
        memcpy(target, source, length);
        Py_END_ALLOW_THREADS
    } else {
        memcpy(target, source, length);
    }
}

/* send(data, timeout=None, spin=None) -> bool (False: Full at the timeout) */
static PyObject *ring_send(RingHandle *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("send", nargs, 1, 3) < 0)
        return NULL;
    const struct mi_ring_view *view = ring_live(self, "Queue.send");
    int64_t spin_ns;
    if (view == NULL || parse_spin(nargs > 2 ? args[2] : Py_None, &spin_ns) < 0)
        return NULL;
    Py_buffer data;
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = NULL;
    uint64_t position;
    int outcome = reserve_blocking(view, (uint64_t)data.len, nargs > 1 ? args[1] : Py_None, spin_ns, &position);
    if (outcome == MI_OK) {
        copy_maybe_without_gil(mi_ring_payload(view, position), data.buf, (size_t)data.len);
        int committed = mi_ring_commit(view, position);
        result = committed == MI_OK ? Py_NewRef(Py_True) : raise_for_ring(committed, "Queue.send");
    } else if (outcome == MI_TIMEOUT) {
        result = Py_NewRef(Py_False);
    }
    PyBuffer_Release(&data);
    return result;
}

/* send_many(items, timeout=None) -> number sent (stops at the first Full) */
static PyObject *ring_send_many(RingHandle *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("send_many", nargs, 1, 2) < 0)
        return NULL;
    const struct mi_ring_view *view = ring_live(self, "Queue.send_many");
    if (view == NULL)
        return NULL;
    PyObject *items = PySequence_Fast(args[0], "send_many needs a sequence of bytes-like objects");
    if (items == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(items), sent = 0;
    PyObject *timeout = nargs > 1 ? args[1] : Py_None;
    for (; sent < count; sent++) {
        Py_buffer data;
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(items, sent), &data, PyBUF_SIMPLE) < 0)
            break;
        uint64_t position;
        /* The first message may wait; once one went out, never block the batch. */
        struct mi_wait wait = {.deadline_ns = 0, .spin_ns = 0, .next_check_ns = INT64_MAX};
        int outcome = (uint64_t)data.len > view->max_message ? MI_TOO_LARGE
                                                              : mi_ring_reserve(view, (uint64_t)data.len, &wait, &position);
        if (outcome == MI_FULL && sent == 0) {
            outcome = reserve_blocking(view, (uint64_t)data.len, timeout, MI_SPIN_ADAPTIVE, &position);
            if (outcome == MI_TIMEOUT)
                outcome = MI_FULL;
            else if (outcome < 0) {
                PyBuffer_Release(&data);
                break;
            }
        }
        if (outcome == MI_OK) {
            copy_maybe_without_gil(mi_ring_payload(view, position), data.buf, (size_t)data.len);
            outcome = mi_ring_commit(view, position);
        }
        PyBuffer_Release(&data);
        if (outcome == MI_FULL)
            break;
        if (outcome != MI_OK) {
            raise_for_ring(outcome, "Queue.send_many");
            break;
        }
    }
    Py_DECREF(items);
    if (PyErr_Occurred())
        return NULL;
    return PyLong_FromSsize_t(sent);
}

/* Copy a claimed record out and release it; NULL on error. */
static PyObject *take_bytes(const struct mi_ring_view *view, uint64_t position, uint32_t length)
{
    PyObject *bytes = PyBytes_FromStringAndSize(NULL, length);
    if (bytes != NULL)
        copy_maybe_without_gil(PyBytes_AS_STRING(bytes), mi_ring_payload(view, position), length);
    int released = mi_ring_release(view, position);
    if (released != MI_OK) {
        Py_XDECREF(bytes);
        return raise_for_ring(released, "Queue.recv");
    }
    return bytes;
}

/* recv(timeout=None, spin=None) -> bytes, or None when Empty at the timeout */
static PyObject *ring_recv(RingHandle *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("recv", nargs, 0, 2) < 0)
        return NULL;
    const struct mi_ring_view *view = ring_live(self, "Queue.recv");
    int64_t spin_ns;
    if (view == NULL || parse_spin(nargs > 1 ? args[1] : Py_None, &spin_ns) < 0)
        return NULL;
    uint64_t position;
    uint32_t length;
    int outcome = claim_blocking(view, nargs > 0 ? args[0] : Py_None, spin_ns, &position, &length);
    if (outcome == MI_TIMEOUT)
        Py_RETURN_NONE;
    if (outcome != MI_OK)
        return NULL;
    return take_bytes(view, position, length);
}

/* recv_many(max_n, timeout=None) -> list of bytes (waits only for the first) */
static PyObject *ring_recv_many(RingHandle *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("recv_many", nargs, 1, 2) < 0)
        return NULL;
    const struct mi_ring_view *view = ring_live(self, "Queue.recv_many");
    if (view == NULL)
        return NULL;
    Py_ssize_t most = PyLong_AsSsize_t(args[0]);
    if (most == -1 && PyErr_Occurred())
        return NULL;
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t taken = 0; taken < most; taken++) {
        uint64_t position;
        uint32_t length;
        int outcome;
        if (taken == 0) {
            outcome = claim_blocking(view, nargs > 1 ? args[1] : Py_None, MI_SPIN_ADAPTIVE, &position, &length);
            if (outcome < 0) {
                Py_DECREF(list);
                return NULL;
            }
        } else {
            struct mi_wait wait = {.deadline_ns = 0, .spin_ns = 0, .next_check_ns = INT64_MAX};
            outcome = mi_ring_claim(view, &wait, &position, &length);
            if (outcome == MI_EMPTY)
                outcome = MI_TIMEOUT;
            else if (outcome != MI_OK) {
                Py_DECREF(list);
                return raise_for_ring(outcome, "Queue.recv_many");
            }
        }
        if (outcome == MI_TIMEOUT)
            break;
        PyObject *bytes = take_bytes(view, position, length);
        if (bytes == NULL || PyList_Append(list, bytes) < 0) {
            Py_XDECREF(bytes);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(bytes);
    }
    return list;
}

/* reserve(n, timeout=None, spin=None) -> payload offset in the buffer, or -1 (Full).
 * The record's position is recovered from the offset by commit/abort. */
static PyObject *ring_reserve(RingHandle *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("reserve", nargs, 1, 3) < 0)
        return NULL;
    const struct mi_ring_view *view = ring_live(self, "Queue.loan");
    int64_t spin_ns;
    if (view == NULL || parse_spin(nargs > 2 ? args[2] : Py_None, &spin_ns) < 0)
        return NULL;
    Py_ssize_t length = PyLong_AsSsize_t(args[0]);
    if (length == -1 && PyErr_Occurred())
        return NULL;
    if (length < 0) {
        PyErr_SetString(PyExc_ValueError, "loan size must not be negative");
        return NULL;
    }
    uint64_t position;
    int outcome = reserve_blocking(view, (uint64_t)length, nargs > 1 ? args[1] : Py_None, spin_ns, &position);
    if (outcome == MI_TIMEOUT)
        return PyLong_FromLong(-1);
    if (outcome != MI_OK)
        return NULL;
    return Py_BuildValue("(KK)", (unsigned long long)position,
                         (unsigned long long)(mi_ring_payload(view, position) - (char *)self->view.buf));
}

static PyObject *ring_finish(RingHandle *self, PyObject *position_object, int commit)
{
    const struct mi_ring_view *view = ring_live(self, commit ? "Queue.loan commit" : "Queue.loan abort");
    uint64_t position;
    if (view == NULL || as_u64(position_object, &position) < 0)
        return NULL;
    int outcome = commit ? mi_ring_commit(view, position) : mi_ring_abort(view, position);
    return outcome == MI_OK ? Py_NewRef(Py_None) : raise_for_ring(outcome, "Queue.loan");
}

static PyObject *ring_commit(RingHandle *self, PyObject *position)
{
    return ring_finish(self, position, 1);
}

static PyObject *ring_abort(RingHandle *self, PyObject *position)
{
    return ring_finish(self, position, 0);
}

/* claim(timeout=None, spin=None) -> (position, payload offset, length), or None (Empty) */
static PyObject *ring_claim(RingHandle *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("claim", nargs, 0, 2) < 0)
        return NULL;
    const struct mi_ring_view *view = ring_live(self, "Queue.recv_view");
    int64_t spin_ns;
    if (view == NULL || parse_spin(nargs > 1 ? args[1] : Py_None, &spin_ns) < 0)
        return NULL;
    uint64_t position;
    uint32_t length;
    int outcome = claim_blocking(view, nargs > 0 ? args[0] : Py_None, spin_ns, &position, &length);
    if (outcome == MI_TIMEOUT)
        Py_RETURN_NONE;
    if (outcome != MI_OK)
        return NULL;
    return Py_BuildValue("(KKI)", (unsigned long long)position,
                         (unsigned long long)(mi_ring_payload(view, position) - (char *)self->view.buf), length);
}

static PyObject *ring_release(RingHandle *self, PyObject *position_object)
{
    const struct mi_ring_view *view = ring_live(self, "Queue.recv_view release");
    uint64_t position;
    if (view == NULL || as_u64(position_object, &position) < 0)
        return NULL;
    int outcome = mi_ring_release(view, position);
    return outcome == MI_OK ? Py_NewRef(Py_None) : raise_for_ring(outcome, "Queue.recv_view");
}

static PyObject *ring_depth(RingHandle *self, PyObject *unused)
{
    (void)unused;
    const struct mi_ring_view *view = ring_live(self, "len(Queue)");
    return view == NULL ? NULL : PyLong_FromUnsignedLongLong(mi_ring_depth(view));
}

static PyObject *ring_parameters(RingHandle *self, PyObject *unused)
{
    (void)unused;
    const struct mi_ring_view *view = ring_live(self, "Queue");
    if (view == NULL)
        return NULL;
    return Py_BuildValue("(KKi)", (unsigned long long)view->capacity, (unsigned long long)view->max_message,
                         view->spsc);
}

static PyObject *ring_close(RingHandle *self, PyObject *unused)
{
    (void)unused;
    if (self->open) {
        self->open = 0;
        PyBuffer_Release(&self->view);
    }
    Py_RETURN_NONE;
}

static PyObject *ring_inspect(RingHandle *self, PyObject *position_object); /* request/response, at the end */

static PyMethodDef ring_methods[] = {
    {"send", (PyCFunction)(void (*)(void))ring_send, METH_FASTCALL,
     "send(data, timeout=None, spin=None) -> bool: False if still Full at the timeout."},
    {"send_many", (PyCFunction)(void (*)(void))ring_send_many, METH_FASTCALL,
     "send_many(items, timeout=None) -> how many were sent (waits only for the first)."},
    {"recv", (PyCFunction)(void (*)(void))ring_recv, METH_FASTCALL,
     "recv(timeout=None, spin=None) -> bytes, or None if still Empty at the timeout."},
    {"recv_many", (PyCFunction)(void (*)(void))ring_recv_many, METH_FASTCALL,
     "recv_many(max_n, timeout=None) -> list of bytes (waits only for the first)."},
    {"reserve", (PyCFunction)(void (*)(void))ring_reserve, METH_FASTCALL,
     "reserve(n, timeout=None, spin=None) -> (position, payload offset) or -1 (Full)."},
    {"commit", (PyCFunction)ring_commit, METH_O, "commit(position): publish a reserved record."},
    {"abort", (PyCFunction)ring_abort, METH_O, "abort(position): discard a reserved record."},
    {"claim", (PyCFunction)(void (*)(void))ring_claim, METH_FASTCALL,
     "claim(timeout=None, spin=None) -> (position, payload offset, length) or None (Empty)."},
    {"release", (PyCFunction)ring_release, METH_O, "release(position): free a claimed record."},
    {"depth", (PyCFunction)ring_depth, METH_NOARGS, "depth() -> messages sent and not yet received."},
    {"parameters", (PyCFunction)ring_parameters, METH_NOARGS, "parameters() -> (capacity, max_message, spsc)."},
    {"close", (PyCFunction)ring_close, METH_NOARGS, "close(): release the buffer (idempotent)."},
    {"inspect", (PyCFunction)ring_inspect, METH_O,
     "inspect(position) -> (status, reader pid): what became of a committed record (request/response)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RingHandleType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "memipc._core.Ring",
    .tp_basicsize = sizeof(RingHandle),
    .tp_dealloc = (destructor)ring_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Ring(buffer, offset): a handle on one Queue ring in shared memory.",
    .tp_methods = ring_methods,
    .tp_new = ring_new,
};


/* ---- Window: a counted buffer over part of another buffer -----------------
 *
 * Queue.loan and recv_view hand out memoryviews of ring records that must not
 * outlive the block (the record is reused afterwards).  A memoryview slice
 * shares its parent's export, so releasing our memoryview cannot tell whether
 * slices or arrays made from it survive.  A Window is its own exporter and
 * counts exports, as mmap does: after our memoryview is released, a non-zero
 * count means something escaped the block.
 */
typedef struct {
    PyObject_HEAD
    Py_buffer source;
    char *pointer;
    Py_ssize_t length;
    int readonly;
    Py_ssize_t exports;
    int open;
} Window;

static PyObject *window_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"buffer", "offset", "length", "readonly", NULL};
    PyObject *buffer;
    Py_ssize_t offset, length;
    int readonly = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Onn|p:Window", keywords, &buffer, &offset, &length, &readonly))
        return NULL;
    Window *self = (Window *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    if (PyObject_GetBuffer(buffer, &self->source, readonly ? PyBUF_SIMPLE : PyBUF_WRITABLE) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->open = 1;
    if (offset < 0 || length < 0 || offset > self->source.len || length > self->source.len - offset) {
        PyErr_Format(PyExc_IndexError, "window [%zd:%zd] is outside the %zd-byte buffer", offset, offset + length,
                     self->source.len);
        Py_DECREF(self);
        return NULL;
    }
    self->pointer = (char *)self->source.buf + offset;
    self->length = length;
    self->readonly = readonly || self->source.readonly;
    return (PyObject *)self;
}

static void window_dealloc(Window *self)
{
    if (self->open)
        PyBuffer_Release(&self->source);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int window_getbuffer(Window *self, Py_buffer *view, int flags)
{
    if (!self->open) {
        PyErr_SetString(PyExc_ValueError, "the window is closed");
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, self->pointer, self->length, self->readonly, flags) < 0)
        return -1;
    self->exports++;
    return 0;
}

static void window_releasebuffer(Window *self, Py_buffer *view)
{
    (void)view;
    self->exports--;
}

static PyBufferProcs window_as_buffer = {
    .bf_getbuffer = (getbufferproc)window_getbuffer,
    .bf_releasebuffer = (releasebufferproc)window_releasebuffer,
};

static PyObject *window_exported(Window *self, PyObject *unused)
{
    (void)unused;
    return PyLong_FromSsize_t(self->exports);
}

static PyObject *window_close(Window *self, PyObject *unused)
{
    (void)unused;
    if (self->open) {
        if (self->exports > 0) {
            PyErr_Format(PyExc_BufferError, "%zd buffer(s) made from this window are still alive", self->exports);
            return NULL;
        }
        self->open = 0;
        PyBuffer_Release(&self->source);
    }
    Py_RETURN_NONE;
}

static PyMethodDef window_methods[] = {
    {"exported", (PyCFunction)window_exported, METH_NOARGS, "exported() -> buffers made from it still alive."},
    {"close", (PyCFunction)window_close, METH_NOARGS, "close(): BufferError while buffers are exported."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject WindowType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "memipc._core.Window",
    .tp_basicsize = sizeof(Window),
    .tp_dealloc = (destructor)window_dealloc,
    .tp_as_buffer = &window_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Window(buffer, offset, length, readonly=False): a counted buffer over part of another.",
    .tp_methods = window_methods,
    .tp_new = window_new,
};

/* futex_wait_many([(buffer, offset, expected), ...], timeout) -> bool:
 * sleep until any word differs or is woken (one slice at most: the caller
 * loops); False on timeout.  Polls in 1 ms steps where FUTEX_WAITV is absent. */
static PyObject *core_futex_wait_many(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *items, *timeout = Py_None;
    if (!PyArg_ParseTuple(args, "O|O:futex_wait_many", &items, &timeout))
        return NULL;
    PyObject *sequence = PySequence_Fast(items, "futex_wait_many needs a sequence of (buffer, offset, expected)");
    if (sequence == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(sequence);
    if (count < 1 || count > 64) {
        Py_DECREF(sequence);
        PyErr_SetString(PyExc_ValueError, "futex_wait_many takes 1 to 64 words");
        return NULL;
    }
    Py_buffer views[64];
    uint32_t *words[64];
    uint32_t expected[64];
    Py_ssize_t acquired = 0;
    PyObject *result = NULL;
    for (; acquired < count; acquired++) {
        Py_ssize_t offset;
        PyObject *value;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(sequence, acquired), "y*nO", &views[acquired], &offset,
                              &value))
            goto done;
        words[acquired] = word_address(&views[acquired], offset, 4);
        if (words[acquired] == NULL || as_u32(value, &expected[acquired]) < 0) {
            acquired++;
            goto done;
        }
    }
    int64_t deadline_ns = deadline_from_timeout(timeout);
    if (deadline_ns == -2)
        goto done;
    int64_t slice = mi_monotonic_ns() + SLICE_NS;
    if (deadline_ns < 0 || deadline_ns > slice)
        deadline_ns = slice;
    enum mi_result outcome;
    Py_BEGIN_ALLOW_THREADS
    outcome = mi_futex_wait_many(words, expected, (int)count, deadline_ns);
    if (outcome == MI_ERRNO && errno == ENOSYS) {
        /* No FUTEX_WAITV: poll until a value differs. */
        outcome = MI_TIMEOUT;
        while (mi_monotonic_ns() < deadline_ns && outcome == MI_TIMEOUT) {
            for (Py_ssize_t i = 0; i < count; i++)
                if (mi_load_acquire_u32(words[i]) != expected[i])
                    outcome = MI_OK;
            if (outcome == MI_TIMEOUT)
                usleep(1000);
        }
    }
    Py_END_ALLOW_THREADS
    if (outcome == MI_OK || outcome == MI_TIMEOUT || outcome == MI_INTERRUPTED) {
        if (PyErr_CheckSignals() == 0)
            result = PyBool_FromLong(outcome != MI_TIMEOUT);
    } else {
        raise_for_result(outcome, "futex_wait_many");
    }
done:
    for (Py_ssize_t i = 0; i < acquired; i++)
        PyBuffer_Release(&views[i]);
    Py_DECREF(sequence);
    return result;
}

/* ---- module ------------------------------------------------------------ */

/* request/response, at the end of the file */
static PyObject *core_process_alive(PyObject *self, PyObject *args);
static PyObject *core_self_identity(PyObject *self, PyObject *unused);

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
    {"futex_wait_many", core_futex_wait_many, METH_VARARGS,
     "futex_wait_many([(buffer, offset, expected), ...], timeout=None) -> bool (one slice at most)."},
    {"monotonic_ns", core_monotonic_ns, METH_NOARGS, "monotonic_ns() -> int: CLOCK_MONOTONIC in ns."},
    {"process_alive", core_process_alive, METH_VARARGS,
     "process_alive(pid, start_ticks, pidns) -> bool: may that process still run? (proc.c's check)"},
    {"self_identity", core_self_identity, METH_NOARGS,
     "self_identity() -> (pid, start_ticks, pidns) of this process, as ring records store them."},
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
        || ROW(table, mi_owned, word) < 0 || ROW(table, mi_owned, owner_tid) < 0
        || ROW(table, mi_owned, owner_identity) < 0 || ROW(table, mi_owned, owner_pidns) < 0
        || ROW(table, mi_owned, sleepers) < 0 || ROW(table, mi_sync_head, tag) < 0
        || ROW(table, mi_sync_head, flags) < 0 || ROW(table, mi_sync_head, operations) < 0
        || ROW(table, mi_sync_head, contentions) < 0 || ROW(table, mi_sync_head, owner_deaths) < 0
        || ROW(table, mi_mutex, lock) < 0 || ROW(table, mi_mutex, spin_estimate) < 0
        || ROW(table, mi_semaphore, value) < 0 || ROW(table, mi_semaphore, maximum) < 0
        || ROW(table, mi_semaphore, sleepers) < 0 || ROW(table, mi_event, state) < 0
        || ROW(table, mi_event, registered) < 0 || ROW(table, mi_condition, sequence) < 0
        || ROW(table, mi_condition, sleepers) < 0 || ROW(table, mi_condition, pending) < 0 || ROW(table, mi_rwlock, writer) < 0
        || ROW(table, mi_rwlock, gate) < 0 || ROW(table, mi_rwlock, reader_exits) < 0
        || ROW(table, mi_rwlock, abandoned) < 0 || ROW(table, mi_rwlock, readers) < 0
        || ROW(table, mi_reader_slot, identity) < 0 || ROW(table, mi_reader_slot, tid) < 0
        || ROW(table, mi_reader_slot, pidns) < 0
        || add_row(table, "mi_mutex", 0, sizeof(struct mi_mutex)) < 0
        || add_row(table, "mi_semaphore", 0, sizeof(struct mi_semaphore)) < 0
        || add_row(table, "mi_event", 0, sizeof(struct mi_event)) < 0
        || add_row(table, "mi_condition", 0, sizeof(struct mi_condition)) < 0
        || add_row(table, "mi_rwlock", 0, sizeof(struct mi_rwlock)) < 0
        || ROW(table, mi_record, state) < 0 || ROW(table, mi_record, length) < 0
        || ROW(table, mi_record, position) < 0 || ROW(table, mi_record, pid) < 0
        || ROW(table, mi_record, pidns) < 0 || ROW(table, mi_record, start_ticks) < 0
        || ROW(table, mi_ring, capacity) < 0 || ROW(table, mi_ring, max_message) < 0
        || ROW(table, mi_ring, data_offset) < 0 || ROW(table, mi_ring, producer_lock) < 0
        || ROW(table, mi_ring, tail) < 0 || ROW(table, mi_ring, consumer_lock) < 0
        || ROW(table, mi_ring, head) < 0 || ROW(table, mi_ring, release) < 0
        || ROW(table, mi_ring, data_sequence) < 0 || ROW(table, mi_ring, consumers_asleep) < 0
        || ROW(table, mi_ring, space_sequence) < 0 || ROW(table, mi_ring, producers_asleep) < 0
        || ROW(table, mi_ring, sent) < 0 || ROW(table, mi_ring, received) < 0
        || ROW(table, mi_ring, bytes_sent) < 0 || ROW(table, mi_ring, bytes_received) < 0
        || ROW(table, mi_ring, waits) < 0 || ROW(table, mi_ring, drops) < 0 || ROW(table, mi_ring, lost_reads) < 0
        || add_row(table, "mi_ring", 0, sizeof(struct mi_ring)) < 0
        || ROW(table, mi_bus_record, position) < 0
        || ROW(table, mi_bus_record, sequence) < 0
        || ROW(table, mi_bus_record, length) < 0
        || ROW(table, mi_bus_record, kind) < 0
        || ROW(table, mi_bus_slot, identity) < 0
        || ROW(table, mi_bus_slot, pidns) < 0
        || ROW(table, mi_bus_slot, pid) < 0
        || ROW(table, mi_bus_slot, cursor) < 0
        || ROW(table, mi_bus_slot, received) < 0
        || ROW(table, mi_bus_slot, missed) < 0
        || ROW(table, mi_bus_slot, bytes) < 0
        || ROW(table, mi_bus_slot, start_ticks) < 0
        || ROW(table, mi_bus_slot, next_sequence) < 0
        || add_row(table, "mi_bus_slot", 0, sizeof(struct mi_bus_slot)) < 0
        || ROW(table, mi_bus, capacity) < 0
        || ROW(table, mi_bus, max_message) < 0
        || ROW(table, mi_bus, data_offset) < 0
        || ROW(table, mi_bus, slots) < 0
        || ROW(table, mi_bus, slots_used) < 0
        || ROW(table, mi_bus, publisher_lock) < 0
        || ROW(table, mi_bus, tail) < 0
        || ROW(table, mi_bus, oldest) < 0
        || ROW(table, mi_bus, floor) < 0
        || ROW(table, mi_bus, next_sequence) < 0
        || ROW(table, mi_bus, space_wanted) < 0
        || ROW(table, mi_bus, data_sequence) < 0
        || ROW(table, mi_bus, subscribers_asleep) < 0
        || ROW(table, mi_bus, space_sequence) < 0
        || ROW(table, mi_bus, publishers_waiting) < 0
        || ROW(table, mi_bus, publishers_asleep) < 0
        || ROW(table, mi_bus, sent) < 0
        || ROW(table, mi_bus, bytes_sent) < 0
        || ROW(table, mi_bus, waits) < 0
        || ROW(table, mi_bus, subscribers_lost) < 0
        || ROW(table, mi_bus, joins) < 0
        || add_row(table, "mi_bus", 0, sizeof(struct mi_bus)) < 0
        || add_row(table, "mi_region_header", 0, sizeof(struct mi_region_header)) < 0
        || add_row(table, "mi_attach_slot", 0, sizeof(struct mi_attach_slot)) < 0) {
        Py_DECREF(table);
        return NULL;
    }
    return table;
}

/* ---- Bus: a handle on one Publisher/Subscriber ring -----------------------
 *
 * One handle is one publisher and/or one subscriber: a subscriber's cursor
 * lives here (the shared slot only mirrors it).  Parameters are validated
 * once at construction (mi_bus_validate).
 */
typedef struct {
    PyObject_HEAD
    Py_buffer view;
    struct mi_bus_view bus;
    struct mi_bus_cursor cursor;
    int joined;
    int loaned;  /* between reserve and commit/abort: this handle holds the publisher lock */
    int reading; /* a receive is in progress (the cursor is not shared between threads) */
    int open;
} BusHandle;

static PyObject *bus_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"buffer", "offset", NULL};
    PyObject *buffer;
    Py_ssize_t offset;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "On:Bus", keywords, &buffer, &offset))
        return NULL;
    BusHandle *self = (BusHandle *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    if (PyObject_GetBuffer(buffer, &self->view, PyBUF_WRITABLE) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->open = 1;
    struct mi_bus *bus = sync_address(&self->view, offset, sizeof(struct mi_bus), MI_KIND_PUBSUB, "Publisher");
    if (bus == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    if (mi_bus_validate(bus, (uint64_t)(self->view.len - offset), &self->bus) != MI_OK) {
        raise_for_result(MI_CORRUPT, "Publisher/Subscriber: ring parameters");
        Py_DECREF(self);
        return NULL;
    }
    self->cursor.slot = UINT32_MAX;
    return (PyObject *)self;
}

static void bus_release_all(BusHandle *self)
{
    if (!self->open)
        return;
    if (self->loaned) {
        mi_bus_abort(&self->bus);
        self->loaned = 0;
    }
    if (self->joined) {
        mi_bus_leave(&self->bus, &self->cursor);
        self->joined = 0;
    }
    self->open = 0;
    PyBuffer_Release(&self->view);
}

static void bus_dealloc(BusHandle *self)
{
    bus_release_all(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static const struct mi_bus_view *bus_live(BusHandle *self, const char *what)
{
    if (!self->open) {
        raise_memipc_error("ClosedError", "%s: this handle is closed; open the channel again", what);
        return NULL;
    }
    if (mi_sync_check_tag(&self->bus.bus->head_block, MI_KIND_PUBSUB) != MI_OK) {
        raise_for_result(MI_CORRUPT, what);
        return NULL;
    }
    return &self->bus;
}

static PyObject *raise_for_bus(int result, const char *what)
{
    switch (result) {
    case MI_BUS_TOO_LARGE:
        return raise_memipc_error("MessageTooLargeError",
                                  "%s: the message is larger than the channel's max_message; create it with a "
                                  "larger capacity or max_message",
                                  what);
    case MI_BUS_NO_SLOT:
        PyErr_Format(PyExc_RuntimeError,
                     "%s: all %u subscriber slots are taken by live subscribers; close one first", what,
                     (unsigned)MI_BUS_SLOTS);
        return NULL;
    case MI_DEADLOCK:
        PyErr_Format(PyExc_RuntimeError,
                     "%s: this thread has a loan open on this channel; finish the 'with pub.loan()' block first",
                     what);
        return NULL;
    default:
        return raise_for_sync(result, what);
    }
}

struct bus_reserve_args {
    const struct mi_bus_view *view;
    uint64_t length;
    uint64_t position;
};

static int op_bus_reserve(void *object, struct mi_wait *wait, int *out)
{
    struct bus_reserve_args *args = object;
    int result = mi_bus_reserve(args->view, args->length, wait, &args->position);
    /* run_blocking knows only sync results: report "this thread's open loan" through *out. */
    *out = result == MI_DEADLOCK;
    if (*out)
        return MI_OK;
    return result == MI_BUS_FULL ? MI_TIMEOUT : result;
}

/* Reserve with the caller's timeout: MI_OK (lock held), MI_TIMEOUT, -1 (exception). */
static int bus_reserve_blocking(BusHandle *self, uint64_t length, PyObject *timeout, int64_t spin_ns,
                                uint64_t *position)
{
    if (length > self->bus.max_message) {
        raise_for_bus(MI_BUS_TOO_LARGE, "Publisher.send");
        return -1;
    }
    struct bus_reserve_args args = {&self->bus, length, 0};
    struct mi_wait wait;
    int own_loan = 0;
    int outcome = run_blocking(op_bus_reserve, &args, timeout, spin_ns, &own_loan, &wait, "Publisher.send");
    if (outcome == MI_OK && own_loan) {
        raise_for_bus(MI_DEADLOCK, "Publisher.send");
        return -1;
    }
    *position = args.position;
    return outcome;
}

/* send(data, timeout=None, spin=None) -> bool (False: no room at the timeout) */
static PyObject *bus_send(BusHandle *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("send", nargs, 1, 3) < 0)
        return NULL;
    const struct mi_bus_view *view = bus_live(self, "Publisher.send");
    int64_t spin_ns;
    if (view == NULL || parse_spin(nargs > 2 ? args[2] : Py_None, &spin_ns) < 0)
        return NULL;
    Py_buffer data;
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0)
        return NULL;
    uint64_t position;
    int outcome = bus_reserve_blocking(self, (uint64_t)data.len, nargs > 1 ? args[1] : Py_None, spin_ns, &position);
    PyObject *result = NULL;
    if (outcome == MI_OK) {
        copy_maybe_without_gil(mi_bus_payload(view, position), data.buf, (size_t)data.len);
        int committed = mi_bus_commit(view, position);
        result = committed == MI_OK ? Py_NewRef(Py_True) : raise_for_bus(committed, "Publisher.send");
    } else if (outcome == MI_TIMEOUT) {
        result = Py_NewRef(Py_False);
    }
    PyBuffer_Release(&data);
    return result;
}

/* reserve(n, timeout=None, spin=None) -> (position, payload offset), or -1 (no room) */
static PyObject *bus_reserve(BusHandle *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("reserve", nargs, 1, 3) < 0)
        return NULL;
    const struct mi_bus_view *view = bus_live(self, "Publisher.loan");
    int64_t spin_ns;
    if (view == NULL || parse_spin(nargs > 2 ? args[2] : Py_None, &spin_ns) < 0)
        return NULL;
    Py_ssize_t length = PyLong_AsSsize_t(args[0]);
    if (length == -1 && PyErr_Occurred())
        return NULL;
    if (length < 0) {
        PyErr_SetString(PyExc_ValueError, "loan size must not be negative");
        return NULL;
    }
    uint64_t position;
    int outcome = bus_reserve_blocking(self, (uint64_t)length, nargs > 1 ? args[1] : Py_None, spin_ns, &position);
    if (outcome == MI_TIMEOUT)
        return PyLong_FromLong(-1);
    if (outcome != MI_OK)
        return NULL;
    self->loaned = 1;
    return Py_BuildValue("(KK)", (unsigned long long)position,
                         (unsigned long long)(mi_bus_payload(view, position) - (char *)self->view.buf));
}

static PyObject *bus_commit(BusHandle *self, PyObject *position_object)
{
    uint64_t position;
    if (as_u64(position_object, &position) < 0)
        return NULL;
    if (!self->open || !self->loaned) {
        PyErr_SetString(PyExc_RuntimeError, "Publisher.loan: no loan is open on this handle");
        return NULL;
    }
    self->loaned = 0;
    int outcome = mi_bus_commit(&self->bus, position);
    return outcome == MI_OK ? Py_NewRef(Py_None) : raise_for_bus(outcome, "Publisher.loan");
}

static PyObject *bus_abort(BusHandle *self, PyObject *unused)
{
    (void)unused;
    if (self->open && self->loaned) {
        self->loaned = 0;
        mi_bus_abort(&self->bus);
    }
    Py_RETURN_NONE;
}

struct bus_join_args {
    const struct mi_bus_view *view;
    int earliest;
    struct mi_bus_cursor cursor;
};

static int op_bus_join(void *object, struct mi_wait *wait, int *out)
{
    struct bus_join_args *args = object;
    int result = mi_bus_join(args->view, args->earliest, wait, &args->cursor);
    /* run_blocking knows only sync results: report "no slot" through *out. */
    *out = result == MI_BUS_NO_SLOT;
    return *out ? MI_OK : result;
}

/* join(earliest, timeout=None) -> bool (False: a publisher held the lock past the timeout) */
static PyObject *bus_join(BusHandle *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("join", nargs, 1, 2) < 0)
        return NULL;
    const struct mi_bus_view *view = bus_live(self, "Subscriber");
    if (view == NULL)
        return NULL;
    if (self->joined) {
        PyErr_SetString(PyExc_RuntimeError, "Subscriber: this handle has already joined");
        return NULL;
    }
    int earliest = PyObject_IsTrue(args[0]);
    if (earliest < 0)
        return NULL;
    struct bus_join_args join = {view, earliest, {0}};
    struct mi_wait wait;
    int no_slot = 0;
    int outcome = run_blocking(op_bus_join, &join, nargs > 1 ? args[1] : Py_None, MI_SPIN_ADAPTIVE, &no_slot, &wait,
                               "Subscriber");
    if (outcome == MI_TIMEOUT)
        Py_RETURN_FALSE;
    if (outcome != MI_OK)
        return NULL;
    if (no_slot)
        return raise_for_bus(MI_BUS_NO_SLOT, "Subscriber");
    self->cursor = join.cursor;
    self->joined = 1;
    Py_RETURN_TRUE;
}

struct bus_next_args {
    const struct mi_bus_view *view;
    struct mi_bus_cursor *cursor;
    uint64_t position;
    uint32_t length;
    uint64_t sequence;
};

static int op_bus_next(void *object, struct mi_wait *wait, int *out)
{
    struct bus_next_args *args = object;
    *out = 0;
    int result = mi_bus_next(args->view, args->cursor, wait, &args->position, &args->length, &args->sequence);
    return result == MI_BUS_EMPTY ? MI_TIMEOUT : result;
}

/* The next message (MI_OK), MI_TIMEOUT, or -1 with an exception set. */
static int bus_next_blocking(BusHandle *self, PyObject *timeout, int64_t spin_ns, struct bus_next_args *next,
                             const char *what)
{
    if (!self->joined) {
        PyErr_Format(PyExc_RuntimeError, "%s: this handle is not a subscriber", what);
        return -1;
    }
    if (self->reading) {
        PyErr_Format(PyExc_RuntimeError,
                     "%s: another thread is receiving on this subscriber (or a recv_view block is open); "
                     "open one Subscriber per thread",
                     what);
        return -1;
    }
    *next = (struct bus_next_args){&self->bus, &self->cursor, 0, 0, 0};
    struct mi_wait wait;
    int unused;
    self->reading = 1;
    int outcome = run_blocking(op_bus_next, next, timeout, spin_ns, &unused, &wait, what);
    self->reading = 0;
    return outcome;
}

/* recv(timeout=None, spin=None) -> bytes, or None at the timeout */
static PyObject *bus_recv(BusHandle *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("recv", nargs, 0, 2) < 0)
        return NULL;
    const struct mi_bus_view *view = bus_live(self, "Subscriber.recv");
    int64_t spin_ns;
    if (view == NULL || parse_spin(nargs > 1 ? args[1] : Py_None, &spin_ns) < 0)
        return NULL;
    PyObject *timeout = nargs > 0 ? args[0] : Py_None;
    for (;;) {
        struct bus_next_args next;
        int outcome = bus_next_blocking(self, timeout, spin_ns, &next, "Subscriber.recv");
        if (outcome == MI_TIMEOUT)
            Py_RETURN_NONE;
        if (outcome != MI_OK)
            return NULL;
        PyObject *bytes = PyBytes_FromStringAndSize(NULL, next.length);
        if (bytes == NULL)
            return NULL;
        self->reading = 1; /* the copy may run without the GIL */
        copy_maybe_without_gil(PyBytes_AS_STRING(bytes), mi_bus_payload(view, next.position), next.length);
        int done = mi_bus_done(view, &self->cursor, next.position, next.length, next.sequence);
        self->reading = 0;
        if (done == MI_OK)
            return bytes;
        Py_DECREF(bytes);
        if (done != MI_BUS_OVERRUN)
            return raise_for_bus(done, "Subscriber.recv");
        /* Overwritten while we copied: newer messages are there already. */
    }
}

/* next(timeout=None, spin=None) -> (position, payload offset, length, sequence), or None */
static PyObject *bus_next(BusHandle *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("next", nargs, 0, 2) < 0)
        return NULL;
    const struct mi_bus_view *view = bus_live(self, "Subscriber.recv_view");
    int64_t spin_ns;
    if (view == NULL || parse_spin(nargs > 1 ? args[1] : Py_None, &spin_ns) < 0)
        return NULL;
    struct bus_next_args next;
    int outcome = bus_next_blocking(self, nargs > 0 ? args[0] : Py_None, spin_ns, &next, "Subscriber.recv_view");
    if (outcome == MI_TIMEOUT)
        Py_RETURN_NONE;
    if (outcome != MI_OK)
        return NULL;
    self->reading = 1; /* until done() */
    return Py_BuildValue("(KKIK)", (unsigned long long)next.position,
                         (unsigned long long)(mi_bus_payload(view, next.position) - (char *)self->view.buf),
                         next.length, (unsigned long long)next.sequence);
}

/* done(position, length, sequence) -> bool: False if the message was overwritten meanwhile */
static PyObject *bus_done(BusHandle *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("done", nargs, 3, 3) < 0)
        return NULL;
    const struct mi_bus_view *view = bus_live(self, "Subscriber.recv_view");
    uint64_t position, length, sequence;
    if (view == NULL || as_u64(args[0], &position) < 0 || as_u64(args[1], &length) < 0
        || as_u64(args[2], &sequence) < 0)
        return NULL;
    if (!self->joined) {
        PyErr_SetString(PyExc_RuntimeError, "Subscriber.recv_view: this handle is not a subscriber");
        return NULL;
    }
    if (length > UINT32_MAX)
        return raise_for_bus(MI_CORRUPT, "Subscriber.recv_view");
    self->reading = 0;
    int outcome = mi_bus_done(view, &self->cursor, position, (uint32_t)length, sequence);
    if (outcome == MI_BUS_OVERRUN)
        Py_RETURN_FALSE;
    return outcome == MI_OK ? Py_NewRef(Py_True) : raise_for_bus(outcome, "Subscriber.recv_view");
}

/* cancel(): give up the message next() returned without consuming it (the next receive gets it again) */
static PyObject *bus_cancel(BusHandle *self, PyObject *unused)
{
    (void)unused;
    self->reading = 0;
    Py_RETURN_NONE;
}

/* counters() -> (received, missed, bytes, position, next sequence) of this subscriber */
static PyObject *bus_counters(BusHandle *self, PyObject *unused)
{
    (void)unused;
    return Py_BuildValue("(KKKKK)", (unsigned long long)self->cursor.received,
                         (unsigned long long)self->cursor.missed, (unsigned long long)self->cursor.bytes,
                         (unsigned long long)self->cursor.position, (unsigned long long)self->cursor.next_sequence);
}

static PyObject *bus_parameters(BusHandle *self, PyObject *unused)
{
    (void)unused;
    const struct mi_bus_view *view = bus_live(self, "Publisher");
    if (view == NULL)
        return NULL;
    return Py_BuildValue("(KKi)", (unsigned long long)view->capacity, (unsigned long long)view->max_message,
                         view->overwrite);
}

static PyObject *bus_close(BusHandle *self, PyObject *unused)
{
    (void)unused;
    bus_release_all(self);
    Py_RETURN_NONE;
}

static PyMethodDef bus_methods[] = {
    {"send", (PyCFunction)(void (*)(void))bus_send, METH_FASTCALL,
     "send(data, timeout=None, spin=None) -> bool: False if there was no room at the timeout."},
    {"reserve", (PyCFunction)(void (*)(void))bus_reserve, METH_FASTCALL,
     "reserve(n, timeout=None, spin=None) -> (position, payload offset) or -1; holds the publisher lock."},
    {"commit", (PyCFunction)bus_commit, METH_O, "commit(position): publish the reserved message."},
    {"abort", (PyCFunction)bus_abort, METH_NOARGS, "abort(): drop the reserved message."},
    {"join", (PyCFunction)(void (*)(void))bus_join, METH_FASTCALL,
     "join(earliest, timeout=None) -> bool: become a subscriber."},
    {"recv", (PyCFunction)(void (*)(void))bus_recv, METH_FASTCALL,
     "recv(timeout=None, spin=None) -> bytes, or None at the timeout."},
    {"next", (PyCFunction)(void (*)(void))bus_next, METH_FASTCALL,
     "next(timeout=None, spin=None) -> (position, payload offset, length, sequence) or None."},
    {"done", (PyCFunction)(void (*)(void))bus_done, METH_FASTCALL,
     "done(position, length, sequence) -> bool: False if overwritten while read."},
    {"counters", (PyCFunction)bus_counters, METH_NOARGS, "counters() -> (received, missed, bytes, position, next sequence)."},
    {"cancel", (PyCFunction)bus_cancel, METH_NOARGS, "cancel(): drop what next() returned; it is received again."},
    {"parameters", (PyCFunction)bus_parameters, METH_NOARGS, "parameters() -> (capacity, max_message, overwrite)."},
    {"close", (PyCFunction)bus_close, METH_NOARGS, "close(): leave, drop any loan, release the buffer."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject BusHandleType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "memipc._core.Bus",
    .tp_basicsize = sizeof(BusHandle),
    .tp_dealloc = (destructor)bus_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Bus(buffer, offset): a handle on one publish/subscribe ring in shared memory.",
    .tp_methods = bus_methods,
    .tp_new = bus_new,
};


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
    if (PyType_Ready(&SyncHandleType) < 0 || PyModule_AddObjectRef(module, "Sync", (PyObject *)&SyncHandleType) < 0)
        return -1;
    if (PyType_Ready(&RingHandleType) < 0 || PyModule_AddObjectRef(module, "Ring", (PyObject *)&RingHandleType) < 0)
        return -1;
    if (PyType_Ready(&WindowType) < 0 || PyModule_AddObjectRef(module, "Window", (PyObject *)&WindowType) < 0)
        return -1;
    if (PyType_Ready(&BusHandleType) < 0 || PyModule_AddObjectRef(module, "Bus", (PyObject *)&BusHandleType) < 0)
        return -1;
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
        || PyModule_AddIntConstant(module, "LOCK_UNLOCK", MI_LOCK_UNLOCK) < 0
        || PyModule_AddIntConstant(module, "LAYOUT_REVISION", MI_LAYOUT_REVISION) < 0
        || PyModule_AddIntConstant(module, "TAG_INITIALIZING", MI_TAG_INITIALIZING) < 0
        || PyModule_AddIntConstant(module, "TAG_BASE", (long)MI_TAG(0)) < 0
        || PyModule_AddIntConstant(module, "EVENT_MANUAL", MI_EVENT_MANUAL) < 0
        || PyModule_AddIntConstant(module, "SPIN_DEFAULT_MAX_NS", MI_SPIN_DEFAULT_MAX_NS) < 0
        || PyModule_AddIntConstant(module, "RWLOCK_READER_SLOTS", MI_RWLOCK_READER_SLOTS) < 0
        || PyModule_AddIntConstant(module, "RING_SPSC", MI_RING_SPSC) < 0
        || PyModule_AddIntConstant(module, "RECORD_HEADER", MI_RECORD_HEADER) < 0
        || PyModule_AddIntConstant(module, "RING_CONTROL_BYTES", sizeof(struct mi_ring)) < 0
        || PyModule_AddIntConstant(module, "BUS_DATA_OFFSET", MI_BUS_DATA_OFFSET) < 0
        || PyModule_AddIntConstant(module, "BUS_SLOTS", MI_BUS_SLOTS) < 0
        || PyModule_AddIntConstant(module, "BUS_OVERWRITE", MI_BUS_OVERWRITE) < 0)
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


/* ---- request/response support (Server / Client, _channels/_rpc.py) ------
 *
 * A Client asks what became of its request record (Ring.inspect), and the
 * client and server tables of an rpc segment hold owner identities that
 * _rpc.py checks with the same liveness rule as the ring's records
 * (process_alive, self_identity).  Kept together at the end of the file.
 */

/* inspect(position) -> (status, reader pid); status is "released",
 * "waiting", "reading", "reader_died" or "writing" (mi_ring_inspect). */
static PyObject *ring_inspect(RingHandle *self, PyObject *position_object)
{
    static const char *const names[] = {"released", "waiting", "reading", "reader_died", "writing"};
    const struct mi_ring_view *view = ring_live(self, "Client.call");
    uint64_t position;
    if (view == NULL || as_u64(position_object, &position) < 0)
        return NULL;
    uint32_t status, pid;
    int outcome;
    Py_BEGIN_ALLOW_THREADS /* a liveness check reads /proc */
    outcome = mi_ring_inspect(view, position, &status, &pid);
    Py_END_ALLOW_THREADS
    if (outcome != MI_OK)
        return raise_for_result((enum mi_result)outcome, "Client.call: the request record");
    if (status >= sizeof names / sizeof names[0]) {
        PyErr_Format(PyExc_SystemError, "mi_ring_inspect returned status %u", status);
        return NULL;
    }
    return Py_BuildValue("(sI)", names[status], pid);
}

/* process_alive(pid, start_ticks, pidns) -> bool.  The arguments come from
 * shared memory: out-of-range values raise OverflowError, pid 0 is dead. */
static PyObject *core_process_alive(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *pid_object, *ticks_object, *pidns_object;
    uint32_t pid, pidns;
    uint64_t start_ticks;
    if (!PyArg_ParseTuple(args, "OOO:process_alive", &pid_object, &ticks_object, &pidns_object))
        return NULL;
    if (as_u32(pid_object, &pid) < 0 || as_u64(ticks_object, &start_ticks) < 0 || as_u32(pidns_object, &pidns) < 0)
        return NULL;
    int alive;
    Py_BEGIN_ALLOW_THREADS
    alive = mi_process_alive(pid, start_ticks, pidns);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(alive);
}

static PyObject *core_self_identity(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    const struct mi_self *me = mi_self_get();
    return Py_BuildValue("(IKI)", me->pid, (unsigned long long)me->start_ticks, me->pidns);
}
