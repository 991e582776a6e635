/*
 * The program's say in preemption: green_nopreempt_begin/end and
 * green_safepoint.
 *
 * A section between green_nopreempt_begin and _end is never switched out
 * by a preemption: the handler refuses it (t->nopreempt, counted in
 * refused_nopreempt) and leaves the preemption pending on the thread, and
 * the section's end takes it (green__poll) -- at once, not at the
 * monitor's next retry.  Sections nest.  green_safepoint is a place where
 * a pending preemption, or a spent budget, may be taken.  On the
 * scheduler's own stack (g0), or outside a run, all three do nothing.
 */
#include "signals.h"

void green_nopreempt_begin(void)
{
    struct green__worker *w = green__worker_self();
    if (w && w->cur != &w->g0)
        w->cur->nopreempt++;
}

void green_nopreempt_end(void)
{
    struct green__worker *w = green__worker_self();
    if (!w || w->cur == &w->g0)
        return;
    struct green__thread *t = w->cur;
    if (t->nopreempt > 0 && --t->nopreempt == 0)
        green__poll(w);              /* the one refused meanwhile */
}

void green_safepoint(void)
{
    struct green__worker *w = green__worker_self();
    if (w && w->cur != &w->g0)
        green__poll(w);
}
