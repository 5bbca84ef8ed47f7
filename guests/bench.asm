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
;   id 5, 6: cycles of the same exit-free loop with the local APIC timer
;         interrupting it (periodic, vector 0x40; the handler counts and
;         writes the APIC's EOI register) and without (timer masked)
;   id 7: interrupts taken during the first loop
; then prints "bench: done" and EXITs 0. No UART output inside the timed
; loops. If a BENCH_REPORT does not return 0 it prints
; "bench: FAIL report" and EXITs 1.
;
; Timing: LFENCE; RDTSC before and after each loop. LFENCE keeps RDTSC
; from executing before the preceding instructions have completed.

%define GNAME "bench"
%include "common.inc"

BENCH_N     equ 2000

; Timer interrupt bench (APM vol. 2, 16.4 "Local APIC Timer").
APIC_BASE    equ 0xFEE00000
APIC_EOI     equ 0x0B0                ; register offsets (64-bit mode has no
APIC_SVR     equ 0x0F0                ; absolute 32-bit addresses above 2 GiB:
APIC_LVTT    equ 0x320                ; they go through RBP = APIC_BASE)
APIC_TICR    equ 0x380
APIC_TDCR    equ 0x3E0
SVR_ENABLE   equ 0x100 | 0xFF       ; software enable, spurious vector 0xFF
LVT_PERIODIC equ 1 << 17
LVT_MASKED   equ 1 << 16
TDCR_DIV1    equ 0xB
TIMER_VEC    equ 0x40
TIMER_COUNT  equ 200000             ; bus ticks (1 ns each): a 200 us period
SPIN_N       equ 20000000           ; iterations of the exit-free loop
PD_APIC      equ 0x4000             ; page directory for the 3rd GiB (APIC page)
PDPT         equ 0x2000             ; the loader's PDPT (docs/guest-abi.md)
PDE_2M       equ 0x83 | 0x10        ; present, writable, 2 MiB, cache disabled
PDPTE        equ 0x3                ; present, writable
IDT          equ 0x5000
GATE_INTR    equ 0x8E00             ; present, DPL 0, 64-bit interrupt gate
CODE_SEL     equ 0x08

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

        ; (d) timer interrupts ----------------------------------------------
        ; Map the APIC page (0xFEE00000, in the 4th GiB: PDPT entry 3).
        mov rdi, PD_APIC
        mov rcx, 4096 / 8
        xor eax, eax
        rep stosq
        mov rax, APIC_BASE | PDE_2M
        mov [PD_APIC + ((APIC_BASE >> 21) & 511) * 8], rax
        mov qword [PDPT + 3 * 8], PD_APIC | PDPTE
        mov rax, cr3
        mov cr3, rax
        ; IDT with one gate, vector TIMER_VEC -> timer_isr.
        mov rdi, IDT
        mov rcx, 256 * 16 / 8
        xor eax, eax
        rep stosq
        mov rax, timer_isr
        mov word [IDT + TIMER_VEC * 16], ax
        mov word [IDT + TIMER_VEC * 16 + 2], CODE_SEL
        mov word [IDT + TIMER_VEC * 16 + 4], GATE_INTR
        shr rax, 16
        mov word [IDT + TIMER_VEC * 16 + 6], ax
        shr rax, 16
        mov dword [IDT + TIMER_VEC * 16 + 8], eax
        lidt [idtr]
        mov rbp, APIC_BASE
        mov dword [rbp + APIC_SVR], SVR_ENABLE
        mov dword [rbp + APIC_TDCR], TDCR_DIV1
        mov dword [rbp + APIC_LVTT], TIMER_VEC | LVT_PERIODIC
        mov dword [rbp + APIC_TICR], TIMER_COUNT
        xor r11d, r11d                  ; r11: interrupts taken
        sti
        TSC_READ r13
        mov r12d, SPIN_N
.on:    dec r12d
        jnz .on
        TSC_READ r14
        cli
        mov ebx, 7
        mov rcx, r11
        call report
        mov ebx, 5
        mov rcx, r14
        sub rcx, r13
        call report
        mov dword [rbp + APIC_LVTT], TIMER_VEC | LVT_MASKED
        TSC_READ r13
        mov r12d, SPIN_N
.off:   dec r12d
        jnz .off
        TSC_READ r14
        mov dword [rbp + APIC_TICR], 0  ; stop the timer
        mov ebx, 6
        mov rcx, r14
        sub rcx, r13
        call report

        PUTS msg_done
        HC_EXIT_WITH 0

; timer_isr: count, EOI, return.
timer_isr:
        inc r11
        mov dword [rbp + APIC_EOI], 0
        iretq

idtr:   dw 256 * 16 - 1
        dq IDT

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
