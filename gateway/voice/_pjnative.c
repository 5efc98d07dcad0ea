/*
 * gateway.voice._pjnative: native helpers beside the pjsua2 wheel. Above all, a live-audio port for
 * PJSIP's conference bridge, in C, with no Python and no GIL on the bridge's clock thread.
 *
 * Why: a `pj.AudioMediaPort` subclass runs Python on the bridge thread for every 20 ms frame
 * (SWIG director, GIL, wrapper objects). perf on 100 loaded workers put half of the clock thread's
 * time in the interpreter, and a busy GIL stalls the whole bridge (recordings included). This port
 * copies each frame into a bounded ring under a plain mutex; the asyncio loop drains it.
 *
 * The wheel ships no headers, so nothing here includes pjsip: the functions come from the loaded
 * `_pjsua2` module by dlsym (it exports them), and the one struct we build, `pjmedia_port`, is laid
 * out at offsets that `bind()` first *measures* against the library itself (see probe_layout): it
 * fills candidate slots with distinct probe functions and asks pjmedia_port_put_frame & co. which
 * one they call. A library with another layout is refused (the caller falls back to the SWIG port),
 * never guessed at.
 *
 * Second, `next_timer()`: seconds until PJSIP's earliest SIP timer, so the worker's loop polls PJSIP
 * when a timer is due instead of every 100 ms (see timer_heap below).
 *
 * Third, a media poller that replaces PJSIP's media thread (`media_poll_start`): PJSIP's thread wakes
 * for every RTP packet and every 10 ms without one, 100 times a second even with no call. Ours polls
 * the same ioqueue on a cadence (20 ms while there are calls: one wake-up takes every call's packet;
 * once a second without), and a cadence change wakes it at once.
 *
 * Fourth, a SIP guard (`sip_guard_start`): a pjsip module ahead of the transaction layer that hands
 * each request's bytes to a Python check (gateway/voice/sip_guard.py) and answers 400 for the ones
 * PJSIP's parser takes but RFC 3261 refuses (RFC 4475 `clerr`, `mismatch01`). Where the request's
 * text sits in `pjsip_rx_data` is measured, not assumed: the worker sends itself a probe request and
 * the module finds the field that points at exactly those bytes (see guard_calibrate).
 *
 * Threads: put_frame runs on the bridge clock thread; everything else on the thread that called
 * libCreate (checked: pj_thread_is_registered). Lifetime: close() takes the port out of the bridge
 * and drops our reference; PJSIP removes it asynchronously and calls on_destroy when its last
 * reference goes. The memory (and the pool the bridge allocated its slot from) is freed by reap()
 * only after on_destroy ran and a grace period passed, or by reap(library_gone=True) after
 * libDestroy.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define REGION_BYTES 256   /* room for pjmedia_port; only measured offsets are written */
#define SLOTS (REGION_BYTES / 8)
#define FRAME_TYPE_AUDIO 1
#define GAPS_KEPT 20000    /* like FrameStats.gaps: the last 20,000 gaps */
#define GRACE_SECONDS 0.5  /* after on_destroy, before the memory goes */
#define SIGNATURE 0x4c415948u /* 'HYAL' */

/* pjmedia_frame: unchanged since PJSIP 2.0 (type, buf, size, timestamp, bit_info). */
typedef struct {
    int type;
    void *buf;
    size_t size;
    uint64_t timestamp;
    uint32_t bit_info;
} frame_t;

typedef struct { char *ptr; long slen; } pjstr_t;

typedef int (*port_fn)(void *port, void *frame);
typedef void *(*clock_fn)(void *port, int media_type);
typedef int (*destroy_fn)(void *port);

static struct {
    int bound;
    size_t off_grp_lock, off_clock, off_put, off_get, off_destroy, info_bytes;
    int (*info_init)(void *info, const pjstr_t *name, unsigned sig, unsigned rate, unsigned channels,
                     unsigned bits, unsigned spf);
    int (*port_put)(void *port, void *frame);
    int (*port_get)(void *port, void *frame);
    void *(*port_clock)(void *port, int media_type);
    int (*port_destroy)(void *port);
    int (*conf_add)(void *pool, void *port, int *slot);
    int (*conf_remove)(int slot);
    int (*conf_connect)(int source, int sink);
    void *(*pool_create)(const char *name, size_t initial, size_t increment);
    void (*pool_release)(void *pool);
    int (*thread_registered)(void);
    void *(*get_endpt)(void);
    void *(*endpt_timer_heap)(void *endpt);
    size_t (*heap_count)(void *heap);
    int (*heap_earliest)(void *heap, void *time_val);
    int (*gettickcount)(void *time_val);
    int (*lock_acquire)(void *lock);
    int (*lock_release)(void *lock);
    int timers_checked; /* read_earliest agreed with pj_timer_heap_earliest_time (check_timers) */
    void *(*get_med_endpt)(void);
    void *(*med_ioqueue)(void *med_endpt);
    unsigned (*med_thread_count)(void *med_endpt);
    int (*med_stop_threads)(void *med_endpt);
    int (*ioqueue_poll)(void *ioqueue, const void *timeout);
    int (*thread_create)(void *pool, const char *name, int (*proc)(void *), void *arg, size_t stack, unsigned flags,
                         void **thread);
    int (*thread_join)(void *thread);
    int (*thread_destroy)(void *thread);
    int (*register_module)(void *endpt, void *module);
    int (*unregister_module)(void *endpt, void *module);
    int (*respond_stateless)(void *endpt, void *rdata, int status, const pjstr_t *reason, const void *hdrs,
                             const void *body);
} lib;

enum { NEW = 0, IN_BRIDGE = 1, CLOSED = 2 };

typedef struct native {
    unsigned char port[REGION_BYTES]; /* first: the bridge's pjmedia_port* is this struct's address */
    pthread_mutex_t lock;
    char name[48];
    unsigned frame_bytes, capacity, head, count;
    double *stamps;
    uint32_t *sizes;
    unsigned char *data;
    uint64_t frames, dropped;
    double last, max_gap;
    float *gaps;
    unsigned gap_head, gap_count;
    volatile int destroyed; /* set by on_destroy, on whichever thread drops the last reference */
    double destroyed_at;    /* when (written before `destroyed`) */
    int state, slot;
    void *pool;
    double closed_at;
    struct native *next; /* in the graveyard */
} native_t;

