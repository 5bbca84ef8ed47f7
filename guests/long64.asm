; long64.asm - the real16 checks in 64-bit long mode on the guest's own
; page tables, GDT and IDT.
;
; Entry state (guest-abi.md): long mode, tamavisor's identity map (PML4 at
; 0x1000, 2 MiB pages over the first 1 GiB), GDT at 0x500, CS=0x08, IF=0,
; RSP=0. The guest sets a stack first (RSP=0 would push to an unmapped
; address), then replaces all of that:
;   - its own GDT (in the payload) and a far return to reload CS,
;   - its own IDT at IDT_BASE,
;   - its own 4-level page tables at PML4..PT: virtual 0-2 MiB identity
;     mapped with one 2 MiB page, and virtual ALIAS_VIRT (2 MiB) mapped
;     with a 4 KiB page to ALIAS_PHYS. tamavisor's map identity-maps
;     ALIAS_VIRT to a GPA outside RAM, so reading it only works (instead of
;     stopping the VM with a nested page fault) on the guest's tables.
;   - it then zeroes tamavisor's tables at 0x1000-0x3FFF.
;
; Memory layout:
;   0x10000  payload
;   0x20000  PML4, 0x21000 PDPT, 0x22000 PD, 0x23000 PT
;   0x24000  IDT (32 gates * 16 bytes)
;   0x30000  alias target page
;   0x80000  top of the stack
;
; Success: "long64: start", "long64: hello via CONSOLE_WRITE",
; "long64: PASS", EXIT 0. Failure: "long64: FAIL <name>", status per
; common.inc (ST_PAGING = 21 if the alias check fails).

%define GNAME "long64"
%define GUEST_MEM 0x100000
%include "common.inc"
%include "checks.inc"

PML4        equ 0x20000
PDPT        equ 0x21000
PD          equ 0x22000
PT          equ 0x23000
IDT_BASE    equ 0x24000
ALIAS_PHYS  equ 0x30000
ALIAS_VIRT  equ 0x200000
STACK_TOP   equ 0x80000
PTE_P_RW    equ 0x003                   ; present, writable
PDE_2M      equ 0x083                   ; present, writable, page size

        GUEST_HEADER 64, 0x10000, GUEST_MEM, "long64"

_start:
        cli
        mov rsp, STACK_TOP
        cld

        ; Our own GDT; reload CS with a far return, then the data segments.
        lgdt [gdt_desc]
        push 0x08
        push .cs_loaded
        retfq
.cs_loaded:
        mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov ss, ax
        xor eax, eax
        mov fs, ax
        mov gs, ax

        PUTS msg_start

        ; IDT: 32 interrupt gates, 16 bytes each (type 0x8E, IST 0).
        mov esi, exc_table
        mov edi, IDT_BASE
        mov ecx, 32
.idt:   lodsd                           ; handler address (below 4 GiB)
        mov [rdi], ax                   ; offset 15:0
        mov word [rdi + 2], 0x08        ; selector
        mov word [rdi + 4], 0x8E00      ; IST 0, type/attributes
        shr eax, 16
        mov [rdi + 6], ax               ; offset 31:16
        mov dword [rdi + 8], 0          ; offset 63:32
        mov dword [rdi + 12], 0         ; reserved
        add rdi, 16
        loop .idt
        lidt [idt_desc]

        ; Page tables: clear four pages, then link them.
        mov edi, PML4
        xor eax, eax
        mov ecx, 4 * 512
        rep stosq
        mov qword [PML4], PDPT | PTE_P_RW
        mov qword [PDPT], PD | PTE_P_RW
        mov qword [PD + 0 * 8], 0 | PDE_2M              ; 0-2 MiB identity
        mov qword [PD + 1 * 8], PT | PTE_P_RW           ; 2-4 MiB: 4 KiB pages
        mov qword [PT + 0 * 8], ALIAS_PHYS | PTE_P_RW   ; ALIAS_VIRT
        mov eax, PML4
        mov cr3, rax

        ; tamavisor's tables are ours and no longer used: wipe them.
        mov edi, 0x1000
        xor eax, eax
        mov ecx, 3 * 512
        rep stosq

        ; Prove the new tables are in use.
        mov rax, cr3
        cmp rax, PML4
        FAIL_UNLESS e, ST_PAGING, "paging"
        mov dword [ALIAS_PHYS], 0xC0FFEE64
        cmp dword [ALIAS_VIRT], 0xC0FFEE64
        FAIL_UNLESS e, ST_PAGING, "paging"

        RUN_CHECKS
        PUTS msg_pass
        HC_EXIT_WITH 0

        align 8
gdt:    dq 0                            ; null
        dq 0x00AF9A000000FFFF           ; 0x08: code, 64-bit (L=1)
        dq 0x00CF92000000FFFF           ; 0x10: data
gdt_end:
gdt_desc:
        dw gdt_end - gdt - 1
        dq gdt
idt_desc:
        dw 32 * 16 - 1
        dq IDT_BASE

        CHECKS_GUEST_END
