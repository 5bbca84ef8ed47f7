; dbstorm.asm - a #DB storm (mode 32): EFLAGS.TF set on a `jmp $` loop and
; a #DB handler that returns with TF still set, so every instruction
; traps. #DB is intercepted (CVE-2015-8104): each one is an exit, the
; hypervisor keeps the CPU, and the time budget stops the guest.

%define GNAME "dbstorm"
%include "common.inc"
%include "hostile/hostile.inc"

        GUEST_HEADER 32, 0x1000, 0x10000, "dbstorm"

_start:
        cli
        mov esp, 0x6000
        IDT_INIT
        SET_GATE32 1, on_db
        pushfd
        or dword [esp], 1 << 8          ; TF
        popfd
.spin:  jmp .spin

on_db:  iretd                           ; TF comes back with EFLAGS

        IDT_DATA
        GUEST_END
