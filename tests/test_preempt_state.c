/* What preemption by signal preserves: a green thread that computes without
 * ever calling into libgreen is switched out, and what it held -- every
 * general register, its flags, MXCSR, zmm0-31 and k0-7, the red zone below
 * its stack pointer, errno -- is intact when it resumes.
 *
 * How a test proves that preemption happened, rather than that code ran: the
 * threads make no libgreen call while they compute, so on one worker the
 * only way for thread B to advance while thread A is inside its loop is that
 * A was switched out by a signal (see test_preempt.c for the rest).  The
 * register and red-zone loops are assembly (file-scope asm below): C code
 * cannot keep a value in a chosen register, nor leave the red zone alone
 * across a loop.  They follow the SysV ABI, so the C around them needs no
 * clobber lists.
 */
#include "preempt_common.h"

/* ---- the register loop (assembly) --------------------------------------- */

/* What one thread loads into its registers and expects to find there.  The
 * layout is fixed: the assembly copies it into its own frame and addresses
 * it there relative to %rsp, so that no register is needed to hold a
 * pointer and all fifteen general registers other than %rsp can hold a
 * test value. */
struct regs_expect {
    uint64_t gpr[15];     /* rax rbx rcx rdx rsi rdi rbp r8 .. r15 */
    uint64_t flags;       /* RFLAGS while the flags are live (popfq'd) */
    uint64_t mxcsr;       /* low 32 bits */
    uint64_t avx512;      /* nonzero: also zmm0-31 and k0-7 */
    uint64_t k[8];
    uint64_t pad[6];
    uint64_t zmm[32][8];
};

#define RE_GPR 0
#define RE_FLAGS 120
#define RE_MXCSR 128
#define RE_AVX 136
#define RE_K 144
#define RE_ZMM 256
#define RE_SIZE 2304

_Static_assert(offsetof(struct regs_expect, flags) == RE_FLAGS, "layout");
_Static_assert(offsetof(struct regs_expect, mxcsr) == RE_MXCSR, "layout");
_Static_assert(offsetof(struct regs_expect, avx512) == RE_AVX, "layout");
_Static_assert(offsetof(struct regs_expect, k) == RE_K, "layout");
_Static_assert(offsetof(struct regs_expect, zmm) == RE_ZMM, "layout");
_Static_assert(sizeof(struct regs_expect) == RE_SIZE, "layout");

/* The flags the loop sets and checks: CF PF AF ZF SF DF OF.  (TF would trap
 * and AC may fault; IF cannot be changed from user mode.) */
#define FLAGS_MASK 0xcd5      /* no suffix: it goes into the asm */
#define FLAGS_FIXED 0x202u           /* IF and the always-one bit 1 */
#define FLAGS_A (FLAGS_FIXED | 0x001u | 0x010u | 0x080u | 0x400u)   /* CF AF SF DF */
#define FLAGS_B (FLAGS_FIXED | 0x004u | 0x040u | 0x800u)            /* PF ZF OF */

#define MXCSR_MASKS 0x1f80u          /* every exception masked */
#define MXCSR_A (MXCSR_MASKS | 0x2000u)                   /* round down */
#define MXCSR_B (MXCSR_MASKS | 0x4000u | 0x8000u | 0x40u)  /* round up, FTZ, DAZ */

/* uint64_t preempt_reg_loop(const struct regs_expect *e, uint64_t rounds)
 *
 * Saves the callee-saved registers and MXCSR, copies *e into its frame and
 * loads every value from it.  Then `rounds` times: set RFLAGS (popfq), run a
 * ~1000-cycle window of flag-preserving instructions -- the flags are live
 * across it -- capture RFLAGS (pushfq), and compare every register, the
 * captured flags, MXCSR and (with avx512) k0-7 and zmm0-31 with *e,
 * counting each differing value.  While it compares, %rax is parked in the
 * frame and used as scratch, and k1 is the result of the zmm comparisons
 * (after k1's own value was checked; it is reloaded after).  Returns the
 * count, with MXCSR, DF and the callee-saved registers restored.  It calls
 * nothing.  Its %rsp is 16-byte aligned inside the loop (the red-zone
 * leaf below runs at 8 mod 16).
 *
 * Frame, from %rsp: 0 mismatches, 8 rounds left, 16 parked %rax,
 * 24 scratch, 32 caller's MXCSR, 64 the copy of *e. */
