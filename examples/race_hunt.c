/* Hunting a race with deterministic runs, then replaying it.
 *
 * Three green threads make deposits into one balance with a read, some
 * work, and a write -- a lost-update bug that shows only when a slice ends
 * between the read and the write.  Built with -finstrument-functions
 * (`pkg-config --cflags --libs green-budget`), every function entry may end a
 * slice; a deterministic run draws slice lengths and the order of threads
 * from its seed.
 *
 *   race_hunt              try seeds 1, 2, ... until one loses deposits,
 *                          then replay that seed and show it loses the same
 *   race_hunt SEED         one run with that seed: its balance and digest
 *                          (equal output for equal seeds, in any process)
 */
#include <green.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#define DEPOSITORS 3
#define DEPOSITS 40
#define MAX_SEEDS 100000

struct account {
    long balance;
    uint64_t digest;
};

/* Stands in for real work: audit trails, formatting, ... */
static __attribute__((noinline)) unsigned long work(unsigned n)
{
    return n < 2 ? n : work(n - 1) + work(n - 2);
}

static __attribute__((noinline)) void log_deposit(long balance)
{
    __asm__ volatile("" : : "r"(balance) : "memory");
}

static void *depositor(void *arg)
{
    struct account *a = arg;
    for (int i = 0; i < DEPOSITS; i++) {
        work(8);
        long b = a->balance;         /* read */
        log_deposit(b);              /* a function entry: a slice may end here */
        a->balance = b + 1;          /* write: loses what others did meanwhile */
    }
    return NULL;
}

static void *bank(void *arg)
{
    struct account *a = arg;
    green_t t[DEPOSITORS];
    for (int i = 0; i < DEPOSITORS; i++)
        if (green_spawn(&t[i], depositor, a) != 0)
            return arg;
    for (int i = 0; i < DEPOSITORS; i++)
        green_join(t[i], NULL);
    green_schedule_digest(&a->digest, NULL);
    return NULL;
}

static int run_seed(uint64_t seed, struct account *a)
{
    green_config_t cfg;
    if (green_config_init(&cfg) != 0)
        return EINVAL;
    cfg.workers = 1;
    cfg.deterministic = GREEN_DETERMINISTIC_ON;
    cfg.preempt = GREEN_PREEMPT_BUDGET;
    cfg.seed = seed;
    a->balance = 0;
    a->digest = 0;
    void *ret = NULL;
    int err = green_run(bank, a, &cfg, &ret);
    return err ? err : ret ? EAGAIN : 0;
}

int main(int argc, char **argv)
{
    const long want = DEPOSITORS * DEPOSITS;
    struct account a;
    if (argc > 1) {
        char *end;
        errno = 0;
        uint64_t seed = strtoull(argv[1], &end, 10);
        if (errno || *end || seed == 0) {
            fprintf(stderr, "usage: %s [SEED]  (SEED: a number from 1)\n", argv[0]);
            return 2;
        }
        int err = run_seed(seed, &a);
        if (err) {
            fprintf(stderr, "race_hunt: green_run: error %d\n", err);
            return 1;
        }
        printf("seed %" PRIu64 ": balance %ld of %ld, schedule digest %016" PRIx64 "\n", seed,
               a.balance, want, a.digest);
        return 0;
    }
    for (uint64_t seed = 1; seed <= MAX_SEEDS; seed++) {
        int err = run_seed(seed, &a);
        if (err) {
            fprintf(stderr, "race_hunt: green_run: error %d\n", err);
            return 1;
        }
        if (a.balance == want)
            continue;
        printf("seed %" PRIu64 " loses %ld of %ld deposits (digest %016" PRIx64 "), after %" PRIu64
               " clean seeds\n",
               seed, want - a.balance, want, a.digest, seed - 1);
        long lost = a.balance;
        uint64_t digest = a.digest;
        for (int k = 1; k <= 3; k++) {
            if ((err = run_seed(seed, &a)) != 0)
                return 1;
            printf("replay %d of seed %" PRIu64 ": balance %ld, digest %016" PRIx64 " -- %s\n", k,
                   seed, a.balance, a.digest,
                   a.balance == lost && a.digest == digest ? "the same" : "DIFFERENT");
            if (a.balance != lost || a.digest != digest)
                return 1;
        }
        return 0;
    }
    printf("no seed of %d lost a deposit\n", MAX_SEEDS);
    return 1;
}
