/* pthread_bench: the pthreads peer of green_bench.c -- the same benchmarks,
 * one per run, with OS threads:   pthread_bench NAME [N]
 *
 *   yield N      two threads pinned to ONE cpu (pthread_attr_setaffinity_np),
 *                each sched_yield()s N times      -> yield <ns> ns/switch
 *   spawn N      N times { pthread_create; pthread_join }
 *                                                 -> spawn <ns> ns/spawn+join
 *   spawnmany N  N pthread_create, then N pthread_join
 *                                                 -> spawnmany <ns> ns/thread
 *   chan N       two threads ping-pong an int over two unbuffered channels
 *                (below), N round trips           -> chan <ns> ns/hop
 *   mutex N      4 threads each do N/4 lock; counter++; unlock on one
 *                pthread_mutex_t                  -> mutex <ns> ns/lock+unlock
 *   park N       N threads blocked in pthread_cond_wait on one condvar
 *                -> park_rss <bytes> B/thread, park_rss_total <MiB> MiB,
 *                   park_pte_total <MiB> MiB, park_stack 65536 B,
 *                   park_kstack <bytes> B/thread
 *   preempt_cost N  the floor under preemption: what it costs on this
 *                machine just to interrupt CPU-bound threads once per
 *                quantum.  Two threads (one per CPU of a 2-worker run) each
 *                run 2N xorshift64 steps -- the work of green_bench's four
 *                threads of N -- and, with BENCH_TIMER_US=q set, each gets a
 *                per-thread POSIX timer (CLOCK_MONOTONIC, SIGEV_THREAD_ID)
 *                sending it a signal every q us to an empty handler: no
 *                decision, no state saved, no switch.
 *                -> preempt_cost <ms> ms, preempt_cost_cpu <ms> ms,
 *                   preempt_cost_signals <n> signals
 *
 * Every thread is created with a 64 KiB stack (pthread_attr_setstacksize),
 * not glibc's 8 MiB default, so the memory comparison with green threads is
 * fair; `park_stack` says so.  A parked pthread also costs kernel memory that
 * VmRSS does not show (its kernel stack, task_struct, ...): `park_kstack` is
 * the growth of KernelStack in /proc/meminfo per thread -- system-wide, so
 * noisy on a busy machine.
 *
 * The unbuffered channel is Go's design cut to the bone: a mutex, a queue of
 * waiting senders and one of waiting receivers, a condvar per waiter.  A
 * sender that finds a receiver waiting hands it the value and goes on; else
 * it queues and sleeps until a receiver takes the value (and the mirror for
 * receivers).  So a hop costs one wake-up, as in Go and libgreen; a single
 * slot with "full" and "taken" condvars would cost two.
 *
 * Timing: CLOCK_MONOTONIC around the whole pass; an untimed warm-up pass of
 * N/10 first (not for park).  Any error: a message on stderr, exit 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MUTEX_THREADS 4
#define STACK_SIZE    (64 * 1024)

static pthread_attr_t small_stack;   /* set once in main; read-only after */

/* ---- Helpers ------------------------------------------------------------ */

static void die(const char *what, int err)
{
    fprintf(stderr, "pthread_bench: %s: %s\n", what, strerror(err));
    exit(1);
}

/* Call a function that returns 0 or an errno value; exit on anything else. */
#define CHECK(call)                      \
    do {                                 \
        int check_err_ = (call);         \
        if (check_err_ != 0)             \
            die(#call, check_err_);      \
    } while (0)

static uint64_t now_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        die("clock_gettime", errno);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The value of a "Key:  123 kB" line of a /proc file, in kB. */
static uint64_t proc_kb(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        die(path, errno);
    size_t klen = strlen(key);
    char line[256];
    uint64_t kb = 0;
    int found = 0;
    while (!found && fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':')
            found = sscanf(line + klen + 1, "%" SCNu64, &kb) == 1;
    }
    fclose(f);
    if (!found) {
        fprintf(stderr, "pthread_bench: no %s in %s\n", key, path);
        exit(1);
    }
    return kb;
}

static void *trivial(void *arg)
{
    return arg;
}

/* ---- yield -------------------------------------------------------------- */

struct yield_arg {
    pthread_barrier_t start;   /* both yielders and main */
    uint64_t          n;
};