#define STR_(x) #x
#define STR(x) STR_(x)

#define F_BAD 0
#define F_LEFT 8
#define F_RAX 16
#define F_SCR 24
#define F_MXCSR 32
#define F_E 64
#define F_SIZE (F_E + RE_SIZE)    /* 2368: with the 56 bytes pushed, %rsp = 0 mod 16 */

__attribute__((visibility("hidden"))) uint64_t preempt_reg_loop(const struct regs_expect *e,
                                                                uint64_t rounds);

__asm__(
    ".pushsection .text\n"
    ".p2align 6\n"
    ".globl preempt_reg_loop\n"
    ".hidden preempt_reg_loop\n"
    ".type preempt_reg_loop, @function\n"
    "preempt_reg_loop:\n"
    ".cfi_startproc\n"
    "  push %rbx\n  .cfi_adjust_cfa_offset 8\n  .cfi_rel_offset %rbx, 0\n"
    "  push %rbp\n  .cfi_adjust_cfa_offset 8\n  .cfi_rel_offset %rbp, 0\n"
    "  push %r12\n  .cfi_adjust_cfa_offset 8\n  .cfi_rel_offset %r12, 0\n"
    "  push %r13\n  .cfi_adjust_cfa_offset 8\n  .cfi_rel_offset %r13, 0\n"
    "  push %r14\n  .cfi_adjust_cfa_offset 8\n  .cfi_rel_offset %r14, 0\n"
    "  push %r15\n  .cfi_adjust_cfa_offset 8\n  .cfi_rel_offset %r15, 0\n"
    "  sub $" STR(F_SIZE) ", %rsp\n  .cfi_adjust_cfa_offset " STR(F_SIZE) "\n"
    "  movq $0, " STR(F_BAD) "(%rsp)\n"
    "  mov %rsi, " STR(F_LEFT) "(%rsp)\n"
    "  stmxcsr " STR(F_MXCSR) "(%rsp)\n"
    "  mov %rdi, %rsi\n"
    "  lea " STR(F_E) "(%rsp), %rdi\n"
    "  mov $" STR(RE_SIZE) ", %ecx\n"
    "  cld\n"
    "  rep movsb\n"
    /* Load everything. */
    "  cmpq $0, " STR(F_E) "+" STR(RE_AVX) "(%rsp)\n"
    "  je 1f\n"
    "  .irp i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31\n"
    "  vmovdqu64 " STR(F_E) "+" STR(RE_ZMM) "+64*\\i(%rsp), %zmm\\i\n"
    "  .endr\n"
    "  .irp i, 0,1,2,3,4,5,6,7\n"
    "  kmovq " STR(F_E) "+" STR(RE_K) "+8*\\i(%rsp), %k\\i\n"
    "  .endr\n"
    "1:\n"
    "  ldmxcsr " STR(F_E) "+" STR(RE_MXCSR) "(%rsp)\n"
    "  mov " STR(F_E) "+8*0(%rsp), %rax\n"
    "  mov " STR(F_E) "+8*1(%rsp), %rbx\n"
    "  mov " STR(F_E) "+8*2(%rsp), %rcx\n"
    "  mov " STR(F_E) "+8*3(%rsp), %rdx\n"
    "  mov " STR(F_E) "+8*4(%rsp), %rsi\n"
    "  mov " STR(F_E) "+8*5(%rsp), %rdi\n"
    "  mov " STR(F_E) "+8*6(%rsp), %rbp\n"
    "  mov " STR(F_E) "+8*7(%rsp), %r8\n"
    "  mov " STR(F_E) "+8*8(%rsp), %r9\n"
    "  mov " STR(F_E) "+8*9(%rsp), %r10\n"
    "  mov " STR(F_E) "+8*10(%rsp), %r11\n"
    "  mov " STR(F_E) "+8*11(%rsp), %r12\n"
    "  mov " STR(F_E) "+8*12(%rsp), %r13\n"
    "  mov " STR(F_E) "+8*13(%rsp), %r14\n"
    "  mov " STR(F_E) "+8*14(%rsp), %r15\n"
    "2:\n"
    /* The flags: set, keep live across the window, capture. */
    "  pushq " STR(F_E) "+" STR(RE_FLAGS) "(%rsp)\n"
    "  popfq\n"
    "  .rept 1024\n"
    "  lea (%r11), %r11\n"
    "  .endr\n"
    "  pushfq\n"
    "  popq " STR(F_SCR) "(%rsp)\n"
    /* A general register: r < expected sets CF, then expected < r does:
     * exactly one of the two adds 1 when they differ. */
    "  .macro preempt_chk reg, idx\n"
    "  cmp " STR(F_E) "+8*\\idx(%rsp), \\reg\n"
    "  adcq $0, " STR(F_BAD) "(%rsp)\n"
    "  cmp \\reg, " STR(F_E) "+8*\\idx(%rsp)\n"
    "  adcq $0, " STR(F_BAD) "(%rsp)\n"
    "  .endm\n"
    "  preempt_chk %rax, 0\n"
    "  preempt_chk %rbx, 1\n"
    "  preempt_chk %rcx, 2\n"
    "  preempt_chk %rdx, 3\n"
    "  preempt_chk %rsi, 4\n"
    "  preempt_chk %rdi, 5\n"
    "  preempt_chk %rbp, 6\n"
    "  preempt_chk %r8, 7\n"
    "  preempt_chk %r9, 8\n"
    "  preempt_chk %r10, 9\n"
    "  preempt_chk %r11, 10\n"
    "  preempt_chk %r12, 11\n"
    "  preempt_chk %r13, 12\n"
    "  preempt_chk %r14, 13\n"
    "  preempt_chk %r15, 14\n"
    "  .purgem preempt_chk\n"
    /* The rest through %rax: neg sets CF iff the xor left anything. */
    "  mov %rax, " STR(F_RAX) "(%rsp)\n"
    "  mov " STR(F_SCR) "(%rsp), %rax\n"
    "  xor " STR(F_E) "+" STR(RE_FLAGS) "(%rsp), %rax\n"
    "  and $" STR(FLAGS_MASK) ", %rax\n"
    "  neg %rax\n"
    "  adcq $0, " STR(F_BAD) "(%rsp)\n"
    "  stmxcsr " STR(F_SCR) "(%rsp)\n"
    "  mov " STR(F_SCR) "(%rsp), %eax\n"
    "  xor " STR(F_E) "+" STR(RE_MXCSR) "(%rsp), %eax\n"
    "  and $0xffc0, %eax\n"          /* the control bits, not the sticky flags */
    "  neg %rax\n"
    "  adcq $0, " STR(F_BAD) "(%rsp)\n"
    "  cmpq $0, " STR(F_E) "+" STR(RE_AVX) "(%rsp)\n"
    "  je 3f\n"
    "  .irp i, 0,1,2,3,4,5,6,7\n"
    "  kmovq %k\\i, %rax\n"
    "  xor " STR(F_E) "+" STR(RE_K) "+8*\\i(%rsp), %rax\n"
    "  neg %rax\n"
    "  adcq $0, " STR(F_BAD) "(%rsp)\n"
    "  .endr\n"
    "  .irp i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31\n"
    "  vpcmpq $4, " STR(F_E) "+" STR(RE_ZMM) "+64*\\i(%rsp), %zmm\\i, %k1\n"
    "  kmovw %k1, %eax\n"
    "  neg %eax\n"
    "  adcq $0, " STR(F_BAD) "(%rsp)\n"
    "  .endr\n"
    "  kmovq " STR(F_E) "+" STR(RE_K) "+8*1(%rsp), %k1\n"
    "3:\n"
    "  mov " STR(F_RAX) "(%rsp), %rax\n"
    "  decq " STR(F_LEFT) "(%rsp)\n"
    "  jnz 2b\n"
    /* Back to the ABI's state. */
    "  cld\n"
    "  ldmxcsr " STR(F_MXCSR) "(%rsp)\n"
    "  cmpq $0, " STR(F_E) "+" STR(RE_AVX) "(%rsp)\n"
    "  je 4f\n"
    "  vzeroupper\n"
    "4:\n"
    "  mov " STR(F_BAD) "(%rsp), %rax\n"
    "  add $" STR(F_SIZE) ", %rsp\n  .cfi_adjust_cfa_offset -" STR(F_SIZE) "\n"
    "  pop %r15\n  .cfi_adjust_cfa_offset -8\n  .cfi_restore %r15\n"
    "  pop %r14\n  .cfi_adjust_cfa_offset -8\n  .cfi_restore %r14\n"
    "  pop %r13\n  .cfi_adjust_cfa_offset -8\n  .cfi_restore %r13\n"
    "  pop %r12\n  .cfi_adjust_cfa_offset -8\n  .cfi_restore %r12\n"
    "  pop %rbp\n  .cfi_adjust_cfa_offset -8\n  .cfi_restore %rbp\n"
    "  pop %rbx\n  .cfi_adjust_cfa_offset -8\n  .cfi_restore %rbx\n"
    "  ret\n"
    ".cfi_endproc\n"
    ".size preempt_reg_loop, .-preempt_reg_loop\n"
    ".popsection\n");

