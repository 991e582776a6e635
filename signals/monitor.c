/*
 * Step 1 of preemption by signal (handler.c has the whole design): the
 * monitor's look, which asks a worker whose thread overran its quantum to
 * switch.
 *
 * The monitor (sched/sysmon.c) calls green__sig_tick through rt->hooks at
 * every wake while a worker is busy.  It keeps its view of each worker in
 * a struct green__watch, its own (in the run's struct green__sig_worker,
 * signals.h).
 *
 * A slice is what a worker runs between two of its scheduling decisions
 * (w->tick).  The monitor does not see it begin: it learns of it at its next
 * look and dates it from then -- except right after a preemption it asked
 * for, where the new slice began when the signal landed (one decision later,
 * tick + 1), so consecutive slices of CPU-bound threads last one quantum,
 * not two.  A slice ends early when a timer of that worker is due
 * (green__slice_end).  A worker whose slice timer is armed (slice_timer.c)
 * is left to it.
 *
 * Before signalling, the worker's CPU clock says whether its thread really
 * ran: a worker the kernel -- or the hypervisor, whose steal time the
 * kernel does not count -- kept off the CPU, or one blocked in a system call
 * libgreen does not wrap, has not used its slice, and a signal would only
 * interrupt the call with EINTR.  So threads that yield, even on a host that
 * pauses the VM, draw no signal.
 *
 * A request is a CAS of the worker's request flag (duplicates merge) and
 * the signal to that worker alone, marked as libgreen's (send_request); a
 * refused one is retried with a backoff (request_preemption says how).
 */
#define _GNU_SOURCE
#include "signals.h"
#include "safepoints.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define GREEN_RETRY_MAX_QUANTA 64u
#define GREEN_RETRY_MAX_NS 100000000u  /* 100 ms */

/* The CPU-time clock of a thread of this process, from its tid: the kernel's
 * encoding (CPUCLOCK_PERTHREAD | CPUCLOCK_SCHED, linux/posix-timers.h), the
 * value glibc's pthread_getcpuclockid returns.  The monitor knows workers by
 * tid; their pthread_t is not its to read. */
static clockid_t thread_cpu_clock(pid_t tid)
{
    return (clockid_t)((~(uint32_t)tid << 3) | 4u | 2u);
}

/* CPU time the worker's OS thread has run, ns; 0 if unreadable (then
 * green__sig_tick lets every request through). */
