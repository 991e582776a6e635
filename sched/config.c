/*
 * Configuration: defaults, the GREEN_* environment, and the limits a
 * green_config_t is checked against.
 *
 * Every limit here is documented in the README; outside them green_run
 * returns EINVAL.  They exist to turn typos and unit mistakes (bytes for
 * KiB, a negative number read as huge) into errors, not to cap real use.
 *
 * A malformed or out-of-range variable gets one line on stderr naming it and
 * its value, and the field keeps its default; green_config_init then returns
 * EINVAL (and green_run with cfg == NULL refuses to start).
 */
#include "sched.h"

#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define GREEN_DEFAULT_STACK ((size_t)64 << 10)
#define GREEN_MIN_STACK ((size_t)16 << 10)
#define GREEN_MAX_STACK ((size_t)1 << 30)
#define GREEN_MAX_WORKERS 4096u
#define GREEN_MIN_QUANTUM_US 50u
#define GREEN_MAX_QUANTUM_US 10000000u
#define GREEN_DEFAULT_BUDGET 4000u
#define GREEN_MAX_BUDGET 1000000000u
#define GREEN_MAX_OFFLOAD_THREADS 65536u
#define GREEN_MAX_LOCK_WARN_MS 3600000u

static void complain(const char *name, const char *value, const char *why)
{
    fprintf(stderr, "libgreen: %s=\"%s\": %s\n", name, value, why);
}

/* Parse an unsigned decimal number with an optional binary suffix
 * (k, m, g) when `suffix` is true. */
static bool parse_u64(const char *s, bool suffix, uint64_t *out)
{
    if (!isdigit((unsigned char)*s))
        return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return false;
    unsigned shift = 0;
    if (suffix && *end) {
        switch (tolower((unsigned char)*end)) {
        case 'k': shift = 10; break;
        case 'm': shift = 20; break;
        case 'g': shift = 30; break;
        default: return false;
        }
        end++;
        if (tolower((unsigned char)*end) == 'i')
            end++;
        if (tolower((unsigned char)*end) == 'b')
            end++;
    }
    if (*end || (shift && v > (UINT64_MAX >> shift)))
        return false;
    *out = (uint64_t)v << shift;
    return true;
}

static const struct { const char *name; int signo; } signals[] = {
    { "ALRM", SIGALRM }, { "VTALRM", SIGVTALRM }, { "PROF", SIGPROF },
    { "USR1", SIGUSR1 }, { "USR2", SIGUSR2 }, { "URG", SIGURG }, { "QUIT", SIGQUIT },
};

bool green__parse_signal(const char *s, int *out)
{
    uint64_t v;
    if (parse_u64(s, false, &v)) {
        if (v > INT32_MAX)
            return false;
        *out = (int)v;
        return true;
    }
    if (strncasecmp(s, "SIG", 3) == 0)
        s += 3;
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
        if (strcasecmp(s, signals[i].name) == 0) {
            *out = signals[i].signo;
            return true;
        }
    if (strncasecmp(s, "RTMIN+", 6) == 0 && parse_u64(s + 6, false, &v) &&
        v <= (uint64_t)(SIGRTMAX - SIGRTMIN)) {
        *out = SIGRTMIN + (int)v;
        return true;
    }
    return false;
}

static bool parse_preempt(const char *s, int *out)
{
    static const char *const names[] = { "off", "signal", "budget", "both" };
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, names[i]) == 0) {
            *out = i;
            return true;
        }
    return false;
}

static bool parse_deterministic(const char *s, unsigned *out)
{
    static const char *const names[][2] = {
        { "0", "off" }, { "1", "on" }, { "print", "print" },
    };
    for (unsigned i = 0; i < 3; i++)
        if (strcasecmp(s, names[i][0]) == 0 || strcasecmp(s, names[i][1]) == 0) {
            *out = i;
            return true;
        }
    return false;
}

static bool parse_onoff(const char *s, unsigned *out)
{
    static const char *const names[][2] = { { "1", "on" }, { "0", "off" } };
    for (unsigned i = 0; i < 2; i++)
        if (strcasecmp(s, names[i][0]) == 0 || strcasecmp(s, names[i][1]) == 0) {
            *out = i;
            return true;
        }
    return false;
}

