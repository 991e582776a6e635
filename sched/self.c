/*
 * Who the calling OS thread is, for libgreen: the worker it is (NULL for any
 * other thread), and whether libgreen's own signal handler -- or a walk of a
 * green thread's stack -- runs on it right now (sched.h says what then
 * changes).  Read on every call into libgreen and by the signal handler, so
 * both are initial-exec TLS: one %fs-relative load each.  At the bottom of
 * sched/: every file reads them, and this one calls no other.
 */
#include "sched.h"

__thread struct green__worker *green__tls_worker __attribute__((tls_model("initial-exec")));

void green__worker_set(struct green__worker *w) { green__tls_worker = w; }

__thread unsigned green__in_handler __attribute__((tls_model("initial-exec")));

int green_worker_index(void)
{
    struct green__worker *w = green__worker_self();
    return w && w->cur != &w->g0 && !green__in_handler ? (int)w->index : -1;
}
