; acloop.asm - an #AC loop at CPL 3 (mode 32), the CVE-2015-5307 pattern:
; with CR0.AM and EFLAGS.AC set, user code makes a misaligned load; the
; #AC handler returns to it, so it faults again forever. #AC is
; intercepted: each one is an exit, the hypervisor keeps the CPU, and the
; time budget stops the guest. The guest brings its own GDT (ring 0 and
; ring 3 segments, a TSS for the ring 0 stack).

%define GNAME "acloop"
%include "common.inc"
%include "hostile/hostile.inc"

        GUEST_HEADER 32, 0x1000, 0x10000, "acloop"

%define SEL_CODE0 0x08
%define SEL_DATA0 0x10
%define SEL_CODE3 (0x18 | 3)
%define SEL_DATA3 (0x20 | 3)
%define SEL_TSS   0x28
%define CR0_AM    (1 << 18)
%define EFLAGS_AC (1 << 18)

_start:
        cli
        mov esp, 0x6000
        IDT_INIT
        SET_GATE32 17, on_ac
        mov eax, tss                    ; TSS descriptor base
        mov [gdt + SEL_TSS + 2], ax
        shr eax, 16
        mov [gdt + SEL_TSS + 4], al
        mov [gdt + SEL_TSS + 7], ah
        lgdt [gdt_desc]
        mov ax, SEL_TSS
        ltr ax
        mov eax, cr0
        or eax, CR0_AM
        mov cr0, eax
        push SEL_DATA3                  ; SS
        push 0x5000                     ; ESP at CPL 3
        pushfd
        or dword [esp], EFLAGS_AC
        push SEL_CODE3                  ; CS
        push user
        iretd

user:   mov ax, SEL_DATA3
        mov ds, ax
.again: mov eax, [0x4001]               ; misaligned: #AC
        jmp .again

on_ac:  add esp, 4                      ; error code
        iretd                           ; back to the faulting load

        align 8
gdt:    dq 0
        dq 0x00cf9a000000ffff           ; 0x08 code, ring 0
        dq 0x00cf92000000ffff           ; 0x10 data, ring 0
        dq 0x00cffa000000ffff           ; 0x18 code, ring 3
        dq 0x00cff2000000ffff           ; 0x20 data, ring 3
        dq 0x0000890000000067           ; 0x28 32-bit TSS, base set above
gdt_desc:
        dw 6 * 8 - 1
        dd gdt
tss:    dd 0                            ; 32-bit TSS: back link
        dd 0x6000                       ; ESP0
        dd SEL_DATA0                    ; SS0
        times 0x66 - 12 db 0
        dw 0x68                         ; I/O map base: none

        IDT_DATA
        GUEST_END
