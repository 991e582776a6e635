/* libfaults (tests/faults.c): make the Nth call of chosen kinds fail. */
#ifndef GREEN_TESTS_FAULTS_H
#define GREEN_TESTS_FAULTS_H

#include <stdbool.h>

enum fault_kind {
    FAULT_MALLOC,   /* malloc, calloc, realloc, aligned_alloc, posix_memalign: ENOMEM */
    FAULT_MMAP,     /* mmap: ENOMEM */
    FAULT_THREAD,   /* pthread_create: EAGAIN */
    FAULT_TIMER,    /* timer_create: EAGAIN */
    FAULT_SIGNAL,   /* sigaction that installs a handler: EINVAL */
    FAULT_EPOLL,    /* epoll_create1, epoll_ctl ADD/MOD, eventfd: ENOMEM */
    FAULT_KINDS
};

/* From now on, the nth call (1 = the next) of any kind in the mask
 * (1 << kind) fails; later ones succeed. */
void faults_arm(unsigned kinds, long nth);
void faults_disarm(void);
/* Calls of kind made since the process started. */
long faults_calls(int kind);
/* Failures injected since the last faults_arm. */
long faults_failed(void);
/* Blocks from malloc and friends not yet freed. */
long faults_live(void);
/* From now on, a sigaction that installs a handler for sig (0: none) sends
 * sig to the calling thread once the new handler is in place and before
 * the old action is stored for the caller -- where a signal that arrives
 * during the system call is delivered. */
void faults_signal_on_install(int sig);

#endif
