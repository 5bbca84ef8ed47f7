; spin.asm - a guest that never exits (mode 16): prints "spin: start",
; then loops on `jmp $` with interrupts off. The hypervisor must still take
; the CPU back (host preemption timer): the monitor, the control channel, a
; snapshot and quit all work while it spins.

%define GNAME "spin"
%include "common.inc"

        GUEST_HEADER 16, 0x1000, 0x10000, "spin"

_start:
        cli
        xor ax, ax
        mov ds, ax
        mov ss, ax
        mov sp, 0x1000                  ; stack below the payload
        PUTS msg_start
.spin:  jmp .spin

msg_start: db GNAME, ": start", 10, 0

        UART_PUTS_FUNC
        GUEST_END