static native_t *graveyard = NULL;

static double monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* the clock of Python's time.monotonic() on Linux */
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void set_slot(unsigned char *region, size_t offset, void *value) {
    memcpy(region + offset, &value, sizeof value);
}

/* ---- the port's callbacks (bridge clock thread) ---------------------------------------------- */

static int live_put_frame(void *port, void *frame_ptr) {
    native_t *n = (native_t *)port;
    frame_t *frame = (frame_t *)frame_ptr;
    if (frame->type != FRAME_TYPE_AUDIO || frame->size == 0 || frame->buf == NULL)
        return 0; /* the bridge's heartbeat frames (type NONE, size 0) */
    double now = monotonic();
    size_t size = frame->size < n->frame_bytes ? frame->size : n->frame_bytes;
    pthread_mutex_lock(&n->lock);
    if (n->last > 0) {
        double gap = now - n->last;
        if (gap > n->max_gap)
            n->max_gap = gap;
        n->gaps[(n->gap_head + n->gap_count) % GAPS_KEPT] = (float)gap;
        if (n->gap_count < GAPS_KEPT)
            n->gap_count++;
        else
            n->gap_head = (n->gap_head + 1) % GAPS_KEPT;
    }
    n->last = now;
    if (n->count == n->capacity) { /* the consumer fell behind: the oldest frame goes */
        n->head = (n->head + 1) % n->capacity;
        n->count--;
        n->dropped++;
    }
    unsigned index = (n->head + n->count) % n->capacity;
    memcpy(n->data + (size_t)index * n->frame_bytes, frame->buf, size);
    n->stamps[index] = now;
    n->sizes[index] = (uint32_t)size;
    n->count++;
    n->frames++;
    pthread_mutex_unlock(&n->lock);
    return 0;
}

static int live_get_frame(void *port, void *frame_ptr) {
    (void)port;
    frame_t *frame = (frame_t *)frame_ptr;
    frame->type = 0; /* NONE: this port is a sink, it never transmits */
    frame->size = 0;
    return 0;
}

static int live_on_destroy(void *port) {
    native_t *n = (native_t *)port;
    n->destroyed_at = monotonic();
    __atomic_store_n(&n->destroyed, 1, __ATOMIC_RELEASE);
    return 0;
}

/* ---- measuring the library's pjmedia_port layout --------------------------------------------- */

static int probe_hit = -1;
#define PROBE(i) static int probe_##i(void *p, void *f) { (void)p; (void)f; probe_hit = i; return 0; }
#define P8(a) PROBE(a##0) PROBE(a##1) PROBE(a##2) PROBE(a##3) PROBE(a##4) PROBE(a##5) PROBE(a##6) PROBE(a##7)
P8(1) P8(2) P8(3)
PROBE(0) PROBE(1) PROBE(2) PROBE(3) PROBE(4) PROBE(5) PROBE(6) PROBE(7)
static port_fn probes[SLOTS] = {
    probe_0,  probe_1,  probe_2,  probe_3,  probe_4,  probe_5,  probe_6,  probe_7,
    probe_10, probe_11, probe_12, probe_13, probe_14, probe_15, probe_16, probe_17,
    probe_20, probe_21, probe_22, probe_23, probe_24, probe_25, probe_26, probe_27,
    probe_30, probe_31, probe_32, probe_33, probe_34, probe_35, probe_36, probe_37,
};

static int slot_called(int hit) {
    /* probes are numbered in octal-like pairs (row*10+col); back to the slot index */
    return hit < 0 ? -1 : (hit / 10) * 8 + hit % 10;
}

static int probe_slot(int which) {
    unsigned char region[REGION_BYTES];
    frame_t frame = {0};
    for (int i = 0; i < SLOTS; i++)
        set_slot(region, (size_t)i * 8, (void *)probes[i]);
    probe_hit = -1;
    if (which == 0)
        lib.port_put(region, &frame);
    else if (which == 1)
        lib.port_get(region, &frame);
    else
        lib.port_clock(region, 1);
    return slot_called(probe_hit);
}

static const char *probe_layout(void) {
    int put = probe_slot(0), get = probe_slot(1), clock = probe_slot(2);
    if (put < 0 || get < 0 || clock < 0)
        return "pjmedia_port_put_frame/get_frame/get_clock_src called none of the probes";
    if (!(clock + 1 == put && put + 1 == get))
        return "pjmedia_port's get_clock_src, put_frame, get_frame are not consecutive";
    lib.off_clock = (size_t)clock * 8;
    lib.off_put = (size_t)put * 8;
    lib.off_get = (size_t)get * 8;
    lib.off_destroy = lib.off_get + 8;
    lib.off_grp_lock = lib.off_clock - 8;
    /* pjmedia_port_destroy must call the slot after get_frame when there is no group lock. */
    {
        unsigned char region[REGION_BYTES];
        memset(region, 0, sizeof region);
        set_slot(region, lib.off_destroy, (void *)probes[5]);
        probe_hit = -1;
        lib.port_destroy(region);
        if (slot_called(probe_hit) != 5)
            return "pjmedia_port_destroy does not call on_destroy where expected";
    }
    /* pjmedia_port_info_init zeroes the whole pjmedia_port_info: how far it writes is its size,
     * which must end before port_data and the group lock. */
    {
        unsigned char region[REGION_BYTES];
        pjstr_t name = {"probe", 5};
        memset(region, 0xAB, sizeof region);
        if (lib.info_init(region, &name, SIGNATURE, 8000, 1, 16, 160) != 0)
            return "pjmedia_port_info_init failed";
        size_t end = REGION_BYTES;
        while (end > 0 && region[end - 1] == 0xAB)
            end--;
        lib.info_bytes = end;
        if (end == 0 || end + 16 > lib.off_grp_lock)
            return "pjmedia_port_info is larger than the room before port_data and grp_lock";
    }
    return NULL;
}