static uint64_t worker_cpu_ns(const struct green__worker *w)
{
    struct timespec ts;
    if (clock_gettime(thread_cpu_clock(atomic_load_explicit(&w->tid, memory_order_relaxed)),
                      &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- What the program can do to the signal --------------------------------
 *
 * Two things a program may do that take preemption by signal away, which
 * libgreen cannot undo from outside but must not keep silent:
 *   - install its own handler for the signal during a run: signals sent then
 *     would only feed that handler, so none is sent while it stays;
 *   - block the signal in a worker (pthread_sigmask on a green thread masks
 *     its worker's OS thread, for every green thread that runs there): the
 *     request stays pending and that worker is never preempted.
 * The monitor notices either when it asks for a preemption, says so once on
 * stderr, and counts it (green_stats: signal_lost).
 */
static _Atomic bool said_replaced[NSIG];

static bool handler_still_ours(int sig)
{
    struct sigaction cur;
    if (sigaction(sig, NULL, &cur) != 0 ||
        ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == green__sig_handler)) {
        atomic_store_explicit(&said_replaced[sig], false, memory_order_relaxed);
        return true;
    }
    if (!atomic_exchange(&said_replaced[sig], true)) {
        green__count(&green__sig_stats.signal_lost);
        fprintf(stderr, "libgreen: the program installed its own handler for signal %d, "
                        "which preempts green threads: preemption by signal is off until "
                        "libgreen's handler is back (GREEN_SIGNAL picks another signal)\n", sig);
    }
    return false;
}

/* Is sig blocked in OS thread tid?  From /proc: the monitor's thread may
 * not ask another thread's mask otherwise. */
static bool blocked_in(pid_t tid, int sig)
{
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/self/task/%d/status", (int)tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    unsigned long long mask = 0;
    bool found = false;
    while (!found && fgets(line, sizeof line, f))
        found = sscanf(line, "SigBlk: %llx", &mask) == 1;
    fclose(f);
    return found && (mask >> (sig - 1) & 1);
}

/* Before an exec on worker w (signals/exec.c): no request and no slice
 * timer will signal it from now on.  True if a request may still be on
 * its way (the monitor had decided to send it). */
bool green__sig_quiet(struct green__worker *w)
{
    struct green__sig_worker *s = green__sig_worker(w);
    /* Sequentially consistent, as the monitor's store of `sending` and its
     * CAS: either the monitor sees the 2 and sends nothing, or the caller
     * sees `sending` set until the signal is queued -- a resend of a
     * request set long before included (wait_sent in exec.c). */
    bool in_flight = atomic_exchange(&s->preempt_req, 2) == 1;
    green__slice_timer_disarm(w);
    return in_flight;
}

/* The exec failed: the monitor may ask again (the slice timer is armed
 * again at the next preemption). */
void green__sig_unquiet(struct green__worker *w)
{
    atomic_store_explicit(&green__sig_worker(w)->preempt_req, 0, memory_order_release);
}

/* tgkill with a mark: a request can then be told from the program's own
 * signals even when it lands after its worker's run has ended. */
static void send_request(pid_t tid, int sig)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    si.si_signo = sig;
    si.si_code = SI_QUEUE;
    si.si_pid = green__sig_pid;
    si.si_uid = green__sig_uid;
    si.si_value.sival_ptr = (void *)&green__sig_request_mark;
    syscall(SYS_rt_tgsigqueueinfo, green__sig_pid, tid, sig, &si);
}

/* Send w's request again -- unless an exec closed w meanwhile: the same
 * handshake as the first send, `sending` set around a fresh look at the
 * request (a store and a load against the exec's exchange and load, all
 * sequentially consistent: one of the two sees the other).  Nothing else
 * is done under `sending`, which an exec waits out: blocked_in's fopen or
 * a line on stderr could wait for a lock the exec'ing thread holds. */
static bool resend(struct green__sig_worker *s, pid_t tid, int sig)
{
    atomic_store(&s->sending, 1);
    bool still = atomic_load(&s->preempt_req) == 1;
    if (still)
        send_request(tid, sig);
    atomic_store(&s->sending, 0);
    return still;
}

/* Ask w to switch: merge with a pending request, back off before the next;
 * returns when to look at w again. */
static uint64_t request_preemption(struct green__rt *rt, struct green__worker *w,
                                   struct green__sig_worker *s, uint64_t now, uint64_t cpu)
{
    struct green__watch *m = &s->watch;
    uint64_t quantum = green__quantum_ns(rt);
    uint32_t req = 0;
    if (!handler_still_ours(rt->cfg.signo)) {
        m->retry_at = now + GREEN_RETRY_MAX_NS;   /* look again later */
        return m->retry_at;
    }
    /* An exec that closes the worker waits while `sending` is set (exec.c,
     * wait_sent), which it is around the send alone.  The store, this CAS
     * and the exec's exchange are sequentially consistent: either the CAS
     * sees the exec's 2 and nothing is sent, or the exec sees `sending`
     * set until the signal is queued. */
    atomic_store(&s->sending, 1);
    bool asked_now = atomic_compare_exchange_strong(&s->preempt_req, &req, 1);
    if (asked_now)
        send_request(atomic_load_explicit(&w->tid, memory_order_relaxed), rt->cfg.signo);
    atomic_store(&s->sending, 0);
    if (asked_now) {
        green__count(&green__sig_stats.signals_sent);
        m->req_at = now;
        m->blocked_at = 0;
    } else if (req == 1 && now - m->req_at > GREEN_RETRY_MAX_NS) {
        /* Our last request has not landed in 100 ms.  (Never while an
         * exec has closed the worker to requests, 2: exec.c waits for the
         * one it found in flight, and then unblocks the signal and execs --
         * a copy sent then would kill the new image.) */
        pid_t tid = atomic_load_explicit(&w->tid, memory_order_relaxed);
        if (!blocked_in(tid, rt->cfg.signo)) {
            /* Lost on its way (handler.c: every instance of the signal
             * that lands takes the request, so this is the kernel's
             * doing or a bug of ours): send it again.  A copy that finds
             * the request taken is dropped. */
            m->blocked_at = 0;
            if (resend(s, tid, rt->cfg.signo))
                green__count(&green__sig_stats.signals_sent);
            m->req_at = now;
        } else if (!m->blocked_at) {
            m->blocked_at = now;
        } else if (now - m->blocked_at >= GREEN_RETRY_MAX_NS && !m->said_blocked) {
            /* Blocked there at two looks 100 ms apart (glibc blocks every
             * signal for a moment in pthread_create, and so does a
             * running handler). */
            m->said_blocked = true;
            green__count(&green__sig_stats.signal_lost);
            fprintf(stderr, "libgreen: worker %u blocks signal %d (a green thread masked it "
                            "with pthread_sigmask or sigprocmask?): its green threads are not "
                            "preempted by signal while it stays blocked\n",
                    w->index, rt->cfg.signo);
        }
    }
    m->asked = true;
    m->asked_at = now;
    m->asked_cpu = cpu;
    /* Should this one be refused (unsafe code, a nopreempt section), wait
     * longer before the next: the delay doubles up to GREEN_RETRY_MAX_NS
     * (or 64 quanta if longer), so a thread that stays seconds in unsafe
     * code sees tens of signals, not one per quantum. */
    uint64_t cap = green__max_u64(GREEN_RETRY_MAX_QUANTA * quantum, GREEN_RETRY_MAX_NS);
    m->backoff = m->backoff ? green__min_u64(m->backoff * 2, cap) : quantum / 2;
    m->retry_at = now + m->backoff;
    return m->retry_at;
}

/* One look at every worker, at `now`; returns when the next slice can end. */
uint64_t green__sig_tick(struct green__rt *rt, uint64_t now)
{
    green__sp_refresh(now);          /* objects loaded or unloaded? */
    uint64_t quantum = green__quantum_ns(rt);
    struct green__sig_worker *all = rt->preempt;
    uint64_t next = GREEN_FOREVER;
    bool due = false;
    for (unsigned i = 0; i < rt->nworkers; i++) {
        struct green__worker *w = &rt->workers[i];
        struct green__watch *m = &all[i].watch;
        uint32_t tick = atomic_load_explicit(&w->tick, memory_order_relaxed);
        if (atomic_load_explicit(&w->tid, memory_order_acquire) == 0 ||
            __atomic_load_n(&w->cur, __ATOMIC_RELAXED) == &w->g0 ||
            green__slice_timer_watching(w, now)) {
            m->busy = false;         /* not started, idle, or its slice timer watches it */
            continue;
        }
        if (!m->busy || tick != m->tick) {
            if (m->busy && m->asked && tick == m->tick + 1) {
                m->since = m->asked_at;
                m->cpu_since = m->asked_cpu;
            } else {
                m->since = now;
                m->cpu_since = worker_cpu_ns(w);
            }
            m->busy = true;
            m->asked = false;
            m->tick = tick;
            m->retry_at = 0;
            m->backoff = 0;
        }
        uint64_t timer = atomic_load_explicit(&w->timer_next, memory_order_relaxed);
        m->end = green__max_u64(green__slice_end(m->since, quantum, timer), m->retry_at);
        due |= m->end <= now;
    }
    /* A wake is the expensive part (a timer interrupt and two context
     * switches, tens of microseconds under virtualization): one that acts
     * also ends the slices due within the next quarter quantum, so the
     * workers' slices fall into step and one wake serves them all. */
    uint64_t horizon = due ? now + quantum / 4 : now;
    for (unsigned i = 0; i < rt->nworkers; i++) {
        struct green__worker *w = &rt->workers[i];
        struct green__sig_worker *s = &all[i];
        struct green__watch *m = &s->watch;
        if (!m->busy)
            continue;
        if (horizon < m->end) {
            next = green__min_u64(next, m->end);
            continue;
        }
        uint64_t cpu = worker_cpu_ns(w);
        uint64_t ran = cpu - m->cpu_since, need = (m->end - m->since) / 2;
        if (cpu && ran < need) {
            /* Off the CPU for most of the slice: look again once it could
             * have used it -- but not sooner than a quarter quantum.  The
             * monitor may run at real-time priority: looking again every
             * few microseconds, it would spin on the CPU the worker waits
             * for, and the worker would never catch up (seen: 60 000 looks
             * in 20 ms, the worker starved for ~100 ms). */
            m->end = now + green__max_u64(need - ran, quantum / 4);
            next = green__min_u64(next, m->end);
            continue;
        }
        next = green__min_u64(next, request_preemption(rt, w, s, now, cpu));
    }
    return next;
}
