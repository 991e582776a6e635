/*
 * The timeline's file (trace.c records it): the workers' records, merged
 * in time, as Chrome trace-event JSON -- the format chrome://tracing reads
 * and ui.perfetto.dev opens as it is.
 *
 * Two processes, each a group of tracks:
 *   pid 1 "workers"        a track per worker (tid = its index): a
 *                          complete ("X") slice for each stretch a green
 *                          thread ran there, named by the thread; instants
 *                          for steals and netpoll wakes.
 *   pid 2 "green threads"  a track per green thread (tid = its id), named
 *                          "id name": its running slices ("run on worker
 *                          N"), its parked stretches ("parked: call", with
 *                          the object and the waker), and instants for
 *                          spawn, park, wake, preemption, refusal,
 *                          offload and exit.
 *
 * Invariants the test checks (tests/trace_check.py): the slices of one
 * worker never overlap (a worker's switches are stamped in its own order;
 * any two that the TSC reads out of order are put in order here); every
 * park instant is followed by a wake of the same thread, or the trace ends
 * with the thread parked.
 *
 * When a ring wrapped, the trace starts at the latest first record of the
 * wrapped rings: from there on every worker's records are all there, and
 * nothing is matched against a record that was lost.  Memory for the
 * merge is malloc'd: this runs after the workers have stopped.
 */
#include "dump.h"
#include "trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct item {
    uint64_t ts;                     /* TSC */
    uint64_t seq;                    /* the worker's order, for equal ts */
    const struct green__trace_rec *r;
    uint32_t w;
};

/* What the merge knows of one green thread. */
struct tinfo {
    uint64_t id;                     /* 0: an empty slot */
    char name[GREEN_NAME_MAX];
    bool parked;
    uint64_t park_ts;
    const char *what;
    uint64_t obj;
};

struct tmap {
    struct tinfo *v;
    size_t cap, n;
};

/* id's entry, made if new; NULL for 0 (the scheduler loop is no thread)
 * or without memory. */
static struct tinfo *tmap_get(struct tmap *m, uint64_t id)
{
    if (!id)
        return NULL;
    if (2 * (m->n + 1) > m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 1024;
        struct tinfo *v = calloc(cap, sizeof *v);
        if (!v)
            return NULL;
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->v[i].id)
                continue;
            size_t j = (m->v[i].id * 0x9e3779b97f4a7c15ull >> 17) & (cap - 1);
            while (v[j].id)
                j = (j + 1) & (cap - 1);
            v[j] = m->v[i];
        }
        free(m->v);
        m->v = v;
        m->cap = cap;
    }
    size_t j = (id * 0x9e3779b97f4a7c15ull >> 17) & (m->cap - 1);
    while (m->v[j].id && m->v[j].id != id)
        j = (j + 1) & (m->cap - 1);
    if (!m->v[j].id) {
        m->v[j].id = id;
        m->n++;
    }
    return &m->v[j];
}

static unsigned kind_of(const struct green__trace_rec *r) { return (unsigned)(r->tk >> 56); }

/* Time order; at one time stamp a park first (its wake may carry the same
 * stamp, from another worker), then each worker's own order. */
