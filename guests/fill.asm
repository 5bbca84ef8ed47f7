; fill.asm - snapshot bench guest (mode 64, 256 MiB + 2 MiB of RAM).
;
; Writes a non-zero pattern over all RAM above its first 2 MiB (256 MiB: no
; page can be elided), then calls SNAPSHOT (flags 0) and EXITs 0; a failed
; snapshot EXITs 1. The hypervisor's bench mode times the save.

%define GNAME "fill"
%include "common.inc"

FILL_START  equ 0x00200000
FILL_END    equ 0x10200000

        GUEST_HEADER 64, 0x10000, FILL_END, "fill"

_start:
        mov rsp, 0x80000
        cld
        PUTS msg_start
        mov rdi, FILL_START
        mov rax, 0x0101010101010101
.fill:  stosq
        inc rax                         ; vary the data a little
        cmp rdi, FILL_END
        jb .fill
        xor ebx, ebx
        mov eax, HC_SNAPSHOT
        vmmcall
        test rax, rax
        jnz .fail
        PUTS msg_done
        HC_EXIT_WITH 0
.fail:  PUTS msg_fail
        HC_EXIT_WITH 1

msg_start: db GNAME, ": filling 256 MiB", 10, 0
msg_done:  db GNAME, ": saved", 10, 0
msg_fail:  db GNAME, ": FAIL snapshot", 10, 0

        UART_PUTS_FUNC
        GUEST_END
