/*
 * The preemption trampoline (x86-64).
 *
 * The signal handler does not switch: it makes the interrupted thread "call"
 * this code.  It lowers the stack pointer past the 128-byte red zone of the
 * interrupted function, pushes the interrupted PC, and points the PC here.
 * So on entry:
 *
 *     [rsp]        the interrupted PC
 *     rsp + 8 ...  the red zone (128 bytes), untouched
 *     rsp + 136    the interrupted stack pointer
 *
 * and every register still holds the interrupted code's value.  The
 * trampoline saves rflags and the fifteen general registers on the stack,
 * then the whole extended state (x87, SSE, AVX, AVX-512 and whatever else
 * XCR0 enables) with XSAVE into a 64-byte aligned area of green__xsave_size
 * bytes below them, calls green__preempt_switch -- a yield that keeps the
 * thread on this worker -- and on return restores everything in reverse and
 * returns to the interrupted PC with `ret $128`, which also gives back the
 * red zone: the interrupted stack pointer is exactly as it was.
 *
 * CFI: the frame is a signal frame (the PC was not a call's return address)
 * whose return address sits 136 bytes below the caller's stack pointer, so a
 * debugger or libunwind walks from here into the interrupted function.
 */
#include "hooked_return_cfi.h"

    .text
    .globl  green__preempt_trampoline
    .hidden green__preempt_trampoline
    .type   green__preempt_trampoline, @function
    .p2align 4
    .cfi_startproc simple
    .cfi_signal_frame
    .cfi_def_cfa %rsp, 136
    .cfi_offset %rip, -136
    /* An unwinder looks up the FDE at PC-1 in signal frames' callers; give
     * it one instruction before the entry that belongs to this FDE. */
    nop
green__preempt_trampoline:
    pushfq
    .cfi_adjust_cfa_offset 8
    pushq   %rax
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rax, 0
    pushq   %rbx
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbx, 0
    pushq   %rcx
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rcx, 0
    pushq   %rdx
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rdx, 0
    pushq   %rsi
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rsi, 0
    pushq   %rdi
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rdi, 0
    pushq   %rbp
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbp, 0
    pushq   %r8
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r8, 0
    pushq   %r9
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r9, 0
    pushq   %r10
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r10, 0
    pushq   %r11
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r11, 0
    pushq   %r12
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r12, 0
    pushq   %r13
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r13, 0
    pushq   %r14
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r14, 0
    pushq   %r15
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r15, 0

    /* rbx (saved above) keeps this point of the stack from here on. */
    movq    %rsp, %rbx
    .cfi_def_cfa_register %rbx
    subq    green__xsave_size(%rip), %rsp
    andq    $-64, %rsp
    /* XSAVE writes the header's XSTATE_BV but not the rest of it, which
     * XRSTOR checks: start from zeros. */
    movq    $0, 512(%rsp)
    movq    $0, 520(%rsp)
    movq    $0, 528(%rsp)
    movq    $0, 536(%rsp)
    movq    $0, 544(%rsp)
    movq    $0, 552(%rsp)
    movq    $0, 560(%rsp)
    movq    $0, 568(%rsp)
    movl    $-1, %eax
    movl    $-1, %edx
    xsave64 (%rsp)
    cld                             /* the ABI wants DF clear at a call */

    leaq    128(%rbx), %rdi         /* where the return address is */
    call    green__preempt_switch

    movl    $-1, %eax
    movl    $-1, %edx
    xrstor64 (%rsp)
    movq    %rbx, %rsp
    .cfi_def_cfa_register %rsp
    popq    %r15
    .cfi_adjust_cfa_offset -8
    popq    %r14
    .cfi_adjust_cfa_offset -8
    popq    %r13
    .cfi_adjust_cfa_offset -8
    popq    %r12
    .cfi_adjust_cfa_offset -8
    popq    %r11
    .cfi_adjust_cfa_offset -8
    popq    %r10
    .cfi_adjust_cfa_offset -8
    popq    %r9
    .cfi_adjust_cfa_offset -8
    popq    %r8
    .cfi_adjust_cfa_offset -8
    popq    %rbp
    .cfi_adjust_cfa_offset -8
    popq    %rdi
    .cfi_adjust_cfa_offset -8
    popq    %rsi
    .cfi_adjust_cfa_offset -8
    popq    %rdx
    .cfi_adjust_cfa_offset -8
    popq    %rcx
    .cfi_adjust_cfa_offset -8
    popq    %rbx
    .cfi_adjust_cfa_offset -8
    popq    %rax
    .cfi_adjust_cfa_offset -8
    popfq
    .cfi_adjust_cfa_offset -8
    ret     $128
    .cfi_endproc
    .size   green__preempt_trampoline, .-green__preempt_trampoline

/*
 * The deferred trampoline.  When a preemption is refused because the thread
 * is in code that may not be interrupted -- a library, a GREEN_NOPREEMPT
 * function -- the handler (or a spent budget) replaces the return address
 * of the outermost such frame, the one whose caller is the program's own
 * code, with this address (signals/hijack.c), so the preemption is taken
 * the moment that frame returns.  Here every register holds what the
 * caller will see -- the return value in rax, rdx, xmm0/1 or st0/1, and
 * all the others too, for callees with conventions of their own (TLS
 * descriptors preserve everything but rax) -- except rflags, which no
 * caller expects kept across a call.  Build the frame
 * green__preempt_trampoline expects, with 0 for the return address:
 * green__preempt_switch sees the 0, puts the real return address in its
 * place, and switches only if the preemption is still pending.
 *
 * Unwind information.  Until it fires, this address sits in a live frame's
 * return slot, and whatever walks the stack meanwhile reads it as that
 * frame's caller: hooked_return_cfi.h makes it a frame whose own caller is
 * the real one.
 *
 * C++ exceptions.  The frame this makes has the CFA of the frame that
 * returns here, and libgcc's unwinder knows a frame by its CFA: an
 * exception caught in the real caller would be taken for caught here
 * ("don't unwind past the handler", an abort).  So the FDE has a
 * personality, green__hijack_personality (trampoline.c), which makes this
 * frame a cleanup: the unwinder lands here as if the hooked frame had
 * returned, the switch path sees it was a landing (trampoline.c) and
 * leaves through green__hijack_resume (resume_x86_64.S), which hands the
 * exception back to _Unwind_Resume from a frame of the same CFA and the
 * same unwind rules -- no extra frame remains for the unwinder to confuse
 * with the caller.
 */
    .globl  green__deferred_trampoline
    .hidden green__deferred_trampoline
    .type   green__hooked_return, @function
    .p2align 4
    .cfi_startproc simple
    .cfi_personality 0x1b, green__hijack_personality
    HOOKED_RETURN_CFI
    /* An unwinder looks up the FDE at the return address minus one: give
     * it one instruction before the entry that belongs to this FDE -- and a
     * name for debuggers to show for the frame: green__hooked_return. */
green__hooked_return:
    nop
green__deferred_trampoline:
    subq    $136, %rsp
    .cfi_adjust_cfa_offset 136
    movq    $0, (%rsp)
    jmp     green__preempt_trampoline
    .cfi_endproc
    .size   green__hooked_return, .-green__hooked_return

    .section .note.GNU-stack, "", @progbits