static int by_time(const void *x, const void *y)
{
    const struct item *a = x, *b = y;
    if (a->ts != b->ts)
        return a->ts < b->ts ? -1 : 1;
    bool pa = kind_of(a->r) == GREEN_TR_PARK, pb = kind_of(b->r) == GREEN_TR_PARK;
    if (pa != pb)
        return pa ? -1 : 1;
    if (a->w != b->w)
        return a->w < b->w ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* Every record kept, in time order; *dropped: those overwritten. */
static struct item *gather(struct green__rt *rt, size_t *np,
                           uint64_t *dropped, uint64_t *cut)
{
    size_t total = 0;
    *dropped = 0;
    *cut = 0;
    for (unsigned i = 0; i < rt->nworkers; i++) {
        const struct green__trace_w *tw = rt->workers[i].trace;
        const struct green__trace_ring *rings[2] = { &tw->ev, &tw->sig };
        for (int k = 0; k < 2; k++) {
            uint64_t cap = rings[k]->mask + 1, head = rings[k]->head;
            total += head < cap ? head : cap;
            *dropped += head > cap ? head - cap : 0;
        }
    }
    struct item *v = malloc((total ? total : 1) * sizeof *v);
    if (!v)
        return NULL;
    size_t n = 0;
    for (unsigned i = 0; i < rt->nworkers; i++) {
        const struct green__trace_w *tw = rt->workers[i].trace;
        const struct green__trace_ring *rings[2] = { &tw->ev, &tw->sig };
        for (int k = 0; k < 2; k++) {
            const struct green__trace_ring *rg = rings[k];
            uint64_t cap = rg->mask + 1, head = rg->head;
            uint64_t first = head > cap ? head - cap : 0, last_switch = 0, lo = UINT64_MAX;
            for (uint64_t s = first; s < head; s++) {
                const struct green__trace_rec *r = &rg->rec[s & rg->mask];
                uint64_t ts = r->tk & GREEN_TR_TSC_MASK;
                if (kind_of(r) == GREEN_TR_SWITCH) {
                    if (ts < last_switch)
                        ts = last_switch;
                    last_switch = ts;
                }
                if (ts < lo)
                    lo = ts;
                v[n++] = (struct item){ ts, s + ((uint64_t)k << 62), r, i };
            }
            /* The ev ring lost its oldest: nothing before its first is
             * complete anywhere.  (A wrapped sig ring only lost refusals.) */
            if (k == 0 && head > cap && lo > *cut)
                *cut = lo;
        }
    }
    qsort(v, n, sizeof *v, by_time);
    *np = n;
    return v;
}

/* ---- Writing ------------------------------------------------------------ */

struct jw {
    struct green__out o;
    bool first;
    double scale;                    /* microseconds per TSC tick */
    uint64_t tsc0;
    struct tmap threads;
};

static double us(const struct jw *j, uint64_t tsc)
{
    return tsc > j->tsc0 ? (double)(tsc - j->tsc0) * j->scale : 0.0;
}

/* A JSON string's body: s, escaped. */
static void put_str(struct jw *j, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            green__outf(&j->o, "\\%c", c);
        else if (c < 0x20)
            green__outf(&j->o, "\\u%04x", c);
        else
            green__outf(&j->o, "%c", c);
    }
}

/* Open an event: `{"ph":"..","pid":..,"tid":..,"ts":..,"name":"`; the
 * caller writes the name's rest and closes it. */
static void ev_open(struct jw *j, const char *ph, int pid, uint64_t tid, uint64_t ts)
{
    green__outf(&j->o, "%s\n{\"ph\":\"%s\",\"pid\":%d,\"tid\":%llu,\"ts\":%.3f,\"name\":\"",
                j->first ? "" : ",", ph, pid, (unsigned long long)tid, us(j, ts));
    j->first = false;
}

/* "12 fetcher", or "12". */
static void put_thread(struct jw *j, uint64_t id)
{
    struct tinfo *t = tmap_get(&j->threads, id);
    green__outf(&j->o, "%llu", (unsigned long long)id);
    if (t && t->name[0]) {
        green__outf(&j->o, " ");
        put_str(j, t->name);
    }
}

static void put_waker(struct jw *j, uint64_t by)
{
    if (by == GREEN_TR_BY_OUTSIDE)
        green__outf(&j->o, "\"by\":\"another OS thread\"");
    else if (by == GREEN_TR_BY_TIMER)
        green__outf(&j->o, "\"by\":\"timer\"");
    else if (by == GREEN_TR_BY_NETPOLL)
        green__outf(&j->o, "\"by\":\"netpoll\"");
    else if (by == 0)
        green__outf(&j->o, "\"by\":\"scheduler\"");
    else {
        green__outf(&j->o, "\"by\":\"");
        put_thread(j, by);
        green__outf(&j->o, "\",\"by_thread\":%llu", (unsigned long long)by);
    }
}

static void instant(struct jw *j, int pid, uint64_t tid, uint64_t ts, const char *name)
{
    ev_open(j, "i", pid, tid, ts);
    green__outf(&j->o, "%s\",\"s\":\"t\",\"args\":{", name);
}

static void slice_end(struct jw *j, unsigned w, uint64_t tid, uint64_t from, uint64_t to)
{
    ev_open(j, "X", 1, w, from);
    put_thread(j, tid);
    green__outf(&j->o, "\",\"dur\":%.3f,\"args\":{\"thread\":%llu}}", us(j, to) - us(j, from),
                (unsigned long long)tid);
    ev_open(j, "X", 2, tid, from);
    green__outf(&j->o, "run on worker %u\",\"dur\":%.3f,\"args\":{\"worker\":%u}}", w,
                us(j, to) - us(j, from), w);
}