static bool parse_deadlock(const char *s, unsigned *out)
{
    static const char *const names[] = { "report", "error", "off" };
    for (unsigned i = 0; i < 3; i++)
        if (strcasecmp(s, names[i]) == 0) {
            *out = i;
            return true;
        }
    return false;
}

bool green__signo_ok(int signo)
{
    if (signo < 1 || signo > SIGRTMAX)
        return false;
    if (signo > SIGSYS && signo < SIGRTMIN)
        return false;                      /* glibc's own (cancellation, setxid) */
    switch (signo) {
    case SIGKILL: case SIGSTOP:            /* cannot be caught */
    case SIGSEGV: case SIGBUS: case SIGFPE: case SIGILL: case SIGTRAP:
    case SIGABRT:                          /* faults, not timers */
        return false;
    default:
        return true;
    }
}

/* A field out of range: EINVAL, and (say) one line naming it. */
static int refuse(bool say, const char *field, unsigned long long v, const char *why)
{
    if (say)
        fprintf(stderr, "libgreen: green_run: cfg.%s = %llu: %s\n", field, v, why);
    return EINVAL;
}

int green__config_check(const green_config_t *c, bool say)
{
    if (c->workers > GREEN_MAX_WORKERS)
        return refuse(say, "workers", c->workers, "more than 4096 (0: one per online CPU)");
    if (c->stack_size < GREEN_MIN_STACK || c->stack_size > GREEN_MAX_STACK)
        return refuse(say, "stack_size", c->stack_size,
                      "not in [16 KiB, 1 GiB] (green_config_init gives 64 KiB)");
    if (c->quantum_us < GREEN_MIN_QUANTUM_US || c->quantum_us > GREEN_MAX_QUANTUM_US)
        return refuse(say, "quantum_us", c->quantum_us, "not in [50, 10000000]");
    if (c->preempt < GREEN_PREEMPT_OFF || c->preempt > GREEN_PREEMPT_BOTH)
        return refuse(say, "preempt", (unsigned long long)(long long)c->preempt,
                      "not a GREEN_PREEMPT_* mode");
    if (!green__signo_ok(c->signo))
        return refuse(say, "signo", (unsigned long long)(long long)c->signo,
                      "not a signal libgreen can preempt with (SIGKILL, SIGSTOP, the "
                      "fault signals and glibc's own are not)");
    if (c->budget == 0 || c->budget > GREEN_MAX_BUDGET)
        return refuse(say, "budget", c->budget, "not in [1, 1000000000]");
    if (c->deterministic > GREEN_DETERMINISTIC_PRINT)
        return refuse(say, "deterministic", c->deterministic, "not a GREEN_DETERMINISTIC_* value");
    if (c->offload_threads > GREEN_MAX_OFFLOAD_THREADS)
        return refuse(say, "offload_threads", c->offload_threads, "more than 65536");
    if (c->deadlock > GREEN_DEADLOCK_OFF)
        return refuse(say, "deadlock", c->deadlock, "not a GREEN_DEADLOCK_* value");
    if (c->handoff > GREEN_HANDOFF_OFF)
        return refuse(say, "handoff", c->handoff, "not a GREEN_HANDOFF_* value");
    if (c->lock_warn_ms > GREEN_MAX_LOCK_WARN_MS)
        return refuse(say, "lock_warn_ms", c->lock_warn_ms, "more than 3600000 (an hour)");
    for (size_t i = 0; i < sizeof c->reserved / sizeof c->reserved[0]; i++)
        if (c->reserved[i])
            return refuse(say, "reserved[]", i, "not zero (set it with green_config_init)");
    return 0;
}

/* Read one variable into *field through parse; complain and keep the
 * default when it does not parse or check. */
#define ENV_FIELD(name, field, parse_expr, check_expr, why)                    \
    do {                                                                       \
        const char *s = getenv(name);                                          \
        if (s && *s) {                                                         \
            __typeof__(field) saved = field;                                   \
            if (!(parse_expr) || !(check_expr)) {                              \
                complain(name, s, why);                                        \
                field = saved;                                                 \
                err = EINVAL;                                                  \
            }                                                                  \
        }                                                                      \
    } while (0)