/* ---- the red-zone leaf (assembly) --------------------------------------- */

/* uint64_t preempt_red_zone_leaf(uint64_t seed, uint64_t rounds)
 *
 * A leaf function, as a compiler may emit one: it never moves %rsp and
 * keeps its data in the 128 bytes below it.  It writes seed, seed + step,
 * ... into the 16 quadwords of the red zone, then `rounds` times re-reads
 * all 16 and counts those that changed.  Calls nothing. */
__attribute__((visibility("hidden"))) uint64_t preempt_red_zone_leaf(uint64_t seed,
                                                                     uint64_t rounds);

__asm__(
    ".pushsection .text\n"
    ".p2align 4\n"
    ".globl preempt_red_zone_leaf\n"
    ".hidden preempt_red_zone_leaf\n"
    ".type preempt_red_zone_leaf, @function\n"
    "preempt_red_zone_leaf:\n"
    ".cfi_startproc\n"
    "  xor %eax, %eax\n"
    "  movabs $0x9e3779b97f4a7c15, %r8\n"
    "  mov %rdi, %rdx\n"
    "  .irp i, 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16\n"
    "  mov %rdx, -8*\\i(%rsp)\n"
    "  add %r8, %rdx\n"
    "  .endr\n"
    "  test %rsi, %rsi\n"
    "  jz 2f\n"
    "1:\n"
    "  mov %rdi, %rdx\n"
    "  .irp i, 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16\n"
    "  cmp -8*\\i(%rsp), %rdx\n"
    "  adc $0, %rax\n"
    "  cmp %rdx, -8*\\i(%rsp)\n"
    "  adc $0, %rax\n"
    "  add %r8, %rdx\n"
    "  .endr\n"
    "  dec %rsi\n"
    "  jnz 1b\n"
    "2:\n"
    "  ret\n"
    ".cfi_endproc\n"
    ".size preempt_red_zone_leaf, .-preempt_red_zone_leaf\n"
    ".popsection\n");

