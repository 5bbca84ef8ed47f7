; ptdecode.asm - a page-table chain pointing outside RAM while the
; hypervisor decodes an instruction (mode 64): the guest points its PML4
; entry 0 (which maps its own code) at a GPA beyond its RAM, without a TLB
; flush, and executes CPUID. Without NRIP save the hypervisor walks the
; guest's tables to read the instruction and meets the bad entry; with it,
; the next fetch after the exit does. Either way the VM must be stopped
; with the address named. If CPUID ever returns the guest EXITs 1.

%define GNAME "ptdecode"
%include "common.inc"

        GUEST_HEADER 64, 0x8000, 0x10000, "ptdecode"

%define PML4 0x1000
%define P_RW 0x3

_start:
        cli
        mov rsp, 0x8000
        mov rax, 0x7f000000 | P_RW      ; a PDPT far outside the 64 KiB
        mov [PML4], rax
        xor eax, eax
        cpuid
        HC_EXIT_WITH 1

        GUEST_END