int green_config_init(green_config_t *cfg)
{
    if (!cfg)
        return EINVAL;
    memset(cfg, 0, sizeof *cfg);
    cfg->workers = 0;
    cfg->quantum_us = 1000;
    cfg->preempt = GREEN_PREEMPT_SIGNAL;
    cfg->signo = SIGALRM;
    cfg->stack_size = GREEN_DEFAULT_STACK;
    cfg->budget = GREEN_DEFAULT_BUDGET;
    cfg->seed = 0;
    cfg->offload_threads = GREEN_DEFAULT_OFFLOAD_THREADS;

    int err = 0;
    uint64_t v;
    ENV_FIELD("GREEN_WORKERS", cfg->workers, parse_u64(s, false, &v),
              v <= GREEN_MAX_WORKERS && (cfg->workers = (unsigned)v, true),
              "expected a number of workers from 0 (one per CPU) to 4096");
    ENV_FIELD("GREEN_STACK_SIZE", cfg->stack_size, parse_u64(s, true, &v),
              v >= GREEN_MIN_STACK && v <= GREEN_MAX_STACK && (cfg->stack_size = v, true),
              "expected a size from 16k to 1g (bytes, or with a k/m/g suffix)");
    ENV_FIELD("GREEN_QUANTUM_US", cfg->quantum_us, parse_u64(s, false, &v),
              v >= GREEN_MIN_QUANTUM_US && v <= GREEN_MAX_QUANTUM_US &&
                  (cfg->quantum_us = (unsigned)v, true),
              "expected microseconds from 50 to 10000000");
    ENV_FIELD("GREEN_PREEMPT", cfg->preempt, parse_preempt(s, &cfg->preempt), true,
              "expected off, signal, budget or both");
    ENV_FIELD("GREEN_SIGNAL", cfg->signo, green__parse_signal(s, &cfg->signo), green__signo_ok(cfg->signo),
              "expected a catchable signal that is not a fault nor glibc's own (32, 33), "
              "e.g. SIGALRM or USR2");
    ENV_FIELD("GREEN_BUDGET", cfg->budget, parse_u64(s, false, &v),
              v >= 1 && v <= GREEN_MAX_BUDGET && (cfg->budget = (unsigned)v, true),
              "expected reductions per slice from 1 to 1000000000");
    ENV_FIELD("GREEN_SEED", cfg->seed, parse_u64(s, false, &v), (cfg->seed = v, true),
              "expected an unsigned decimal number");
    ENV_FIELD("GREEN_DETERMINISTIC", cfg->deterministic,
              parse_deterministic(s, &cfg->deterministic), true,
              "expected 0 (off), 1 (on) or print");
    ENV_FIELD("GREEN_OFFLOAD_THREADS", cfg->offload_threads, parse_u64(s, false, &v),
              v >= 1 && v <= GREEN_MAX_OFFLOAD_THREADS && (cfg->offload_threads = (unsigned)v, true),
              "expected a number of offload threads from 1 to 65536");
    ENV_FIELD("GREEN_DEADLOCK", cfg->deadlock, parse_deadlock(s, &cfg->deadlock), true,
              "expected report, error or off");
    ENV_FIELD("GREEN_HANDOFF", cfg->handoff, parse_onoff(s, &cfg->handoff), true,
              "expected on (1) or off (0)");
    ENV_FIELD("GREEN_LOCK_WARN_MS", cfg->lock_warn_ms, parse_u64(s, false, &v),
              v <= GREEN_MAX_LOCK_WARN_MS && (cfg->lock_warn_ms = (unsigned)v, true),
              "expected milliseconds from 0 (never) to 3600000");
    /* Any text: names that match no loaded object simply match nothing
     * (green_run refuses system objects named preemptible). */
    cfg->unsafe_objects = getenv("GREEN_UNSAFE");
    cfg->preemptible_objects = getenv("GREEN_PREEMPTIBLE");
    return err;
}
