/*
 * Foreign locks: the locks of the program and of its libraries -- pthread
 * mutexes, rwlocks, spinlocks, stdio's FILE locks, pthread_once and C++
 * static guards -- as green threads hold them and wait for them.  The calls
 * themselves are interposed in pthread.c; this file is what they share.
 *
 * Two rules (the project's rule 2: no foreign lock ever blocks a worker,
 * and no holder is preempted):
 *
 * Holders.  Every acquisition a green thread makes is recorded in its held
 * list and counts in its nopreempt depth, so the preemption handler and the
 * budget refuse it exactly as inside green_nopreempt_begin/end; the release
 * of the last one takes the preemption refused meanwhile.  A holder may
 * still park (on file I/O, a channel, another lock): it then comes back to
 * the worker it holds on -- the lock's owner is that OS thread's id, which
 * errorcheck, recursive and robust mutexes check -- through the worker's
 * pinned queue (green__ready_holder; from another OS thread through its
 * inbox).  A worker keeps the list of its holders, so a second green thread
 * on the same OS thread asking for a lock that recursion would let it into
 * is made to wait instead (green__held_by_other).
 *
 * Waiters.  A green thread never calls a blocking libc lock function.  It
 * tries (trylock and friends); when the lock is busy it parks on the lock's
 * address in a hash table of wait queues (green__fwait), and every release
 * that passes through libgreen's interposed calls -- by a green thread or a
 * plain OS thread -- wakes the threads parked on that address
 * (green__fwake).  The waiter links itself in and counts itself in
 * green__fwaiters before its last try; the releaser unlocks (a locked
 * instruction: a full barrier on x86-64) before it reads the count.  So
 * either the try sees the release or the releaser sees the waiter: a Dekker
 * pair, no lost wake-up.
 *
 * Releases libgreen does not see: an OS thread inside libc's own
 * pthread_cond_wait unlocks the mutex internally, a robust mutex's owner
 * dies, a process-shared lock is released in another process, a
 * semaphore is posted from elsewhere.  A waiter that cannot rule these out
 * also retries on a timer, from 50 us doubling to 5 ms.  A mutex owned by
 * one of the run's workers, or a rwlock one of them writes, is a green
 * thread's, whose release libgreen always sees: those waits have no timer,
 * and count in the deadlock check.
 */
#include "foreign.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

/* ---- Holders ------------------------------------------------------------ */


/* Threads reading another thread's held list (cycle.c): a list is not
 * unmapped while any does. */
_Atomic uint32_t green__held_readers;

static void held_unmap(const void **a, uint32_t cap)
{
    while (atomic_load(&green__held_readers))
        green__cpu_relax();
    munmap(a, (size_t)cap * sizeof(void *));
}

/* Grow into pages of its own: malloc may take the very locks being
 * recorded (jemalloc's are pthread mutexes).  The new list is published
 * before its size (cycle.c reads the size first). */
static bool held_grow(struct green__thread *t)
{
    uint32_t cap = t->heldcap;
    size_t bytes = (size_t)cap * 2 * sizeof(void *);
    const void **a = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED)
        return false;
    memcpy(a, t->held, cap * sizeof(void *));
    const void **old = t->held;
    __atomic_store_n(&t->held, a, __ATOMIC_SEQ_CST);
    __atomic_store_n(&t->heldcap, cap * 2, __ATOMIC_RELEASE);
    if (old != green__cold(t)->held_inline)
        held_unmap(old, cap);
    return true;
}



void green__held_push_slow(struct green__worker *w, struct green__thread *self, const void *lock)
{
    if (GREEN_UNLIKELY(self->nheld == self->heldcap) && !held_grow(self)) {
        /* Out of memory for the record: the lock is held all the same.
         * Without a record it would be released unseen, so keep the thread
         * unpreemptible (and pinned) until it exits rather than guess. */
        green__write_str(2, "libgreen: warning: no memory to record a lock held by a "
                            "green thread; it stays unpreemptible until it exits\n");
        self->nopreempt++;
        return;
    }
    self->held[self->nheld++] = lock;
    self->nopreempt++;
    (void)w;
}

bool green__held_by(const struct green__thread *t, const void *lock)
{
    const void *const *a = t->held;
    for (uint32_t i = t->nheld; i-- > 0;)
        if (a[i] == lock)
            return true;
    return false;
}

bool green__held_by_other(struct green__worker *w, struct green__thread *self, const void *lock)
{
    for (struct green__thread *h = w->holders; h; h = h->hold_next)
        if (h != self && green__held_by(h, lock))
            return true;
    return false;
}

