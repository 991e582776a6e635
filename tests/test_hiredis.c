/* An unmodified blocking client library, Debian's hiredis, on 1000 green
 * threads at once, through libgreen-preload.so (linked ahead of libc, or
 * LD_PRELOADed): every thread calls the plain blocking API -- redisConnect,
 * redisCommand -- against a redis-server this suite starts on 127.0.0.1,
 * and the shim parks the thread wherever hiredis would block its worker.
 *
 *   - set_get_incr: each thread SETs and GETs its own key and INCRs a shared
 *     counter; every reply must be right, the INCRs must hand out 1..1000
 *     once each, and the counter must end at 1000.
 *   - blpop: each thread sends `BLPOP list:i 1`, which the server holds for
 *     a second (a quarter of the lists get a value pushed after 300 ms).
 *     The whole run must take about as long as the slowest request (< 3 s),
 *     not their sum (~850 s; ~500 s on two workers blocked in read); all
 *     the requests must be waiting at once at some moment, and meanwhile a
 *     ticker thread must keep waking every 10 ms: the workers stay free.
 *
 * The server.  Each test (one process each, Criterion's default) gets its
 * own redis-server from the suite's .init: a free port (bind port 0, close,
 * pass it; retried if the server then fails to bind), no persistence, its
 * output in a temporary log, and ready once it answers PING.  The .fini
 * kills and reaps it, also after a failed assertion; if the test process
 * dies instead (a crash, Criterion's timeout), PR_SET_PDEATHSIG kills the
 * server.  A failed .init stops the server before it asserts: Criterion
 * runs no .fini after that.
 *
 * Green threads never call cr_assert (it longjmps to the test's own
 * thread): each one records what it saw, and the test checks afterwards.
 *
 * Needs the Debian packages libhiredis-dev (hiredis 0.14) and redis-server.
 * Build: the shim must come before libc, e.g.
 *   cc ... tests/test_hiredis.c build/preload/.libs/libgreen-preload.so \
 *      -Lbuild/.libs -lgreen $(pkg-config --cflags --libs hiredis) -lcriterion
 * -DTHREADS=n changes the thread count (the default is the 1000).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

#ifndef THREADS
#define THREADS 1000
#endif

#define SEC (1000u * MS)

/* ---- The server ------------------------------------------------------------- */

/* Owned by the test process's main thread; set by .init, cleared by .fini. */
static struct {
    pid_t pid;                      /* -1: none running */
    int port;
    char log[64];                   /* its stdout and stderr; "" when none */
} srv = { .pid = -1 };

static void stop_server(void)
{
    if (srv.pid > 0) {
        kill(srv.pid, SIGKILL);
        while (waitpid(srv.pid, NULL, 0) < 0 && errno == EINTR)
            ;
        srv.pid = -1;
    }
    if (srv.log[0]) {
        unlink(srv.log);
        srv.log[0] = '\0';
    }
}

/* Stop the server and fail the test: .init's way out (no .fini follows).
 * The arguments are evaluated after the stop, which removes the log. */
#define setup_fail(...)                                                        \
    do {                                                                       \
        stop_server();                                                         \
        cr_assert_fail(__VA_ARGS__);                                           \
    } while (0)

/* redis-server from PATH, else /usr/bin/redis-server; NULL when neither. */
static const char *find_redis(void)
{
    static char path[4096];
    const char *dirs = getenv("PATH");
    while (dirs && *dirs) {
        size_t len = strcspn(dirs, ":");
        if (len > 0 && len < sizeof path - sizeof "/redis-server") {
            snprintf(path, sizeof path, "%.*s/redis-server", (int)len, dirs);
            if (access(path, X_OK) == 0)
                return path;
        }
        dirs += len + (dirs[len] == ':');
    }
    return access("/usr/bin/redis-server", X_OK) == 0 ? "/usr/bin/redis-server" : NULL;
}

