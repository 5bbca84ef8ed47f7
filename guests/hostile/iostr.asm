; iostr.asm - string port I/O (mode 16): REP INSB from the UART, then
; OUTSW. tamavisor does not emulate INS/OUTS: it must stop the VM saying
; so. If the guest ever gets past them it EXITs 1.

%define GNAME "iostr"
%include "common.inc"

        GUEST_HEADER 16, 0x1000, 0x10000, "iostr"

_start:
        cli
        xor ax, ax
        mov ds, ax
        mov es, ax
        mov di, 0x8000
        mov si, 0x8000
        mov cx, 16
        mov dx, UART_BASE
        rep insb
        outsw
        HC_EXIT_WITH 1

        GUEST_END
