/*
 * green_stats: what preemption did, counted where it happens.
 *
 * Each counter is one relaxed atomic add (green__count, signals.h) at the
 * place that decides -- the handler's refusals, the monitor's requests,
 * the hijacks -- and is read here only, when the program asks; the
 * budget's counters are safepoints/'s.  Counters of the process, not of a
 * run: they add up across runs.
 */
#include "signals.h"
#include "safepoints.h"

#include <string.h>

struct green__sig_stats green__sig_stats;

void green_stats(green_stats_t *s)
{
    if (!s)
        return;
    const struct green__sig_stats *c = &green__sig_stats;
    memset(s, 0, sizeof *s);
    s->signals_sent = atomic_load(&c->signals_sent);
    s->preemptions = atomic_load(&c->preemptions);
    s->refused_runtime = atomic_load(&c->refused_runtime);
    s->refused_nopreempt = atomic_load(&c->refused_nopreempt);
    s->refused_unsafe_pc = atomic_load(&c->refused_unsafe_pc);
    s->refused_headroom = atomic_load(&c->refused_headroom);
    s->foreign_signals = atomic_load(&c->foreign);
    s->refused_unsafe_frame = atomic_load(&c->refused_unsafe_frame);
    s->refused_unwind = atomic_load(&c->refused_unwind);
    s->deferred_taken = atomic_load(&green__deferred_taken);
    s->budget_yields = atomic_load(&green__budget_yields);
    s->budget_refused = atomic_load(&green__budget_refused);
    s->signal_lost = atomic_load(&c->signal_lost);
    s->hijacks = atomic_load(&c->hijacks);
    s->hijacks_undone = atomic_load(&c->hijacks_undone);
    s->lock_handoffs = atomic_load(&green__lock_handoffs);
}
