/* Private to libgreen. */
/*
 * The scheduler's shared vocabulary: green threads, workers, the runtime.
 * Each part's types, invariants and calls are in a header of its own,
 * gathered here from the bottom up: base.h (what every file uses),
 * thread.h, pool.h, worker.h, rt.h (one green_run), runq.h, slice.h,
 * park.h, sync.h, trace.h (the timeline's records); foreign.h and
 * pthread.h for the files that deal in the program's locks.
 *
 * Glossary
 *   thread   a green thread: a control block (struct green__thread) at the
 *            top of its own mmap'd stack slot.
 *   worker   an OS thread that runs green threads (struct green__worker);
 *            one per online CPU by default.  Its own OS stack runs the
 *            scheduler loop, modelled as a pseudo-thread w->g0.
 *   rt       one green_run call: its workers, queues, stacks and counters.
 *   park     leave the CPU until some waker claims the thread and makes it
 *            runnable again (green__park).
 *   claim    the single winner among the wakers of one park (a send, a
 *            close, a timer) takes the thread with a CAS on t->wake.
 *
 * Thread states (t->state), for reports; the scheduling protocol itself rests
 * on t->on_cpu and t->wake:
 *   FREE -> RUNNABLE -> RUNNING -> (RUNNABLE | PARKED) ... -> DEAD -> FREE
 *
 * The on_cpu protocol.  A thread is on a CPU from the moment a worker decides
 * to switch to it until the next context has saved its registers.  A waker may
 * make a parking thread runnable -- and another worker may pick it -- before
 * the parking thread has finished switching out; the worker that picks it
 * waits for on_cpu to drop before switching in: a few instructions, or a
 * page fault when that switch launches a new thread (below).  This is
 * the Linux scheduler's p->on_cpu, and it lets every sync object release its
 * own lock before parking instead of holding it across the switch.  It waits
 * on g0 only, never while a thread of its own is still on its CPU: two
 * workers could each wait for the other's (green__switch goes by way of g0).
 * A thread that has never run has on_cpu GREEN_ON_CPU_LAUNCH and no saved
 * context yet: the worker that first switches to it zeroes the control
 * block's cold part and builds its first frame, both at the top of the
 * thread's stack (launch, in switch.c), so that a fresh stack page is
 * first touched by the worker that runs the thread, not by its spawner.
 * A first touch costs microseconds on a VM, and the runner is often
 * another worker: a spawning loop's pages then fault in on both CPUs.
 *
 * Dependencies point one way: sched/ knows nothing of signals; the
 * preemption layer calls in through the functions declared in these
 * headers.  Inside sched/ too, calls run one way, from run.c at the top
 * down to util.c (docs/design.md has the module map; tests/layers.sh
 * checks it on the built objects).
 */
#ifndef GREEN_SCHED_H
#define GREEN_SCHED_H

#include "base.h"
#include "thread.h"
#include "pool.h"
#include "worker.h"
#include "rt.h"
#include "runq.h"
#include "slice.h"
#include "park.h"
#include "sync.h"
#include "trace.h"

/* foreign.c: the program's and its libraries' locks on green threads --
 * declared in foreign.h, for the files that deal in them. */

#endif /* GREEN_SCHED_H */
