; ticker.asm - a guest that runs until told to stop (mode 64, 1 MiB of RAM),
; for trying out save and restore by hand (README.md, "Saving and restoring
; a guest"). It prints "ticker: tick n" each time the CMOS RTC's seconds
; change, so about once a second, and stops on a "q" typed on its console:
; "ticker: bye after n ticks" and EXIT 0. It never saves itself: the only
; snapshots on the disk are the ones the operator takes, and a guest
; resumed from one goes on counting from where it was saved.
;
; The count lives in r12 and in RAM (tick_count), the last RTC seconds
; value in r13. Between checks it spins on the TSC (no exits); each check
; is three port accesses (UART LSR, RTC index and data).

%define GNAME "ticker"
%include "common.inc"

%define UART_RBR  (UART_BASE + 0)       ; receive buffer register (read)
%define LSR_DR    0x01                  ; LSR bit 0: data ready
%define RTC_INDEX 0x70
%define RTC_DATA  0x71
%define RTC_SEC   0x00                  ; CMOS register: seconds
DELAY     equ 20000000                  ; TSC cycles between checks (~10 ms)

        GUEST_HEADER 64, 0x10000, 0x100000, "ticker"

_start:
        mov rsp, 0x80000
        cld
        PUTS msg_start
        xor r12d, r12d                  ; r12: ticks so far
        call rtc_seconds
        mov r13d, eax                   ; r13: RTC seconds at the last tick

.wait:  call tsc                        ; spin a while without exits
        lea r14, [rax + DELAY]
.spin:  pause
        call tsc
        cmp rax, r14
        jb .spin

        mov dx, UART_LSR                ; a key typed?
        in al, dx
        test al, LSR_DR
        jz .clock
        mov dx, UART_RBR
        in al, dx
        cmp al, 'q'
        je .quit

.clock: call rtc_seconds
        cmp eax, r13d
        je .wait
        mov r13d, eax
        inc r12
        mov [tick_count], r12
        PUTS msg_tick
        mov rax, r12
        call print_dec
        PUTS msg_nl
        jmp .wait

.quit:  PUTS msg_bye
        mov rax, [tick_count]
        call print_dec
        PUTS msg_ticks
        HC_EXIT_WITH 0

; rtc_seconds: EAX = the RTC seconds register (BCD or binary: only compared).
rtc_seconds:
        mov al, RTC_SEC
        out RTC_INDEX, al
        in al, RTC_DATA
        movzx eax, al
        ret

        TSC_FUNC
        PRINT_DEC_FUNC

msg_start:  db GNAME, ": counting seconds; type q to stop", 10, 0
msg_tick:   db GNAME, ": tick ", 0
msg_nl:     db 10, 0
msg_bye:    db GNAME, ": bye after ", 0
msg_ticks:  db " ticks", 10, 0
tick_count: dq 0

        UART_PUTS_FUNC
        GUEST_END