/* ---- binding to the loaded library ----------------------------------------------------------- */

static PyObject *bind_library(PyObject *self, PyObject *args) {
    const char *path;
    if (!PyArg_ParseTuple(args, "s", &path))
        return NULL;
    if (lib.bound)
        Py_RETURN_NONE;
    void *handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (handle == NULL) {
        PyErr_Format(PyExc_RuntimeError, "the pjsua2 module is not loaded from %s", path);
        return NULL;
    }
    struct { const char *name; void **slot; } wanted[] = {
        {"pjmedia_port_info_init", (void **)&lib.info_init},
        {"pjmedia_port_put_frame", (void **)&lib.port_put},
        {"pjmedia_port_get_frame", (void **)&lib.port_get},
        {"pjmedia_port_get_clock_src", (void **)&lib.port_clock},
        {"pjmedia_port_destroy", (void **)&lib.port_destroy},
        {"pjsua_conf_add_port", (void **)&lib.conf_add},
        {"pjsua_conf_remove_port", (void **)&lib.conf_remove},
        {"pjsua_conf_connect", (void **)&lib.conf_connect},
        {"pjsua_pool_create", (void **)&lib.pool_create},
        {"pj_pool_release", (void **)&lib.pool_release},
        {"pj_thread_is_registered", (void **)&lib.thread_registered},
        {"pjsua_get_pjsip_endpt", (void **)&lib.get_endpt},
        {"pjsip_endpt_get_timer_heap", (void **)&lib.endpt_timer_heap},
        {"pj_timer_heap_count", (void **)&lib.heap_count},
        {"pj_timer_heap_earliest_time", (void **)&lib.heap_earliest},
        {"pj_gettickcount", (void **)&lib.gettickcount},
        {"pj_lock_acquire", (void **)&lib.lock_acquire},
        {"pj_lock_release", (void **)&lib.lock_release},
        {"pjsua_get_pjmedia_endpt", (void **)&lib.get_med_endpt},
        {"pjmedia_endpt_get_ioqueue", (void **)&lib.med_ioqueue},
        {"pjmedia_endpt_get_thread_count", (void **)&lib.med_thread_count},
        {"pjmedia_endpt_stop_threads", (void **)&lib.med_stop_threads},
        {"pj_ioqueue_poll", (void **)&lib.ioqueue_poll},
        {"pj_thread_create", (void **)&lib.thread_create},
        {"pj_thread_join", (void **)&lib.thread_join},
        {"pj_thread_destroy", (void **)&lib.thread_destroy},
        {"pjsip_endpt_register_module", (void **)&lib.register_module},
        {"pjsip_endpt_unregister_module", (void **)&lib.unregister_module},
        {"pjsip_endpt_respond_stateless", (void **)&lib.respond_stateless},
    };
    for (size_t i = 0; i < sizeof wanted / sizeof wanted[0]; i++) {
        *wanted[i].slot = dlsym(handle, wanted[i].name);
        if (*wanted[i].slot == NULL) {
            PyErr_Format(PyExc_RuntimeError, "the pjsua2 module does not export %s", wanted[i].name);
            return NULL;
        }
    }
    const char *problem = probe_layout();
    if (problem != NULL) {
        PyErr_Format(PyExc_RuntimeError, "unrecognised PJSIP layout: %s", problem);
        return NULL;
    }
    lib.bound = 1;
    Py_RETURN_NONE;
}

static PyObject *layout(PyObject *self, PyObject *unused) {
    if (!lib.bound)
        Py_RETURN_NONE;
    return Py_BuildValue("{s:n,s:n,s:n,s:n,s:n,s:n}", "info_bytes", (Py_ssize_t)lib.info_bytes,
                         "grp_lock", (Py_ssize_t)lib.off_grp_lock, "get_clock_src", (Py_ssize_t)lib.off_clock,
                         "put_frame", (Py_ssize_t)lib.off_put, "get_frame", (Py_ssize_t)lib.off_get,
                         "on_destroy", (Py_ssize_t)lib.off_destroy);
}

/* A bound library and a thread PJSIP knows; else 0 with a Python error set. */
static int registered_thread(void) {
    if (!lib.thread_registered()) {
        PyErr_SetString(PyExc_RuntimeError, "not on a thread PJSIP knows (use the libCreate thread)");
        return 0;
    }
    return 1;
}

static int on_pj_thread(void) {
    if (!lib.bound) {
        PyErr_SetString(PyExc_RuntimeError, "bind() the pjsua2 library first");
        return 0;
    }
    return registered_thread();
}

static void free_native(native_t *n, int release_pool) {
    if (release_pool && n->pool != NULL)
        lib.pool_release(n->pool);
    pthread_mutex_destroy(&n->lock);
    PyMem_RawFree(n->stamps);
    PyMem_RawFree(n->sizes);
    PyMem_RawFree(n->data);
    PyMem_RawFree(n->gaps);
    PyMem_RawFree(n);
}

static void bury(native_t *n) {
    n->closed_at = monotonic();
    n->next = graveyard;
    graveyard = n;
}

static PyObject *reap(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"library_gone", NULL};
    int library_gone = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|p", keywords, &library_gone))
        return NULL;
    if (!library_gone && lib.bound && !registered_thread())
        return NULL;
    double now = monotonic();
    long pending = 0;
    native_t **link = &graveyard;
    while (*link != NULL) {
        native_t *n = *link;
        /* the grace counts from on_destroy: the bridge may still be finishing the removal then */
        int gone = __atomic_load_n(&n->destroyed, __ATOMIC_ACQUIRE) && now - n->destroyed_at >= GRACE_SECONDS;
        if (library_gone || gone) {
            *link = n->next; /* unlinked with the GIL held; only then freed without it */
            Py_BEGIN_ALLOW_THREADS
            /* after libDestroy the pool factory is gone with every pool in it */
            free_native(n, !library_gone);
            Py_END_ALLOW_THREADS
        } else {
            pending++;
            link = &n->next;
        }
    }
    return PyLong_FromLong(pending);
}

