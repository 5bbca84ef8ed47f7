; gpa64.asm - touches one guest-physical address far outside its RAM
; (mode 64): it maps the 2 MiB page at TARGET (2 MiB aligned) at linear
; 512 GiB through its own PML4 entry 1, PDPT and PD, then loads from it.
; The hypervisor must stop the VM; TARGET beyond the CPU's physical
; address width makes a reserved-bit page fault instead (no IDT: triple
; fault). If the load ever returns the guest EXITs 1.

%define GNAME "gpa64"
%include "common.inc"

        GUEST_HEADER 64, 0x8000, 0x10000, "gpa64"

%define PML4     0x1000         ; tamavisor's identity map (docs/guest-abi.md)
%define PDPT1    0x5000
%define PD1      0x6000
%define LINEAR   0x8000000000   ; PML4 entry 1
%define P_RW     0x3
%define P_RW_PS  0x83

_start:
        cli
        mov rsp, 0x8000
        mov qword [PML4 + 8], PDPT1 | P_RW
        mov qword [PDPT1], PD1 | P_RW
        mov rax, TARGET | P_RW_PS
        mov [PD1], rax
        mov rax, cr3
        mov cr3, rax                    ; flush
        mov rbx, LINEAR
        mov rax, [rbx]
        HC_EXIT_WITH 1

        GUEST_END