/* A port on 127.0.0.1 nobody listens on just now. */
static int free_port(void)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* dup2 as a raw system call (dup3 refuses from == to). */
static long move_fd(int from, int to)
{
    return from == to ? 0 : syscall(SYS_dup3, from, to, 0);
}

/* fork + execve.  Everything the environment, argv and log need is made
 * before the fork; the child makes raw system calls only (the shim's dup2
 * and close take locks another thread may have held at the fork). */
static pid_t spawn_redis(const char *path, int port, int log_fd)
{
    char port_s[16];
    snprintf(port_s, sizeof port_s, "%d", port);
    char *argv[] = {
        (char *)path, "--bind", "127.0.0.1", "--port", port_s,
        "--save", "", "--appendonly", "no", "--daemonize", "no",
        "--tcp-backlog", "2048",    /* 1000 connects at once: no SYN dropped */
        "--logfile", "", NULL,
    };
    extern char **environ;
    size_t n = 0;
    while (environ[n])
        n++;
    char **envp = calloc(n + 1, sizeof *envp);
    if (!envp)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)  /* the server runs without the shim */
        if (strncmp(environ[i], "LD_PRELOAD=", 11) != 0)
            envp[k++] = environ[i];
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* Dies with the thread that forked it: the test's main thread. */
        syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        if (syscall(SYS_getppid) != parent)
            syscall(SYS_exit_group, 127);
        int null = (int)syscall(SYS_openat, AT_FDCWD, "/dev/null", O_RDONLY, 0);
        if (null < 0 || move_fd(null, 0) < 0 || move_fd(log_fd, 1) < 0 || move_fd(log_fd, 2) < 0)
            syscall(SYS_exit_group, 126);
        if (syscall(SYS_close_range, 3u, ~0u, 0u) != 0)
            for (long fd = 3; fd < 65536; fd++)
                syscall(SYS_close, fd);
        syscall(SYS_execve, path, argv, envp);
        syscall(SYS_exit_group, 125);
    }
    free(envp);
    return pid;
}

enum { READY, EXITED, SILENT };

/* Wait until the server answers PING (READY), exits (EXITED: the port was
 * taken meanwhile, say), or 10 s pass (SILENT). */
static int wait_ready(pid_t pid, int port)
{
    uint64_t deadline = mono_ns() + 10ull * SEC;
    while (mono_ns() < deadline) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return EXITED;
        struct timeval tv = { .tv_sec = 0, .tv_usec = 200 * 1000 };
        redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
        bool pong = false;
        if (c && !c->err) {
            redisReply *r = redisCommand(c, "PING");
            pong = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
            freeReplyObject(r);
        }
        redisFree(c);
        if (pong)
            return READY;
        usleep(20 * 1000);
    }
    return SILENT;
}

/* The first lines of the server's log, for a failure message. */
static const char *log_head(void)
{
    static char buf[1024];
    buf[0] = '\0';
    int fd = srv.log[0] ? open(srv.log, O_RDONLY) : -1;
    if (fd >= 0) {
        ssize_t n = read(fd, buf, sizeof buf - 1);
        buf[n > 0 ? n : 0] = '\0';
        close(fd);
    }
    return buf;
}