static void *yielder(void *arg)
{
    struct yield_arg *y = arg;
    int err = pthread_barrier_wait(&y->start);
    if (err != 0 && err != PTHREAD_BARRIER_SERIAL_THREAD)
        die("pthread_barrier_wait", err);
    for (uint64_t i = 0; i < y->n; i++)
        if (sched_yield() != 0)
            die("sched_yield", errno);
    return NULL;
}

static uint64_t run_yield(uint64_t n)
{
    /* Pin both yielders to the first CPU this process may use. */
    cpu_set_t allowed, one;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0)
        die("sched_getaffinity", errno);
    int cpu = 0;
    while (cpu < CPU_SETSIZE && !CPU_ISSET(cpu, &allowed))
        cpu++;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    pthread_attr_t attr;
    CHECK(pthread_attr_init(&attr));
    CHECK(pthread_attr_setstacksize(&attr, STACK_SIZE));
    CHECK(pthread_attr_setaffinity_np(&attr, sizeof one, &one));

    struct yield_arg y = { .n = n };
    CHECK(pthread_barrier_init(&y.start, NULL, 3));
    pthread_t a, b;
    CHECK(pthread_create(&a, &attr, yielder, &y));
    CHECK(pthread_create(&b, &attr, yielder, &y));
    int err = pthread_barrier_wait(&y.start);
    if (err != 0 && err != PTHREAD_BARRIER_SERIAL_THREAD)
        die("pthread_barrier_wait", err);
    uint64_t t0 = now_ns();
    CHECK(pthread_join(a, NULL));
    CHECK(pthread_join(b, NULL));
    uint64_t dt = now_ns() - t0;
    CHECK(pthread_barrier_destroy(&y.start));
    CHECK(pthread_attr_destroy(&attr));
    return dt;
}

/* ---- spawn, spawnmany --------------------------------------------------- */

static uint64_t run_spawn(uint64_t n)
{
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        pthread_t t;
        CHECK(pthread_create(&t, &small_stack, trivial, NULL));
        CHECK(pthread_join(t, NULL));
    }
    return now_ns() - t0;
}

static uint64_t run_spawnmany(uint64_t n)
{
    pthread_t *t = calloc(n, sizeof *t);
    if (t == NULL)
        die("calloc", ENOMEM);
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n; i++)
        CHECK(pthread_create(&t[i], &small_stack, trivial, NULL));
    for (uint64_t i = 0; i < n; i++)
        CHECK(pthread_join(t[i], NULL));
    uint64_t dt = now_ns() - t0;
    free(t);
    return dt;
}

/* ---- chan: an unbuffered channel of int --------------------------------- */

struct waiter {
    pthread_cond_t cv;
    int            value;   /* the value handed over */
    int            done;    /* set by the peer under chan.mu */
    struct waiter *next;
};

struct chan {
    pthread_mutex_t mu;
    struct waiter  *senders, *senders_tail;       /* guarded by mu */
    struct waiter  *receivers, *receivers_tail;   /* guarded by mu */
};

static void chan_init(struct chan *c)
{
    memset(c, 0, sizeof *c);
    CHECK(pthread_mutex_init(&c->mu, NULL));
}

/* Requires: c->mu held. */
static void enqueue(struct waiter **head, struct waiter **tail, struct waiter *w)
{
    w->next = NULL;
    if (*head == NULL)
        *head = w;
    else
        (*tail)->next = w;
    *tail = w;
}

/* Requires: c->mu held, *head not NULL. */
static struct waiter *dequeue(struct waiter **head)
{
    struct waiter *w = *head;
    *head = w->next;
    return w;
}

/* me: the caller's own waiter, its cv initialised. */
static void chan_send(struct chan *c, struct waiter *me, int v)
{
    CHECK(pthread_mutex_lock(&c->mu));
    if (c->receivers != NULL) {
        struct waiter *r = dequeue(&c->receivers);
        r->value = v;
        r->done = 1;
        CHECK(pthread_cond_signal(&r->cv));
    } else {
        me->value = v;
        me->done = 0;
        enqueue(&c->senders, &c->senders_tail, me);
        while (!me->done)
            CHECK(pthread_cond_wait(&me->cv, &c->mu));
    }
    CHECK(pthread_mutex_unlock(&c->mu));
}

