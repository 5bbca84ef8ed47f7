; io.asm - every I/O port at every size (mode 32): IN of 1, 2 and 4 bytes
; and an OUT of the byte 0 to each of the 65536 ports. The hypervisor must
; answer every access and stay up; EXIT 0 at the end.

%define GNAME "io"
%include "common.inc"

        GUEST_HEADER 32, 0x1000, 0x10000, "io"

_start:
        cli
        mov esp, 0x6000
        xor edx, edx
.next:  in al, dx
        in ax, dx
        in eax, dx
        xor eax, eax
        out dx, al
        inc edx
        cmp edx, 0x10000
        jb .next
        HC_EXIT_WITH 0

        GUEST_END
