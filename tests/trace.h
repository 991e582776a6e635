/* The preemption trace of the test build (signals/test_trace.c, libgreen-trace):
 * fn gets the frames of every preemption taken (backtrace(): libgcc's
 * unwinder, independent of the handler's libunwind walk), on the preempted
 * thread, before it is switched out.  deferred: taken when a
 * GREEN_NOPREEMPT function returned.  fn NULL stops it. */
#ifndef GREEN_TESTS_TRACE_H
#define GREEN_TESTS_TRACE_H

#include <stdbool.h>

typedef void green_trace_fn(void *const *ip, int n, bool deferred);
void green_trace_set(green_trace_fn *fn);

#endif
