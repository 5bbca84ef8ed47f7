; svm.asm - executes every SVM instruction and MONITOR/MWAIT (mode 32):
; each must raise #UD (SVM and MONITOR are hidden from guests). The #UD
; handler counts and skips the 3-byte instruction. EXIT 0 when all nine
; raised #UD, else EXIT 2.

%define GNAME "svm"
%include "common.inc"
%include "hostile/hostile.inc"

        GUEST_HEADER 32, 0x1000, 0x10000, "svm"

_start:
        cli
        mov esp, 0x6000
        IDT_INIT
        SET_GATE32 6, on_ud
        xor edi, edi
        xor eax, eax                    ; VMRUN/VMLOAD/VMSAVE address 0
        db 0x0f, 0x01, 0xd8             ; VMRUN
        db 0x0f, 0x01, 0xda             ; VMLOAD
        db 0x0f, 0x01, 0xdb             ; VMSAVE
        db 0x0f, 0x01, 0xdc             ; STGI
        db 0x0f, 0x01, 0xdd             ; CLGI
        db 0x0f, 0x01, 0xde             ; SKINIT
        db 0x0f, 0x01, 0xdf             ; INVLPGA
        xor ecx, ecx                    ; MONITOR/MWAIT: no extensions, hints
        xor edx, edx                    ; (else #GP before the intercept)
        db 0x0f, 0x01, 0xc8             ; MONITOR
        db 0x0f, 0x01, 0xc9             ; MWAIT
        cmp edi, 9
        jne .bad
        HC_EXIT_WITH 0
.bad:   HC_EXIT_WITH 2

on_ud:  add dword [esp], 3
        inc edi
        iretd

        IDT_DATA
        GUEST_END
