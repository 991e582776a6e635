/*
 * The scheduling timeline: GREEN_TRACE=path records what each worker does
 * -- which green thread runs when, spawns, parks (the call and the object)
 * and wakes (by whom), preemptions and refusals, steals, netpoll wakes and
 * offloads -- and writes it when green_run returns, as Chrome trace-event
 * JSON (trace_json.c) that ui.perfetto.dev and chrome://tracing open.
 *
 * Recording (trace.h has the records and the rings): each worker of a
 * traced run has its own rings, mmap'd here at the start with
 * MAP_NORESERVE (only what is written costs memory), GREEN_TRACE_EVENTS
 * records each (default 256k, 8 MiB of address space; a power of two).
 * A full ring keeps the newest records: the JSON starts where every
 * worker still has all of its own, and says how many were dropped (so
 * does one line on stderr).
 *
 * Time is the TSC (constant and in step across CPUs on every x86-64 Linux
 * marks as constant_tsc): one rdtsc per event, never a system call.  The
 * TSC and CLOCK_MONOTONIC are read together at the start and at the end,
 * which turns the TSC into microseconds.
 *
 * The file is opened at the start: a path that cannot be written makes
 * green_run fail at once (its errno, one line on stderr naming the path),
 * never after the program has run.  Each traced green_run writes the file
 * anew.
 *
 * Rejected: one buffer for the whole run (an atomic add per event, and a
 * cache line that every worker writes); a clock_gettime per event (the
 * vDSO's is several times an rdtsc); writing records to the file as a ring
 * fills (a write(2) inside the switch, or a thread of its own to hand them
 * to -- the rings and one write at the end cost neither).
 */
#include "sched.h"
#include "trace.h"

#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define GREEN_TRACE_DEFAULT_EVENTS (1u << 18)
#define GREEN_TRACE_MIN_EVENTS (1u << 10)
#define GREEN_TRACE_MAX_EVENTS (1u << 26)
#define GREEN_TRACE_SIG_EVENTS (1u << 12)   /* refusals per worker */

/* GREEN_TRACE_EVENTS: a count, with an optional k or m (times 1024). */
static bool parse_events(const char *s, uint64_t *out)
{
    if (!isdigit((unsigned char)*s))
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return false;
    if (*end == 'k' || *end == 'K')
        v <<= 10, end++;
    else if (*end == 'm' || *end == 'M')
        v <<= 20, end++;
    if (*end || v < GREEN_TRACE_MIN_EVENTS || v > GREEN_TRACE_MAX_EVENTS)
        return false;
    uint64_t p = GREEN_TRACE_MIN_EVENTS;
    while (p < v)
        p <<= 1;
    *out = p;
    return true;
}

static void rings_unmap(struct green__rt *rt, size_t size)
{
    for (unsigned i = 0; i < rt->nworkers; i++) {
        struct green__worker *w = &rt->workers[i];
        if (w->trace)
            munmap(w->trace, size);
        w->trace = NULL;
    }
}

/* Each worker's region: its struct green__trace_w, then the ev ring, then
 * the sig ring. */
static int rings_map(struct green__rt *rt, uint64_t events)
{
    size_t head = (sizeof(struct green__trace_w) + 63) & ~(size_t)63;
    size_t size = head + (events + GREEN_TRACE_SIG_EVENTS) * sizeof(struct green__trace_rec);
    for (unsigned i = 0; i < rt->nworkers; i++) {
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) {
            rings_unmap(rt, size);
            return ENOMEM;
        }
        struct green__trace_w *tw = p;
        tw->ev.rec = (struct green__trace_rec *)(void *)((char *)p + head);
        tw->ev.mask = events - 1;
        tw->sig.rec = tw->ev.rec + events;
        tw->sig.mask = GREEN_TRACE_SIG_EVENTS - 1;
        rt->workers[i].trace = tw;
    }
    rt->trace->map_size = size;
    return 0;
}

