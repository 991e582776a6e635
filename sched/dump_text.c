/*
 * A dump's text (dump.c): a buffer written to the dump's fd with the system
 * call itself, and the names of code addresses, each looked up once per
 * dump -- from the objects' symbol tables (symbols.c; libunwind's when that
 * finds none), so that static functions are named too.
 */
#define UNW_LOCAL_ONLY
#include "dump.h"

#include <dlfcn.h>
#include <libunwind.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void green__out_flush(struct green__out *o)
{
    size_t done = 0;
    while (done < o->n && !o->err) {
        /* The system call itself, never the LD_PRELOAD shim's write(),
         * which may park a green thread. */
        ssize_t k = green__sys_write(o->fd, o->buf + done, o->n - done);
        if (k > 0)
            done += (size_t)k;
        else if (k < 0 && errno != EINTR)
            o->err = errno;
        else if (k == 0)
            o->err = EIO;
    }
    o->n = 0;
}

void green__outf(struct green__out *o, const char *fmt, ...)
{
    for (int tries = 0; tries < 2; tries++) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(o->buf + o->n, sizeof o->buf - o->n, fmt, ap);
        va_end(ap);
        if (k >= 0 && (size_t)k < sizeof o->buf - o->n) {
            o->n += (size_t)k;
            return;
        }
        green__out_flush(o);         /* then once more, into an empty buffer */
    }
}

/* pc's entry, looked up (through c, a cursor at pc) the first time. */
static const struct green__sym *sym_of(struct green__syms *s, unw_cursor_t *c, uintptr_t pc)
{
    if (2 * (s->n + 1) > s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 1024;
        struct green__sym *v = calloc(cap, sizeof *v);
        if (!v)
            return NULL;
        for (size_t i = 0; i < s->cap; i++) {
            if (!s->v[i].pc)
                continue;
            size_t j = (s->v[i].pc * 0x9e3779b97f4a7c15ull >> 20) & (cap - 1);
            while (v[j].pc)
                j = (j + 1) & (cap - 1);
            v[j] = s->v[i];
        }
        free(s->v);
        s->v = v;
        s->cap = cap;
    }
    size_t j = (pc * 0x9e3779b97f4a7c15ull >> 20) & (s->cap - 1);
    while (s->v[j].pc && s->v[j].pc != pc)
        j = (j + 1) & (s->cap - 1);
    struct green__sym *e = &s->v[j];
    if (e->pc)
        return e;
    e->pc = pc;
    s->n++;
    uintptr_t off = 0;
    unw_word_t uoff = 0;
    if (green__sym_lookup(pc, e->name, sizeof e->name, &off))
        e->off = off;
    else if (unw_get_proc_name(c, e->name, sizeof e->name, &uoff) == 0 || e->name[0])
        e->off = uoff;
    else
        snprintf(e->name, sizeof e->name, "?");
    Dl_info di;
    if (dladdr((void *)pc, &di) && di.dli_fname) {
        /* The executable's name is its argv[0], which a program may have
         * rewritten (Criterion's workers say boxfort-worker). */
        char exe[256];
        const char *f = di.dli_fname;
        ssize_t k;
        if (strcmp(f, program_invocation_name) == 0 &&
            (k = readlink("/proc/self/exe", exe, sizeof exe - 1)) > 0) {
            exe[k] = '\0';
            f = exe;
        }
        const char *base = strrchr(f, '/');
        base = base ? base + 1 : f;
        size_t n = strnlen(base, sizeof e->obj - 1);
        memcpy(e->obj, base, n);
        e->obj[n] = '\0';
    }
    return e;
}

/* The name of any code address (a spawn site). */
const struct green__sym *green__sym_of_pc(struct green__syms *s, uintptr_t pc)
{
    unw_context_t uc;
    unw_cursor_t c;
    memset(&uc, 0, sizeof uc);
    uc.uc_mcontext.gregs[REG_RIP] = (greg_t)pc;
    uc.uc_mcontext.gregs[REG_RSP] = (greg_t)(uintptr_t)&uc;
    return unw_init_local(&c, &uc) == 0 ? sym_of(s, &c, pc) : NULL;
}
