/* stress: a randomized workload over the whole libgreen API that checks its
 * own invariants as it goes.
 *
 *     stress [--seconds S] [--seed N] [--workers W] [--hang S]
 *
 * It prints its seed first, then runs rounds until S seconds (default 10)
 * have passed.  A round is one green_run whose main thread starts a random
 * subset of nine components, each with random sizes and random choices of
 * call variants:
 *
 *   msgs   producers -> channels (buffered/unbuffered) -> receivers, with
 *          send/send_until/select sends, select/select_until/select_try/
 *          recv_until receives, and close; every message arrives exactly
 *          once (a seen-table, a count and a sum).
 *   bank   transfers between accounts under one mutex taken by lock,
 *          trylock or lock_until, with yields inside; an auditor checks the
 *          total while they run; an in-section flag checks exclusion.
 *   condq  a bounded queue under a mutex and two conds (wait/wait_until,
 *          signal/broadcast); count and sum are conserved.
 *   tree   threads spawning threads, joined (join/join_until) or detached
 *          (spawn NULL / detach) and tracked by a wait group; every node
 *          is counted once.
 *   timers sleeps and deadline calls that must time out, never early.
 *   nopre  nopreempt sections and GREEN_NOPREEMPT functions spinning for a
 *          while: none is ever switched out inside (a per-worker owner
 *          slot would be taken by another thread).
 *   fdio   writers -> non-blocking pipes -> readers, through green_fd_wait
 *          (sometimes with a deadline that passes) and green_fd_close;
 *          every record arrives exactly once (not in deterministic rounds).
 *   plocks pthread locks shared with plain OS threads: transfers under a
 *          pthread mutex (normal, recursive or error-checking) inside a
 *          rwlock's write side, some holding across a sleep; audits under
 *          the read side; a queue under a pthread condition that a plain
 *          thread fills and green threads drain.  Money conserved, exclusion
 *          held, holders never move, every item taken once, libc's error
 *          codes (not in deterministic rounds).
 *   cycles green and pthread mutexes taken in random nested sections, in
 *          ascending order only, where no lock cycle can form: no lock call
 *          may answer EDEADLK; beside them, a planted cycle of 2 to 4
 *          threads (each holds its lock and takes the next one's), which
 *          must be found: EDEADLK to its closer, one report on stderr.
 *
 * Every round runs with GREEN_DEADLOCK=error, so a cycle reported where
 * there is none -- in any component -- fails the call that saw it.  The
 * reports go through a pipe that counts them (and passes every other line
 * on to stderr): at the end, exactly one per planted cycle.
 *
 * Every thread the test starts is counted when started and when finished;
 * after green_run returns the two counts must match (no thread lost).  On
 * the first broken invariant the round fails: the program prints what broke,
 * the round and the seed, and exits 1; a round that takes over a minute
 * (--hang S: S seconds, for runs under Valgrind) is reported as hung.
 * Otherwise it prints a summary and exits 0.
 *
 * Each round also draws its preemption mode (off, signal, budget, both;
 * unless GREEN_PREEMPT is set), its quantum (50 us in a quarter of the
 * rounds, unless GREEN_QUANTUM_US is set), its reduction budget (a tiny one
 * in a quarter of the rounds, so that budget yields land everywhere), and in one
 * round of eight -- unless GREEN_DETERMINISTIC or --workers is set -- a
 * deterministic run on one worker.
 *
 * The seed drives every random choice the test makes (each thread gets its
 * own generator seeded by its parent), and is passed on as cfg.seed.  Only
 * a deterministic round replays its schedule from it.
 *
 * At the end it prints what it did: operations per second, the runtime's
 * counters (signals, preemptions, budget yields, refusals by reason) and the
 * peak RSS.  `make stress DURATION=S [WORKERS=W]` runs it for S seconds.
 */
#define _GNU_SOURCE
#include "stress.h"

#include <pthread.h>
#include <stdio.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

atomic_long stress_cycles_planted;

/* ---- stderr: lock cycle reports counted ------------------------------------ */

static int real_stderr = -1;
static atomic_long reports_seen;
static pthread_mutex_t sync_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sync_cond = PTHREAD_COND_INITIALIZER;
static long syncs_seen, syncs_wanted_;

static void *stderr_reader(void *arg)
{
    FILE *in = arg;
    char line[4096];
    bool in_report = false;
    while (fgets(line, sizeof line, in)) {
        if (!strncmp(line, "libgreen: lock cycle:", 21)) {
            atomic_fetch_add(&reports_seen, 1);
            in_report = true;
            continue;
        }
        if (in_report && (line[0] == ' ' || strstr(line, "returns EDEADLK")))
            continue;
        in_report = false;
        if (!strcmp(line, "stress: sync\n")) {
            pthread_mutex_lock(&sync_lock);
            syncs_seen++;
            pthread_cond_broadcast(&sync_cond);
            pthread_mutex_unlock(&sync_lock);
            continue;
        }
        if (write(real_stderr, line, strlen(line)) < 0)
            break;
    }
    return NULL;
}