/* ---- PJSIP's timer heap ---------------------------------------------------------------------- */

/* pj_time_val */
typedef struct { long sec; long msec; } timeval_t;

/* pj_timer_heap_earliest_time would do, but it asserts (aborts the process) on an empty heap, and
 * the heap can empty between pj_timer_heap_count and that call. So the earliest entry is read here
 * under the heap's own lock, at the offsets pj_timer_heap_earliest_time itself uses in PJSIP 2.15
 * (cur_size, lock, heap array; an entry's _timer_value). check_timers() compares the two once, at
 * start-up, while the heap is known not to be empty; without that agreement next_timer() refuses. */
#define HEAP_CUR_SIZE 0x10
#define HEAP_LOCK 0x20
#define HEAP_ARRAY 0x30
#define ENTRY_VALUE 0x28

static int read_earliest(void *heap, timeval_t *out) {
    unsigned char *h = heap;
    void *lock;
    memcpy(&lock, h + HEAP_LOCK, sizeof lock);
    if (lock != NULL)
        lib.lock_acquire(lock);
    size_t count;
    memcpy(&count, h + HEAP_CUR_SIZE, sizeof count);
    if (count > 0) {
        unsigned char **array, *entry;
        memcpy(&array, h + HEAP_ARRAY, sizeof array);
        entry = array[0];
        memcpy(out, entry + ENTRY_VALUE, sizeof *out);
    }
    if (lock != NULL)
        lib.lock_release(lock);
    return count > 0 ? 0 : -1;
}

static void *timer_heap(void) {
    void *endpt = lib.get_endpt();
    return endpt == NULL ? NULL : lib.endpt_timer_heap(endpt);
}

/* Call with at least one timer scheduled and no other thread touching timers (start-up). */
static PyObject *check_timers(PyObject *self, PyObject *unused) {
    if (!on_pj_thread())
        return NULL;
    void *heap = timer_heap();
    if (heap == NULL || lib.heap_count(heap) == 0) {
        PyErr_SetString(PyExc_RuntimeError, "schedule a PJSIP timer before check_timers()");
        return NULL;
    }
    timeval_t theirs = {0, 0}, ours = {-1, -1};
    if (lib.heap_earliest(heap, &theirs) != 0 || read_earliest(heap, &ours) != 0 || theirs.sec != ours.sec ||
        theirs.msec != ours.msec) {
        PyErr_Format(PyExc_RuntimeError, "PJSIP's timer heap is not laid out as expected (%ld.%03ld vs %ld.%03ld)",
                     theirs.sec, theirs.msec, ours.sec, ours.msec);
        return NULL;
    }
    lib.timers_checked = 1;
    Py_RETURN_NONE;
}

/* Seconds until PJSIP's earliest SIP timer (0 when due), or None when none is scheduled. */
static PyObject *next_timer(PyObject *self, PyObject *unused) {
    if (!lib.timers_checked) {
        PyErr_SetString(PyExc_RuntimeError, "check_timers() has not passed");
        return NULL;
    }
    if (!on_pj_thread())
        return NULL;
    void *heap = timer_heap();
    timeval_t earliest, now;
    if (heap == NULL || read_earliest(heap, &earliest) != 0)
        Py_RETURN_NONE;
    lib.gettickcount(&now);
    double seconds = (double)(earliest.sec - now.sec) + (double)(earliest.msec - now.msec) / 1000.0;
    return PyFloat_FromDouble(seconds > 0 ? seconds : 0.0);
}

/* ---- the media poller ------------------------------------------------------------------------ */

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake; /* on CLOCK_MONOTONIC */
    int cond_ready, running, quit;
    unsigned cadence_ms;
    unsigned long long polls;
    void *thread, *pool, *ioqueue;
} mp = {PTHREAD_MUTEX_INITIALIZER};

static void deadline_after(struct timespec *ts, unsigned ms) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec += 1;
        ts->tv_nsec -= 1000000000L;
    }
}

/* PJSIP's media thread body, on a cadence: take whatever arrived on every RTP socket (a datagram
 * transport re-reads until its socket is empty), then wait for the next turn or a cadence change. */
static int media_poll_main(void *arg) {
    timeval_t zero = {0, 0};
    pthread_mutex_lock(&mp.lock);
    while (!mp.quit) {
        pthread_mutex_unlock(&mp.lock);
        for (int i = 0; i < 16 && lib.ioqueue_poll(mp.ioqueue, &zero) > 0; i++)
            ;
        pthread_mutex_lock(&mp.lock);
        mp.polls++;
        if (mp.quit)
            break;
        struct timespec until;
        deadline_after(&until, mp.cadence_ms);
        pthread_cond_timedwait(&mp.wake, &mp.lock, &until);
    }
    pthread_mutex_unlock(&mp.lock);
    return 0;
}

/* (cadence_ms,): 1-5000 ms; 0 with a Python error set otherwise */
static int parse_cadence(PyObject *args, unsigned *cadence_ms) {
    if (!PyArg_ParseTuple(args, "I", cadence_ms))
        return 0;
    if (*cadence_ms < 1 || *cadence_ms > 5000) {
        PyErr_SetString(PyExc_ValueError, "cadence_ms 1-5000");
        return 0;
    }
    return 1;
}

