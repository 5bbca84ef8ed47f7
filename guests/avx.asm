; avx.asm - AVX state across exits and snapshots (mode 64).
;
; Enables XSAVE and AVX (CR4.OSXSAVE, XCR0 = x87|SSE|AVX), puts a 256-bit
; pattern in YMM5, calls the SNAPSHOT hypercall, then checks that YMM5
; (both halves), XCR0 and CPUID 0xD's current size are what they were:
;   saved (RAX 0):   "avx: saved, ymm intact", then spins (the test kills it)
;   resumed (RAX 1): "avx: resumed, ymm intact", EXIT 0
; Without XSAVE/AVX in CPUID it prints "avx: no AVX" and EXITs 6; lost
; state prints a FAIL line and EXITs 7; a snapshot error EXITs 8.

%define GNAME "avx"
%include "common.inc"

CR4_OSFXSR    equ 1 << 9
CR4_OSXSAVE   equ 1 << 18
CPUID1_XSAVE  equ 1 << 26
CPUID1_AVX    equ 1 << 28
XCR0_X87_SSE_AVX equ 7
XSAVE_SIZE_AVX   equ 832

        GUEST_HEADER 64, 0x10000, 0x200000, "avx"

_start:
        mov rsp, 0x80000
        PUTS msg_start
        mov eax, 1
        cpuid
        mov eax, ecx
        and eax, CPUID1_XSAVE | CPUID1_AVX
        cmp eax, CPUID1_XSAVE | CPUID1_AVX
        jne .noavx
        mov rax, cr4
        or rax, CR4_OSFXSR | CR4_OSXSAVE
        mov cr4, rax
        xor ecx, ecx
        xor edx, edx
        mov eax, XCR0_X87_SSE_AVX
        xsetbv
        vmovdqu ymm5, [pattern]
        xor ebx, ebx                    ; save and go on
        mov eax, HC_SNAPSHOT
        vmmcall
        test rax, rax
        js .snaperr
        mov r12, rax                    ; 0 saved, 1 resumed
        call check
        test r12, r12
        jnz .resumed
        PUTS msg_saved
.spin:  pause                           ; the test kills QEMU here
        jmp .spin
.resumed:
        PUTS msg_resumed
        HC_EXIT_WITH 0
.noavx: PUTS msg_noavx
        HC_EXIT_WITH 6
.snaperr:
        PUTS msg_snaperr
        HC_EXIT_WITH 8

; check: YMM5, XCR0 and CPUID 0xD.0 EBX as set up, or FAIL.
check:  vmovdqu [buf], ymm5
        mov rsi, pattern
        mov rdi, buf
        mov ecx, 32
        repe cmpsb
        jne .lost
        xor ecx, ecx
        xgetbv
        cmp eax, XCR0_X87_SSE_AVX
        jne .xcr0
        mov eax, 0xd
        xor ecx, ecx
        cpuid
        cmp ebx, XSAVE_SIZE_AVX
        jne .size
        ret
.lost:  PUTS msg_lost
        HC_EXIT_WITH 7
.xcr0:  PUTS msg_xcr0
        HC_EXIT_WITH 7
.size:  PUTS msg_size
        HC_EXIT_WITH 7

msg_start:   db GNAME, ": start", 10, 0
msg_saved:   db GNAME, ": saved, ymm intact", 10, 0
msg_resumed: db GNAME, ": resumed, ymm intact", 10, 0
msg_lost:    db GNAME, ": FAIL ymm5 lost", 10, 0
msg_xcr0:    db GNAME, ": FAIL XCR0 lost", 10, 0
msg_size:    db GNAME, ": FAIL CPUID 0xD size", 10, 0
msg_noavx:   db GNAME, ": no AVX", 10, 0
msg_snaperr: db GNAME, ": snapshot error", 10, 0
        align 32
pattern:     dq 0x0123456789abcdef, 0xfedcba9876543210, 0x5a5a5a5aa5a5a5a5, 0x0f1e2d3c4b5a6978
buf:         times 32 db 0

        UART_PUTS_FUNC
        GUEST_END
