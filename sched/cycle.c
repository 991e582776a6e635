/*
 * Lock cycles, found when they form: green threads each holding a lock
 * that the next one waits for, around to the first.  Go reports a
 * deadlock only when every goroutine sleeps; here the rest of the program
 * goes on, so a cycle among a few threads would stay unseen for good.
 *
 * Who waits for what.  A green thread that is about to park on a green
 * mutex or an interposed pthread mutex publishes the lock in its control
 * block (t->lockwait: the address, with GREEN_LW_* kind bits) and keeps it
 * there until it has the lock or gives up.  Then it follows the chain
 * (green__lockwait_begin): the lock's holder; if that holder waits for a
 * lock too, that lock's holder; and so on.  A chain that comes back to the
 * caller is a cycle.  The caller is the last to join its cycle, or one of
 * two joining at once: both publish before they look (sequentially
 * consistent), so at least one sees the other.
 *
 * Why a cycle seen is a cycle.  The chain is read while the others run, so
 * what it found may be gone.  It is checked again backwards, each link
 * after the one it leans on: the caller holds the last lock (it is the
 * caller); so the thread waiting for that lock, seen still waiting, waits
 * for good; so a lock it is seen to hold, it holds for good; so the thread
 * waiting for that one waits for good... back to the lock the caller waits
 * for.  A member whose wait has a deadline may give up: a chain through
 * one is no cycle (the caller's own wait may have one).
 *
 * Holders are found by holder.c.
 *
 * What then (cfg.deadlock, GREEN_DEADLOCK): report the cycle on stderr --
 * each thread, the lock it holds and the one it waits for, its backtrace
 * -- once per cycle; with GREEN_DEADLOCK_ERROR the call that closed it
 * returns EDEADLK as well.  The report waits (10 ms at most) for the other
 * members to leave their CPUs, then unwinds their stacks: they cannot run
 * while the caller holds their locks.
 */
#include "dump.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define CYCLE_MAX 32                 /* members followed, at most */
#define OFF_CPU_WAIT_NS 10000000u

static const void *lw_lock(uintptr_t lw) { return (const void *)(lw & ~(uintptr_t)GREEN_LW_MASK); }

struct member {
    struct green__thread *t;
    uintptr_t waits;                 /* its lockwait: for the holder of the next */
    uint64_t gen;
    struct green__bt bt;
};

struct cycle {
    struct member m[CYCLE_MAX];
    unsigned n;
};

/* Follow the chain from self; true when it comes back to self. */
static bool follow(struct green__rt *rt, struct green__thread *self, struct cycle *cy)
{
    cy->m[0].t = self;
    cy->m[0].waits = atomic_load_explicit(&self->lockwait, memory_order_relaxed);
    for (unsigned n = 1; n < CYCLE_MAX; n++) {
        struct green__thread *h = green__lock_holder(rt, self, cy->m[n - 1].waits, n == 1);
        if (!h)
            return false;
        if (h == self) {
            cy->n = n;
            return true;
        }
        for (unsigned j = 1; j < n; j++)
            if (cy->m[j].t == h)
                return false;        /* a cycle without self: its closer reports it */
        uintptr_t hw = atomic_load(&h->lockwait);
        if (!hw || (hw & GREEN_LW_TIMED))
            return false;
        cy->m[n].t = h;
        cy->m[n].waits = hw;
    }
    return false;
}

/* The chain, checked again from its end (see the top of the file). */
static bool still(struct green__rt *rt, struct green__thread *self, struct cycle *cy)
{
    for (unsigned k = cy->n; k-- > 0;) {
        struct green__thread *next = cy->m[(k + 1) % cy->n].t;
        if (green__lock_holder(rt, self, cy->m[k].waits, k == 0) != next)
            return false;
        if (k > 0 && atomic_load(&cy->m[k].t->lockwait) != cy->m[k].waits)
            return false;
    }
    return true;
}

static green__spin_t report_lock;

static const char *kind_name(uintptr_t lw)
{
    return (lw & GREEN_LW_KIND) == GREEN_LW_GREEN ? "green_mutex_t" : "pthread_mutex_t";
}

static void print_thread(struct green__out *o, const struct green__thread *t)
{
    char name[GREEN_NAME_MAX];
    green__name_racy(t, name);
    green__outf(o, "green thread %llu", (unsigned long long)t->id);
    if (name[0])
        green__outf(o, " \"%s\"", name);
}

/* Wait (bounded) until t has left its CPU: its saved context is then its
 * stack's.  False if it did not. */
static bool off_cpu(struct green__rt *rt, const struct green__thread *t)
{
    uint64_t until = green__clock_ns() + OFF_CPU_WAIT_NS;
    while (atomic_load_explicit(&t->on_cpu, memory_order_acquire) ||
           green__state(t) != GREEN_T_PARKED) {
        if (green__clock_ns() > until)
            return false;
        green__cpu_relax();
    }
    (void)rt;
    return true;
}

/* The reports' buffer and the names they have looked up, kept from one
 * report to the next: a report is made while the cycle forms, and a fresh
 * buffer and table cost their page faults every time. */
