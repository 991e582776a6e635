/* token_ring: a million green threads pass a token around a ring.
 *
 *     token_ring [THREADS [LAPS]]        (default 1000000 threads, 5 laps)
 *
 * Thread i receives the token on channel i and sends it on channel i+1; the
 * main thread feeds channel 0 and reads the last channel, once per lap.  Every
 * hop is an unbuffered channel hand-off: one thread wakes the next and parks.
 * The program prints how long spawning took, each lap, the memory of the
 * parked ring, and checks that the token made exactly THREADS x LAPS hops.
 *
 * Environment: GREEN_WORKERS, GREEN_STACK_SIZE, ... (see README.md).
 */
#include <green.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct ring {
    long threads, laps;
    green_chan_t **ch;               /* threads + 1 channels */
};

static struct ring ring;

static void die(const char *what, int err)
{
    fprintf(stderr, "token_ring: %s: %s\n", what, strerror(err));
    exit(1);
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

static void *member(void *arg)
{
    long i = (long)arg, token;
    for (long lap = 0; lap < ring.laps; lap++) {
        int err = green_chan_recv(ring.ch[i], &token);
        if (err)
            die("green_chan_recv", err);
        token++;
        if ((err = green_chan_send(ring.ch[i + 1], &token)) != 0)
            die("green_chan_send", err);
    }
    return NULL;
}

static double ms_since(uint64_t t0) { return (double)(green_now_ns() - t0) / 1e6; }

static void *run_ring(void *unused)
{
    (void)unused;
    long n = ring.threads;
    int err;
    long rss0 = rss_kib();

    uint64_t t0 = green_now_ns();
    for (long i = 0; i <= n; i++)
        if ((err = green_chan_create(&ring.ch[i], sizeof(long), 0)) != 0)
            die("green_chan_create", err);
    for (long i = 0; i < n; i++)
        if ((err = green_spawn(NULL, member, (void *)i)) != 0)
            die("green_spawn", err);
    double spawn_ms = ms_since(t0);
    printf("  spawned %ld threads (and %ld channels) in %.0f ms: %.0f ns per thread\n",
           n, n + 1, spawn_ms, spawn_ms * 1e6 / (double)n);

    long token = 0;
    for (long lap = 1; lap <= ring.laps; lap++) {
        uint64_t l0 = green_now_ns();
        if ((err = green_chan_send(ring.ch[0], &token)) != 0)
            die("green_chan_send", err);
        if ((err = green_chan_recv(ring.ch[n], &token)) != 0)
            die("green_chan_recv", err);
        double ms = ms_since(l0);
        printf("  lap %ld: the token crossed %ld threads in %.0f ms: %.0f ns per hop%s\n",
               lap, n, ms, ms * 1e6 / (double)n,
               lap == 1 ? " (first run of every thread)" : "");
        if (lap == 1) {
            long rss = rss_kib();
            printf("  memory with %ld threads parked: %.0f MiB RSS, %.2f KiB per thread\n",
                   n, (double)rss / 1024, (double)(rss - rss0) / (double)n);
        }
    }
    if (token != n * ring.laps) {
        fprintf(stderr, "token_ring: the token made %ld hops, expected %ld\n", token,
                n * ring.laps);
        exit(1);
    }
    printf("  the token made %ld hops, as it should\n", token);
    return NULL;
}

int main(int argc, char **argv)
{
    ring.threads = argc > 1 ? atol(argv[1]) : 1000000;
    ring.laps = argc > 2 ? atol(argv[2]) : 5;
    if (ring.threads < 1 || ring.laps < 1) {
        fprintf(stderr, "usage: token_ring [THREADS [LAPS]]  (both at least 1)\n");
        return 2;
    }
    ring.ch = calloc((size_t)ring.threads + 1, sizeof *ring.ch);
    if (!ring.ch)
        die("calloc", ENOMEM);

    green_config_t cfg;
    int err = green_config_init(&cfg);
    if (err)
        return 2;
    long workers = cfg.workers ? (long)cfg.workers : sysconf(_SC_NPROCESSORS_ONLN);
    printf("libgreen token ring: %ld green threads, %ld laps, %ld workers, %zu KiB stacks\n",
           ring.threads, ring.laps, workers, cfg.stack_size >> 10);

    uint64_t t0 = green_now_ns();
    if ((err = green_run(run_ring, NULL, &cfg, NULL)) != 0)
        die("green_run", err);
    printf("  green_run returned after every thread finished: %.0f ms in all\n",
           ms_since(t0));

    for (long i = 0; i <= ring.threads; i++)
        green_chan_destroy(ring.ch[i]);
    free(ring.ch);
    return 0;
}