static void start_server(void)
{
    /* 1000 client sockets here, 1000 in the server (which inherits it). */
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = rl.rlim_max;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    cr_assert_geq(rl.rlim_cur, (rlim_t)THREADS + 100,
                  "RLIMIT_NOFILE hard limit %llu: too few for %d connections",
                  (unsigned long long)rl.rlim_max, THREADS);

    const char *path = find_redis();
    cr_assert_not_null(path, "redis-server is in neither PATH nor /usr/bin: "
                             "install Debian's redis-server package "
                             "(apt-get install redis-server)");

    strcpy(srv.log, "/tmp/test_hiredis-redis-XXXXXX");
    int log_fd = mkstemp(srv.log);
    if (log_fd < 0) {
        srv.log[0] = '\0';
        setup_fail("mkstemp: %s", strerror(errno));
    }
    for (int attempt = 0; attempt < 5; attempt++) {
        srv.port = free_port();
        if (srv.port <= 0)
            setup_fail("no free port on 127.0.0.1: %s", strerror(errno));
        srv.pid = spawn_redis(path, srv.port, log_fd);
        if (srv.pid < 0)
            setup_fail("fork: %s", strerror(errno));
        int how = wait_ready(srv.pid, srv.port);
        if (how == READY) {
            close(log_fd);           /* the server keeps writing to it, unnamed */
            unlink(srv.log);
            srv.log[0] = '\0';
            return;
        }
        if (how == SILENT) {
            close(log_fd);
            const char *log = log_head();
            setup_fail("%s on port %d did not answer PING within 10 s; its log:\n%s", path,
                       srv.port, log);
        }
        srv.pid = -1;                /* EXITED, and reaped: try another port */
        cr_log_info("%s exited at start on port %d; retrying", path, srv.port);
    }
    close(log_fd);
    const char *log = log_head();
    setup_fail("%s kept exiting at start; its log:\n%s", path, log);
}

TestSuite(hiredis, .init = start_server, .fini = stop_server);

/* ---- Running many clients ------------------------------------------------------ */

/* fn(&per[i]) for i < n, each on a green thread: t[i]. */
struct fan {
    void *(*fn)(void *);
    void *per;
    size_t size;                     /* of one element of per */
    int n;
    green_t t[THREADS];              /* the zero handle where a spawn failed */
};

/* Spawn them all; returns how many spawns failed. */
static uintptr_t spawn_all(struct fan *f)
{
    uintptr_t failed = 0;
    for (int i = 0; i < f->n; i++) {
        f->t[i] = (green_t){ 0 };
        failed += green_spawn(&f->t[i], f->fn, (char *)f->per + (size_t)i * f->size) != 0;
    }
    return failed;
}

/* Join those spawned; returns how many joins failed. */
static uintptr_t join_all(struct fan *f)
{
    uintptr_t failed = 0;
    for (int i = 0; i < f->n; i++)
        failed += f->t[i].p && green_join(f->t[i], NULL) != 0;
    return failed;
}

/* As a green_run main: spawn them all and join them; returns how many
 * spawns and joins failed. */
static void *fan_out(void *arg)
{
    struct fan *f = arg;
    uintptr_t failed = spawn_all(f);
    return P(failed + join_all(f));
}

/* A client's account of what went wrong: the first thing only. */
#define WHY_LEN 160

