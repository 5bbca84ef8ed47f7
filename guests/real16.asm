; real16.asm - CPU-model and hypercall checks in real mode (mode 16).
;
; Entry state (guest-abi.md): real mode, CS=DS=ES=SS=0, IF=0, RSP=0.
; Memory layout (all below 64 KiB so that segment 0 reaches everything):
;   0x0000-0x03FF  IVT, filled by the guest
;   0x7C00         top of the stack (grows down)
;   0x8000         payload (this file after the header)
;
; Success: prints "real16: start", "real16: hello via CONSOLE_WRITE",
; "real16: PASS" and EXITs 0. Failure: "real16: FAIL <name>" and the
; status from common.inc.

%define GNAME "real16"
%define GUEST_MEM 0x100000
%include "common.inc"
%include "checks.inc"

        GUEST_HEADER 16, 0x8000, GUEST_MEM, "real16"

_start:
        cli
        xor ax, ax
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov sp, 0x7C00
        cld

        ; Fill IVT entries 0-31 (offset:segment, segment 0) from exc_table.
        xor di, di
        mov si, exc_table
        mov cx, 32
.ivt:   lodsd                           ; handler offset (fits 16 bits)
        stosw
        xor ax, ax
        stosw
        loop .ivt
        lidt [ivt_desc]                 ; the ABI does not promise IDTR

        PUTS msg_start
        RUN_CHECKS
        PUTS msg_pass
        HC_EXIT_WITH 0

ivt_desc:
        dw 0x3FF                        ; limit: 256 vectors * 4 bytes - 1
        dd 0                            ; base

        CHECKS_GUEST_END
