; triple.asm - causes a triple fault.
;
; Mode 32. Prints "triple: faulting", loads an IDT with limit 0 and executes
; UD2: #UD cannot be delivered (vector outside the IDT limit) -> #GP, which
; cannot be delivered either -> #DF, likewise -> shutdown. tamavisor must
; stop the VM (reported as "stopped: ..."). If execution ever continues
; past UD2 the guest prints "triple: FAIL continued" and EXITs 43.

%define GNAME "triple"
%include "common.inc"

        GUEST_HEADER 32, 0x1000, 0x10000, "triple"

_start:
        cli
        mov esp, 0x10000                ; top of RAM
        PUTS msg_faulting
        lidt [empty_idt]
        ud2
        PUTS msg_fail
        HC_EXIT_WITH 43

empty_idt:
        dw 0                            ; limit 0: no vector is deliverable
        dd 0
msg_faulting: db GNAME, ": faulting", 10, 0
msg_fail:     db GNAME, ": FAIL continued", 10, 0

        UART_PUTS_FUNC
        GUEST_END