__attribute__((format(printf, 2, 3))) static void record(char *buf, const char *fmt, ...)
{
    if (buf[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, WHY_LEN, fmt, ap);
    va_end(ap);
}

static const char *reply_str(const redisReply *r, const redisContext *c)
{
    return r ? (r->str ? r->str : "an odd reply") : c->errstr;
}

static redisContext *connect_or_why(char *buf)
{
    redisContext *c = redisConnect("127.0.0.1", srv.port);
    if (!c || c->err) {
        record(buf, "redisConnect: %s", c ? c->errstr : "out of memory");
        redisFree(c);
        return NULL;
    }
    return c;
}

/* ---- SET, GET, INCR ---------------------------------------------------------------- */

struct sgi {
    int i;
    bool ok;                         /* every reply as expected */
    long long incr;                  /* what INCR counter said */
    char why[WHY_LEN];
};

static void *set_get_incr(void *arg)
{
    struct sgi *s = arg;
    char want[32];
    snprintf(want, sizeof want, "value-%d", s->i);
    redisContext *c = connect_or_why(s->why);
    if (!c)
        return NULL;
    redisReply *r = redisCommand(c, "SET key:%d %s", s->i, want);
    if (!r || r->type != REDIS_REPLY_STATUS || strcmp(r->str, "OK") != 0)
        record(s->why, "SET: %s", reply_str(r, c));
    freeReplyObject(r);
    r = redisCommand(c, "GET key:%d", s->i);
    if (!r || r->type != REDIS_REPLY_STRING || strcmp(r->str, want) != 0)
        record(s->why, "GET key:%d: %s, not %s", s->i, reply_str(r, c), want);
    freeReplyObject(r);
    r = redisCommand(c, "INCR counter");
    if (r && r->type == REDIS_REPLY_INTEGER)
        s->incr = r->integer;
    else
        record(s->why, "INCR: %s", reply_str(r, c));
    freeReplyObject(r);
    redisFree(c);
    s->ok = !s->why[0];
    return NULL;
}

Test(hiredis, a_thousand_threads_set_get_and_count_right, .timeout = 60)
{
    static struct sgi s[THREADS];
    for (int i = 0; i < THREADS; i++)
        s[i] = (struct sgi){ .i = i };
    static struct fan f;
    f = (struct fan){ set_get_incr, s, sizeof *s, THREADS, { { 0 } } };
    void *failed = P(1);
    uint64_t t0 = mono_ns();
    cr_assert_eq(run(fan_out, &f, 2, -1, &failed), 0, "green_run failed");
    uint64_t wall = mono_ns() - t0;
    cr_assert_eq(U(failed), 0, "%zu spawns or joins failed", (size_t)U(failed));

    int ok = 0;
    static bool seen[THREADS + 1];
    for (int i = 0; i < THREADS; i++) {
        ok += s[i].ok;
        if (!s[i].ok)
            cr_log_error("client %d: %s", i, s[i].why);
        else if (s[i].incr >= 1 && s[i].incr <= THREADS)
            seen[s[i].incr] = true;
    }
    cr_expect_eq(ok, THREADS, "%d of %d clients saw every reply right", ok, THREADS);
    int distinct = 0;
    for (int v = 1; v <= THREADS; v++)
        distinct += seen[v];
    cr_expect_eq(distinct, THREADS, "INCR handed out %d distinct values of 1..%d", distinct,
                 THREADS);

    redisContext *c = redisConnect("127.0.0.1", srv.port);
    cr_assert(c && !c->err, "redisConnect from the test: %s", c ? c->errstr : "no memory");
    redisReply *r = redisCommand(c, "GET counter");
    cr_assert(r && r->type == REDIS_REPLY_STRING, "GET counter: no string reply");
    cr_expect_eq(atoll(r->str), THREADS, "counter is %s, not %d", r->str, THREADS);
    freeReplyObject(r);
    redisFree(c);
    cr_log_info("%d clients, SET+GET+INCR each on their own connection: %.0f ms on 2 workers",
                THREADS, (double)wall / MS);
}

/* ---- BLPOP: a thousand requests waiting at once ---------------------------------- */

/* The clients connect, wait together for the word go, and send their
 * BLPOPs; the run is timed from go to the last answer.  (Without the word,
 * a thousand connections on a loaded machine may take longer than the
 * requests: that is not what is measured here.)  The window in which every
 * request waits: from the moment the last BLPOP is sent to the first answer
 * the server's timeout gives.  With the shim it spans most of the second;
 * on workers that block it is empty (the last is sent long after the first
 * timed out). */
struct pop {
    int i;
    bool pushed;                     /* a value is pushed to list:i */
    bool ok;                         /* the reply: [list:i, v-i] if pushed, else nil */
    uint64_t sent, answered;         /* mono_ns() around the BLPOP */
    int worker;                      /* where it resumed */
    char why[WHY_LEN];
};

#define MAX_TICKS 4096

/* One run of the test; the green threads share it. */
static struct {
    struct pop p[THREADS];
    struct fan clients;
    green_wg_t connected;            /* clients still connecting */
    green_wg_t go;                   /* 1 until the word go */
    char push_why[WHY_LEN];
    atomic_int unsent;               /* BLPOPs not yet sent */
    _Atomic uint64_t all_sent;       /* when the last one was */
    atomic_int waiting;              /* BLPOPs not yet answered */
    uint64_t tick[MAX_TICKS];        /* the ticker's wakes; its own */
    int nticks;
    uint64_t connecting, wall;       /* ns: spawn to all connected, go to all answered */
    atomic_uint failed;              /* libgreen calls that failed */
} bl;

static void *blpop(void *arg)
{
    struct pop *p = arg;
    redisContext *c = connect_or_why(p->why);
    atomic_fetch_add(&bl.failed, green_wg_done(&bl.connected) != 0);
    atomic_fetch_add(&bl.failed, green_wg_wait(&bl.go) != 0);
    p->sent = mono_ns();             /* sent just below, or never */
    if (atomic_fetch_sub(&bl.unsent, 1) == 1)
        atomic_store(&bl.all_sent, p->sent);
    if (c) {
        redisReply *r = redisCommand(c, "BLPOP list:%d 1", p->i);
        p->answered = mono_ns();
        p->worker = green_worker_index();
        char want[32];
        snprintf(want, sizeof want, "v-%d", p->i);
        if (!r)
            record(p->why, "BLPOP: %s", c->errstr);
        else if (!p->pushed && r->type != REDIS_REPLY_NIL)
            record(p->why, "BLPOP on an empty list: reply type %d, not nil", r->type);
        else if (p->pushed && (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
                               r->element[1]->type != REDIS_REPLY_STRING ||
                               strcmp(r->element[1]->str, want) != 0))
            record(p->why, "BLPOP: reply type %d, not [list:%d, %s]", r->type, p->i, want);
        freeReplyObject(r);
        redisFree(c);
    }
    p->ok = !p->why[0];
    atomic_fetch_sub(&bl.waiting, 1);
    return NULL;
}

/* The other side: push a value to every fourth list 300 ms after go. */
static void *pusher(void *arg)
{
    (void)arg;
    redisContext *c = connect_or_why(bl.push_why);
    atomic_fetch_add(&bl.failed, green_wg_wait(&bl.go) != 0);
    if (!c)
        return NULL;
    green_sleep_ns(300 * MS);
    for (int i = 0; i < THREADS; i += 4) {
        redisReply *r = redisCommand(c, "RPUSH list:%d v-%d", i, i);
        if (!r || r->type != REDIS_REPLY_INTEGER)
            record(bl.push_why, "RPUSH list:%d: %s", i, reply_str(r, c));
        freeReplyObject(r);
    }
    redisFree(c);
    return NULL;
}

/* Wake every 10 ms until the BLPOPs are answered, noting when. */
static void *ticker(void *arg)
{
    (void)arg;
    while (atomic_load(&bl.waiting) > 0 && bl.nticks < MAX_TICKS) {
        green_sleep_ns(10 * MS);
        bl.tick[bl.nticks++] = mono_ns();
    }
    return NULL;
}

static void *blpop_main(void *arg)
{
    (void)arg;
    unsigned failed = 0;
    green_t tick = { 0 }, push = { 0 };
    failed += green_wg_init(&bl.connected) != 0;
    failed += green_wg_init(&bl.go) != 0;
    failed += green_wg_add(&bl.connected, THREADS) != 0;
    failed += green_wg_add(&bl.go, 1) != 0;
    failed += green_spawn(&tick, ticker, NULL) != 0;
    failed += green_spawn(&push, pusher, NULL) != 0;
    uint64_t t0 = mono_ns();
    bl.clients = (struct fan){ blpop, bl.p, sizeof *bl.p, THREADS, { { 0 } } };
    uintptr_t unspawned = spawn_all(&bl.clients);
    failed += (unsigned)unspawned;
    if (unspawned)                   /* they will not say they connected */
        failed += green_wg_add(&bl.connected, -(int64_t)unspawned) != 0;
    failed += green_wg_wait(&bl.connected) != 0;
    uint64_t go = mono_ns();
    bl.connecting = go - t0;
    failed += green_wg_done(&bl.go) != 0;
    failed += (unsigned)join_all(&bl.clients);
    bl.wall = mono_ns() - go;
    atomic_store(&bl.waiting, 0);    /* also when some never ran */
    failed += push.p && green_join(push, NULL) != 0;
    failed += tick.p && green_join(tick, NULL) != 0;
    failed += green_wg_destroy(&bl.connected) != 0;
    failed += green_wg_destroy(&bl.go) != 0;
    atomic_fetch_add(&bl.failed, failed);
    return NULL;
}

/* The longest time in [from, to) without a tick (to - from when none). */
static uint64_t longest_gap(uint64_t from, uint64_t to)
{
    uint64_t gap = 0, last = from;
    for (int k = 0; k < bl.nticks && bl.tick[k] < to; k++) {
        if (bl.tick[k] > last) {
            gap = bl.tick[k] - last > gap ? bl.tick[k] - last : gap;
            last = bl.tick[k];
        }
    }
    return to - last > gap ? to - last : gap;
}

Test(hiredis, a_thousand_blpops_take_as_long_as_the_slowest_not_their_sum, .timeout = 30)
{
    memset(&bl, 0, sizeof bl);
    for (int i = 0; i < THREADS; i++)
        bl.p[i] = (struct pop){ .i = i, .pushed = i % 4 == 0, .worker = -1 };
    atomic_store(&bl.unsent, THREADS);
    atomic_store(&bl.waiting, THREADS);
    cr_assert_eq(run(blpop_main, NULL, 2, -1, NULL), 0, "green_run failed");
    cr_assert_eq(atomic_load(&bl.failed), 0, "%u libgreen calls failed",
                 atomic_load(&bl.failed));
    cr_expect_eq(bl.push_why[0], '\0', "pusher: %s", bl.push_why);

    int ok = 0, short_waits = 0, on_worker[2] = { 0, 0 };
    uint64_t slowest = 0, sum = 0, first_timeout = UINT64_MAX;
    for (int i = 0; i < THREADS; i++) {
        struct pop *p = &bl.p[i];
        uint64_t took = p->answered - p->sent;
        ok += p->ok;
        if (!p->ok) {
            cr_log_error("client %d: %s", i, p->why);
            continue;
        }
        if (!p->pushed) {
            short_waits += took < 900 * MS;
            first_timeout = p->answered < first_timeout ? p->answered : first_timeout;
        }
        if (p->worker == 0 || p->worker == 1)
            on_worker[p->worker]++;
        slowest = took > slowest ? took : slowest;
        sum += took;
    }
    cr_expect_eq(ok, THREADS, "%d of %d BLPOPs got the right reply", ok, THREADS);
    cr_expect_eq(short_waits, 0, "%d BLPOPs on empty lists returned before the server's 1 s",
                 short_waits);
    cr_expect_lt(bl.wall, 3ull * SEC, "%d BLPOPs took %.2f s together; the slowest %.2f s",
                 THREADS, (double)bl.wall / SEC, (double)slowest / SEC);

    uint64_t all_sent = atomic_load(&bl.all_sent);
    double window = ((double)first_timeout - (double)all_sent) / SEC;
    cr_expect_lt(all_sent, first_timeout,
                 "the requests never all waited at once: the last was sent %.2f s after "
                 "the first timed out", -window);
    uint64_t gap = all_sent < first_timeout ? longest_gap(all_sent, first_timeout) : 0;
    cr_expect_lt(gap, 200ull * MS,
                 "while the requests waited, a 10 ms ticker went %.0f ms without running",
                 (double)gap / MS);
    cr_log_info("%d BLPOPs (1 s each; %d answered at 300 ms) on 2 workers: %.2f s wall "
                "(after %.0f ms connecting), slowest request %.2f s, sum of requests %.0f s; "
                "all waiting at once for %.2f s, ticker's longest gap meanwhile %.1f ms; "
                "resumed on worker 0/1: %d/%d",
                THREADS, (THREADS + 3) / 4, (double)bl.wall / SEC, (double)bl.connecting / MS,
                (double)slowest / SEC, (double)sum / SEC, window, (double)gap / MS,
                on_worker[0], on_worker[1]);
}
