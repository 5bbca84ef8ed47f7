; echo.asm - console input guest (mode 16). Prints "echo: ready", then reads
; bytes from the UART (polling LSR.DR) and echoes each line it receives as
; "echo: got <line>". The line "quit" makes it EXIT 0.

%define GNAME "echo"
%include "common.inc"

%define UART_RBR  (UART_BASE + 0)       ; receive buffer register (read)
%define LSR_DR    0x01                  ; LSR bit 0: data ready
%define LINE_MAX  64

        GUEST_HEADER 16, 0x1000, 0x10000, "echo"

_start:
        cli
        xor ax, ax
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov sp, 0x1000
        PUTS msg_ready

.line:  mov di, line                    ; DI: next free byte of the line
.poll:  mov dx, UART_LSR
        in al, dx
        test al, LSR_DR
        jz .poll
        mov dx, UART_RBR
        in al, dx
        cmp al, 13                      ; CR or LF ends a line
        je .eol
        cmp al, 10
        je .eol
        cmp di, line + LINE_MAX
        jae .poll                       ; too long: drop the byte
        stosb
        jmp .poll

.eol:   cmp di, line
        je .line                        ; empty line (CR LF pair)
        mov byte [di], 0
        cmp dword [line], 'quit'
        jne .print
        cmp di, line + 4
        je .quit
.print: PUTS msg_got
        PUTS line
        PUTS msg_nl
        jmp .line

.quit:  PUTS msg_bye
        HC_EXIT_WITH 0

msg_ready: db GNAME, ": ready", 10, 0
msg_got:   db GNAME, ": got ", 0
msg_nl:    db 10, 0
msg_bye:   db GNAME, ": bye", 10, 0
line:      times LINE_MAX + 1 db 0

        UART_PUTS_FUNC
        GUEST_END
