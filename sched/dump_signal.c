/*
 * GREEN_DUMP_SIGNAL: a dump on stderr when the program gets that signal.
 *
 * The handler only counts and wakes a thread of libgreen's (a futex: the
 * semaphore calls are libgreen's own, for green threads, and a dump is
 * nothing a handler may make); that thread, started by the first run that
 * finds the variable set and blocking every signal, calls green_dump(2).
 * The handler stays for the life of the process.
 */
#include "sched.h"

#include <stdio.h>
#include <stdlib.h>

/* Dumps asked for, counted by the handler. */
static _Atomic uint32_t dumps_asked;

static void on_dump_signal(int sig)
{
    (void)sig;
    int saved = errno;
    atomic_fetch_add(&dumps_asked, 1);
    green__futex_wake(&dumps_asked, 1);
    errno = saved;
}

static void *dump_thread(void *arg)
{
    (void)arg;
    uint32_t done = 0;
    for (;;) {
        uint32_t asked = atomic_load(&dumps_asked);
        if (asked == done) {
            green__futex_wait(&dumps_asked, asked, GREEN_FOREVER);
            continue;
        }
        done = asked;                /* several signals meanwhile: one dump */
        green_dump(2);
    }
    return NULL;
}

int green__dump_signal_init(int preempt_signo)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static int done_signo;           /* the signal installed; 0: none yet */
    const char *s = getenv("GREEN_DUMP_SIGNAL");
    int signo = 0, err = 0;
    if (!s || !*s)
        return 0;
    if (!green__parse_signal(s, &signo) || !green__signo_ok(signo)) {
        fprintf(stderr, "libgreen: GREEN_DUMP_SIGNAL=%s: expected a catchable signal that is "
                        "not a fault nor glibc's own, e.g. QUIT or USR1\n", s);
        return EINVAL;
    }
    if (signo == preempt_signo) {
        fprintf(stderr, "libgreen: GREEN_DUMP_SIGNAL=%s is the preemption signal "
                        "(GREEN_SIGNAL): choose another\n", s);
        return EINVAL;
    }
    green__os_mutex_lock(&lock);
    if (done_signo == 0) {
        /* The thread takes no signal: the dump's is handled elsewhere. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_t th;
        pthread_sigmask(SIG_SETMASK, &all, &old);
        err = pthread_create(&th, NULL, dump_thread, NULL);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (!err) {
            pthread_detach(th);
            struct sigaction sa;
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = on_dump_signal;
            sa.sa_flags = SA_RESTART;
            sigemptyset(&sa.sa_mask);
            err = sigaction(signo, &sa, NULL) != 0 ? errno : 0;
        }
        done_signo = err ? 0 : signo;
    } else if (done_signo != signo) {
        fprintf(stderr, "libgreen: GREEN_DUMP_SIGNAL changed from %d to %s after the first "
                        "run: the first stays\n", done_signo, s);
    }
    green__os_mutex_unlock(&lock);
    return err;
}
