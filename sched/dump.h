/* Private to libgreen. */
/*
 * dump.c's text (dump_text.c): the output buffer and the names of code
 * addresses.
 */
#ifndef GREEN_DUMP_H
#define GREEN_DUMP_H

#include "sched.h"

struct green__out {
    int fd, err;
    size_t n;
    char buf[16384];
};

/* Write what is buffered (the first error stays in o->err). */
void green__out_flush(struct green__out *o);
/* Append, flushing first when the buffer is full. */
__attribute__((format(printf, 2, 3))) void green__outf(struct green__out *o, const char *fmt,
                                                       ...);

/* A code address's function, offset and object. */
struct green__sym {
    uintptr_t pc, off;
    char name[96];
    char obj[48];
};

/* The names a dump has looked up: an open-addressing table by address. */
struct green__syms {
    struct green__sym *v;
    size_t cap, n;
};

/* The name of any code address, or NULL (no memory). */
const struct green__sym *green__sym_of_pc(struct green__syms *s, uintptr_t pc);

#endif /* GREEN_DUMP_H */
