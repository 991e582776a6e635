/* Private to libgreen: included by the trampolines' assembler files. */
/*
 * The unwind rules of a hooked return: the frame that
 * green__deferred_trampoline (trampoline_x86_64.S) and
 * green__hijack_resume (resume_x86_64.S) describe to unwinders.
 *
 * Unwind information.  Until it fires, the deferred trampoline's address
 * sits in a live frame's return slot, and whatever walks the stack
 * meanwhile -- a C++ exception thrown through that frame, gdb, glibc's
 * backtrace, libunwind -- reads it as that frame's caller.  The CFI below makes it a frame whose own caller
 * is the real one: its CFA is the stack pointer (the frame that returned
 * here has popped its return address), and the return address is saved in
 * the stack's top record (sched.h, struct green__stack_top), which the
 * expression finds from the CFA: the stack's top is page-aligned, so it
 * looks at each 4 KiB boundary above the CFA for the record's mark, and
 * the return address is the word after it.  The record always lies above
 * the CFA, so the search never leaves the stack.
 *
 * The expression, after DW_CFA_expression pushes the CFA:
 *     plus_uconst 4111; const2s -4096; and       B = the first boundary >= CFA + 16
 *   loop:
 *     dup; lit16; minus; deref; const8u MARK; eq; bra found
 *     plus_uconst 4096; skip loop                B += 4 KiB
 *   found:
 *     lit8; minus                                the return address is at B - 8
 * (bra and skip count from the end of their own operand: +6 skips the two
 * 3-byte instructions of the step, -23 goes back over the 17 bytes of the
 * test and those 6.)
 */
#ifndef GREEN_HOOKED_RETURN_CFI_H
#define GREEN_HOOKED_RETURN_CFI_H

#define HOOKED_RETURN_CFI                                                        \
    .cfi_def_cfa %rsp, 0;                                                        \
    .cfi_escape 0x10, 0x10, 32,                                                  \
        0x23, 0x8f, 0x20, 0x0b, 0x00, 0xf0, 0x1a,                                \
        0x12, 0x40, 0x1c, 0x06,                                                  \
        0x0e, 0x8e, 0xd4, 0x27, 0x5b, 0x1a, 0x6f, 0x3e, 0x9c,                    \
        0x29, 0x28, 0x06, 0x00,                                                  \
        0x23, 0x80, 0x20, 0x2f, 0xe9, 0xff,                                      \
        0x38, 0x1c

#endif /* GREEN_HOOKED_RETURN_CFI_H */
