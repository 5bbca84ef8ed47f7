; live.asm - live snapshot guest (mode 64, 64 MiB of RAM).
;
; Fills 56 MiB with a non-zero pattern and marks a page "old", then asks
; for a live save (SNAPSHOT with SNAPSHOT_LIVE): the call returns at once
; and the guest runs on while the hypervisor writes its RAM. It then
; writes "new" into the marked page and one byte into every page of the
; pattern, from the top down (ahead of the save, which goes up), reads
; the marked page back, and waits for the save (SNAPSHOT_WAIT). Resumed
; from that snapshot, the same SNAPSHOT call returns 1, and the marked
; page must read "old": the snapshot is the state at the request.
;
; Prints "live: guest sees the new content", "live: saved", and when
; resumed "live: resumed, the snapshot holds the old content"; EXITs 0,
; or 1 with a FAIL line.

%define GNAME "live"
%include "common.inc"

FILL_START  equ 0x00800000
FILL_END    equ 0x04000000
MARK        equ 0x00400000
OLD         equ 0x646c6f                ; "old"
NEW         equ 0x77656e                ; "new"

        GUEST_HEADER 64, 0x10000, FILL_END, "live"

_start:
        mov rsp, 0x80000
        cld
        mov rdi, FILL_START
        mov rax, 0x0101010101010101
.fill:  stosq
        inc rax
        cmp rdi, FILL_END
        jb .fill
        mov dword [MARK], OLD
        mov ebx, SNAPSHOT_LIVE
        mov eax, HC_SNAPSHOT
        vmmcall
        cmp rax, 1
        je .resumed
        test rax, rax
        FAIL_UNLESS z, 1, "live snapshot did not start"
        mov dword [MARK], NEW
        mov rdi, FILL_END - 4096        ; dirty every page, top down
.dirty: mov byte [rdi], 0x5a
        sub rdi, 4096
        cmp rdi, FILL_START
        jae .dirty
        cmp dword [MARK], NEW
        FAIL_UNLESS e, 1, "guest does not see its own write"
        PUTS msg_new
        xor ebx, ebx                    ; wait (no poll)
        mov eax, HC_SNAPSHOT_WAIT
        vmmcall
        test rax, rax
        FAIL_UNLESS z, 1, "live snapshot failed"
        PUTS msg_saved
        HC_EXIT_WITH 0
.resumed:
        cmp dword [MARK], OLD
        FAIL_UNLESS e, 1, "snapshot holds a write made after the request"
        PUTS msg_resumed
        HC_EXIT_WITH 0

msg_new:     db GNAME, ": guest sees the new content", 10, 0
msg_saved:   db GNAME, ": saved", 10, 0
msg_resumed: db GNAME, ": resumed, the snapshot holds the old content", 10, 0

        UART_PUTS_FUNC
        FAIL_FUNC
        GUEST_END
