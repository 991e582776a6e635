/*
 * The shim's plumbing: libc's definitions of the interposed names, errno
 * across a park, deadlines, and the offload pool.
 *
 * Each interposed name finds the next definition (libc's) with
 * dlsym(RTLD_NEXT), all of them at the first call of any (NEXT in shim.h),
 * or at load (the constructor below) so that calls made where nothing may
 * be allocated or locked -- inside a signal handler -- find them bound.
 */
#include "shim.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>

struct shim_next shim__next;
pthread_once_t shim__next_once = PTHREAD_ONCE_INIT;

static void *find(const char *name)
{
    void *p = dlsym(RTLD_NEXT, name);
    if (!p) {
        /* Nothing sensible can run without it: say which, and stop. */
        fprintf(stderr, "libgreen-preload: dlsym(RTLD_NEXT, \"%s\") failed\n", name);
        abort();
    }
    return p;
}

void shim__find_all(void)
{
#define FIND(name) (*(void **)&shim__next.name = find(#name))
    FIND(read); FIND(write); FIND(readv); FIND(writev);
    FIND(recv); FIND(recvfrom); FIND(recvmsg); FIND(recvmmsg);
    FIND(send); FIND(sendto); FIND(sendmsg); FIND(sendmmsg);
    FIND(accept); FIND(accept4); FIND(connect);
    FIND(sendfile); FIND(splice); FIND(tee);
    FIND(poll); FIND(ppoll); FIND(select); FIND(pselect);
    FIND(epoll_wait); FIND(epoll_pwait);
    FIND(sleep); FIND(usleep); FIND(nanosleep); FIND(clock_nanosleep);
    FIND(wait4); FIND(waitid); FIND(flock);
    FIND(fcntl); FIND(fcntl64); FIND(ioctl); FIND(setsockopt);
    FIND(close); FIND(dup); FIND(dup2); FIND(dup3); FIND(fclose);
    FIND(getaddrinfo); FIND(getnameinfo);
#undef FIND
}

__attribute__((constructor)) static void next_init(void)
{
    pthread_once(&shim__next_once, shim__find_all);
}

__attribute__((noinline)) int shim__get_errno(void)
{
    __asm__ volatile("" : : : "memory");
    return errno;
}

__attribute__((noinline)) void shim__set_errno(int e)
{
    __asm__ volatile("" : : : "memory");
    errno = e;
}

uint64_t shim__deadline_in(int64_t sec, int64_t nsec)
{
    uint64_t now = green_now_ns();
    if (sec < 0 || nsec < 0)
        return now;
    uint64_t room = GREEN_FOREVER - 1 - now;       /* GREEN_FOREVER is UINT64_MAX */
    if ((uint64_t)sec > room / 1000000000u)
        return GREEN_FOREVER;
    uint64_t ns = (uint64_t)sec * 1000000000u;
    if ((uint64_t)nsec > room - ns)
        return GREEN_FOREVER;
    return now + ns + (uint64_t)nsec;
}

void shim__offload(void *(*fn)(void *), void *arg)
{
    if (green_offload(fn, arg, NULL) != 0)
        fn(arg);                     /* no pool thread: block here */
}
