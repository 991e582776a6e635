/* exec_chain N: green threads preempted by signal -- two CPU hogs on two
 * workers at a 50 us quantum -- while a third execs this program again
 * with N-1, from the program's own code, until N is 0.  One process, N
 * execs, each from a worker that was being preempted a moment before: a
 * preemption signal that survived an exec would kill the image it became
 * (SIGALRM's default action), and the chain would end early
 * (tests/test_exec.c counts).  Exits 0 at the end of the chain; 2 on bad
 * usage; 1 if an exec fails. */
#define _GNU_SOURCE
#include <green.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static atomic_int stop;
static const char *self;
static long left;

static void *hog(void *arg)
{
    (void)arg;
    volatile unsigned long x = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed))
        x++;
    return NULL;
}

static void *execer(void *arg)
{
    (void)arg;
    /* Spin a few quanta first, so that requests and slice timers fly. */
    volatile unsigned long x = 0;
    for (unsigned long i = 0; i < 300000; i++)
        x++;
    char n[32];
    snprintf(n, sizeof n, "%ld", left - 1);
    execl(self, self, n, (char *)NULL);
    perror("exec_chain: execl");
    exit(1);
}

static void *chain_main(void *arg)
{
    (void)arg;
    green_t h[2], e;
    for (int i = 0; i < 2; i++)
        if (green_spawn(&h[i], hog, NULL) != 0)
            return (void *)1;
    if (green_spawn(&e, execer, NULL) != 0)
        return (void *)1;
    green_join(e, NULL);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 2 || (left = strtol(argv[1], NULL, 10)) < 0) {
        fprintf(stderr, "usage: exec_chain N\n");
        return 2;
    }
    if (left == 0)
        return 0;
    self = argv[0];
    green_config_t cfg;
    if (green_config_init(&cfg) != 0)
        return 1;
    cfg.workers = 2;
    cfg.quantum_us = 50;
    cfg.preempt = GREEN_PREEMPT_SIGNAL;
    green_run(chain_main, NULL, &cfg, NULL);
    return 1;                        /* the exec did not happen */
}
