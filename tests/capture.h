/* Helpers of tests/test_badinput*.c: fd 2 captured into a buffer, and the
 * length of an array. */
#ifndef GREEN_TESTS_CAPTURE_H
#define GREEN_TESTS_CAPTURE_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <unistd.h>

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

struct capture {
    FILE *tmp;
    int saved;
};

static inline struct capture capture_begin(void)
{
    fflush(stderr);
    struct capture c = { tmpfile(), dup(2) };
    cr_assert(c.tmp && c.saved >= 0);
    dup2(fileno(c.tmp), 2);
    return c;
}

/* Ends the capture; buf gets what was written.  Returns the line count. */
static inline int capture_end(struct capture c, char *buf, size_t cap)
{
    fflush(stderr);
    dup2(c.saved, 2);
    close(c.saved);
    rewind(c.tmp);
    size_t n = fread(buf, 1, cap - 1, c.tmp);
    buf[n] = '\0';
    fclose(c.tmp);
    int lines = 0;
    for (size_t i = 0; i < n; i++)
        lines += buf[i] == '\n';
    return lines;
}

#endif
