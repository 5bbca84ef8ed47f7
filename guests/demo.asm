; demo.asm - tamavisor's built-in demo guest (shown by `make qemu`).
;
; Mode 64 on tamavisor's identity map. Prints a banner, the CPU vendor and
; hypervisor signature seen through CPUID and the hypercall ABI version,
; then EXITs 0. Output (vendor depends on the host CPU):
;
;   demo: hello from a guest running under tamavisor
;   demo: cpu vendor: AuthenticAMD
;   demo: hypervisor: TamaVisorHV
;   demo: hypercall ABI version 1
;   demo: bye
;
; If VERSION returns something that is not a single digit, '?' is printed.

%define GNAME "demo"
%include "common.inc"

        GUEST_HEADER 64, 0x10000, 0x100000, "demo"

_start:
        mov rsp, 0x80000                ; RSP=0 at entry: set a stack first
        cld

        PUTS msg_banner

        ; CPUID 0: vendor in EBX, EDX, ECX (in that order).
        xor eax, eax
        cpuid
        mov [vendor + 0], ebx
        mov [vendor + 4], edx
        mov [vendor + 8], ecx
        PUTS msg_vendor
        PUTS vendor
        PUTS newline

        ; CPUID 0x40000000: hypervisor signature in EBX, ECX, EDX.
        mov eax, 0x40000000
        xor ecx, ecx
        cpuid
        mov [vendor + 0], ebx
        mov [vendor + 4], ecx
        mov [vendor + 8], edx
        PUTS msg_hv
        PUTS vendor
        PUTS newline

        mov eax, HC_VERSION
        vmmcall
        cmp rax, 9
        jbe .digit
        mov eax, '?' - '0'
.digit: add al, '0'
        mov [version], al
        PUTS msg_version

        PUTS msg_bye
        HC_EXIT_WITH 0

msg_banner:  db GNAME, ": hello from a guest running under tamavisor", 10, 0
msg_vendor:  db GNAME, ": cpu vendor: ", 0
msg_hv:      db GNAME, ": hypervisor: ", 0
msg_version: db GNAME, ": hypercall ABI version "
version:     db "?", 10, 0
msg_bye:     db GNAME, ": bye", 10, 0
vendor:      times 13 db 0              ; 12 characters and a NUL
newline:     db 10, 0

        UART_PUTS_FUNC
        GUEST_END