static void say(const char *name, const char *value, const char *why)
{
    fprintf(stderr, "libgreen: %s=\"%s\": %s\n", name, value, why);
}

int green__trace_start(struct green__rt *rt)
{
    const char *path = getenv("GREEN_TRACE");
    if (!path || !*path)
        return 0;
    uint64_t events = GREEN_TRACE_DEFAULT_EVENTS;
    const char *s = getenv("GREEN_TRACE_EVENTS");
    if (s && *s && !parse_events(s, &events)) {
        say("GREEN_TRACE_EVENTS", s, "expected records per worker from 1k to 64m "
                                     "(a number, or with a k or m suffix)");
        return EINVAL;
    }
    struct green__trace *tr = calloc(1, sizeof *tr);
    if (!tr || !(tr->path = strdup(path))) {
        free(tr);
        return ENOMEM;
    }
    tr->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (tr->fd < 0) {
        /* open(2)'s error: ENOENT, EACCES, EISDIR, EROFS, ... */
        int err = errno;
        say("GREEN_TRACE", path, strerror(err));
        free(tr->path);
        free(tr);
        return err;
    }
    tr->events = events;
    rt->trace = tr;
    int err = rings_map(rt, events);
    if (err) {
        say("GREEN_TRACE", path, "no memory for the trace's rings (GREEN_TRACE_EVENTS)");
        green__sys_close(tr->fd);
        free(tr->path);
        free(tr);
        rt->trace = NULL;
        return err;
    }
    tr->ns0 = green__clock_ns();
    tr->tsc0 = __rdtsc();
    return 0;
}

void green__trace_finish(struct green__rt *rt)
{
    struct green__trace *tr = rt->trace;
    if (!tr)
        return;
    tr->ns1 = green__clock_ns();
    tr->tsc1 = __rdtsc();
    int err = green__trace_json(rt, tr);
    /* Cut what a run that ended before this one, with the same file, wrote
     * past this one's end: the last run to end has the file to itself. */
    struct stat st;
    off_t end = lseek(tr->fd, 0, SEEK_CUR);
    if (!err && end >= 0 && fstat(tr->fd, &st) == 0 && S_ISREG(st.st_mode) &&
        ftruncate(tr->fd, end) != 0)
        err = errno;
    if (err)
        say("GREEN_TRACE", tr->path, strerror(err));
    green__sys_close(tr->fd);
    rings_unmap(rt, tr->map_size);
    rt->trace = NULL;
    free(tr->path);
    free(tr);
}

void green__trace_ev(struct green__worker *w, unsigned kind, uint64_t tid, uint64_t a,
                     uint64_t b)
{
    green__trace_put(&w->trace->ev, __rdtsc(), kind, tid, a, b);
}

/* A thread that parks has just read the TSC (green__park): its switch
 * away, a few instructions later, is dated by that read instead of a new
 * one -- an rdtsc is the most of an event's cost (about 17 ns in the VMs
 * this was measured on, more than a whole yield). */
struct green__worker *green__trace_switch(struct green__worker *w)
{
    struct green__thread *from = w->prev;
    uint64_t now = from->trace_parking ? from->parked_tsc : __rdtsc();
    from->trace_parking = false;
    green__trace_put(&w->trace->ev, now, GREEN_TR_SWITCH, w->cur->id, from->id, 0);
    return w;
}

void green__trace_name(struct green__worker *w, struct green__thread *t)
{
    if (GREEN_LIKELY(!w->trace))
        return;
    uint64_t now = __rdtsc();
    const char *name = green__cold(t)->name;   /* t: the caller */
    for (uint64_t off = 0; off < GREEN_NAME_MAX; off += 8) {
        uint64_t chunk;
        memcpy(&chunk, name + off, 8);
        green__trace_put(&w->trace->ev, now, GREEN_TR_NAME, t->id, chunk, off);
        if (memchr(name + off, 0, 8))
            break;
    }
}
