; gpa.asm - touches one guest-physical address outside its 64 KiB of RAM
; (mode 32, paging off: linear = physical). Built once per target
; (guests/guests.mk): TARGET is the address, WRITE set for a store. The
; hypervisor must stop the VM (outside its RAM, or an MMIO form it does not
; emulate); if the access ever returns the guest EXITs 1.

%define GNAME "gpa"
%include "common.inc"
%include "hostile/hostile.inc"

        GUEST_HEADER 32, 0x1000, 0x10000, "gpa"

_start:
        cli
        mov esp, 0x10000
%ifdef WRITE
        mov dword [TARGET], 0x5a5a5a5a
%else
        mov eax, [TARGET]
%endif
        HC_EXIT_WITH 1

        GUEST_END
