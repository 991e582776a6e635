/*
 * The scene tests/gdb_ext.sh reads with gdb (tools/libgreen-gdb.py): a
 * green mutex held by a thread parked on a channel, a thread parked on that
 * mutex, a thread that computes, a thread waiting for a pipe to be
 * readable, and the run's main thread joining the first.  Once everything is in place it prints "ready <pid>" and waits,
 * until it is killed or, at the latest, after `seconds` (argv[1], default
 * 60).  Each thread waits in a function of its own, which gdb's backtrace
 * must show: gdb_scene_hold_and_wait, gdb_scene_lock, gdb_scene_spin.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "green.h"

static green_mutex_t scene_mutex = GREEN_MUTEX_INIT;
static green_chan_t *scene_chan;
static atomic_int spin_stop;
static int preempt_mode;

__attribute__((noinline)) void gdb_scene_hold_and_wait(void)
{
    green_mutex_lock(&scene_mutex);
    int v;
    green_chan_recv(scene_chan, &v);         /* until the end */
    green_mutex_unlock(&scene_mutex);
}

static void *holder_fn(void *arg)
{
    (void)arg;
    green_set_name("holder");
    gdb_scene_hold_and_wait();
    return NULL;
}

__attribute__((noinline)) void gdb_scene_lock(void)
{
    green_mutex_lock(&scene_mutex);
    green_mutex_unlock(&scene_mutex);
}

static void *waiter_fn(void *arg)
{
    (void)arg;
    green_set_name("waiter");
    gdb_scene_lock();
    return NULL;
}

__attribute__((noinline)) void gdb_scene_spin(void)
{
    while (!atomic_load_explicit(&spin_stop, memory_order_relaxed))
        ;
}

static void *spinner_fn(void *arg)
{
    green_set_name(arg ? "spinner2" : "spinner");
    gdb_scene_spin();
    return NULL;
}

static int scene_pipe[2];

static void *reader_fn(void *arg)
{
    (void)arg;
    green_set_name("reader");
    green_fd_wait(scene_pipe[0], POLLIN, GREEN_FOREVER);
    return NULL;
}

static void *scene_main(void *arg)
{
    unsigned seconds = *(unsigned *)arg;
    green_t holder, waiter, spinner, spinner2, reader;
    green_set_name("main");
    if (green_chan_create(&scene_chan, sizeof(int), 0) != 0 ||
        green_spawn(&holder, holder_fn, NULL) != 0)
        abort();
    green_sleep_ns(20000000);                /* the holder has the mutex */
    if (green_spawn(&waiter, waiter_fn, NULL) != 0 ||
        green_spawn(&spinner, spinner_fn, NULL) != 0 ||
        (preempt_mode && green_spawn(&spinner2, spinner_fn, "2") != 0) ||
        pipe2(scene_pipe, O_NONBLOCK | O_CLOEXEC) != 0 ||
        green_spawn(&reader, reader_fn, NULL) != 0)
        abort();
    green_sleep_ns(20000000);                /* all in place */
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    green_sleep_ns((uint64_t)seconds * 1000000000u);
    atomic_store(&spin_stop, 1);
    int v = 1;
    green_chan_send(scene_chan, &v);
    green_join(holder, NULL);
    green_join(waiter, NULL);
    green_join(spinner, NULL);
    if (write(scene_pipe[1], "x", 1) != 1)
        abort();
    green_join(reader, NULL);
    if (preempt_mode)
        green_join(spinner2, NULL);
    green_chan_destroy(scene_chan);
    return NULL;
}

int main(int argc, char **argv)
{
    unsigned seconds = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 60;
    preempt_mode = argc > 2 && strcmp(argv[2], "preempt") == 0;
    green_config_t cfg;
    green_config_init(&cfg);
    cfg.workers = preempt_mode ? 1 : 2;
    cfg.preempt = preempt_mode ? GREEN_PREEMPT_SIGNAL : GREEN_PREEMPT_OFF;
    int err = green_run(scene_main, &seconds, &cfg, NULL);
    if (err) {
        fprintf(stderr, "gdb_scene: green_run: %s\n", strerror(err));
        return 1;
    }
    return 0;
}
