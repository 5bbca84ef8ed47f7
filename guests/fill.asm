; fill.asm - snapshot bench guest (mode 64, 256 MiB + 2 MiB of RAM).
;
; Writes a non-zero pattern over all RAM above its first 2 MiB (256 MiB: no
; page can be elided), then saves five times (the hypervisor's bench mode
; times each save from VM.Saves):
;   0. SNAPSHOT, paused: a full save, the boot's first (under emulation it
;      also pays for translating the save's code the first time it runs);
;   1. SNAPSHOT full, paused: the full save measured;
;   2. SNAPSHOT live and full: the guest runs on, writing one byte into every 100th
;      page (1% of its pages) over and over, until SNAPSHOT_WAIT polling
;      says the save is on disk;
;   3. SNAPSHOT, paused, after the 1% of pages written during save 2;
;   4. SNAPSHOT, paused, after writing every 10th page (10%).
; Then EXITs 0; a failed snapshot EXITs 1 with a FAIL line.

%define GNAME "fill"
%include "common.inc"

FILL_START  equ 0x00200000
FILL_END    equ 0x10200000
PAGE        equ 4096

        GUEST_HEADER 64, 0x10000, FILL_END, "fill"

_start:
        mov rsp, 0x80000
        cld
        PUTS msg_start
        mov rdi, FILL_START
        mov rax, 0x0101010101010101
.fill:  stosq
        inc rax                         ; vary the data a little
        cmp rdi, FILL_END
        jb .fill
        xor ebx, ebx                    ; 0. paused, full, the first
        mov eax, HC_SNAPSHOT
        vmmcall
        test rax, rax
        FAIL_UNLESS z, 1, "first snapshot"
        mov ebx, SNAPSHOT_FULL          ; 1. paused, full
        mov eax, HC_SNAPSHOT
        vmmcall
        test rax, rax
        FAIL_UNLESS z, 1, "snapshot"
        PUTS msg_saved
        mov ebx, SNAPSHOT_LIVE | SNAPSHOT_FULL ; 2. live, full
        mov eax, HC_SNAPSHOT
        vmmcall
        test rax, rax
        FAIL_UNLESS z, 1, "live snapshot"
        mov r8b, 1
.busy:  mov ecx, 100 * PAGE             ; dirty 1% while the save runs
        call touch
        inc r8b
        mov ebx, SNAPSHOT_POLL
        mov eax, HC_SNAPSHOT_WAIT
        vmmcall
        cmp rax, 1
        je .busy
        test rax, rax
        FAIL_UNLESS z, 1, "live snapshot result"
        PUTS msg_live
        xor ebx, ebx                    ; 3. after 1% written
        mov eax, HC_SNAPSHOT
        vmmcall
        test rax, rax
        FAIL_UNLESS z, 1, "snapshot after 1%"
        mov ecx, 10 * PAGE              ; 4. after 10% written
        call touch
        xor ebx, ebx
        mov eax, HC_SNAPSHOT
        vmmcall
        test rax, rax
        FAIL_UNLESS z, 1, "snapshot after 10%"
        PUTS msg_done
        HC_EXIT_WITH 0

; touch: write R8B into the first byte of every RCX-th byte page of the
; pattern. Clobbers RDI.
touch:  mov rdi, FILL_START
.next:  mov [rdi], r8b
        add rdi, rcx
        cmp rdi, FILL_END
        jb .next
        ret

msg_start: db GNAME, ": filling 256 MiB", 10, 0
msg_saved: db GNAME, ": saved", 10, 0
msg_live:  db GNAME, ": saved live", 10, 0
msg_done:  db GNAME, ": saved after 1% and 10% written", 10, 0

        UART_PUTS_FUNC
        FAIL_FUNC
        GUEST_END
