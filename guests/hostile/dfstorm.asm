; dfstorm.asm - a #DF storm with no exit (mode 32): INT 0x80 is outside
; the IDT limit (#GP); the #GP gate has a null selector, so its delivery
; faults again (#DF); the #DF handler returns to the INT, and it all
; repeats inside the CPU without a single intercepted event. Only the host
; timer takes the CPU back; the time budget stops the guest.

%define GNAME "dfstorm"
%include "common.inc"

        GUEST_HEADER 32, 0x1000, 0x10000, "dfstorm"

%define IDT_BASE 0x7000

_start:
        cli
        mov esp, 0x6000
        mov eax, on_df                  ; vector 8: present gate, CS 0x08
        mov word [IDT_BASE + 8*8], ax
        mov word [IDT_BASE + 8*8 + 2], 0x08
        mov word [IDT_BASE + 8*8 + 4], 0x8E00
        shr eax, 16
        mov word [IDT_BASE + 8*8 + 6], ax
        mov dword [IDT_BASE + 8*13], 0  ; vector 13: present, null selector
        mov dword [IDT_BASE + 8*13 + 4], 0x8E00
        lidt [idt_desc]
.again: int 0x80
        jmp .again

on_df:  add esp, 4                      ; error code
        iretd

idt_desc:
        dw 14 * 8 - 1                   ; vectors 0-13 only
        dd IDT_BASE

        GUEST_END