static void parked_end(struct jw *j, uint64_t tid, struct tinfo *t, uint64_t to, bool woken,
                       uint64_t by, uint64_t err)
{
    ev_open(j, "X", 2, tid, t->park_ts);
    green__outf(&j->o, "parked: ");
    put_str(j, t->what);
    green__outf(&j->o, "\",\"dur\":%.3f,\"args\":{\"object\":\"%#llx\",", us(j, to) - us(j, t->park_ts),
                (unsigned long long)t->obj);
    if (woken)
        put_waker(j, by);
    else
        green__outf(&j->o, "\"by\":\"nobody: the trace ends\"");
    if (err)
        green__outf(&j->o, ",\"outcome\":\"%s\"", strerrorname_np((int)err) ? strerrorname_np((int)err) : "?");
    green__outf(&j->o, "}}");
    t->parked = false;
}

static const char *preempt_how(uint64_t a)
{
    switch (a) {
    case GREEN_TR_BY_SIGNAL: return "signal";
    case GREEN_TR_ON_WAY_OUT: return "on the way out";
    case GREEN_TR_AT_POLL: return "at a call into libgreen";
    case GREEN_TR_BUDGET: return "budget";
    default: return "?";
    }
}

/* One record (the slices and parks need the state kept in cur, slice0 and
 * the threads' map). */
static void emit(struct jw *j, const struct item *it, uint64_t *cur, uint64_t *slice0)
{
    const struct green__trace_rec *r = it->r;
    unsigned w = it->w;
    struct tinfo *t;
    switch (kind_of(r)) {
    case GREEN_TR_SWITCH:
        if (cur[w] && slice0[w])
            slice_end(j, w, cur[w], slice0[w], it->ts);
        cur[w] = r->tid;
        slice0[w] = it->ts;
        break;
    case GREEN_TR_SPAWN:
        instant(j, 2, r->tid, it->ts, "spawn");
        if (r->a)
            put_waker(j, r->a);
        green__outf(&j->o, "}}");
        break;
    case GREEN_TR_EXIT:
        instant(j, 2, r->tid, it->ts, "exit");
        green__outf(&j->o, "}}");
        break;
    case GREEN_TR_PARK:
        if (!(t = tmap_get(&j->threads, r->tid)))
            break;
        t->parked = true;
        t->park_ts = it->ts;
        t->what = r->a ? (const char *)(uintptr_t)r->a : "park";
        t->obj = r->b;
        instant(j, 2, r->tid, it->ts, "park");
        green__outf(&j->o, "\"call\":\"");
        put_str(j, t->what);
        green__outf(&j->o, "\",\"object\":\"%#llx\"}}", (unsigned long long)r->b);
        break;
    case GREEN_TR_WAKE:
        if ((t = tmap_get(&j->threads, r->tid)) && t->parked)
            parked_end(j, r->tid, t, it->ts, true, r->a, r->b);
        instant(j, 2, r->tid, it->ts, "wake");
        put_waker(j, r->a);
        green__outf(&j->o, "}}");
        break;
    case GREEN_TR_PREEMPT:
        instant(j, 2, r->tid, it->ts, "preempt");
        green__outf(&j->o, "\"how\":\"%s\",\"worker\":%u}}", preempt_how(r->a), w);
        break;
    case GREEN_TR_REFUSE:
        instant(j, 2, r->tid, it->ts, "refused");
        green__outf(&j->o, "\"why\":\"");
        put_str(j, r->a ? (const char *)(uintptr_t)r->a : "?");
        green__outf(&j->o, "\",\"worker\":%u}}", w);
        break;
    case GREEN_TR_STEAL:
        instant(j, 1, w, it->ts, "steal");
        green__outf(&j->o, "\"thread\":%llu,\"victim\":%llu}}", (unsigned long long)r->tid,
                    (unsigned long long)r->a);
        break;
    case GREEN_TR_NETPOLL:
        instant(j, 1, w, it->ts, "netpoll");
        green__outf(&j->o, "\"woken\":%llu}}", (unsigned long long)r->a);
        break;
    case GREEN_TR_HANDOFF:
        instant(j, 1, w, it->ts, "handoff");
        green__outf(&j->o, "\"holder\":%llu}}", (unsigned long long)r->tid);
        break;
    case GREEN_TR_OFFLOAD:
        instant(j, 2, r->tid, it->ts, "offload");
        green__outf(&j->o, "\"fn\":\"%#llx\"}}", (unsigned long long)r->a);
        break;
    default:
        break;
    }
}