static PyObject *media_poll_start(PyObject *self, PyObject *args) {
    unsigned cadence_ms;
    if (!parse_cadence(args, &cadence_ms))
        return NULL;
    if (!on_pj_thread())
        return NULL;
    if (mp.running) {
        PyErr_SetString(PyExc_RuntimeError, "the media poller is already running");
        return NULL;
    }
    void *endpt = lib.get_med_endpt();
    if (endpt == NULL || lib.med_thread_count(endpt) == 0) {
        PyErr_SetString(PyExc_RuntimeError, "PJSIP's media endpoint has no thread to replace (medConfig.threadCnt)");
        return NULL;
    }
    if (!mp.cond_ready) {
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&mp.wake, &attr);
        pthread_condattr_destroy(&attr);
        mp.cond_ready = 1;
    }
    int status;
    Py_BEGIN_ALLOW_THREADS
    lib.med_stop_threads(endpt); /* joins PJSIP's media thread; libDestroy skips it afterwards */
    mp.ioqueue = lib.med_ioqueue(endpt);
    mp.pool = lib.pool_create("mediapoll", 512, 512);
    mp.quit = 0;
    mp.cadence_ms = cadence_ms;
    status = mp.pool == NULL ? -1 : lib.thread_create(mp.pool, "media", media_poll_main, NULL, 0, 0, &mp.thread);
    Py_END_ALLOW_THREADS
    if (status != 0) {
        /* PJSIP's own thread is gone: without a poller RTP would not be read at all */
        PyErr_Format(PyExc_RuntimeError, "the media poller did not start (status %d): RTP is not read", status);
        return NULL;
    }
    mp.running = 1;
    Py_RETURN_NONE;
}

static PyObject *media_poll_cadence(PyObject *self, PyObject *args) {
    unsigned cadence_ms;
    if (!parse_cadence(args, &cadence_ms))
        return NULL;
    if (!mp.running)
        Py_RETURN_FALSE;
    pthread_mutex_lock(&mp.lock);
    int changed = mp.cadence_ms != cadence_ms;
    mp.cadence_ms = cadence_ms;
    if (changed)
        pthread_cond_signal(&mp.wake); /* a call is coming: look at its socket now, not in a second */
    pthread_mutex_unlock(&mp.lock);
    Py_RETURN_TRUE;
}

static PyObject *media_poll_stop(PyObject *self, PyObject *unused) {
    if (!mp.running)
        Py_RETURN_NONE;
    if (!on_pj_thread())
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&mp.lock);
    mp.quit = 1;
    pthread_cond_signal(&mp.wake);
    pthread_mutex_unlock(&mp.lock);
    lib.thread_join(mp.thread);
    lib.thread_destroy(mp.thread);
    lib.pool_release(mp.pool);
    Py_END_ALLOW_THREADS
    mp.thread = mp.pool = NULL;
    mp.running = 0;
    Py_RETURN_NONE;
}

static PyObject *media_poll_stats(PyObject *self, PyObject *unused) {
    pthread_mutex_lock(&mp.lock);
    PyObject *out = Py_BuildValue("{s:O,s:I,s:K}", "running", mp.running ? Py_True : Py_False, "cadence_ms",
                                  mp.cadence_ms, "polls", mp.polls);
    pthread_mutex_unlock(&mp.lock);
    return out;
}

/* ---- the SIP guard --------------------------------------------------------------------------- */

/* pjsip_module, unchanged since PJSIP 1.0: a list member, name, id, priority, then the callbacks.
 * guard_probe_module() checks the head of it against the library before the real one goes in. */
typedef struct {
    void *prev, *next;
    pjstr_t name;
    int id;
    int priority;
    int (*load)(void *endpt);
    int (*start)(void);
    int (*stop)(void);
    int (*unload)(void);
    int (*on_rx_request)(void *rdata);
    int (*on_rx_response)(void *rdata);
    int (*on_tx_request)(void *tdata);
    int (*on_tx_response)(void *tdata);
    void (*on_tsx_state)(void *tsx, void *event);
} sip_module_t;

#define GUARD_PRIORITY 15      /* PJSIP_MOD_PRIORITY_TSX_LAYER - 1: before any transaction or dialog */
#define GUARD_SCAN_BYTES 8192  /* how far into pjsip_rx_data calibration looks for the message */
#define GUARD_REASON_BYTES 96

static struct {
    sip_module_t module;
    int registered;
    PyObject *check;           /* check(message: bytes) -> None | (status, reason) */
    unsigned char *probe;      /* the calibration request while calibrating */
    size_t probe_len;
    long off_buf;              /* measured offset of msg_info.msg_buf (its int len follows); -1 until then */
    unsigned long long seen, refused, unchecked;
    char reason[GUARD_REASON_BYTES];
} guard = {.off_buf = -1};

/* The request's bytes as rdata->msg_info (msg_buf, len) holds them at `offset`, or 0 when they do not
 * point back inside the rdata, before that field (where PJSIP keeps the packet it read). */
static int message_at(void *rdata, long offset, const char **text, int *len) {
    const char *base = rdata;
    const char *buf;
    int n;
    memcpy(&buf, base + offset, sizeof buf);
    memcpy(&n, base + offset + sizeof buf, sizeof n);
    if (buf < base || n <= 0 || buf + n > base + offset)
        return 0;
    *text = buf;
    *len = n;
    return 1;
}

/* The first field of the rdata that points at a message inside it is msg_info.msg_buf (tp_info and
 * pkt_info hold no pointer back into the struct before it); it counts only when those bytes are
 * exactly the probe the worker sent. Another request that comes first is passed on unchecked. */
static int guard_calibrate(void *rdata) {
    for (long offset = 8; offset < GUARD_SCAN_BYTES; offset += 8) {
        const char *text;
        int len;
        if (!message_at(rdata, offset, &text, &len))
            continue;
        if ((size_t)len == guard.probe_len && memcmp(text, guard.probe, guard.probe_len) == 0) {
            guard.off_buf = offset;
            PyMem_RawFree(guard.probe);
            guard.probe = NULL;
            return 1; /* the probe is ours: nobody answers it */
        }
        break;
    }
    guard.unchecked++;
    return 0;
}

