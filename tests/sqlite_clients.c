/* SQLite, unmodified, from 20 green threads at once (tests/sqlite.sh runs it
 * under LD_PRELOAD=libgreen-preload.so, whose file I/O parks).
 *
 *   sqlite_clients DB delete|wal [THREADS] [ROWS]
 *
 * Half the threads share one connection opened SQLITE_OPEN_FULLMUTEX --
 * every call takes SQLite's pthread mutex, which a holder keeps across its
 * file I/O -- and half open their own, serialized by the database file's
 * locks and a busy timeout (SQLite sleeps between tries).  Each thread
 * inserts ROWS rows, one transaction per 5, and runs a CPU-heavy query (a
 * recursive CTE and an aggregate over the table) after each transaction.
 * The main thread then checks the row count and the sum.  Exit 0 when all
 * is right, 1 otherwise, 2 on bad usage, 77 if built without SQLite.
 * Workers, mode and quantum come from GREEN_WORKERS, GREEN_PREEMPT and
 * GREEN_QUANTUM_US. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "green.h"

#ifndef WITH_SQLITE
int main(void)
{
    fprintf(stderr, "sqlite_clients: built without SQLite\n");
    return 77;
}
#else
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

static const char *path;
static int nthreads = 20, rows = 40;
static sqlite3 *shared_db;
static _Atomic int failures;

static void fail(const char *what, sqlite3 *db)
{
    if (failures++ < 10)
        fprintf(stderr, "sqlite_clients: %s: %s\n", what, db ? sqlite3_errmsg(db) : "?");
}

static sqlite3 *open_db(int flags)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | flags, NULL) !=
        SQLITE_OK) {
        fail("open", db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 60000);
    return db;
}

/* A statement, run to completion.  SQLITE_BUSY is SQLite telling a
 * connection that already reads (another thread's statement on the shared
 * connection) to back off rather than wait: retry after a pause, as an
 * application must -- a green thread parks in usleep. */
static _Atomic long busy_retries;

static int exec(sqlite3 *db, const char *sql)
{
    for (int tries = 0;; tries++) {
        char *err = NULL;
        int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
        if ((rc == SQLITE_BUSY || rc == SQLITE_LOCKED) && tries < 10000) {
            sqlite3_free(err);
            busy_retries++;
            usleep(1000);
            continue;
        }
        if (rc != SQLITE_OK) {
            if (failures++ < 10)
                fprintf(stderr, "sqlite_clients: %s: %s\n", sql, err ? err : "?");
            sqlite3_free(err);
        }
        return rc;
    }
}

static long long query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    long long v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fail(sql, db);
        return -1;
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_BUSY) {
        busy_retries++;
        usleep(1000);
        sqlite3_reset(st);
    }
    if (rc == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    else
        fail(sql, db);
    sqlite3_finalize(st);
    return v;
}

static void *client(void *arg)
{
    int id = (int)(intptr_t)arg;
    bool own = id % 2 == 1;
    sqlite3 *db = own ? open_db(SQLITE_OPEN_NOMUTEX) : shared_db;
    if (!db)
        return NULL;
    char sql[256];
    for (int r = 0; r < rows; r += 5) {
        /* BEGIN IMMEDIATE on a shared connection would nest; there each
         * insert is its own transaction, under SQLite's mutex. */
        if (own && exec(db, "BEGIN IMMEDIATE") != SQLITE_OK)
            break;
        for (int k = r; k < r + 5 && k < rows; k++) {
            snprintf(sql, sizeof sql,
                     "INSERT INTO t(thread, n, payload) VALUES (%d, %d, printf('%%0500d', %d))",
                     id, k, k);
            exec(db, sql);
        }
        if (own)
            exec(db, "COMMIT");
        /* CPU work inside SQLite: a recursive CTE and an aggregate. */
        long long s = query_int(db, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 "
                                    "FROM c WHERE x < 20000) SELECT sum(x * x % 7) FROM c");
        if (s != 39999) {
            fprintf(stderr, "sqlite_clients: thread %d: CTE gave %lld\n", id, s);
            failures++;
        }
        query_int(db, "SELECT count(*) FROM t AS a JOIN t AS b ON a.n = b.n AND a.thread < b.thread");
    }
    if (own)
        sqlite3_close(db);
    return NULL;
}

static void *main_fn(void *arg)
{
    const char *mode = arg;
    sqlite3 *db = open_db(SQLITE_OPEN_FULLMUTEX);
    if (!db)
        return NULL;
    char sql[128];
    snprintf(sql, sizeof sql, "PRAGMA journal_mode=%s", mode);
    exec(db, sql);
    exec(db, "PRAGMA synchronous=OFF");
    exec(db, "CREATE TABLE IF NOT EXISTS t(thread INTEGER, n INTEGER, payload TEXT)");
    exec(db, "DELETE FROM t");
    shared_db = db;
    green_t *t = calloc((size_t)nthreads, sizeof *t);
    for (int i = 0; i < nthreads; i++)
        if (green_spawn(&t[i], client, (void *)(intptr_t)i) != 0)
            fail("green_spawn", NULL);
    for (int i = 0; i < nthreads; i++)
        green_join(t[i], NULL);
    free(t);
    long long count = query_int(db, "SELECT count(*) FROM t");
    long long sum = query_int(db, "SELECT sum(n) FROM t");
    long long want_sum = (long long)nthreads * rows * (rows - 1) / 2;
    if (count != (long long)nthreads * rows || sum != want_sum) {
        fprintf(stderr, "sqlite_clients: %lld rows (sum %lld), expected %lld (sum %lld)\n", count,
                sum, (long long)nthreads * rows, want_sum);
        failures++;
    }
    sqlite3_close(db);
    printf("sqlite_clients: %s: %d threads, %lld rows, %d failures, %ld busy retries\n", mode,
           nthreads, count, failures, (long)busy_retries);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3 || (strcmp(argv[2], "delete") != 0 && strcmp(argv[2], "wal") != 0)) {
        fprintf(stderr, "usage: sqlite_clients DB delete|wal [THREADS] [ROWS]\n");
        return 2;
    }
    path = argv[1];
    if (argc > 3)
        nthreads = atoi(argv[3]);
    if (argc > 4)
        rows = atoi(argv[4]);
    if (nthreads < 2 || rows < 1) {
        fprintf(stderr, "sqlite_clients: THREADS >= 2 and ROWS >= 1\n");
        return 2;
    }
    if (!sqlite3_threadsafe()) {
        fprintf(stderr, "sqlite_clients: this SQLite is built without threads\n");
        return 77;
    }
    int rc = green_run(main_fn, argv[2], NULL, NULL);
    if (rc != 0) {
        fprintf(stderr, "sqlite_clients: green_run: %s\n", strerror(rc));
        return 1;
    }
    return failures ? 1 : 0;
}
#endif