static void metadata(struct jw *j, unsigned nworkers)
{
    static const char *const procs[2] = { "workers", "green threads" };
    for (int p = 0; p < 2; p++) {
        green__outf(&j->o, "%s\n{\"ph\":\"M\",\"pid\":%d,\"name\":\"process_name\","
                           "\"args\":{\"name\":\"%s\"}},\n"
                           "{\"ph\":\"M\",\"pid\":%d,\"name\":\"process_sort_index\","
                           "\"args\":{\"sort_index\":%d}}",
                    j->first ? "" : ",", p + 1, procs[p], p + 1, p + 1);
        j->first = false;
    }
    for (unsigned i = 0; i < nworkers; i++)
        green__outf(&j->o, ",\n{\"ph\":\"M\",\"pid\":1,\"tid\":%u,\"name\":\"thread_name\","
                           "\"args\":{\"name\":\"worker %u\"}}", i, i);
    for (size_t i = 0; i < j->threads.cap; i++) {
        const struct tinfo *t = &j->threads.v[i];
        if (!t->id)
            continue;
        green__outf(&j->o, ",\n{\"ph\":\"M\",\"pid\":2,\"tid\":%llu,\"name\":\"thread_name\","
                           "\"args\":{\"name\":\"",
                    (unsigned long long)t->id);
        put_thread(j, t->id);
        green__outf(&j->o, "\"}},\n{\"ph\":\"M\",\"pid\":2,\"tid\":%llu,"
                           "\"name\":\"thread_sort_index\",\"args\":{\"sort_index\":%llu}}",
                    (unsigned long long)t->id, (unsigned long long)t->id);
    }
}

int green__trace_json(struct green__rt *rt, struct green__trace *tr)
{
    size_t n;
    uint64_t dropped, cut;
    struct item *v = gather(rt, &n, &dropped, &cut);
    uint64_t *cur = calloc(rt->nworkers, sizeof *cur);
    uint64_t *slice0 = calloc(rt->nworkers, sizeof *slice0);
    struct jw *j = calloc(1, sizeof *j);
    int err = ENOMEM;
    if (!v || !cur || !slice0 || !j)
        goto out;
    j->o.fd = tr->fd;
    j->first = true;
    j->tsc0 = tr->tsc0;
    j->scale = tr->tsc1 > tr->tsc0 ? (double)(tr->ns1 - tr->ns0) / 1e3 / (double)(tr->tsc1 - tr->tsc0)
                                   : 1e-3;
    /* First the names, as each thread last set it. */
    for (size_t i = 0; i < n; i++) {
        const struct green__trace_rec *r = v[i].r;
        struct tinfo *t = tmap_get(&j->threads, r->tid);
        if (t && kind_of(r) == GREEN_TR_NAME && r->b + 8 <= GREEN_NAME_MAX)
            memcpy(t->name + r->b, &r->a, 8);
    }
    green__outf(&j->o, "{\"displayTimeUnit\":\"ns\",\"otherData\":{\"generator\":\"libgreen "
                       "GREEN_TRACE\",\"workers\":%u,\"events_per_worker\":%llu,"
                       "\"dropped_events\":%llu,\"starts_at_us\":%.3f},\n\"traceEvents\":[",
                rt->nworkers, (unsigned long long)tr->events, (unsigned long long)dropped,
                us(j, cut));
    size_t i = 0;
    while (i < n && v[i].ts < cut)
        i++;
    for (; i < n; i++)
        emit(j, &v[i], cur, slice0);
    uint64_t end = tr->tsc1;
    for (unsigned w = 0; w < rt->nworkers; w++)
        if (cur[w] && slice0[w])
            slice_end(j, w, cur[w], slice0[w], end > slice0[w] ? end : slice0[w]);
    for (size_t k = 0; k < j->threads.cap; k++) {
        struct tinfo *t = &j->threads.v[k];
        if (t->id && t->parked)
            parked_end(j, t->id, t, end > t->park_ts ? end : t->park_ts, false, 0, 0);
    }
    metadata(j, rt->nworkers);
    green__outf(&j->o, "\n]}\n");
    green__out_flush(&j->o);
    err = j->o.err;
    if (dropped)
        fprintf(stderr, "libgreen: GREEN_TRACE=\"%s\": %llu events dropped, the oldest: the "
                        "timeline starts %.3f ms into the run (GREEN_TRACE_EVENTS=%llu per "
                        "worker now)\n",
                tr->path, (unsigned long long)dropped, us(j, cut) / 1e3,
                (unsigned long long)tr->events);
out:
    if (j)
        free(j->threads.v);
    free(j);
    free(slice0);
    free(cur);
    free(v);
    return err;
}
