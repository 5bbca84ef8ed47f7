; counter.asm - save/restore test guest (mode 64, 64 MiB of RAM).
;
; Fills 48 MiB of its RAM with a pattern (so a snapshot has real data to
; carry), then counts: for n = 1, 2, ... it prints "count: n", checks that
; its TSC never goes backwards, and after every 5th count calls the
; SNAPSHOT hypercall (at 10 a full one, SNAPSHOT_FULL: the save a
; power-cut test interrupts; at 5 the first, full anyway, and at 15 an
; increment on 10 where the disk keeps it). RAX tells what happened:
;   0    "counter: saved at n"    (the running guest, after a save)
;   1    "counter: resumed at n"  (a guest restored from that snapshot)
;   <0   "counter: snapshot error" (no disk, disk too small...), goes on
; At n = 15 it checks the pattern is intact and EXITs 0. A TSC that went
; backwards EXITs 3, a damaged pattern EXITs 4, lost SSE state (XMM5 and
; MXCSR, set at the start) EXITs 5.
;
; The count and the last TSC live in registers (r12, r13): a restore must
; bring back the GPRs for the sequence to continue.

%define GNAME "counter"
%include "common.inc"

COUNT_END   equ 15
FILL_START  equ 0x01000000              ; 16 MiB
FILL_END    equ 0x04000000              ; 64 MiB
PATTERN     equ 0x5441_4d41_5649_534f   ; "OSIVAMAT"
DELAY       equ 20000000                ; TSC cycles between counts (~8 ms)
XMM_VALUE   equ 0x0123_4567_89ab_cdef
MXCSR_VALUE equ 0x7f80                  ; all exceptions masked, round toward zero
CR4_OSFXSR  equ 1 << 9

        GUEST_HEADER 64, 0x10000, FILL_END, "counter"

_start:
        mov rsp, 0x80000
        cld
        PUTS msg_start
        mov rax, cr4                    ; enable SSE, put state in XMM5/MXCSR
        or rax, CR4_OSFXSR
        mov cr4, rax
        mov rax, XMM_VALUE
        movq xmm5, rax
        ldmxcsr [mxcsr_init]
        mov rdi, FILL_START             ; fill 48 MiB, each qword = pattern ^ address
.fill:  mov rax, PATTERN
        xor rax, rdi
        stosq
        cmp rdi, FILL_END
        jb .fill

        xor r12d, r12d                  ; r12: count
        call tsc
        mov r13, rax                    ; r13: last TSC seen

.next:  inc r12
        call tsc
        cmp rax, r13
        jb .backwards
        mov r13, rax
        PUTS msg_count
        mov rax, r12
        call print_dec
        PUTS msg_nl

        mov rax, r12                    ; every 5th count: snapshot
        xor edx, edx
        mov ecx, 5
        div rcx
        test rdx, rdx
        jnz .delay
        xor ebx, ebx                    ; flags 0: save and go on
        cmp r12, 10
        jne .save
        mov ebx, SNAPSHOT_FULL          ; at 10: a full snapshot
.save:  mov eax, HC_SNAPSHOT
        vmmcall
        test rax, rax
        js .snaperr
        mov rsi, msg_saved
        cmp rax, 1
        jne .said
        mov rsi, msg_resumed
.said:  call uart_puts
        mov rax, r12
        call print_dec
        PUTS msg_nl
        call tsc                        ; the save's pause is not a jump back
        cmp rax, r13
        jb .backwards
        mov r13, rax
        jmp .delay
.snaperr:
        PUTS msg_snaperr

.delay: call tsc                        ; spin a while without exits
        lea r14, [rax + DELAY]
.spin:  call tsc
        cmp rax, r14
        jb .spin
        cmp r12, COUNT_END
        jb .next

        mov rdi, FILL_START             ; check the pattern survived
.check: mov rax, PATTERN
        xor rax, rdi
        cmp [rdi], rax
        jne .damaged
        add rdi, 8
        cmp rdi, FILL_END
        jb .check
        movq rax, xmm5                  ; SSE state survived exits and restores
        mov rcx, XMM_VALUE
        cmp rax, rcx
        jne .sse
        stmxcsr [mxcsr_now]
        cmp dword [mxcsr_now], MXCSR_VALUE
        jne .sse
        PUTS msg_done
        HC_EXIT_WITH 0

.sse:   PUTS msg_sse
        HC_EXIT_WITH 5
.backwards:
        PUTS msg_back
        HC_EXIT_WITH 3
.damaged:
        PUTS msg_damaged
        HC_EXIT_WITH 4

        TSC_FUNC
        PRINT_DEC_FUNC

msg_start:   db GNAME, ": start", 10, 0
msg_count:   db "count: ", 0
msg_nl:      db 10, 0
msg_saved:   db GNAME, ": saved at ", 0
msg_resumed: db GNAME, ": resumed at ", 0
msg_snaperr: db GNAME, ": snapshot error", 10, 0
msg_done:    db GNAME, ": done, memory intact", 10, 0
msg_sse:     db GNAME, ": FAIL SSE state lost", 10, 0
mxcsr_init:  dd MXCSR_VALUE
mxcsr_now:   dd 0
msg_back:    db GNAME, ": FAIL tsc went backwards", 10, 0
msg_damaged: db GNAME, ": FAIL memory damaged", 10, 0

        UART_PUTS_FUNC
        GUEST_END