static int guard_on_rx_request(void *rdata) {
    if (guard.off_buf < 0)
        return guard.probe != NULL ? guard_calibrate(rdata) : 0;
    const char *text;
    int len;
    if (!message_at(rdata, guard.off_buf, &text, &len)) {
        guard.unchecked++;
        return 0;
    }
    guard.seen++;
    int status = 0;
    /* Only the loop thread polls PJSIP's SIP socket, inside libHandleEvents, which released the GIL. */
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *verdict = PyObject_CallFunction(guard.check, "y#", text, (Py_ssize_t)len);
    const char *reason = NULL;
    if (verdict == NULL || (verdict != Py_None && !PyArg_ParseTuple(verdict, "is", &status, &reason))) {
        /* Fail closed: a check that breaks refuses the request, and says so in the log. */
        PyErr_WriteUnraisable(guard.check);
        status = 500;
        reason = "Server Internal Error";
    }
    if (status != 0)
        snprintf(guard.reason, sizeof guard.reason, "%s", reason != NULL ? reason : "Bad Request");
    Py_XDECREF(verdict);
    PyGILState_Release(gil);
    if (status == 0)
        return 0;
    guard.refused++;
    if (!(len >= 4 && memcmp(text, "ACK ", 4) == 0) && status >= 300 && status <= 699) { /* an ACK is never answered */
        pjstr_t phrase = {guard.reason, (long)strlen(guard.reason)};
        lib.respond_stateless(lib.get_endpt(), rdata, status, &phrase, NULL, NULL);
    }
    return 1;
}

static int guard_unload(void) {
    guard.registered = 0; /* libDestroy unregisters every module; no Python here */
    return 0;
}

static void *probe_endpt;
static int probe_started;
static int probe_load_refuses(void *endpt) { probe_endpt = endpt; return 1; }
static int probe_load_accepts(void *endpt) { probe_endpt = endpt; return 0; }
static int probe_start_refuses(void) { probe_started = 1; return 1; }

/* Register two throwaway modules that refuse to load or start (so neither stays registered) and see
 * PJSIP fill in the id and call load and start where this struct says they are. */
static const char *guard_probe_module(void *endpt) {
    static sip_module_t first, second;
    memset(&first, 0, sizeof first);
    first.name = (pjstr_t){"mod-hotline-probe-1", 19};
    first.id = -1;
    first.priority = GUARD_PRIORITY;
    first.load = probe_load_refuses;
    probe_endpt = NULL;
    if (lib.register_module(endpt, &first) == 0)
        return "a module whose load() failed was registered";
    if (probe_endpt != endpt || first.id < 0)
        return "pjsip_module's id and load() are not where expected";
    memset(&second, 0, sizeof second);
    second.name = (pjstr_t){"mod-hotline-probe-2", 19};
    second.id = -1;
    second.priority = GUARD_PRIORITY;
    second.load = probe_load_accepts;
    second.start = probe_start_refuses;
    probe_started = 0;
    if (lib.register_module(endpt, &second) == 0 || !probe_started)
        return "pjsip_module's start() is not where expected";
    return NULL;
}

static PyObject *sip_guard_start(PyObject *self, PyObject *args) {
    PyObject *check;
    const char *probe;
    Py_ssize_t probe_len;
    if (!PyArg_ParseTuple(args, "Oy#", &check, &probe, &probe_len))
        return NULL;
    if (!PyCallable_Check(check) || probe_len < 16) {
        PyErr_SetString(PyExc_ValueError, "sip_guard_start(check, probe): a callable and a whole probe request");
        return NULL;
    }
    if (!on_pj_thread())
        return NULL;
    if (guard.registered) {
        PyErr_SetString(PyExc_RuntimeError, "the SIP guard is already registered");
        return NULL;
    }
    void *endpt = lib.get_endpt();
    if (endpt == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "no SIP endpoint (libInit first)");
        return NULL;
    }
    const char *problem;
    Py_BEGIN_ALLOW_THREADS
    problem = guard_probe_module(endpt);
    Py_END_ALLOW_THREADS
    if (problem != NULL) {
        PyErr_Format(PyExc_RuntimeError, "unrecognised pjsip_module layout: %s", problem);
        return NULL;
    }
    unsigned char *copy = PyMem_RawMalloc((size_t)probe_len);
    if (copy == NULL)
        return PyErr_NoMemory();
    memcpy(copy, probe, (size_t)probe_len);
    PyMem_RawFree(guard.probe);
    guard.probe = copy;
    guard.probe_len = (size_t)probe_len;
    guard.off_buf = -1;
    guard.seen = guard.refused = guard.unchecked = 0;
    Py_XSETREF(guard.check, Py_NewRef(check));
    memset(&guard.module, 0, sizeof guard.module);
    guard.module.name = (pjstr_t){"mod-hotline-guard", 17};
    guard.module.id = -1;
    guard.module.priority = GUARD_PRIORITY;
    guard.module.unload = guard_unload;
    guard.module.on_rx_request = guard_on_rx_request;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = lib.register_module(endpt, &guard.module);
    Py_END_ALLOW_THREADS
    if (status != 0) {
        PyErr_Format(PyExc_RuntimeError, "pjsip_endpt_register_module failed (status %d)", status);
        return NULL;
    }
    guard.registered = 1;
    Py_RETURN_NONE;
}

static PyObject *sip_guard_stop(PyObject *self, PyObject *unused) {
    if (guard.registered) {
        if (!on_pj_thread())
            return NULL;
        void *endpt = lib.get_endpt();
        Py_BEGIN_ALLOW_THREADS
        if (endpt != NULL)
            lib.unregister_module(endpt, &guard.module);
        Py_END_ALLOW_THREADS
        guard.registered = 0;
    }
    Py_CLEAR(guard.check);
    PyMem_RawFree(guard.probe);
    guard.probe = NULL;
    Py_RETURN_NONE;
}

static PyObject *sip_guard_stats(PyObject *self, PyObject *unused) {
    return Py_BuildValue("{s:O,s:O,s:l,s:K,s:K,s:K}", "registered", guard.registered ? Py_True : Py_False,
                         "calibrated", guard.off_buf >= 0 ? Py_True : Py_False, "offset", guard.off_buf,
                         "seen", guard.seen, "refused", guard.refused, "unchecked", guard.unchecked);
}

/* ---- the Python type ------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    native_t *n;
    /* what close() kept of the stats, for reading afterwards */
    unsigned long long frames, dropped;
    double max_gap;
    PyObject *gaps;
} LivePort;

