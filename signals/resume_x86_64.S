/*
 * The way back to the unwinder for a C++ exception that met a hooked
 * return (x86-64).
 *
 * An unwinder that meets the deferred trampoline's frame lands in it, as in
 * a cleanup (its personality, trampoline.c); the trampoline's switch path
 * sees the landing and returns here instead of to the hooked frame's
 * caller, and the exception goes on.  trampoline_x86_64.S ("C++
 * exceptions") says why it must go on from a frame like this one.
 *
 * A file of its own, below trampoline.c, which names it: the trampolines
 * call trampoline.c, and this calls nothing of libgreen's.
 */
#include "hooked_return_cfi.h"

    .text
/*
 * Where an exception that met a hooked return goes on: the switch path
 * (trampoline.c) pointed the trampoline's return here with the exception
 * in rdi, and the stack pointer is the hooked frame's CFA, as
 * after its return.  The unwind rules are the deferred trampoline's, less
 * the personality: the real caller is found through the stack's top record.
 * The 16 bytes taken before the call keep _Unwind_Resume's own CFA -- the
 * unwinder's name for this frame -- apart from the caller's.
 */
    .globl  green__hijack_resume
    .hidden green__hijack_resume
    .type   green__hijack_resume, @function
    .p2align 4
    .cfi_startproc simple
    HOOKED_RETURN_CFI
    nop
green__hijack_resume:
    subq    $16, %rsp
    .cfi_adjust_cfa_offset 16
    call    _Unwind_Resume@PLT
    ud2
    .cfi_endproc
    .size   green__hijack_resume, .-green__hijack_resume

    .section .note.GNU-stack, "", @progbits