/* ---- every register survives preemption --------------------------------- */

#define REG_ROUNDS 2000         /* ~1 ms of the loop between looks at the clock */

struct regs_thread {
    struct regs_expect e;
    volatile uint64_t rounds;           /* done, read by the other thread */
    uint64_t bad;
    uint64_t saw_other;                 /* loops during which the other advanced */
    uint64_t until;                     /* TSC deadline */
    struct regs_thread *other;
} __attribute__((aligned(64)));

static void regs_fill(struct regs_expect *e, uint64_t seed, int which, int avx512)
{
    memset(e, 0, sizeof *e);
    for (int i = 0; i < 15; i++)
        e->gpr[i] = splitmix(&seed);
    e->flags = which ? FLAGS_B : FLAGS_A;
    e->mxcsr = which ? MXCSR_B : MXCSR_A;
    e->avx512 = (uint64_t)avx512;
    for (int i = 0; i < 8; i++)
        e->k[i] = splitmix(&seed);
    for (int i = 0; i < 32; i++)
        for (int j = 0; j < 8; j++)
            e->zmm[i][j] = splitmix(&seed);
}

static void *regs_run(void *arg)
{
    struct regs_thread *t = arg;
    while (!tsc_passed(t->until)) {
        uint64_t before = t->other->rounds;
        t->bad += preempt_reg_loop(&t->e, REG_ROUNDS);
        t->saw_other += t->other->rounds != before;
        t->rounds += REG_ROUNDS;
    }
    return NULL;
}