/* The last lock is let go: take a preemption refused meanwhile (or a
 * spent budget) -- here if whoever called the release is the program's own
 * code, else on the way out of the outermost frame that is not, hooked
 * like any refused preemption.  (Library code releases locks too: libunwind
 * with every signal blocked, an allocator mid-update.) */
struct green__worker *green__release_poll(struct green__worker *w, struct green__thread *t)
{
    if (!__atomic_load_n(&t->preempt_pending, __ATOMIC_RELAXED) && green__reductions > 0)
        return w;
    const struct green__hooks *h = w->rt->hooks;
    if (h && h->switch_allowed && !h->switch_allowed(w, t)) {
        __atomic_store_n(&t->preempt_pending, true, __ATOMIC_RELAXED);
        return w;
    }
    return green__take_deferred(w);
}

bool green__held_drop_slow(struct green__worker **wp, struct green__thread *self,
                           const void *lock, bool poll)
{
    const void **a = self->held;
    uint32_t i = self->nheld;
    while (i-- > 0 && a[i] != lock)
        ;
    if (i == UINT32_MAX)
        return false;
    memmove(&a[i], &a[i + 1], (self->nheld - i - 1) * sizeof *a);
    self->nheld--;
    if (self->nheld == 0 && self->hold_linked)
        green__holders_unlink(*wp, self);
    if (self->nopreempt > 0 && --self->nopreempt == 0 && poll)
        *wp = green__release_poll(*wp, self);
    return true;
}

void green__held_forget(struct green__worker *w, struct green__thread *t)
{
    if (t->nheld) {
        t->nopreempt -= t->nopreempt >= t->nheld ? t->nheld : t->nopreempt;
        t->nheld = 0;
    }
    if (t->hold_linked)
        green__holders_unlink(w, t);
    if (t->held != green__cold(t)->held_inline) {
        const void **old = t->held;
        uint32_t cap = t->heldcap;
        __atomic_store_n(&t->heldcap, GREEN_HELD_INLINE, __ATOMIC_SEQ_CST);
        __atomic_store_n(&t->held, green__cold(t)->held_inline, __ATOMIC_SEQ_CST);
        held_unmap(old, cap);
    }
}



/* ---- Waiters ------------------------------------------------------------ */

#define FW_BUCKETS 256

struct fw_bucket {
    green__spin_t lock;
    uint32_t n;                      /* waiters linked; under lock */
    struct green__wq q;              /* waiters of every address that hashes here */
} __attribute__((aligned(GREEN_CACHELINE)));

static struct fw_bucket fw_table[FW_BUCKETS];
_Atomic uint32_t green__fwaiters;

static struct fw_bucket *fw_bucket(const void *addr)
{
    uint64_t x = (uint64_t)(uintptr_t)addr;
    x = (x ^ (x >> 29)) * 0x9e3779b97f4a7c15ull;
    return &fw_table[x >> 56];
}

bool green__is_worker_tid(struct green__rt *rt, pid_t tid)
{
    if (tid <= 0)
        return false;
    for (unsigned i = 0; i < rt->nworkers; i++)
        if (atomic_load_explicit(&rt->workers[i].tid, memory_order_relaxed) == tid)
            return true;
    return false;
}

static void fw_unlink(struct fw_bucket *b, struct green__waiter *wt)
{
    green__wq_remove(&b->q, wt);
    b->n--;
    atomic_fetch_sub_explicit(&green__fwaiters, 1, memory_order_relaxed);
}

void green__fpark_link(struct green__thread *self, struct green__fparked *p, const void *addr,
                       const char *what)
{
    struct fw_bucket *b = fw_bucket(addr);
    p->wt = (struct green__waiter){ .t = self, .elem = (void *)addr };
    p->bucket = b;
    green__spin_lock(&b->lock);
    green__park_prepare(self, what, addr, false);
    green__wq_push(&b->q, &p->wt);
    b->n++;
    atomic_fetch_add_explicit(&green__fwaiters, 1, memory_order_seq_cst);
    green__spin_unlock(&b->lock);
}

/* The waiter leaves: still linked if a timer woke it or it gives up.
 * Looked at under the bucket's lock only: a waker that found it linked
 * still reads it until it lets the lock go (fwake_slow), so the waiter's
 * frame must not be left before then. */
static void fpark_unlink(struct green__fparked *p)
{
    struct fw_bucket *b = p->bucket;
    green__spin_lock(&b->lock);
    if (p->wt.linked)
        fw_unlink(b, &p->wt);
    green__spin_unlock(&b->lock);
}

void green__fpark_cancel(struct green__worker **wp, struct green__fparked *p)
{
    struct green__thread *self = p->wt.t;
    fpark_unlink(p);
    if (green__claim(self))
        green__cold(self)->wait_what = NULL;
    else
        green__park(wp, GREEN_FOREVER);  /* a waker has it: let it come back */
}