static int LivePort_init(LivePort *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"name", "clock_rate", "frame_usec", "capacity", NULL};
    const char *name;
    unsigned clock_rate, frame_usec, capacity;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sIII", keywords, &name, &clock_rate, &frame_usec, &capacity))
        return -1;
    if (self->n != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "LivePort already initialised");
        return -1;
    }
    if (clock_rate < 8000 || clock_rate > 48000 || frame_usec < 5000 || frame_usec > 100000 || capacity < 1 ||
        capacity > 1000000) {
        PyErr_SetString(PyExc_ValueError, "clock_rate 8000-48000, frame_usec 5000-100000, capacity 1-1000000");
        return -1;
    }
    if (!on_pj_thread())
        return -1;
    unsigned spf = (unsigned)((uint64_t)clock_rate * frame_usec / 1000000u);
    native_t *n = PyMem_RawCalloc(1, sizeof *n);
    if (n == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    pthread_mutex_init(&n->lock, NULL);
    n->frame_bytes = spf * 2;
    n->capacity = capacity;
    n->stamps = PyMem_RawCalloc(capacity, sizeof *n->stamps);
    n->sizes = PyMem_RawCalloc(capacity, sizeof *n->sizes);
    n->data = PyMem_RawCalloc(capacity, n->frame_bytes);
    n->gaps = PyMem_RawCalloc(GAPS_KEPT, sizeof *n->gaps);
    if (!n->stamps || !n->sizes || !n->data || !n->gaps) {
        free_native(n, 0);
        PyErr_NoMemory();
        return -1;
    }
    snprintf(n->name, sizeof n->name, "%s", name);
    pjstr_t pjname = {n->name, (long)strlen(n->name)};
    if (lib.info_init(n->port, &pjname, SIGNATURE, clock_rate, 1, 16, spf) != 0) {
        free_native(n, 0);
        PyErr_SetString(PyExc_RuntimeError, "pjmedia_port_info_init failed");
        return -1;
    }
    set_slot(n->port, lib.off_put, (void *)live_put_frame);
    set_slot(n->port, lib.off_get, (void *)live_get_frame);
    set_slot(n->port, lib.off_destroy, (void *)live_on_destroy);
    int status;
    Py_BEGIN_ALLOW_THREADS
    n->pool = lib.pool_create("liveport", 1024, 1024);
    status = n->pool == NULL ? -1 : lib.conf_add(n->pool, n->port, &n->slot);
    Py_END_ALLOW_THREADS
    if (n->pool == NULL) {
        free_native(n, 0);
        PyErr_NoMemory();
        return -1;
    }
    if (status != 0) {
        Py_BEGIN_ALLOW_THREADS
        free_native(n, 1);
        Py_END_ALLOW_THREADS
        PyErr_Format(PyExc_RuntimeError, "pjsua_conf_add_port failed (status %d)", status);
        return -1;
    }
    n->state = IN_BRIDGE;
    self->n = n;
    return 0;
}

