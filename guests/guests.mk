# guests/guests.mk - test guests for tamavisor, included by the root
# Makefile (paths are relative to the repository root).
#
# Each guests/<name>.asm assembles with nasm into a flat image with the
# 64-byte TAMAVGST header (docs/guest-abi.md): guests/build/<name>.bin.
# Only variables and a pattern rule are defined here, so including this
# file does not change the root Makefile's default goal.

NASM ?= nasm
NASMFLAGS ?= -w+all

GUESTS := real16 prot32 long64 demo alive npf triple bench echo counter fill spin avx
GUESTS_BIN := $(patsubst %,guests/build/%.bin,$(GUESTS))

# checks.inc is shared by real16, prot32 and long64.
$(GUESTS_BIN): guests/checks.inc

guests/build/%.bin: guests/%.asm guests/common.inc
	@mkdir -p $(dir $@)
	$(NASM) -f bin $(NASMFLAGS) -I guests/ -o $@ $<
