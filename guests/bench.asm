; bench.asm - exit-latency micro-benchmarks (mode 64).
;
; Times BENCH_N iterations each of three VM exits with RDTSC and reports
; the totals with BENCH_REPORT (RBX = id, RCX = value):
;   id 4: guest TSC at the entry point's first instruction (for
;         boot-to-first-instruction; this is the guest's TSC, i.e. host TSC
;         plus the VMCB TSC offset)
;   id 0: BENCH_N (reported first, before the others)
;   id 1: total cycles of BENCH_N x CPUID (EAX=0)
;   id 2: total cycles of BENCH_N x IN AL, DX from 0x3FF (UART scratch)
;   id 3: total cycles of BENCH_N x VMMCALL VERSION
; then prints "bench: done" and EXITs 0. No UART output inside the timed
; loops. If a BENCH_REPORT does not return 0 it prints
; "bench: FAIL report" and EXITs 1.
;
; Timing: LFENCE; RDTSC before and after each loop. LFENCE keeps RDTSC
; from executing before the preceding instructions have completed.

%define GNAME "bench"
%include "common.inc"

BENCH_N     equ 2000

        GUEST_HEADER 64, 0x10000, 0x100000, "bench"

; TSC_READ dst: dst = serialized 64-bit TSC. Clobbers RAX, RDX.
%macro TSC_READ 1
        lfence
        rdtsc
        shl rdx, 32
        or rax, rdx
        mov %1, rax
%endmacro

_start:
        rdtsc                           ; first instruction: boot TSC
        shl rdx, 32
        or rax, rdx
        mov r15, rax                    ; r15 = TSC at entry
        mov rsp, 0x80000
        cld
        PUTS msg_start

        mov ebx, 0                      ; id 0: N
        mov ecx, BENCH_N
        call report
        mov ebx, 4                      ; id 4: TSC at entry
        mov rcx, r15
        call report

        ; (a) CPUID leaf 0 -------------------------------------------------
        mov r12d, BENCH_N
        TSC_READ r13
.cpuid: xor eax, eax
        cpuid
        dec r12d
        jnz .cpuid
        TSC_READ r14
        mov ebx, 1
        mov rcx, r14
        sub rcx, r13
        call report

        ; (b) port read from the UART scratch register ---------------------
        mov r12d, BENCH_N
        TSC_READ r13
        mov dx, UART_SCR                ; after TSC_READ, which clobbers RDX
.inb:   in al, dx
        dec r12d
        jnz .inb
        TSC_READ r14
        mov ebx, 2
        mov rcx, r14
        sub rcx, r13
        call report

        ; (c) VMMCALL VERSION ---------------------------------------------
        mov r12d, BENCH_N
        TSC_READ r13
.vmm:   mov eax, HC_VERSION
        vmmcall
        dec r12d
        jnz .vmm
        TSC_READ r14
        mov ebx, 3
        mov rcx, r14
        sub rcx, r13
        call report

        PUTS msg_done
        HC_EXIT_WITH 0

; report: BENCH_REPORT id RBX, value RCX; fail unless the result is 0.
report:
        mov eax, HC_BENCH_REPORT
        vmmcall
        test rax, rax
        jnz .bad
        ret
.bad:   PUTS msg_fail
        HC_EXIT_WITH 1

msg_start: db GNAME, ": running", 10, 0
msg_done:  db GNAME, ": done", 10, 0
msg_fail:  db GNAME, ": FAIL report", 10, 0

        UART_PUTS_FUNC
        GUEST_END