static int chan_recv(struct chan *c, struct waiter *me)
{
    int v;
    CHECK(pthread_mutex_lock(&c->mu));
    if (c->senders != NULL) {
        struct waiter *s = dequeue(&c->senders);
        v = s->value;
        s->done = 1;
        CHECK(pthread_cond_signal(&s->cv));
    } else {
        me->done = 0;
        enqueue(&c->receivers, &c->receivers_tail, me);
        while (!me->done)
            CHECK(pthread_cond_wait(&me->cv, &c->mu));
        v = me->value;
    }
    CHECK(pthread_mutex_unlock(&c->mu));
    return v;
}

struct pingpong {
    struct chan ping;   /* pinger -> ponger */
    struct chan pong;   /* ponger -> pinger */
    uint64_t    n;      /* round trips */
};

static void *pinger(void *arg)
{
    struct pingpong *pp = arg;
    struct waiter me;
    CHECK(pthread_cond_init(&me.cv, NULL));
    for (uint64_t i = 0; i < pp->n; i++) {
        int v = (int)i;
        chan_send(&pp->ping, &me, v);
        int back = chan_recv(&pp->pong, &me);
        if (back != v) {
            fprintf(stderr, "pthread_bench: chan: sent %d, got %d back\n", v, back);
            exit(1);
        }
    }
    CHECK(pthread_cond_destroy(&me.cv));
    return NULL;
}

static void *ponger(void *arg)
{
    struct pingpong *pp = arg;
    struct waiter me;
    CHECK(pthread_cond_init(&me.cv, NULL));
    for (uint64_t i = 0; i < pp->n; i++)
        chan_send(&pp->pong, &me, chan_recv(&pp->ping, &me));
    CHECK(pthread_cond_destroy(&me.cv));
    return NULL;
}

static uint64_t run_chan(uint64_t n)
{
    struct pingpong pp;
    chan_init(&pp.ping);
    chan_init(&pp.pong);
    pp.n = n;
    pthread_t a, b;
    uint64_t t0 = now_ns();
    CHECK(pthread_create(&b, &small_stack, ponger, &pp));
    CHECK(pthread_create(&a, &small_stack, pinger, &pp));
    CHECK(pthread_join(a, NULL));
    CHECK(pthread_join(b, NULL));
    uint64_t dt = now_ns() - t0;
    CHECK(pthread_mutex_destroy(&pp.ping.mu));
    CHECK(pthread_mutex_destroy(&pp.pong.mu));
    return dt;
}

/* ---- mutex -------------------------------------------------------------- */

struct counter {
    pthread_mutex_t mu;
    uint64_t        value;  /* guarded by mu */
    uint64_t        per;    /* increments per thread; read-only */
};

static void *incrementer(void *arg)
{
    struct counter *c = arg;
    for (uint64_t i = 0; i < c->per; i++) {
        CHECK(pthread_mutex_lock(&c->mu));
        c->value++;
        CHECK(pthread_mutex_unlock(&c->mu));
    }
    return NULL;
}

/* n is a multiple of MUTEX_THREADS (main rounds it down). */
static uint64_t run_mutex(uint64_t n)
{
    struct counter c = { .value = 0, .per = n / MUTEX_THREADS };
    CHECK(pthread_mutex_init(&c.mu, NULL));
    pthread_t t[MUTEX_THREADS];
    uint64_t t0 = now_ns();
    for (int i = 0; i < MUTEX_THREADS; i++)
        CHECK(pthread_create(&t[i], &small_stack, incrementer, &c));
    for (int i = 0; i < MUTEX_THREADS; i++)
        CHECK(pthread_join(t[i], NULL));
    uint64_t dt = now_ns() - t0;
    if (c.value != n) {
        fprintf(stderr, "pthread_bench: mutex: BROKEN: counter is %" PRIu64
                " after %" PRIu64 " locked increments\n", c.value, n);
        exit(1);
    }
    CHECK(pthread_mutex_destroy(&c.mu));
    return dt;
}

/* ---- park --------------------------------------------------------------- */