static atomic_flag report_out_busy = ATOMIC_FLAG_INIT;
static struct green__out report_out;
static struct green__syms report_syms;

static void report(struct green__rt *rt, struct cycle *cy, const char *what, bool error)
{
    /* Busy (another report; or this is a fork child, and it was busy
     * when it forked): a buffer and table of this report's own. */
    bool kept = !atomic_flag_test_and_set_explicit(&report_out_busy, memory_order_acquire);
    struct green__out *o = kept ? &report_out : malloc(sizeof *o);
    struct green__syms own = { 0 }, *syms = kept ? &report_syms : &own;
    if (!o) {
        green__write_str(2, "libgreen: lock cycle found; no memory to describe it\n");
        return;
    }
    o->fd = 2;
    o->err = 0;
    o->n = 0;
    green__outf(o, "libgreen: lock cycle: %u green threads wait for each other for good "
                   "(the rest of the program goes on)\n", cy->n);
    for (unsigned k = 0; k < cy->n; k++) {
        struct member *mb = &cy->m[k];
        const struct member *next = &cy->m[(k + 1) % cy->n];
        const struct member *prev = &cy->m[(k + cy->n - 1) % cy->n];
        memset(&mb->bt, 0, sizeof mb->bt);
        if (k == 0)
            green__bt_own(&mb->bt);
        else if (off_cpu(rt, mb->t))
            green__bt_saved(&mb->bt, mb->t);
        const struct green__thread_cold *c = k == 0 ? NULL : green__cold_racy(mb->t);
        const char *in = k == 0 ? what : c && c->wait_what ? c->wait_what : "?";
        green__outf(o, "  ");
        print_thread(o, mb->t);
        green__outf(o, " holds %s %p and waits in %s for %s %p, held by ", kind_name(prev->waits),
                    lw_lock(prev->waits), in,
                    kind_name(mb->waits), lw_lock(mb->waits));
        print_thread(o, next->t);
        green__outf(o, "\n");
        if (mb->bt.nframes)
            green__bt_print(o, syms, &mb->bt);
        else
            green__outf(o, "    (no backtrace: it did not leave its CPU)\n");
    }
    if (error) {
        green__outf(o, "libgreen: %s returns EDEADLK to ", what);
        print_thread(o, cy->m[0].t);
        green__outf(o, " (GREEN_DEADLOCK=error)\n");
    }
    green__out_flush(o);
    if (kept) {
        atomic_flag_clear_explicit(&report_out_busy, memory_order_release);
    } else {
        free(o);
        free(own.v);
    }
}

int green__lockwait_begin(struct green__worker *w, struct green__thread *self, const void *lock,
                          unsigned kind, const char *what)
{
    struct green__rt *rt = w->rt;
    struct green__thread_cold *own = green__cold(self);
    own->lockwait_gen++;
    if (rt->cfg.lock_warn_ms)
        own->lockwait_since = green__clock_ns();
    atomic_store(&self->lockwait, (uintptr_t)lock | kind);   /* seq_cst: see the top */
    if (rt->cfg.handoff == GREEN_HANDOFF_ON)
        green__handoff_ask(self, green__lock_holder(rt, self, (uintptr_t)lock | kind, true));
    /* A wait with a deadline ends: it closes no cycle for good. */
    if (rt->cfg.deadlock == GREEN_DEADLOCK_OFF || (kind & GREEN_LW_TIMED))
        return 0;
    struct cycle cy;
    if (!follow(rt, self, &cy) || !still(rt, self, &cy))
        return 0;

    /* One report per cycle, and one answer: the first closer to get here
     * marks every member's wait; another closing it at the same moment
     * finds its own wait marked, and waits on (the first one's EDEADLK
     * lets it through).  A condition wait's retake may not fail. */
    bool error = rt->cfg.deadlock == GREEN_DEADLOCK_ERROR && !own->lockwait_retake;
    green__spin_lock(&report_lock);
    bool mine = __atomic_load_n(&own->cycle_seen, __ATOMIC_RELAXED) != own->lockwait_gen &&
                still(rt, self, &cy);
    if (mine)
        for (unsigned k = 0; k < cy.n; k++) {
            /* Each member is parked in its lock wait (still() saw it so):
             * its cold part is there. */
            struct green__thread_cold *c = green__cold_racy(cy.m[k].t);
            if (c)
                __atomic_store_n(&c->cycle_seen,
                                 __atomic_load_n(&c->lockwait_gen, __ATOMIC_RELAXED),
                                 __ATOMIC_RELAXED);
        }
    green__spin_unlock(&report_lock);
    if (!mine)
        return 0;
    /* Lock calls libgreen interposes (the allocator's, libunwind's) are
     * libc's meanwhile: this thread must not park while it reports.  The
     * other members cannot run until it returns: their stacks hold still. */
    green__in_handler++;
    report(rt, &cy, what, error);
    green__in_handler--;
    if (!error)
        return 0;
    green__lockwait_end(self);
    return EDEADLK;
}
