; npf.asm - touches guest-physical memory outside its RAM.
;
; Mode 32 (flat, paging off, so a linear address is a GPA) with 64 KiB of
; RAM. Prints "npf: touching unbacked memory", then reads GPA 0x200000.
; tamavisor must stop the VM there (nested page fault, reported as
; "stopped: ..."). If the read ever completes the guest prints
; "npf: FAIL continued" and EXITs 42.

%define GNAME "npf"
%include "common.inc"

GUEST_MEM   equ 0x10000
UNBACKED    equ 0x200000                ; 2 MiB: far past the end of RAM

        GUEST_HEADER 32, 0x1000, GUEST_MEM, "npf"

_start:
        cli
        mov esp, GUEST_MEM              ; ESP=0 at entry would push to 4 GiB-4
        PUTS msg_touch
        mov eax, [UNBACKED]             ; must stop the VM
        PUTS msg_fail
        HC_EXIT_WITH 42

msg_touch: db GNAME, ": touching unbacked memory", 10, 0
msg_fail:  db GNAME, ": FAIL continued", 10, 0

        UART_PUTS_FUNC
        GUEST_END