struct park {
    pthread_mutex_t mu;
    pthread_cond_t  gate;      /* parked threads wait here; guarded by mu */
    pthread_cond_t  all_in;    /* main waits here for parked == n */
    uint64_t        parked;    /* guarded by mu */
    uint64_t        n;         /* read-only */
    int             released;  /* guarded by mu */
};

static void *parker(void *arg)
{
    struct park *p = arg;
    CHECK(pthread_mutex_lock(&p->mu));
    if (++p->parked == p->n)
        CHECK(pthread_cond_signal(&p->all_in));
    while (!p->released)
        CHECK(pthread_cond_wait(&p->gate, &p->mu));
    CHECK(pthread_mutex_unlock(&p->mu));
    return NULL;
}

struct park_result {
    uint64_t rss_before_kb, rss_kb, pte_kb, kstack_before_kb, kstack_kb;
};

static struct park_result run_park(uint64_t n)
{
    struct park p = { .n = n, .parked = 0, .released = 0 };
    struct park_result r;
    CHECK(pthread_mutex_init(&p.mu, NULL));
    CHECK(pthread_cond_init(&p.gate, NULL));
    CHECK(pthread_cond_init(&p.all_in, NULL));
    pthread_t *t = calloc(n, sizeof *t);
    if (t == NULL)
        die("calloc", ENOMEM);

    r.rss_before_kb = proc_kb("/proc/self/status", "VmRSS");
    r.kstack_before_kb = proc_kb("/proc/meminfo", "KernelStack");
    for (uint64_t i = 0; i < n; i++)
        CHECK(pthread_create(&t[i], &small_stack, parker, &p));
    CHECK(pthread_mutex_lock(&p.mu));
    while (p.parked < n)
        CHECK(pthread_cond_wait(&p.all_in, &p.mu));
    CHECK(pthread_mutex_unlock(&p.mu));
    /* Each counted itself and released mu only by entering cond_wait, so all
     * are parked now; the sleep matches the other peers. */
    struct timespec settle = { 0, 100 * 1000 * 1000 };
    while (nanosleep(&settle, &settle) != 0)
        if (errno != EINTR)
            die("nanosleep", errno);
    r.rss_kb = proc_kb("/proc/self/status", "VmRSS");
    r.pte_kb = proc_kb("/proc/self/status", "VmPTE");
    r.kstack_kb = proc_kb("/proc/meminfo", "KernelStack");

    CHECK(pthread_mutex_lock(&p.mu));
    p.released = 1;
    CHECK(pthread_cond_broadcast(&p.gate));
    CHECK(pthread_mutex_unlock(&p.mu));
    for (uint64_t i = 0; i < n; i++)
        CHECK(pthread_join(t[i], NULL));
    free(t);
    CHECK(pthread_cond_destroy(&p.all_in));
    CHECK(pthread_cond_destroy(&p.gate));
    CHECK(pthread_mutex_destroy(&p.mu));
    return r;
}

/* ---- Driver ------------------------------------------------------------- */

/* ---- preempt_cost: the floor ------------------------------------------- */

#define FLOOR_THREADS 2

static volatile uint64_t floor_sink;
static atomic_ulong floor_signals;

static void floor_tick(int sig)
{
    (void)sig;
    atomic_fetch_add_explicit(&floor_signals, 1, memory_order_relaxed);
}

struct floor_arg {
    uint64_t n, period_us;
};

