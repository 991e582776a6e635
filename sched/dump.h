/* Private to libgreen. */
/*
 * dump.c's text (dump_text.c): the output buffer and the names of code
 * addresses; backtraces (backtrace.c).
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

/* symbols.c: the function around pc, and pc's offset in it; false when
 * its object has no symbol table libgreen can read. */
bool green__sym_lookup(uintptr_t pc, char *name, size_t size, uintptr_t *off);

/* backtrace.c: a green thread's frames, as PCs. */
#define GREEN_BT_FRAMES 32
struct green__bt {
    uintptr_t pc[GREEN_BT_FRAMES];
    uint32_t exact;                  /* frames whose PC is exact, not a return */
    uint16_t nframes;
    bool unwound;
};
/* A switched-out thread's stack, from the frame green__ctx_switch left on
 * it: only while it cannot run. */
void green__bt_saved(struct green__bt *bt, const struct green__thread *t);
/* The caller's own stack, from its caller on. */
void green__bt_own(struct green__bt *bt);
/* One line: pre, pc, its function+offset and object (a return address
 * names the call before it, unless exact). */
void green__print_pc(struct green__out *o, struct green__syms *syms, const char *pre, uintptr_t pc,
                     bool exact);
/* Every frame, one numbered line each. */
void green__bt_print(struct green__out *o, struct green__syms *syms, const struct green__bt *bt);

#endif /* GREEN_DUMP_H */
