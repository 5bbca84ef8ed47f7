; msr.asm - reads, then writes all ones and zero to, every MSR that could
; reach the host or the machine (mode 32): SVM and SMM control, the host
; save area, microcode loading, system configuration, TSC, APIC base,
; MTRRs, machine check, speculation control, performance counters, debug
; control, syscall and segment bases with non-canonical values. A #GP
; handler counts and skips the 2-byte RDMSR/WRMSR. The hypervisor must
; answer every access (#GP or a value) and stay up; EFER.SVME must never
; read as set. EXIT 0 at the end, 2 if SVME was seen.

%define GNAME "msr"
%include "common.inc"
%include "hostile/hostile.inc"

        GUEST_HEADER 32, 0x1000, 0x10000, "msr"

_start:
        cli
        mov esp, 0x6000
        IDT_INIT
        SET_GATE32 13, on_gp
        xor edi, edi                    ; #GP count
        mov esi, msrs
.next:  mov ecx, [esi]
        test ecx, ecx
        jz .done
        rdmsr
        mov eax, 0xffffffff
        mov edx, 0xffffffff
        mov ecx, [esi]
        wrmsr
        xor eax, eax
        xor edx, edx
        mov ecx, [esi]
        wrmsr
        add esi, 4
        jmp .next
.done:  mov ecx, MSR_EFER               ; EFER with SVME: must not stick
        rdmsr
        or eax, 1 << 12
        wrmsr
        rdmsr
        test eax, 1 << 12
        jnz .svme
        HC_EXIT_WITH 0
.svme:  HC_EXIT_WITH 2

on_gp:  add esp, 4                      ; error code
        add dword [esp], 2
        inc edi
        iretd

msrs:   dd 0x10, 0x1b, 0x3a, 0x48, 0x49, 0x79, 0x8b, 0xe7, 0xe8, 0xfe
        dd 0x174, 0x175, 0x176, 0x179, 0x17a, 0x17b, 0x1d9, 0x1db, 0x1dc
        dd 0x200, 0x201, 0x250, 0x277, 0x2ff, 0x400, 0x401, 0x402, 0x403
        dd 0x6a0, 0x6a2, 0x6e0, 0x802, 0x80b, 0x830, 0xda0
        dd 0xc0000080, 0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084
        dd 0xc0000100, 0xc0000101, 0xc0000102, 0xc0000103, 0xc00000e7, 0xc00000e8
        dd 0xc0010000, 0xc0010004, 0xc0010010, 0xc0010015, 0xc0010016, 0xc0010017
        dd 0xc0010019, 0xc001001a, 0xc001001d, 0xc0010020, 0xc0010055, 0xc0010058
        dd 0xc0010111, 0xc0010112, 0xc0010113, 0xc0010114, 0xc0010115, 0xc0010116
        dd 0xc0010117, 0xc0010118, 0xc0010119, 0xc001011a, 0xc0010131, 0xc0010140
        dd 0xc0010141, 0xc0011020, 0xc0011021, 0xc0011022, 0xc0011023, 0xc0011029
        dd 0xc001102a, 0xc0010200, 0xc0010201, 0xc0010230, 0xc0010299, 0xc001029a
        dd 0                            ; end (MSR 0 is not tested)

        IDT_DATA
        GUEST_END
