/* tls_clients: libcurl over HTTPS and libpq over TLS -- unmodified client
 * libraries on OpenSSL -- from many green threads at once, preempted by
 * signal, with libgreen-preload.so parking each thread wherever a library
 * would block its worker.  tests/tls.sh starts nginx and PostgreSQL on
 * 127.0.0.1 and runs this program many times over worker counts and quanta.
 *
 *   tls_clients curl URL CAFILE THREADS REQUESTS
 *       Each thread GETs URL REQUESTS times on its own easy handle (its own
 *       TLS connection, kept alive between requests), trusting CAFILE and
 *       nothing else.  Every answer must be HTTP 200 with the file tls.sh
 *       serves, byte for byte (see make_body).
 *   tls_clients pq CONNINFO THREADS QUERIES
 *       Each thread opens its own connection with sslmode=require, checks
 *       that it runs over TLS, and sends QUERIES queries for the rows
 *       (x, sum of all x) of x = 1..n, n varying: every row is checked.
 *
 * libgreen never preempts inside the libraries (they may hold a lock, or be
 * halfway through a TLS record): it refuses there and takes the preemption
 * on their way out (the hijacks and deferred_taken counters).  The checking
 * loops are this program's own code, where preemptions land.
 *
 * The run's configuration is green_config_init's: GREEN_WORKERS,
 * GREEN_QUANTUM_US, GREEN_PREEMPT... from the environment.  Prints one
 * summary line -- requests ok and failed, wall time, preemption counters --
 * and before it, for each thread that saw a failure, how many and the first
 * (curl's error buffer, PQerrorMessage).  Exits 0 when every request or
 * query succeeded and was right, 1 otherwise, 2 on bad usage, 77 when the
 * mode was not built in (-DWITH_CURL, -DWITH_PQ).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef WITH_CURL
#include <curl/curl.h>
#endif
#ifdef WITH_PQ
#include <libpq-fe.h>
#endif

#include "green.h"

#define WHY_LEN 320

/* One green thread's account. */
struct client {
    int i;
    int ok, failed;                  /* requests or queries */
    char why[WHY_LEN];               /* the first failure; "" when none */
};

static struct {
    void *(*client)(void *);         /* curl_client or pq_client */
    const char *target;              /* URL or conninfo */
    const char *cafile;
    int threads, count;              /* count: requests or queries per thread */
    struct client *c;
    int join_errors;
} job;

/* Note a failed request or query, keeping the first reason only, on one
 * line (PQerrorMessage's end with a newline, and may have more). */
__attribute__((format(printf, 2, 3))) static void fail(struct client *c, const char *fmt, ...)
{
    c->failed++;
    if (c->why[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->why, sizeof c->why, fmt, ap);
    va_end(ap);
    size_t len = strlen(c->why);
    while (len > 0 && c->why[len - 1] == '\n')
        c->why[--len] = '\0';
    for (char *nl = c->why; (nl = strchr(nl, '\n')) != NULL;)
        *nl = ' ';
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#ifdef WITH_CURL
/* The file tls.sh serves: BODY_LINES lines of 7 hex digits and a newline,
 * line k holding k * 2654435761 mod 2^28, so that no two nearby lines are
 * alike.  tls.sh writes the same with
 *   awk 'BEGIN { for (k = 0; k < 8192; k++) printf "%07x\n", (k * 2654435761) % 268435456 }'
 */
#define BODY_LINES 8192
#define BODY_SIZE (8 * BODY_LINES)
static char body[BODY_SIZE];

static void make_body(void)
{
    static const char hex[] = "0123456789abcdef";
    for (uint64_t k = 0; k < BODY_LINES; k++) {
        uint64_t v = k * 2654435761u % (1u << 28);
        char *line = body + 8 * k;
        for (int d = 6; d >= 0; d--, v >>= 4)
            line[d] = hex[v & 15];
        line[7] = '\n';
    }
}

/* Where a response body goes: the first BODY_SIZE bytes are kept, all are
 * counted. */
struct sink {
    char *p;
    size_t got;
};

static size_t on_data(char *data, size_t size, size_t n, void *arg)
{
    struct sink *s = arg;
    size_t len = size * n;
    if (s->got < BODY_SIZE)
        memcpy(s->p + s->got, data, len < BODY_SIZE - s->got ? len : BODY_SIZE - s->got);
    s->got += len;
    return len;
}

/* The offset of the first byte of p that differs from body; BODY_SIZE when
 * none does.  A plain loop, in this program: preemptible. */
static size_t first_difference(const char *p)
{
    size_t i = 0;
    while (i < BODY_SIZE && p[i] == body[i])
        i++;
    return i;
}

static void *curl_client(void *arg)
{
    struct client *c = arg;
    struct sink s = { .p = malloc(BODY_SIZE) };
    char err[CURL_ERROR_SIZE];
    CURL *h = curl_easy_init();
    if (!s.p || !h) {
        for (int r = 0; r < job.count; r++)
            fail(c, "%s: out of memory", s.p ? "curl_easy_init" : "malloc");
        goto out;
    }
    curl_easy_setopt(h, CURLOPT_URL, job.target);
    curl_easy_setopt(h, CURLOPT_CAINFO, job.cafile);
    curl_easy_setopt(h, CURLOPT_CAPATH, NULL);   /* CAFILE only, not /etc/ssl/certs */
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);   /* no SIGALRM of curl's: it is libgreen's */
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);   /* a lost wakeup fails, not hangs */
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, err);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
    for (int r = 0; r < job.count; r++) {
        s.got = 0;
        err[0] = '\0';
        CURLcode rc = curl_easy_perform(h);
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        size_t at;
        if (rc != CURLE_OK)
            fail(c, "request %d: %s", r, err[0] ? err : curl_easy_strerror(rc));
        else if (status != 200)
            fail(c, "request %d: HTTP status %ld", r, status);
        else if (s.got != BODY_SIZE)
            fail(c, "request %d: a body of %zu bytes, not %d", r, s.got, BODY_SIZE);
        else if ((at = first_difference(s.p)) < BODY_SIZE)
            fail(c, "request %d: body byte %zu is 0x%02x, not 0x%02x", r, at,
                 (unsigned char)s.p[at], (unsigned char)body[at]);
        else
            c->ok++;
    }
