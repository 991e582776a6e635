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
__thread struct green__handler_mark green__handler_mark __attribute__((tls_model("initial-exec")));

bool green__handler_left_at(uintptr_t sp)
{
    struct green__handler_mark *m = &green__handler_mark;
    struct green__worker *w = green__worker_self();
    if (!m->t || !w)
        return false;
    /* A running handler switches nothing: if another thread is current,
     * the one it interrupted has left it and gone on. */
    bool left = w->cur != m->t;
    if (!left) {
        uintptr_t lo = (uintptr_t)green__stack_lo(m->t), hi = (uintptr_t)m->t->stack_hi;
        bool frame_on_t = m->frame >= lo && m->frame < hi;
        left = sp >= lo && sp < hi && (!frame_on_t || sp > m->frame);
    }
    if (left) {
        /* A walk begun since counts on: only the handlers go. */
        green__in_handler = green__in_handler > m->depth ? green__in_handler - m->depth : 0;
        *m = (struct green__handler_mark){ NULL, 0, 0 };
    }
    return left;
}

__attribute__((noinline)) bool green__handler_left(void)
{
    return green__handler_left_at((uintptr_t)__builtin_frame_address(0));
}

int green_worker_index(void)
{
    struct green__worker *w = green__worker_self();
    return w && w->cur != &w->g0 && !green__in_handler_now() ? (int)w->index : -1;
}