/* fd 2 becomes a pipe read by stderr_reader. */
static void count_reports(void)
{
    int p[2];
    pthread_t t;
    FILE *in;
    if (pipe(p) != 0 || (real_stderr = dup(2)) < 0 || dup2(p[1], 2) < 0 ||
        !(in = fdopen(p[0], "r")) || pthread_create(&t, NULL, stderr_reader, in) != 0) {
        perror("stress: stderr pipe");
        exit(2);
    }
    close(p[1]);
    pthread_detach(t);
}

/* Every report written so far has been counted. */
static long reports_counted(void)
{
    fprintf(stderr, "stress: sync\n");
    fflush(stderr);
    pthread_mutex_lock(&sync_lock);
    long want = ++syncs_wanted_;
    while (syncs_seen < want)
        pthread_cond_wait(&sync_cond, &sync_lock);
    pthread_mutex_unlock(&sync_lock);
    return atomic_load(&reports_seen);
}

/* ---- rounds --------------------------------------------------------------- */

static void *(*const drivers[])(void *) = {msgs_driver, bank_driver, condq_driver,
                                           tree_driver, timers_driver, nopre_driver,
                                           fdio_driver, plocks_driver, cycles_driver};
/* Not in deterministic rounds: the kernel decides when a pipe has room, and
 * when plain threads run, not the seed. */
#define FDIO_DRIVER 6
#define PLOCKS_DRIVER 7
#define NDRIVERS (sizeof drivers / sizeof drivers[0])

