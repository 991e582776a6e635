/*
 * Backtraces of green threads (for dumps, dump.c, and lock cycle reports,
 * cycle.c): a stack unwound by libunwind to bare PCs, then printed with
 * each PC's function and object (dump_text.c names them).
 */
#define UNW_LOCAL_ONLY
#include "dump.h"

#include <libunwind.h>
#include <stdio.h>
#include <string.h>

/* The PCs of c's frames, marking those a signal frame's caller resumes at. */
static void unwind_pcs(struct green__bt *sn, unw_cursor_t *c)
{
    bool exact = false;
    while (sn->nframes < GREEN_BT_FRAMES) {
        unw_word_t pc;
        if (unw_get_reg(c, UNW_REG_IP, &pc) < 0 || pc == 0)
            break;
        if (exact)
            sn->exact |= 1u << sn->nframes;
        sn->pc[sn->nframes++] = (uintptr_t)pc;
        exact = unw_is_signal_frame(c) > 0;
        if (unw_step(c) <= 0)
            break;
    }
    sn->unwound = true;
}

/* A switched-out thread's stack, from the frame green__ctx_switch left. */
void green__bt_saved(struct green__bt *sn, const struct green__thread *t)
{
    const uint64_t *sp = t->sp;
    if (!sp || (const char *)sp < green__stack_lo(t) || (const char *)(sp + 8) > t->stack_hi)
        return;
    unw_context_t uc;
    memset(&uc, 0, sizeof uc);
    greg_t *g = uc.uc_mcontext.gregs;
    g[REG_R15] = (greg_t)sp[1];
    g[REG_R14] = (greg_t)sp[2];
    g[REG_R13] = (greg_t)sp[3];
    g[REG_R12] = (greg_t)sp[4];
    g[REG_RBX] = (greg_t)sp[5];
    g[REG_RBP] = (greg_t)sp[6];
    g[REG_RIP] = (greg_t)sp[7];
    g[REG_RSP] = (greg_t)(uintptr_t)(sp + 8);
    unw_cursor_t c;
    if (unw_init_local(&c, &uc) == 0)
        unwind_pcs(sn, &c);
}

/* The dumping thread's own stack, from its caller on. */
__attribute__((noinline)) void green__bt_own(struct green__bt *sn)
{
    unw_context_t uc;
    unw_cursor_t c;
    if (unw_getcontext(&uc) == 0 && unw_init_local(&c, &uc) == 0 && unw_step(&c) > 0)
        unwind_pcs(sn, &c);
}

/* A return address names the call before it: look up PC - 1. */
void green__print_pc(struct green__out *o, struct green__syms *syms, const char *pre, uintptr_t pc,
                     bool exact)
{
    uintptr_t at = exact ? pc : pc - 1;
    const struct green__sym *e = green__sym_of_pc(syms, at);
    if (e)
        green__outf(o, "%s0x%lx %s+0x%lx (%s)\n", pre, (unsigned long)pc, e->name,
             (unsigned long)(e->off + (pc - at)), e->obj[0] ? e->obj : "?");
    else
        green__outf(o, "%s0x%lx\n", pre, (unsigned long)pc);
}

/* The frames, one line each, numbered. */
void green__bt_print(struct green__out *o, struct green__syms *syms, const struct green__bt *bt)
{
    for (uint16_t i = 0; i < bt->nframes; i++) {
        char pre[16];
        snprintf(pre, sizeof pre, "    #%u ", (unsigned)i);
        green__print_pc(o, syms, pre, bt->pc[i], bt->exact >> i & 1);
    }
    if (bt->nframes == GREEN_BT_FRAMES)
        green__outf(o, "    ...\n");
}
