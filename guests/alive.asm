; alive.asm - tiny health-check guest (mode 16). tamavisor runs it after
; another VM was stopped by a fault to show that it still works.
; Prints "alive: ok" and EXITs 0.

%define GNAME "alive"
%include "common.inc"

        GUEST_HEADER 16, 0x1000, 0x10000, "alive"

_start:
        cli
        xor ax, ax
        mov ds, ax
        mov ss, ax
        mov sp, 0x1000                  ; stack below the payload
        PUTS msg_ok
        HC_EXIT_WITH 0

msg_ok: db GNAME, ": ok", 10, 0

        UART_PUTS_FUNC
        GUEST_END