static void *regs_main(void *arg)
{
    struct regs_thread *t = arg;
    green_t a, b;
    if (green_spawn(&a, regs_run, &t[0]) != 0 || green_spawn(&b, regs_run, &t[1]) != 0)
        return P(1);
    green_join(a, NULL);
    green_join(b, NULL);
    return NULL;
}

Test(preempt, registers_survive_preemption, .timeout = 30)
{
    static struct regs_thread t[2];
    int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    if (!avx512)
        cr_log_info("no AVX-512 (F and BW) here: zmm0-31 and k0-7 are not checked");
    memset(t, 0, sizeof t);
    for (int i = 0; i < 2; i++) {
        regs_fill(&t[i].e, 0x5eed0000u + (uint64_t)i * 7919u, i, avx512);
        t[i].other = &t[1 - i];
    }
    /* The values are really distinct, so that a swap would show. */
    for (int i = 0; i < 15; i++)
        cr_assert_neq(t[0].e.gpr[i], t[1].e.gpr[i]);

    /* The loop itself is right: without a switch it finds nothing. */
    for (int i = 0; i < 2; i++)
        cr_assert_eq(preempt_reg_loop(&t[i].e, 100), 0, "the loop is wrong");

    t[0].until = t[1].until = tsc_after(2 * SEC);
    green_stats_t s0 = stats_now();
    run_mode_ok(regs_main, t, 1, GREEN_PREEMPT_SIGNAL, 50);
    green_stats_t s1 = stats_now();

    uint64_t preemptions = s1.preemptions - s0.preemptions;
    cr_log_info("registers: %llu preemptions; loops %llu/%llu, the other ran during %llu/%llu",
                (unsigned long long)preemptions,
                (unsigned long long)(t[0].rounds / REG_ROUNDS),
                (unsigned long long)(t[1].rounds / REG_ROUNDS),
                (unsigned long long)t[0].saw_other, (unsigned long long)t[1].saw_other);
    for (int i = 0; i < 2; i++) {
        cr_expect_eq(t[i].bad, 0, "thread %d found %llu values changed under it", i,
                     (unsigned long long)t[i].bad);
        cr_expect_gt(t[i].saw_other, 20,
                     "thread %d saw the other advance during only %llu of its %llu loops: "
                     "it was not preempted inside them",
                     i, (unsigned long long)t[i].saw_other,
                     (unsigned long long)(t[i].rounds / REG_ROUNDS));
    }
    cr_expect_gt(preemptions, 50, "only %llu preemptions in 2 s at a 50 us quantum",
                 (unsigned long long)preemptions);
}

/* ---- the red zone ------------------------------------------------------- */

#define LEAF_ROUNDS 100000      /* ~0.5 ms per call */

struct red_zone {
    struct hog hog;
    atomic_int stop;
    uint64_t bad, calls, interrupted;
    uint64_t until;                 /* TSC deadline */
};

static void *red_zone_run(void *arg)
{
    struct red_zone *r = arg;
    uint64_t seed = 0x12345678u;
    while (!tsc_passed(r->until)) {
        uint64_t before = r->hog.count;
        r->bad += preempt_red_zone_leaf(splitmix(&seed), LEAF_ROUNDS);
        r->interrupted += r->hog.count != before;
        r->calls++;
    }
    atomic_store(&r->stop, 1);
    return NULL;
}

