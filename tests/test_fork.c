/* fork and vfork from a run (sched/fork.c): the child has no runtime -- no
 * workers, no green threads, no share in the parent's netpollers -- may
 * start runs of its own, and the parent loses nothing.
 *
 * Before, the child's thread still took itself for the worker it was
 * forked on: green_run said EBUSY, green calls acted on copies of the
 * parent's run, and the child's close of an fd (green_fd_forget, which the
 * shim's close calls) removed the parent's registration from the epoll
 * instance parent and child share: the parent's reader never woke. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "preempt_common.h"

/* Exit codes a child reports with: 0, or the check that failed. */
static void child_check(int ok, int code)
{
    if (!ok)
        _exit(code);
}

static void *child_thread(void *arg)
{
    atomic_int *ran = arg;
    atomic_store(ran, green_worker_index() >= 0 ? 1 : 2);
    return NULL;
}

static void *child_main(void *arg)
{
    (void)arg;
    atomic_int ran = 0;
    green_t t;
    if (green_spawn(&t, child_thread, &ran) != 0 || green_join(t, NULL) != 0)
        return (void *)1;
    return atomic_load(&ran) == 1 ? NULL : (void *)1;
}

/* In the child of a green thread: no worker, no green thread, and a run of
 * its own works. */
static void in_child(void)
{
    child_check(green_worker_index() == -1, 10);
    green_t t;
    child_check(green_spawn(&t, child_thread, NULL) == EPERM, 11);
    green_yield();                   /* nothing else to run: returns */
#ifdef __SANITIZE_ADDRESS__
    /* AddressSanitizer's allocator (gcc 12's) is not fork-safe: a lock one
     * of the parent's other threads held stays held in the child, and the
     * child's next threads' allocations wait for it for good.  glibc's
     * malloc resets its locks in the child; this part needs it. */
    _exit(0);
#endif
    for (unsigned workers = 1; workers <= 2; workers++) {
        green_config_t cfg;
        child_check(green_config_init(&cfg) == 0, 12);
        cfg.workers = workers;
        void *ret = (void *)1;
        child_check(green_run(child_main, NULL, &cfg, &ret) == 0, 13);
        child_check(ret == NULL, 14);
    }
    _exit(0);
}

struct forker {
    bool use_vfork;
    int status;
};

static void *fork_and_wait(void *arg)
{
    struct forker *f = arg;
    pid_t pid = f->use_vfork ? vfork() : fork();
    if (pid == 0)
        in_child();
    cr_assert_neq(pid, -1);
    while (waitpid(pid, &f->status, 0) < 0 && errno == EINTR)
        ;
    return NULL;
}

static void *busy(void *arg)
{
    (void)arg;
    uint64_t end = tsc_after(20 * MS);
    while (!tsc_passed(end))
        ;
    return NULL;
}

static void *forker_main(void *arg)
{
    green_t h[2], f;
    for (int i = 0; i < 2; i++)
        cr_assert_eq(green_spawn(&h[i], busy, NULL), 0);
    cr_assert_eq(green_spawn(&f, fork_and_wait, arg), 0);
    cr_assert_eq(green_join(f, NULL), 0);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(green_join(h[i], NULL), 0);
    return NULL;
}

static void expect_child_ok(int status)
{
    cr_assert(WIFEXITED(status), "the child died of signal %d", WTERMSIG(status));
    cr_assert_eq(WEXITSTATUS(status), 0, "the child failed check %d", WEXITSTATUS(status));
}

Test(fork, a_child_of_a_green_thread_has_no_runtime_and_may_start_its_own, .timeout = 60)
{
    for (int mode = 0; mode < 3; mode++) {
        struct forker f = { .status = -1 };
        cr_assert_eq(run_mode(forker_main, &f, 2, mode == 0 ? GREEN_PREEMPT_SIGNAL
                                                 : mode == 1 ? GREEN_PREEMPT_BUDGET
                                                             : GREEN_PREEMPT_OFF, 50), 0);
        expect_child_ok(f.status);
    }
}

Test(fork, vfork_from_a_green_thread_is_a_fork, .timeout = 60)
{
#ifdef __SANITIZE_ADDRESS__
    cr_skip_test("AddressSanitizer intercepts vfork itself (sched/fork.c)");
#endif
    struct forker f = { .use_vfork = true, .status = -1 };
    cr_assert_eq(run_mode(forker_main, &f, 2, GREEN_PREEMPT_SIGNAL, 50), 0);
    expect_child_ok(f.status);
}

/* ---- The parent's netpoller ------------------------------------------- */

struct piped {
    int fds[2];
    atomic_int waiting;
    int wait_rc;
    int child_status;
};

static void *reader(void *arg)
{
    struct piped *p = arg;
    atomic_store(&p->waiting, 1);
    p->wait_rc = green_fd_wait(p->fds[0], POLLIN, green_now_ns() + 5 * SEC);
    return NULL;
}

static void *fork_forget_write(void *arg)
{
    struct piped *p = arg;
    while (!atomic_load(&p->waiting))
        green_sleep_ns(MS);
    green_sleep_ns(5 * MS);          /* the reader is parked, registered */
    pid_t pid = fork();
    if (pid == 0) {
        /* What the shim's close() does in the child. */
        child_check(green_fd_forget(p->fds[0]) == 0, 20);
        child_check(close(p->fds[0]) == 0, 21);
        _exit(0);
    }
    cr_assert_neq(pid, -1);
    while (waitpid(pid, &p->child_status, 0) < 0 && errno == EINTR)
        ;
    cr_assert_eq(write(p->fds[1], "x", 1), 1);
    return NULL;
}

static void *netpoll_main(void *arg)
{
    green_t r, w;
    cr_assert_eq(green_spawn(&r, reader, arg), 0);
    cr_assert_eq(green_spawn(&w, fork_forget_write, arg), 0);
    cr_assert_eq(green_join(w, NULL), 0);
    cr_assert_eq(green_join(r, NULL), 0);
    return NULL;
}

Test(fork, a_childs_close_leaves_the_parents_waiter_registered, .timeout = 60)
{
    struct piped p = { .wait_rc = -1 };
    cr_assert_eq(pipe(p.fds), 0);
    cr_assert_eq(run_mode(netpoll_main, &p, 2, GREEN_PREEMPT_SIGNAL, 1000), 0);
    expect_child_ok(p.child_status);
    cr_expect_eq(p.wait_rc, 0, "the parent's reader got %d (%s), not the byte written", p.wait_rc,
                 strerror(p.wait_rc));
    close(p.fds[0]);
    close(p.fds[1]);
}

/* ---- A child whose green thread function returns ------------------------ */

static void *fork_and_return(void *arg)
{
    int *status = arg;
    pid_t pid = fork();
    if (pid == 0)
        return NULL;                 /* the child's thread ends: exit 0 */
    cr_assert_neq(pid, -1);
    while (waitpid(pid, status, 0) < 0 && errno == EINTR)
        ;
    return NULL;
}

static void *return_main(void *arg)
{
    green_t t;
    cr_assert_eq(green_spawn(&t, fork_and_return, arg), 0);
    cr_assert_eq(green_join(t, NULL), 0);
    return NULL;
}

Test(fork, a_child_whose_thread_returns_exits_0, .timeout = 30)
{
    int status = -1;
    cr_assert_eq(run_mode(return_main, &status, 1, GREEN_PREEMPT_SIGNAL, 1000), 0);
    expect_child_ok(status);
}
