# guests/guests.mk - test guests for tamavisor, included by the root
# Makefile (paths are relative to the repository root).
#
# Each guests/<name>.asm assembles with nasm into a flat image with the
# 64-byte TAMAVGST header (docs/guest-abi.md): guests/build/<name>.bin.
# Only variables and a pattern rule are defined here, so including this
# file does not change the root Makefile's default goal.

NASM ?= nasm
NASMFLAGS ?= -w+all

GUESTS := real16 prot32 long64 demo alive npf triple bench echo counter fill spin avx ticker live
GUESTS_BIN := $(patsubst %,guests/build/%.bin,$(GUESTS))

# checks.inc is shared by real16, prot32 and long64.
$(GUESTS_BIN): guests/checks.inc

# The image stamper fills in each image's payload size and checksum
# (docs/guest-abi.md); a pattern rule, so it never is the default goal.
STAMP := guests/build/tools/tamavisor-image
.PRECIOUS: guests/build/tools/%
guests/build/tools/%: cmd/%/main.go kernel/image.go
	@mkdir -p $(dir $@)
	$(GO) build -o $@ ./cmd/$*

guests/build/%.bin: guests/%.asm guests/common.inc $(STAMP)
	@mkdir -p $(dir $@)
	$(NASM) -f bin $(NASMFLAGS) -I guests/ -o $@ $<
	$(STAMP) stamp $@

# Hostile guests (guests/hostile/): each attacks the hypervisor and must
# end in a classified stop while it carries on (qemu/hostile_e2e_test.go,
# docs/security.md). gpa and gpa64 are built once per target address.
HOSTILE := svm msr io iostr dbstorm dfstorm acloop storm ptdecode \
	gpa-ramend-r gpa-hv-w gpa-pool-w gpa-dma-r gpa-top-w gpa-lapic-cross-r \
	gpa64-4g gpa64-512g gpa64-beyond
HOSTILE_BIN := $(patsubst %,guests/build/hostile/%.bin,$(HOSTILE))
GUESTS_BIN += $(HOSTILE_BIN)

guests/build/hostile/gpa-ramend-r.bin:      HOSTILE_DEFS := -DTARGET=0x10000
guests/build/hostile/gpa-hv-w.bin:          HOSTILE_DEFS := -DTARGET=0x10010000 -DWRITE
guests/build/hostile/gpa-pool-w.bin:        HOSTILE_DEFS := -DTARGET=0x34000000 -DWRITE
guests/build/hostile/gpa-dma-r.bin:         HOSTILE_DEFS := -DTARGET=0x30000000
guests/build/hostile/gpa-top-w.bin:         HOSTILE_DEFS := -DTARGET=0xfffffff0 -DWRITE
guests/build/hostile/gpa-lapic-cross-r.bin: HOSTILE_DEFS := -DTARGET=0xfee00ffe
guests/build/hostile/gpa64-4g.bin:          HOSTILE_DEFS := -DTARGET=0x100000000
guests/build/hostile/gpa64-512g.bin:        HOSTILE_DEFS := -DTARGET=0x8000000000
guests/build/hostile/gpa64-beyond.bin:      HOSTILE_DEFS := -DTARGET=0xfffffffe00000

guests/build/hostile/gpa-%.bin: guests/hostile/gpa.asm guests/common.inc guests/hostile/hostile.inc $(STAMP)
	@mkdir -p $(dir $@)
	$(NASM) -f bin $(NASMFLAGS) $(HOSTILE_DEFS) -I guests/ -o $@ $<
	$(STAMP) stamp $@

guests/build/hostile/gpa64-%.bin: guests/hostile/gpa64.asm guests/common.inc $(STAMP)
	@mkdir -p $(dir $@)
	$(NASM) -f bin $(NASMFLAGS) $(HOSTILE_DEFS) -I guests/ -o $@ $<
	$(STAMP) stamp $@

guests/build/hostile/%.bin: guests/hostile/%.asm guests/common.inc guests/hostile/hostile.inc $(STAMP)
	@mkdir -p $(dir $@)
	$(NASM) -f bin $(NASMFLAGS) -I guests/ -o $@ $<
	$(STAMP) stamp $@
