/* exec from a green thread (signals/exec.c): no preemption signal of
 * libgreen's survives into the exec'd image, and a failed exec leaves the
 * thread preempted as before.
 *
 * Before, a request the monitor had just sent, or the worker's slice
 * timer's last expiry, stayed pending across execve and killed the new
 * image (SIGALRM's default action): the chain of tests/exec_chain died
 * within its first few hundred execs in every run. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "preempt_common.h"

Test(exec, an_exec_storm_from_preempted_workers_loses_no_image, .timeout = 300)
{
    const char *dir = getenv("abs_top_builddir");
    const char *n = getenv("GREEN_TEST_EXECS");
    char path[4096];
    /* The program itself, not libtool's wrapper script (a shell per exec):
     * the wrapper of this test set the library path it needs. */
    snprintf(path, sizeof path, "%s/tests/.libs/exec_chain", dir ? dir : ".");
    if (access(path, X_OK) != 0)
        snprintf(path, sizeof path, "%s/tests/exec_chain", dir ? dir : ".");
    n = n && *n ? n : "5000";
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        execl(path, path, n, (char *)NULL);
        _exit(127);
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(!WIFSIGNALED(st), "the chain of %s execs died of signal %d (%s)", n,
              WTERMSIG(st), strsignal(WTERMSIG(st)));
    cr_assert_eq(WEXITSTATUS(st), 0, "exec_chain %s exited with %d", n, WEXITSTATUS(st));
    cr_log_info("%s execs from preempted workers, none lost", n);
}

/* ---- A failed exec ------------------------------------------------------- */

struct failed {
    atomic_int stop;
    int rc, err, blocked_after;
    green_stats_t s0, s1;
};

static void *fail_then_spin(void *arg)
{
    struct failed *f = arg;
    char *argv[] = { "/nonexistent/green-exec-test", NULL };
    f->rc = execv(argv[0], argv);
    f->err = errno;
    sigset_t now;
    pthread_sigmask(SIG_SETMASK, NULL, &now);
    f->blocked_after = sigismember(&now, SIGALRM);
    f->s0 = stats_now();
    uint64_t end = tsc_after(100 * MS);
    while (!tsc_passed(end))
        ;
    f->s1 = stats_now();
    atomic_store(&f->stop, 1);
    return NULL;
}

static void *spin_until_stop(void *arg)
{
    struct failed *f = arg;
    while (!atomic_load_explicit(&f->stop, memory_order_relaxed))
        ;
    return NULL;
}

static void *failed_main(void *arg)
{
    return hog_beside(spin_until_stop, arg, fail_then_spin, arg);
}

Test(exec, a_failed_exec_returns_libcs_error_and_preemption_goes_on, .timeout = 30)
{
    struct failed f = { 0 };
    cr_assert_eq(run_mode(failed_main, &f, 1, GREEN_PREEMPT_SIGNAL, 1000), 0);
    cr_expect_eq(f.rc, -1);
    cr_expect_eq(f.err, ENOENT);
    cr_expect_eq(f.blocked_after, 0, "the preemption signal stayed blocked");
    cr_expect_gt(f.s1.preemptions - f.s0.preemptions, 10,
                 "the thread was not preempted after its failed exec");
}