static void *round_main(void *arg)
{
    struct round *r = arg;
    struct rng g = {r->seed};
    unsigned mask = 0;
    while (!mask) {
        mask = (unsigned)below(&g, 1u << NDRIVERS);
        if (r->det)
            mask &= ~(1u << FDIO_DRIVER | 1u << PLOCKS_DRIVER);
    }
    green_t t[NDRIVERS];
    for (size_t i = 0; i < NDRIVERS; i++) {
        if (!(mask & (1u << i)))
            continue;
        struct targ *a = malloc(sizeof *a);
        *a = (struct targ){r, (int)i, rng_next(&g)};
        spawn(r, &t[i], drivers[i], a);
    }
    for (size_t i = 0; i < NDRIVERS; i++)
        if (mask & (1u << i))
            join(r, t[i], NULL);
    return NULL;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The watchdog: a round that runs over hang_seconds (a minute; more under
 * Valgrind) is reported as hung. */
static long hang_seconds = 60;
static atomic_uint_fast64_t round_started_ns;
static char watched_mode[64];  /* the round's r->mode, for the report */
static atomic_long watched_round;

static void *watchdog(void *arg)
{
    (void)arg;
    for (;;) {
        sleep(1);
        uint64_t t0 = atomic_load(&round_started_ns);
        if (t0 && mono_ns() - t0 > (uint64_t)hang_seconds * 1000 * MS) {
            printf("stress: FAIL: round %ld (%s) hung for over %ld s (seed %" PRIu64 ")\n",
                   atomic_load(&watched_round), watched_mode, hang_seconds, the_seed);
            fflush(stdout);
            /* STRESS_ON_HANG: a command to look at the hung process first
             * (its pid in $STRESS_PID), e.g. gdb -p "$STRESS_PID" -batch
             * -ex "thread apply all bt". */
            const char *cmd = getenv("STRESS_ON_HANG");
            if (cmd && *cmd) {
                char pid[24];
                snprintf(pid, sizeof pid, "%ld", (long)getpid());
                setenv("STRESS_PID", pid, 1);
                if (system(cmd) == -1)
                    perror("stress: STRESS_ON_HANG");
            }
            _exit(1);
        }
    }
    return NULL;
}

/* What the run did, beyond the invariants: the runtime's counters and the
 * peak memory. */
static void report(long ops, double secs)
{
    green_stats_t st;
    green_stats(&st);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("stress: %.0f operations/s; %" PRIu64 " preemption signals sent, %" PRIu64
           " preemptions, %" PRIu64 " budget yields, %" PRIu64 " refused preemptions taken later\n",
           ops / (secs > 0 ? secs : 1), st.signals_sent, st.preemptions, st.budget_yields,
           st.deferred_taken);
    printf("stress: refusals: %" PRIu64 " in the runtime, %" PRIu64 " nopreempt, %" PRIu64
           " unsafe pc, %" PRIu64 " unsafe caller frame, %" PRIu64 " unwind, %" PRIu64
           " stack headroom, %" PRIu64 " budget; %" PRIu64 " foreign signals\n",
           st.refused_runtime, st.refused_nopreempt, st.refused_unsafe_pc,
           st.refused_unsafe_frame, st.refused_unwind, st.refused_headroom, st.budget_refused,
           st.foreign_signals);
    printf("stress: peak RSS %ld MiB\n", ru.ru_maxrss / 1024);
}

static void usage(const char *argv0)
{
    fprintf(stderr, "usage: %s [--seconds S] [--seed N] [--workers W] [--hang S]\n", argv0);
    exit(2);
}

int main(int argc, char **argv)
{
    double seconds = 10;
    uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ mono_ns();
    long workers = -1;  /* -1: chosen per round, 1..4 */
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage(argv[0]);
        char *end;
        if (!strcmp(argv[i], "--seconds")) {
            seconds = strtod(argv[++i], &end);
            if (*end || seconds < 0)
                usage(argv[0]);
        } else if (!strcmp(argv[i], "--seed")) {
            seed = strtoull(argv[++i], &end, 0);
            if (*end)
                usage(argv[0]);
        } else if (!strcmp(argv[i], "--hang")) {
            hang_seconds = strtol(argv[++i], &end, 0);
            if (*end || hang_seconds < 1)
                usage(argv[0]);
        } else if (!strcmp(argv[i], "--workers")) {
            workers = strtol(argv[++i], &end, 0);
            if (*end || workers < 0)
                usage(argv[0]);
        } else {
            usage(argv[0]);
        }
    }
    the_seed = seed;
    count_reports();
    printf("stress: seed %" PRIu64 "\n", seed);
    fflush(stdout);

    pthread_t wd;
    if (pthread_create(&wd, NULL, watchdog, NULL) != 0) {
        perror("pthread_create");
        return 2;
    }
    pthread_detach(wd);

    struct rng g = {seed};
    uint64_t start = mono_ns(), end = start + (uint64_t)(seconds * 1e9);
    long rounds = 0, ops = 0, threads = 0;
    do {
        struct round *r = calloc(1, sizeof *r);
        r->index = rounds;
        r->seed = rng_next(&g);
        green_config_t cfg;
        int rc = green_config_init(&cfg);
        if (rc != 0) {
            printf("stress: FAIL: green_config_init returned %d (seed %" PRIu64 ")\n", rc, seed);
            return 1;
        }
        unsigned w = workers >= 0 ? (unsigned)workers : (unsigned)between(&g, 1, 4);
        if (!getenv("GREEN_PREEMPT"))
            cfg.preempt = (int)below(&g, 4);
        if (!getenv("GREEN_BUDGET"))
            cfg.budget = (unsigned)(below(&g, 4) == 0 ? between(&g, 1, 50) : between(&g, 100, 4000));
        if (!getenv("GREEN_QUANTUM_US"))  /* the aggressive 50 us in a quarter */
            cfg.quantum_us = (unsigned)(below(&g, 4) == 0 ? 50 : between(&g, 100, 2000));
        if (!getenv("GREEN_DETERMINISTIC") && workers < 0 && below(&g, 8) == 0) {
            cfg.deterministic = GREEN_DETERMINISTIC_ON;
            w = 1;
        }
        r->det = cfg.deterministic != GREEN_DETERMINISTIC_OFF;
        static const char *const modes[] = { "off", "signal", "budget", "both" };
        snprintf(r->mode, sizeof r->mode, "%s, quantum %u us, budget %u%s",
                 cfg.preempt >= 0 && cfg.preempt < 4 ? modes[cfg.preempt] : "?",
                 cfg.quantum_us, cfg.budget, cfg.deterministic ? ", deterministic" : "");
        if (!getenv("GREEN_DEADLOCK"))
            cfg.deadlock = GREEN_DEADLOCK_ERROR;
        cfg.workers = w;
        r->workers = w;
        cfg.seed = r->seed;
        memcpy(watched_mode, r->mode, sizeof watched_mode);
        atomic_store(&watched_round, rounds);
        atomic_store(&round_started_ns, mono_ns());
        rc = green_run(round_main, r, &cfg, NULL);
        atomic_store(&round_started_ns, 0);
        if (rc != 0)
            failf(r, "green_run returned %d (%s)", rc, strerror(rc));
        else if (atomic_load(&r->started) != atomic_load(&r->finished))
            failf(r, "%ld threads started, %ld finished: threads lost",
                  atomic_load(&r->started), atomic_load(&r->finished));
        rounds++;
        ops += atomic_load(&r->ops);
        threads += atomic_load(&r->started);
        free(r);
    } while (mono_ns() < end);
    long reports = reports_counted(), planted = atomic_load(&stress_cycles_planted);
    if (reports != planted) {
        printf("stress: FAIL: %ld lock cycles planted and found, %ld reported (seed %" PRIu64 ")\n",
               planted, reports, seed);
        return 1;
    }
    printf("stress: %ld lock cycles planted, each found and reported once\n", planted);
    double secs = (double)(mono_ns() - start) / 1e9;
    printf("stress: ok: %ld rounds, %ld operations, %ld threads in %.1f s (seed %" PRIu64 ")\n",
           rounds, ops, threads, secs, seed);
    report(ops, secs);
    return 0;
}