static PyObject *LivePort_listen(LivePort *self, PyObject *args) {
    int source;
    if (!PyArg_ParseTuple(args, "i", &source))
        return NULL;
    if (self->n == NULL || self->n->state != IN_BRIDGE) {
        PyErr_SetString(PyExc_RuntimeError, "the port is closed");
        return NULL;
    }
    if (!on_pj_thread())
        return NULL;
    int status, slot = self->n->slot;
    /* Without the GIL: the bridge thread may hold PJSIP's locks while it waits for the GIL
     * (a player's end-of-file callback is Python). */
    Py_BEGIN_ALLOW_THREADS
    status = lib.conf_connect(source, slot);
    Py_END_ALLOW_THREADS
    if (status != 0) {
        PyErr_Format(PyExc_RuntimeError, "pjsua_conf_connect(%d, %d) failed (status %d)", source, self->n->slot, status);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *LivePort_drain(LivePort *self, PyObject *unused) {
    native_t *n = self->n;
    if (n == NULL)
        return PyList_New(0);
    /* Copy out under the lock (memcpy only), build Python objects after: the bridge never waits
     * on the interpreter. */
    pthread_mutex_lock(&n->lock);
    unsigned count = n->count;
    double *stamps = count ? PyMem_RawMalloc(count * sizeof *stamps) : NULL;
    uint32_t *sizes = count ? PyMem_RawMalloc(count * sizeof *sizes) : NULL;
    unsigned char *data = count ? PyMem_RawMalloc((size_t)count * n->frame_bytes) : NULL;
    if (count && (!stamps || !sizes || !data)) {
        pthread_mutex_unlock(&n->lock);
        PyMem_RawFree(stamps);
        PyMem_RawFree(sizes);
        PyMem_RawFree(data);
        return PyErr_NoMemory();
    }
    for (unsigned i = 0; i < count; i++) {
        unsigned index = (n->head + i) % n->capacity;
        stamps[i] = n->stamps[index];
        sizes[i] = n->sizes[index];
        memcpy(data + (size_t)i * n->frame_bytes, n->data + (size_t)index * n->frame_bytes, sizes[i]);
    }
    n->head = (n->head + count) % n->capacity;
    n->count = 0;
    unsigned frame_bytes = n->frame_bytes;
    pthread_mutex_unlock(&n->lock);
    PyObject *out = PyList_New(count);
    for (unsigned i = 0; out != NULL && i < count; i++) {
        PyObject *item = Py_BuildValue("(dy#)", stamps[i], data + (size_t)i * frame_bytes, (Py_ssize_t)sizes[i]);
        if (item == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, item);
    }
    PyMem_RawFree(stamps);
    PyMem_RawFree(sizes);
    PyMem_RawFree(data);
    return out;
}

static PyObject *gaps_list(const float *gaps, unsigned count) {
    PyObject *out = PyList_New(count);
    for (unsigned i = 0; out != NULL && i < count; i++) {
        PyObject *value = PyFloat_FromDouble(gaps[i]);
        if (value == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, value);
    }
    return out;
}

/* (frames, dropped, max_gap seconds, [gaps in seconds, oldest first]) */
static PyObject *LivePort_stats(LivePort *self, PyObject *unused) {
    native_t *n = self->n;
    if (n == NULL)
        return Py_BuildValue("(KKdO)", self->frames, self->dropped, self->max_gap,
                             self->gaps ? self->gaps : Py_None);
    /* Copied under the lock, turned into Python objects after: allocating (and so perhaps a GC
     * running finalizers that call into PJSIP) while the bridge waits on this lock could deadlock. */
    float *copy = PyMem_RawMalloc(GAPS_KEPT * sizeof *copy);
    if (copy == NULL)
        return PyErr_NoMemory();
    pthread_mutex_lock(&n->lock);
    unsigned long long frames = n->frames, dropped = n->dropped;
    double max_gap = n->max_gap;
    unsigned count = n->gap_count;
    for (unsigned i = 0; i < count; i++)
        copy[i] = n->gaps[(n->gap_head + i) % GAPS_KEPT];
    pthread_mutex_unlock(&n->lock);
    PyObject *gaps = gaps_list(copy, count);
    PyMem_RawFree(copy);
    if (gaps == NULL)
        return NULL;
    return Py_BuildValue("(KKdN)", frames, dropped, max_gap, gaps);
}

static PyObject *LivePort_close(LivePort *self, PyObject *unused) {
    native_t *n = self->n;
    if (n == NULL)
        Py_RETURN_NONE;
    if (!on_pj_thread())
        return NULL;
    PyObject *stats = LivePort_stats(self, NULL);
    if (stats == NULL)
        return NULL;
    PyObject *gaps = NULL;
    if (!PyArg_ParseTuple(stats, "KKdO", &self->frames, &self->dropped, &self->max_gap, &gaps)) {
        Py_DECREF(stats);
        return NULL;
    }
    Py_XSETREF(self->gaps, Py_NewRef(gaps));
    Py_DECREF(stats);
    Py_BEGIN_ALLOW_THREADS
    lib.conf_remove(n->slot);  /* asynchronous: the bridge lets go on its clock thread */
    lib.port_destroy(n->port); /* our reference; on_destroy comes with the last one */
    Py_END_ALLOW_THREADS
    n->state = CLOSED;
    self->n = NULL;
    bury(n);
    Py_RETURN_NONE;
}

static PyObject *LivePort_get_slot(LivePort *self, void *closure) {
    if (self->n == NULL)
        return PyLong_FromLong(-1);
    return PyLong_FromLong(self->n->slot);
}

static void LivePort_dealloc(LivePort *self) {
    native_t *n = self->n;
    if (n != NULL) {
        /* Dropped without close(): it may still be in the bridge, so its memory can only go once
         * the library is gone (reap(library_gone=True)); it is never freed under the bridge. */
        n->state = CLOSED;
        bury(n);
        n->closed_at = 1e300;
        self->n = NULL;
    }
    Py_XDECREF(self->gaps);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef LivePort_methods[] = {
    {"listen", (PyCFunction)LivePort_listen, METH_VARARGS, "listen(source_slot): hear a conference port"},
    {"drain", (PyCFunction)LivePort_drain, METH_NOARGS, "the frames so far: [(monotonic time, bytes)]"},
    {"stats", (PyCFunction)LivePort_stats, METH_NOARGS, "(frames, dropped, max_gap, gaps)"},
    {"close", (PyCFunction)LivePort_close, METH_NOARGS, "out of the bridge; the stats are kept"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef LivePort_getset[] = {
    {"slot", (getter)LivePort_get_slot, NULL, "the conference slot (-1 once closed)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject LivePortType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gateway.voice._pjnative.LivePort",
    .tp_basicsize = sizeof(LivePort),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "LivePort(name, clock_rate, frame_usec, capacity): a bridge sink ringing its frames",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)LivePort_init,
    .tp_dealloc = (destructor)LivePort_dealloc,
    .tp_methods = LivePort_methods,
    .tp_getset = LivePort_getset,
};

static PyMethodDef module_methods[] = {
    {"bind", bind_library, METH_VARARGS, "bind(path of the loaded _pjsua2 module): find PJSIP, measure its port layout"},
    {"layout", layout, METH_NOARGS, "the measured pjmedia_port offsets, or None before bind()"},
    {"reap", (PyCFunction)(void (*)(void))reap, METH_VARARGS | METH_KEYWORDS,
     "free closed ports PJSIP is done with; returns how many still wait"},
    {"check_timers", check_timers, METH_NOARGS, "verify the timer heap reader (a timer must be scheduled)"},
    {"next_timer", next_timer, METH_NOARGS, "seconds until PJSIP's earliest SIP timer, or None"},
    {"media_poll_start", media_poll_start, METH_VARARGS, "media_poll_start(cadence_ms): replace PJSIP's media thread"},
    {"media_poll_cadence", media_poll_cadence, METH_VARARGS, "media_poll_cadence(ms): change it (wakes the poller)"},
    {"media_poll_stop", media_poll_stop, METH_NOARGS, "stop the poller (before libDestroy)"},
    {"media_poll_stats", media_poll_stats, METH_NOARGS, "{running, cadence_ms, polls}"},
    {"sip_guard_start", sip_guard_start, METH_VARARGS,
     "sip_guard_start(check, probe): check(bytes) -> None | (status, reason) for every request; send probe to calibrate"},
    {"sip_guard_stop", sip_guard_stop, METH_NOARGS, "unregister the SIP guard (before libDestroy)"},
    {"sip_guard_stats", sip_guard_stats, METH_NOARGS, "{registered, calibrated, offset, seen, refused, unchecked}"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "gateway.voice._pjnative", "Native helpers beside the pjsua2 wheel: live audio off PJSIP's bridge without the GIL.", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__pjnative(void) {
    if (PyType_Ready(&LivePortType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&LivePortType);
    if (PyModule_AddObject(m, "LivePort", (PyObject *)&LivePortType) < 0) {
        Py_DECREF(&LivePortType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
