; storm.asm - an exit storm (mode 32): a million CPUIDs, then EXIT 0. The
; hypervisor must serve them all (and its console and control channel in
; between) and stay up.

%define GNAME "storm"
%include "common.inc"

        GUEST_HEADER 32, 0x1000, 0x10000, "storm"

_start:
        cli
        mov esp, 0x6000
        mov edi, 1000000
.next:  xor eax, eax
        cpuid
        dec edi
        jnz .next
        HC_EXIT_WITH 0

        GUEST_END
