/*
 * The configuration words GREEN_UNSAFE and GREEN_PREEMPTIBLE (and the
 * config's unsafe_objects, preemptible_objects): the objects the runs that
 * preempt name, and what a name means.
 *
 * A name with a '/' is a whole path; without, it matches a file name that
 * starts with it and goes on with nothing, '.' or '-' ("libfoo.so" matches
 * libfoo.so.1; "libm" matches libm.so.6, not libmagic.so).
 *
 * Runs may overlap, each with its own lists, and the table answers for all
 * of them at once: a name is counted, in by each run that names it
 * (green__sp_acquire) and out when that run ends (green__sp_release), and
 * it is in force while its count is above zero.  Counting a list in is all
 * or nothing: a run that fails to start for want of memory leaves the
 * counts as they were.
 *
 * Everything here runs under refresh.c's lock; this file calls no other of
 * the table's.
 */
#include "table.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* GREEN_UNSAFE and GREEN_PREEMPTIBLE names of the runs that preempt,
 * counted. */
struct name {
    char *s;
    unsigned refs;
    bool preemptible;                /* GREEN_PREEMPTIBLE, else GREEN_UNSAFE */
};
static struct name *names;
static size_t nnames, capnames;

bool green__sp_name_matches(const char *path, const char *name, size_t len)
{
    if (memchr(name, '/', len))
        return strlen(path) == len && memcmp(path, name, len) == 0;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    return strncmp(base, name, len) == 0 &&
           (base[len] == '\0' || base[len] == '.' || base[len] == '-');
}

/* Requires: lock held. */
bool green__sp_named(const char *path, bool preemptible)
{
    for (size_t i = 0; i < nnames; i++)
        if (names[i].preemptible == preemptible &&
            green__sp_name_matches(path, names[i].s, strlen(names[i].s)))
            return true;
    return false;
}

/* Requires: lock held.  Apply d (+1 / -1) to the count of each name of
 * that kind in the ':'-separated list; true if a name came or went.  On
 * ENOMEM (*err) it stops there: *done is how much of the list was
 * applied. */
static bool count_until_enomem(const char *list, bool preemptible, int d, int *err,
                               size_t *done)
{
    bool changed = false;
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        size_t i = 0;
        while (i < nnames && !(names[i].preemptible == preemptible &&
                               strlen(names[i].s) == len && memcmp(names[i].s, p, len) == 0))
            i++;
        if (len && d > 0 && i == nnames) {
            char *s = strndup(p, len);
            if (!s || !green__sp_grow(&names, &capnames, nnames + 1, sizeof *names)) {
                free(s);
                *err = ENOMEM;
                *done = (size_t)(p - list);
                return changed;
            }
            names[nnames++] = (struct name){ s, 1, preemptible };
            changed = true;
        } else if (len && i < nnames) {
            names[i].refs += (unsigned)d;
            if (names[i].refs == 0) {
                free(names[i].s);
                names[i] = names[--nnames];
                changed = true;
            }
        }
        p = end ? end + 1 : p + len;
    }
    return changed;
}

/* Requires: lock held. */
bool green__sp_names_count(const char *list, bool preemptible, int d, int *err)
{
    size_t done = 0;
    bool changed = count_until_enomem(list, preemptible, d, err, &done);
    if (*err && done) {
        /* Take back what the failed call counted in. */
        char *prefix = strndup(list, done);
        if (prefix)
            count_until_enomem(prefix, preemptible, -d, &(int){ 0 }, &(size_t){ 0 });
        free(prefix);
    }
    return changed;
}