/* Code that blocks signals around its lock (libunwind blocks them all)
 * and parks on it would leave them blocked on its worker for every green
 * thread that runs there meanwhile, the preemption signal first: it parks
 * with the worker's own mask and takes its own back when it resumes, on
 * whichever worker that is.  One system call to look, on the slow path. */
int green__fpark_park(struct green__worker **wp, struct green__fparked *p, uint64_t deadline)
{
    sigset_t mine;
    bool swapped = false;
    if (pthread_sigmask(SIG_SETMASK, NULL, &mine) == 0 &&
        sigismember(&mine, (*wp)->rt->cfg.signo) == 1)
        swapped = pthread_sigmask(SIG_SETMASK, &(*wp)->sigmask, NULL) == 0;
    int err = green__park(wp, deadline);
    if (swapped)
        pthread_sigmask(SIG_SETMASK, &mine, NULL);
    fpark_unlink(p);
    return err;
}

int green__fwait(struct green__worker **wp, const void *addr, int (*try)(void *), void *arg,
                 uint64_t deadline, bool (*seen)(void *), const char *what)
{
    uint64_t poll_ns = GREEN_FWAIT_POLL_MIN;
    for (;;) {
        int r = try(arg);
        if (r != EBUSY)
            return r;
        struct green__rt *rt = (*wp)->rt;
        if (green__expired(rt, deadline))
            return ETIMEDOUT;

        /* The second look is taken under the bucket's lock, before any
         * waker can claim this thread: if it takes the lock, nothing has
         * to be undone -- above all no wake-up to sit out, after which the
         * thread might resume on another worker than the one whose OS
         * thread now owns the lock (a rwlock's unlock there would be taken
         * for a reader's). */
        struct green__thread *self = (*wp)->cur;
        struct fw_bucket *b = fw_bucket(addr);
        struct green__fparked p = { .wt = { .t = self, .elem = (void *)addr }, .bucket = b };
        green__spin_lock(&b->lock);
        green__park_prepare(self, what, addr, false);
        green__wq_push(&b->q, &p.wt);
        b->n++;
        atomic_fetch_add_explicit(&green__fwaiters, 1, memory_order_seq_cst);
        /* The try runs libc's code with b's lock held: libgreen's signal
         * handler must not walk the stack now -- libunwind unlocks mutexes
         * of its own, whose wake could need b's lock (a hash collision, a
         * self-deadlock seen under SQLite).  It refuses while this is set. */
        green__in_handler++;
        r = try(arg);                /* the Dekker pair's second look */
        green__in_handler--;
        if (r != EBUSY) {
            fw_unlink(b, &p.wt);
            green__claim(self);      /* unclaimed: wakers need b's lock */
            green__cold(self)->wait_what = NULL;
            green__spin_unlock(&b->lock);
            return r;
        }
        green__spin_unlock(&b->lock);
        uint64_t until = deadline;
        if (!seen || !seen(arg)) {
            uint64_t at = green__now(rt) + poll_ns;
            if (at < until)
                until = at;
            if (poll_ns < GREEN_FWAIT_POLL_MAX)
                poll_ns *= 2;
        }
        green__fpark_park(wp, &p, until);
    }
}

/* fork (sched/fork.c): the parked waiters are the parent's, and a bucket
 * lock may have been held by a thread the child does not have. */
void green__foreign_atfork_child(void)
{
    memset(fw_table, 0, sizeof fw_table);
    atomic_store_explicit(&green__fwaiters, 0, memory_order_relaxed);
}

unsigned green__fwake_slow(const void *addr, bool all)
{
    struct fw_bucket *b = fw_bucket(addr);
    green__spin_lock(&b->lock);
    if (!b->n) {
        green__spin_unlock(&b->lock);
        return 0;
    }
    struct green__thread *list = NULL, **tail = &list;
    struct green__waiter *wt = b->q.head;
    while (wt) {
        struct green__waiter *next = wt->next;
        if (wt->elem == addr) {
            /* Claimed while linked: a thread its timer woke meanwhile waits
             * for this lock before it leaves, so its park is still this
             * one and wt (on its stack) still there. */
            struct green__thread *t = wt->t;
            bool claimed = green__claim(t);
            if (claimed)
                green__cold(t)->wake_from = wt;
            fw_unlink(b, wt);
            if (claimed) {
                *tail = t;
                tail = &t->next;
                *tail = NULL;
                if (!all)
                    break;
            }
        }
        wt = next;
    }
    green__spin_unlock(&b->lock);
    struct green__worker *w = green__worker_self();
    if (w && (w->cur == &w->g0 || green__in_handler_now()))
        w = NULL;                    /* not a green thread: no queue of ours */
    return green__ready_list(w, list, false);
}