static void *red_zone_main(void *arg)
{
    struct red_zone *r = arg;
    return hog_beside(hog_run, &r->hog, red_zone_run, r);
}

Test(preempt, the_red_zone_of_an_interrupted_leaf_function_is_intact, .timeout = 30)
{
    static struct red_zone r;
    memset(&r, 0, sizeof r);
    cr_assert_eq(preempt_red_zone_leaf(42, 1000), 0, "the leaf is wrong");
    r.until = tsc_after(1 * SEC);
    r.hog.stop = &r.stop;
    r.hog.until = tsc_after(3 * SEC);
    green_stats_t s0 = stats_now();
    cr_assert_eq(run_mode(red_zone_main, &r, 1, GREEN_PREEMPT_SIGNAL, 50), 0);
    green_stats_t s1 = stats_now();
    cr_log_info("red zone: %llu calls, %llu interrupted, %llu preemptions",
                (unsigned long long)r.calls, (unsigned long long)r.interrupted,
                (unsigned long long)(s1.preemptions - s0.preemptions));
    cr_expect_eq(r.bad, 0, "%llu red-zone words changed under the leaf",
                 (unsigned long long)r.bad);
    cr_expect_gt(r.interrupted, 10,
                 "the hog ran during only %llu of %llu calls of the leaf: it was not "
                 "preempted inside them",
                 (unsigned long long)r.interrupted, (unsigned long long)r.calls);
    cr_expect_gt(s1.preemptions - s0.preemptions, 0);
}

/* ---- errno -------------------------------------------------------------- */

#define ERRNO_SPIN 1000000       /* ~1.5 ms, call-free */

struct errno_thread {
    int mine;
    volatile uint64_t progress;  /* spins done, read by the other thread */
    uint64_t bad, preempted;
    uint64_t until;                 /* TSC deadline */
    struct errno_thread *other;
} __attribute__((aligned(64)));

static void *errno_run(void *arg)
{
    struct errno_thread *t = arg;
    volatile uint64_t spin = 0;
    while (!tsc_passed(t->until)) {
        errno_set(t->mine);
        uint64_t before = t->other->progress;
        for (int i = 0; i < ERRNO_SPIN; i++)
            spin++;
        uint64_t after = t->other->progress;
        t->bad += errno_get() != t->mine;
        t->preempted += after != before;
        t->progress++;
    }
    return NULL;
}

static void *errno_main(void *arg)
{
    struct errno_thread *t = arg;
    green_t a, b;
    if (green_spawn(&a, errno_run, &t[0]) != 0 || green_spawn(&b, errno_run, &t[1]) != 0)
        return P(1);
    green_join(a, NULL);
    green_join(b, NULL);
    return NULL;
}

Test(preempt, errno_survives_preemption, .timeout = 30)
{
    static struct errno_thread t[2];
    memset(t, 0, sizeof t);
    uint64_t until = tsc_after(500 * MS);
    t[0] = (struct errno_thread){ .mine = EAGAIN, .until = until, .other = &t[1] };
    t[1] = (struct errno_thread){ .mine = ENOENT, .until = until, .other = &t[0] };
    cr_assert_eq(run_mode(errno_main, t, 1, GREEN_PREEMPT_SIGNAL, 50), 0);
    cr_log_info("errno: preempted %llu/%llu and %llu/%llu", (unsigned long long)t[0].preempted,
                (unsigned long long)t[0].progress, (unsigned long long)t[1].preempted,
                (unsigned long long)t[1].progress);
    for (int i = 0; i < 2; i++) {
        cr_expect_eq(t[i].bad, 0, "thread %d found another errno %llu times", i,
                     (unsigned long long)t[i].bad);
        cr_expect_gt(t[i].preempted, 10,
                     "thread %d was preempted with its errno set only %llu times in %llu",
                     i, (unsigned long long)t[i].preempted,
                     (unsigned long long)t[i].progress);
    }
}