out:
    curl_easy_cleanup(h);
    free(s.p);
    return NULL;
}
#endif

#ifdef WITH_PQ
/* The rows of query q of client i: 1..n, n between 1 and 1000. */
static long long rows_of(int i, int q)
{
    return 1 + ((long long)i * 7919 + (long long)q * 104729) % 1000;
}

/* Whether the result holds the rows (x, sum of 1..n) for x = 1..n, in
 * order; if not, why. */
static int rows_right(const PGresult *r, long long n, char *why, size_t len)
{
    if (PQntuples(r) != n || PQnfields(r) != 2) {
        snprintf(why, len, "%d rows of %d columns, not %lld of 2", PQntuples(r), PQnfields(r), n);
        return 0;
    }
    long long sum = n * (n + 1) / 2;
    for (int row = 0; row < n; row++) {
        char *end;
        long long x = strtoll(PQgetvalue(r, row, 0), &end, 10);
        long long s = x == row + 1 && !*end ? strtoll(PQgetvalue(r, row, 1), &end, 10) : -1;
        if (x != row + 1 || s != sum || *end) {
            snprintf(why, len, "row %d is (%s, %s), not (%d, %lld)", row, PQgetvalue(r, row, 0),
                     PQgetvalue(r, row, 1), row + 1, sum);
            return 0;
        }
    }
    return 1;
}

