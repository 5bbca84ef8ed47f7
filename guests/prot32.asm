; prot32.asm - the real16 checks in 32-bit protected mode with paging.
;
; Entry state (guest-abi.md): flat protected mode, paging off, CS=0x08,
; data selectors 0x10, IF=0. The ABI does not say where the GDT is, so the
; guest loads its own before any segment reload (IRET reloads CS).
;
; The guest then builds 2-level 32-bit page tables: the first 4 MiB
; identity-mapped with 4 KiB pages, plus one alias page (virtual
; ALIAS_VIRT -> physical ALIAS_PHYS) used to prove paging is on.
;
; Memory layout:
;   0x08000  IDT (32 gates * 8 bytes)
;   0x10000  payload
;   0x20000  page directory, 0x21000 page table for 0-4 MiB,
;   0x22000  page table for 4-8 MiB (alias only)
;   0x30000  alias target page
;   0x80000  top of the stack
;
; Success: "prot32: start", "prot32: hello via CONSOLE_WRITE",
; "prot32: PASS", EXIT 0. Failure: "prot32: FAIL <name>", status per
; common.inc (ST_PAGING = 21 if the alias check fails).

%define GNAME "prot32"
%define GUEST_MEM 0x100000
%include "common.inc"
%include "checks.inc"

IDT_BASE    equ 0x08000
PD          equ 0x20000
PT_LOW      equ 0x21000
PT_ALIAS    equ 0x22000
ALIAS_PHYS  equ 0x30000
ALIAS_VIRT  equ 0x400000
STACK_TOP   equ 0x80000
PTE_P_RW    equ 0x003                   ; present, writable, supervisor

        GUEST_HEADER 32, 0x10000, GUEST_MEM, "prot32"

_start:
        cli
        lgdt [gdt_desc]
        jmp 0x08:.cs_loaded             ; reload CS from our GDT
.cs_loaded:
        mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov fs, ax
        mov gs, ax
        mov esp, STACK_TOP
        cld

        PUTS msg_start

        ; IDT: 32 interrupt gates (type 0x8E: present, DPL 0, 32-bit).
        mov esi, exc_table
        mov edi, IDT_BASE
        mov ecx, 32
.idt:   lodsd                           ; handler address
        mov [edi], ax                   ; offset 15:0
        mov word [edi + 2], 0x08        ; selector
        mov word [edi + 4], 0x8E00      ; zero byte, type/attributes
        shr eax, 16
        mov [edi + 6], ax               ; offset 31:16
        add edi, 8
        loop .idt
        lidt [idt_desc]

        ; Page tables: clear the three table pages.
        mov edi, PD
        xor eax, eax
        mov ecx, 3 * 1024
        rep stosd
        ; Identity map 0-4 MiB with 4 KiB pages.
        mov edi, PT_LOW
        mov eax, PTE_P_RW
        mov ecx, 1024
.pte:   stosd
        add eax, 0x1000
        loop .pte
        mov dword [PD + 0], PT_LOW | PTE_P_RW           ; 0-4 MiB
        mov dword [PD + 4], PT_ALIAS | PTE_P_RW         ; 4-8 MiB
        mov dword [PT_ALIAS + 0], ALIAS_PHYS | PTE_P_RW ; ALIAS_VIRT

        mov eax, PD
        mov cr3, eax
        mov eax, cr0
        or eax, CR0_PG
        mov cr0, eax
        jmp .paging_on                  ; flush prefetch (classic idiom)
.paging_on:

        ; Prove the guest's own tables are in use: a value written through
        ; the identity map must be visible through the alias.
        mov eax, cr0
        test eax, CR0_PG
        FAIL_UNLESS nz, ST_PAGING, "paging"
        mov dword [ALIAS_PHYS], 0xC0FFEE32
        cmp dword [ALIAS_VIRT], 0xC0FFEE32
        FAIL_UNLESS e, ST_PAGING, "paging"

        RUN_CHECKS
        PUTS msg_pass
        HC_EXIT_WITH 0

        align 8
gdt:    dq 0                            ; null
        dq 0x00CF9A000000FFFF           ; 0x08: code, 32-bit, base 0, 4 GiB
        dq 0x00CF92000000FFFF           ; 0x10: data, base 0, 4 GiB
gdt_end:
gdt_desc:
        dw gdt_end - gdt - 1
        dd gdt
idt_desc:
        dw 32 * 8 - 1
        dd IDT_BASE

        CHECKS_GUEST_END
