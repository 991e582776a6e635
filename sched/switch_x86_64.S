/*
 * Context switch for x86-64 (System V ABI).
 *
 * A switched-out context is just a stack pointer.  Its stack holds, from the
 * saved rsp upwards:
 *
 *     +0   MXCSR (4 bytes), x87 control word (2), zero padding (2)
 *     +8   r15, r14, r13, r12, rbx, rbp
 *     +56  return address
 *
 * The caller-saved registers need no saving: green__ctx_switch is an ordinary
 * call.  MXCSR and the x87 control word are callee-saved "control bits" in
 * the ABI, so each green thread keeps its own rounding and exception masks.
 * No syscall, no signal mask (swapcontext's sigprocmask is what makes it slow).
 *
 * Because both sides of the switch have the same frame layout, one set of CFI
 * directives describes the frame before and after the stack pointer moves;
 * gdb and libunwind walk through a switched-out thread's frame.
 */
    .text

/* void *green__ctx_switch(void **save_sp, void *new_sp, void *transfer) */
    .globl  green__ctx_switch
    .hidden green__ctx_switch
    .type   green__ctx_switch, @function
    .p2align 4
green__ctx_switch:
    .cfi_startproc
    pushq   %rbp
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbp, 0
    pushq   %rbx
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbx, 0
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
    pushq   $0
    .cfi_adjust_cfa_offset 8
    stmxcsr (%rsp)
    fnstcw  4(%rsp)
    movl    (%rsp), %r8d        /* one load per store: no forwarding stall */
    movzwl  4(%rsp), %r9d

    movq    %rsp, (%rdi)
    movq    %rsi, %rsp

    /* Loading the control registers costs more than comparing them, and
     * threads almost never change them. */
    cmpl    (%rsp), %r8d
    jne     1f
    cmpw    4(%rsp), %r9w
    jne     1f
2:  addq    $8, %rsp
    .cfi_adjust_cfa_offset -8
    popq    %r15
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r15
    popq    %r14
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r14
    popq    %r13
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r13
    popq    %r12
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r12
    popq    %rbx
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rbx
    popq    %rbp
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rbp
    movq    %rdx, %rax
    ret
1:  ldmxcsr (%rsp)
    fldcw   4(%rsp)
    jmp     2b
    .cfi_endproc
    .size   green__ctx_switch, .-green__ctx_switch

/*
 * The first return address of a new thread.  Its initial frame (built by
 * launch() in switch.c, at its first switch-in) holds rbx = the thread,
 * r12 = green__thread_main, and rax carries the transfer value: the worker
 * that switched to it.  rsp is 16-byte aligned here, as the call below
 * needs.  The CFI ends every backtrace at this frame.
 */
    .globl  green__ctx_entry
    .hidden green__ctx_entry
    .type   green__ctx_entry, @function
    .p2align 4
green__ctx_entry:
    .cfi_startproc
    .cfi_undefined %rip
    movq    %rax, %rdi
    movq    %rbx, %rsi
    call    *%r12
    ud2
    .cfi_endproc
    .size   green__ctx_entry, .-green__ctx_entry

/*
 * void *green__call_entry(void *(*fn)(void *), void *arg): fn(arg), from a
 * return address the safepoint walk knows (green__call_entry_ret).  Every
 * green thread's own code runs under this frame; the walk of a preempted
 * thread's callers ends here instead of reading on into the scheduler.
 */
    .globl  green__call_entry
    .hidden green__call_entry
    .globl  green__call_entry_ret
    .hidden green__call_entry_ret
    .type   green__call_entry, @function
    .p2align 4
green__call_entry:
    .cfi_startproc
    subq    $8, %rsp                /* 16-byte alignment for the call */
    .cfi_adjust_cfa_offset 8
    movq    %rdi, %rax
    movq    %rsi, %rdi
    call    *%rax
green__call_entry_ret:
    addq    $8, %rsp
    .cfi_adjust_cfa_offset -8
    ret
    .cfi_endproc
    .size   green__call_entry, .-green__call_entry

    .section .note.GNU-stack, "", @progbits