static void *floor_cruncher(void *arg)
{
    const struct floor_arg *a = arg;
    timer_t tm;
    if (a->period_us) {
        struct sigevent ev;
        memset(&ev, 0, sizeof ev);
        ev.sigev_notify = SIGEV_THREAD_ID;
        ev.sigev_signo = SIGALRM;
        ev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
        if (timer_create(CLOCK_MONOTONIC, &ev, &tm) != 0)
            die("timer_create", errno);
        long ns = (long)(a->period_us * 1000u);
        struct itimerspec it = { { ns / 1000000000, ns % 1000000000 },
                                 { ns / 1000000000, ns % 1000000000 } };
        if (timer_settime(tm, 0, &it, NULL) != 0)
            die("timer_settime", errno);
    }
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (uint64_t i = 0; i < a->n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    floor_sink = x;
    if (a->period_us)
        timer_delete(tm);
    return NULL;
}

static uint64_t cpu_ns_self(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        die("getrusage", errno);
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000u +
           (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000u;
}

static void run_floor(uint64_t n)
{
    const char *env = getenv("BENCH_TIMER_US");
    struct floor_arg a = { .n = 2 * n, .period_us = env ? strtoull(env, NULL, 10) : 0 };
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = floor_tick;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGALRM, &sa, NULL) != 0)
        die("sigaction", errno);
    pthread_t t[FLOOR_THREADS];
    uint64_t c0 = cpu_ns_self(), t0 = now_ns();
    for (int i = 0; i < FLOOR_THREADS; i++)
        CHECK(pthread_create(&t[i], &small_stack, floor_cruncher, &a));
    for (int i = 0; i < FLOOR_THREADS; i++)
        CHECK(pthread_join(t[i], NULL));
    uint64_t dt = now_ns() - t0, dc = cpu_ns_self() - c0;
    printf("preempt_cost %.1f ms\n", (double)dt / 1e6);
    printf("preempt_cost_cpu %.1f ms\n", (double)dc / 1e6);
    printf("preempt_cost_signals %lu signals\n", atomic_load(&floor_signals));
}

struct bench {
    const char *name;
    uint64_t    default_n;
    uint64_t  (*run)(uint64_t n);   /* NULL for park */
    double      ops_per_n;          /* value = elapsed / (ops_per_n * n) */
    const char *unit;
};

static const struct bench benches[] = {
    { "yield",       200000, run_yield,     2, "ns/switch" },
    { "spawn",        10000, run_spawn,     1, "ns/spawn+join" },
    { "spawnmany",    10000, run_spawnmany, 1, "ns/thread" },
    { "chan",         15000, run_chan,      2, "ns/hop" },
    { "mutex",     20000000, run_mutex,     1, "ns/lock+unlock" },
    { "park",         10000, NULL,          1, "B/thread" },
    { "preempt_cost", 200000000, NULL,      1, "ms" },
};

static void usage(void)
{
    fprintf(stderr, "usage: pthread_bench yield|spawn|spawnmany|chan|mutex|park|preempt_cost [N]\n");
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3)
        usage();
    const struct bench *b = NULL;
    for (size_t i = 0; i < sizeof benches / sizeof benches[0]; i++)
        if (strcmp(argv[1], benches[i].name) == 0)
            b = &benches[i];
    if (b == NULL)
        usage();

    uint64_t n = b->default_n;
    if (argc == 3) {
        char *end;
        errno = 0;
        n = strtoull(argv[2], &end, 10);
        if (errno != 0 || *end != '\0' || argv[2][0] == '-' || n == 0) {
            fprintf(stderr, "pthread_bench: bad N '%s'\n", argv[2]);
            exit(1);
        }
    }
    if (strcmp(b->name, "mutex") == 0) {
        n -= n % MUTEX_THREADS;
        if (n == 0)
            usage();
    }

    CHECK(pthread_attr_init(&small_stack));
    CHECK(pthread_attr_setstacksize(&small_stack, STACK_SIZE));

    if (strcmp(b->name, "preempt_cost") == 0) {
        run_floor(n);
    } else if (b->run != NULL) {
        uint64_t warm = n / 10;
        if (strcmp(b->name, "mutex") == 0)
            warm -= warm % MUTEX_THREADS;
        if (warm > 0)
            (void)b->run(warm);
        uint64_t ns = b->run(n);
        printf("%s %.2f %s\n", b->name, (double)ns / (b->ops_per_n * (double)n), b->unit);
    } else {
        struct park_result r = run_park(n);
        double grown = ((double)r.rss_kb - (double)r.rss_before_kb) * 1024.0;
        double kgrown = ((double)r.kstack_kb - (double)r.kstack_before_kb) * 1024.0;
        printf("park_rss %.0f B/thread\n", grown / (double)n);
        printf("park_rss_total %.1f MiB\n", (double)r.rss_kb / 1024.0);
        printf("park_pte_total %.1f MiB\n", (double)r.pte_kb / 1024.0);
        printf("park_stack %d B\n", STACK_SIZE);
        printf("park_kstack %.0f B/thread\n", kgrown / (double)n);
    }
    CHECK(pthread_attr_destroy(&small_stack));
    if (fflush(stdout) != 0)
        die("stdout", errno);
    return 0;
}