static void *pq_client(void *arg)
{
    struct client *c = arg;
    /* Later keywords win over those the conninfo string (dbname) gives.
     * TLS is what is tested: no GSSAPI encryption tried first. */
    const char *const keys[] = { "dbname", "sslmode", "gssencmode", NULL };
    const char *const vals[] = { job.target, "require", "disable", NULL };
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    int q = 0;
    if (!conn || PQstatus(conn) != CONNECTION_OK) {
        for (; q < job.count; q++)
            fail(c, "connect: %s", conn ? PQerrorMessage(conn) : "out of memory");
    } else if (!PQsslInUse(conn)) {
        for (; q < job.count; q++)
            fail(c, "connected, but not over TLS");
    }
    for (; q < job.count; q++) {
        long long n = rows_of(c->i, q);
        char n_s[24], why[160];
        snprintf(n_s, sizeof n_s, "%lld", n);
        const char *params[] = { n_s };
        PGresult *r = PQexecParams(conn,
                                   "SELECT x, sum(x) OVER () FROM generate_series(1, $1::int) AS x "
                                   "ORDER BY x",
                                   1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            fail(c, "query %d (n=%lld): %s", q, n, PQerrorMessage(conn));
        else if (!rows_right(r, n, why, sizeof why))
            fail(c, "query %d (n=%lld): %s", q, n, why);
        else
            c->ok++;
        PQclear(r);
    }
    PQfinish(conn);
    return NULL;
}
#endif

/* green_run's main: a thread per client, all joined. */
static void *fan_out(void *arg)
{
    (void)arg;
    green_t *t = calloc((size_t)job.threads, sizeof *t);
    for (int i = 0; i < job.threads; i++) {
        int err = t ? green_spawn(&t[i], job.client, &job.c[i]) : ENOMEM;
        for (int r = 0; err && r < job.count; r++)
            fail(&job.c[i], "green_spawn: %s", strerror(err));
    }
    for (int i = 0; t && i < job.threads; i++) {
        int err = t[i].p ? green_join(t[i], NULL) : 0;
        if (err) {
            fprintf(stderr, "tls_clients: green_join of thread %d: %s\n", i, strerror(err));
            job.join_errors++;
        }
    }
    free(t);
    return NULL;
}

static int usage(void)
{
    fprintf(stderr, "usage: tls_clients curl URL CAFILE THREADS REQUESTS\n"
                    "       tls_clients pq CONNINFO THREADS QUERIES\n");
    return 2;
}

/* A count from the command line, 1..max; 0 if it is not one. */
static int count_arg(const char *s, int max)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    return errno || *end || v < 1 || v > max ? 0 : (int)v;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    const char *what = "queries";
    const char *tls = NULL;          /* the TLS library beneath, for the summary */
    int first = 3;                   /* argv index of THREADS */
    if (strcmp(mode, "curl") == 0) {
#ifdef WITH_CURL
        job.client = curl_client;
        what = "requests";
        tls = curl_version_info(CURLVERSION_NOW)->ssl_version;
        first = 4;
#else
        fprintf(stderr, "tls_clients: built without libcurl (-DWITH_CURL)\n");
        return 77;
#endif
    } else if (strcmp(mode, "pq") == 0) {
#ifdef WITH_PQ
        job.client = pq_client;
        tls = PQsslAttribute(NULL, "library");
#else
        fprintf(stderr, "tls_clients: built without libpq (-DWITH_PQ)\n");
        return 77;
#endif
    }
    if (!job.client || argc != first + 2)
        return usage();
    job.target = argv[2];
    job.cafile = argv[3];
    job.threads = count_arg(argv[first], 100000);
    job.count = count_arg(argv[first + 1], 1000000);
    if (!job.threads || !job.count)
        return usage();

    green_config_t cfg;
    if (green_config_init(&cfg) != 0)
        return 2;                    /* it named the bad variable */
    signal(SIGPIPE, SIG_IGN);        /* a peer gone mid-write: an error, not death */
#ifdef WITH_CURL
    make_body();
    /* Before any thread exists, as libcurl requires. */
    CURLcode crc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (crc != CURLE_OK) {
        fprintf(stderr, "tls_clients: curl_global_init: %s\n", curl_easy_strerror(crc));
        return 1;
    }
#endif
    job.c = calloc((size_t)job.threads, sizeof *job.c);
    if (!job.c) {
        fprintf(stderr, "tls_clients: out of memory\n");
        return 1;
    }
    for (int i = 0; i < job.threads; i++)
        job.c[i].i = i;

    uint64_t t0 = mono_ns();
    int err = green_run(fan_out, NULL, &cfg, NULL);
    uint64_t wall = mono_ns() - t0;
    if (err)
        fprintf(stderr, "tls_clients: green_run: %s\n", strerror(err));

    long total = (long)job.threads * job.count, ok = 0;
    for (int i = 0; i < job.threads; i++) {
        struct client *c = &job.c[i];
        ok += c->ok;
        if (c->failed)
            printf("thread %d: %d of %d %s failed; the first: %s\n", i, c->failed, job.count,
                   what, c->why);
    }
    green_stats_t st;
    green_stats(&st);
    printf("%s: tls=%s threads=%d %s=%ld ok=%ld failed=%ld wall_ms=%.1f workers=%u "
           "quantum_us=%u signals_sent=%llu preemptions=%llu hijacks=%llu deferred_taken=%llu\n",
           mode, tls ? tls : "?", job.threads, what, total, ok, total - ok, (double)wall / 1e6,
           cfg.workers, cfg.quantum_us, (unsigned long long)st.signals_sent,
           (unsigned long long)st.preemptions, (unsigned long long)st.hijacks,
           (unsigned long long)st.deferred_taken);
    free(job.c);
#ifdef WITH_CURL
    curl_global_cleanup();
#endif
    return err || job.join_errors || ok != total ? 1 : 0;
}
