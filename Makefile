# tamavisor: bare-metal AMD SVM hypervisor on TamaGo.
#   make qemu    build and run tamavisor under QEMU (GUEST=file.bin to run your own guest)
#   make test    all tests: host unit tests, fuzz runs, end-to-end QEMU runs, then a summary
#   make bench   performance table (exit path vs bare VMRUN, snapshot codec vs raw disk)
#   make tcb     trusted computing base: lines of code per package linked into tamavisor.elf
#   make fuzz-guests     many random guests (FUZZ_GUESTS per CPU model)
#   make security-table  rerun the hostile guests and rewrite the table in docs/security.md

GO       ?= go
TAMAGO   ?= $(shell $(GO) tool -n github.com/usbarmory/tamago/cmd/tamago)
QEMU     ?= qemu-system-x86_64
CPU      ?= EPYC,+svm
FUZZSCALE ?= 1
GOENV    := GOOS=tamago GOARCH=amd64 GOOSPKG=github.com/usbarmory/tamago
LDFLAGS  := -T 0x10010000 -R 0x1000

include guests/guests.mk

# Accelerator: KVM only where the host CPU has SVM (nested), else TCG.
ACCEL ?= $(shell grep -qw svm /proc/cpuinfo 2>/dev/null && test -w /dev/kvm && echo kvm || echo tcg)

# DISK=file: snapshot disk (virtio-blk); RESTORE=1 resumes its newest
# snapshot; CTL=path: control-channel socket for `tamavisor snapshot`.
c := ,
QEMU_FLAGS = -machine microvm$(c)x-option-roms=on$(c)pit=on$(c)pic=off$(c)rtc=on \
	-accel $(ACCEL) -cpu $(CPU) -m 2G -nographic -monitor none -serial stdio \
	-no-reboot -device isa-debug-exit$(c)iobase=0xf4$(c)iosize=0x04 \
	$(if $(GUEST),-fw_cfg name=opt/tamavisor/guest$(c)file=$(GUEST)) \
	$(if $(DISK),-global virtio-mmio.force-legacy=false \
	  -drive if=none$(c)id=snapdisk$(c)format=raw$(c)file=$(DISK) \
	  -device virtio-blk-device$(c)drive=snapdisk) \
	$(if $(RESTORE),-fw_cfg name=opt/tamavisor/mode$(c)string=restore) \
	$(if $(CTL),-chardev socket$(c)id=ctl$(c)server=on$(c)wait=off$(c)path=$(CTL) \
	  -device isa-serial$(c)chardev=ctl$(c)iobase=0x2f8$(c)irq=3)

SOURCES := $(shell find . \( -name '*.go' -o -name '*.s' \) -not -path './qemu/*' -not -name '*_test.go') go.mod go.sum

.PHONY: all qemu qemu-gdb test test-unit test-fuzz test-e2e bench tcb guests clean fuzz-guests security-table

all: tamavisor.elf

guests: $(GUESTS_BIN)

tamavisor.elf: $(SOURCES) guests/build/demo.bin guests/build/alive.bin
	$(GOENV) $(TAMAGO) build -ldflags "$(LDFLAGS)" -o $@ .

qemu: tamavisor.elf
	$(QEMU) $(QEMU_FLAGS) -kernel tamavisor.elf; \
	  s=$$?; echo "qemu exited with $$s (tamavisor status $$(( (s - 1) / 2 )))"

qemu-gdb: tamavisor.elf
	$(QEMU) $(QEMU_FLAGS) -kernel tamavisor.elf -S -s

# make qemu-linux: boot a Linux guest, by default Debian's cloud kernel and a
# busybox initramfs that guests/linux/fetch.sh fetches once into
# LINUX_CACHE. KERNEL= (bzImage), INITRD= (empty: none), CMDLINE= (empty:
# tamavisor's default) and MEM= (e.g. 512M; empty: 256 MiB) override.
LINUX_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/tamavisor/linux
KERNEL  ?= $(LINUX_CACHE)/bzImage
INITRD  ?= $(LINUX_CACHE)/initramfs.cpio.gz
CMDLINE ?=
MEM     ?=
fwcfgval = $(subst $(c),$(c)$(c),$(1))
LINUX_FWCFG = -fw_cfg name=opt/tamavisor/kernel$(c)file=$(call fwcfgval,$(KERNEL)) \
	$(if $(INITRD),-fw_cfg name=opt/tamavisor/initrd$(c)file=$(call fwcfgval,$(INITRD))) \
	$(if $(CMDLINE),-fw_cfg 'name=opt/tamavisor/cmdline$(c)string=$(call fwcfgval,$(CMDLINE))') \
	$(if $(MEM),-fw_cfg name=opt/tamavisor/mem$(c)string=$(MEM))

.PHONY: qemu-linux
qemu-linux: tamavisor.elf
	$(if $(filter $(LINUX_CACHE)/%,$(KERNEL) $(INITRD)),TAMAVISOR_LINUX_DIR='$(LINUX_CACHE)' guests/linux/fetch.sh)
	$(QEMU) $(QEMU_FLAGS) $(LINUX_FWCFG) -kernel tamavisor.elf; \
	  s=$$?; echo "qemu exited with $$s (tamavisor status $$(( (s - 1) / 2 )))"

# make test runs every stage even after a failure, then prints one line per
# stage (internal/testrun) and fails if any stage failed.
SUMMARY := qemu/out/test-summary.txt
TESTRUN := $(GO) run ./internal/testrun

test: tamavisor.elf $(GUESTS_BIN)
	@mkdir -p $(dir $(SUMMARY)); rm -f $(SUMMARY)
	-@$(MAKE) --no-print-directory test-unit
	-@$(MAKE) --no-print-directory test-fuzz
	-@$(MAKE) --no-print-directory test-e2e
	@$(TESTRUN) -report $(SUMMARY)

test-unit: $(GUESTS_BIN)
	@mkdir -p $(dir $(SUMMARY))
	$(TESTRUN) -stage unit -summary $(SUMMARY)

# Each fuzz target runs an execution-count budget (internal/testrun;
# FUZZSCALE=4 runs four times as many), never a time budget.
test-fuzz:
	@mkdir -p $(dir $(SUMMARY))
	$(TESTRUN) -stage fuzz -summary $(SUMMARY) -budget-scale $(FUZZSCALE)

test-e2e: tamavisor.elf $(GUESTS_BIN)
	@mkdir -p $(dir $(SUMMARY))
	TAMAVISOR_LINUX_DIR='$(LINUX_CACHE)' guests/linux/fetch.sh
	TAMAVISOR_ELF=$(CURDIR)/tamavisor.elf GUESTS_DIR=$(CURDIR)/guests/build QEMU=$(QEMU) LINUX_DIR='$(LINUX_CACHE)' \
	  $(TESTRUN) -stage e2e -summary $(SUMMARY) -- -timeout 25m

# make fuzz-guests: many more random guests than make test runs
# (FUZZ_GUESTS per CPU model, from FUZZ_SEED; default: from the clock).
FUZZ_GUESTS ?= 10000
FUZZ_SEED   ?=
fuzz-guests: tamavisor.elf $(GUESTS_BIN)
	TAMAVISOR_ELF=$(CURDIR)/tamavisor.elf GUESTS_DIR=$(CURDIR)/guests/build QEMU=$(QEMU) \
	  TAMAVISOR_FUZZ_COUNT=$(FUZZ_GUESTS) TAMAVISOR_FUZZ_SEED=$(FUZZ_SEED) \
	  $(GO) test -count=1 -tags e2e -run '^TestFuzzGuests$$' -v -timeout 0 ./qemu/ | grep -v '^=== RUN'

# make security-table: run the hostile suite and random guests and rewrite
# the attack table of docs/security.md.
security-table: tamavisor.elf $(GUESTS_BIN)
	TAMAVISOR_ELF=$(CURDIR)/tamavisor.elf GUESTS_DIR=$(CURDIR)/guests/build QEMU=$(QEMU) \
	  $(GO) run ./qemu/cmd/securitytable -write docs/security.md

bench: tamavisor.elf guests/build/bench.bin guests/build/fill.bin
	TAMAVISOR_LINUX_DIR='$(LINUX_CACHE)' guests/linux/fetch.sh
	TAMAVISOR_ELF=$(CURDIR)/tamavisor.elf GUESTS_DIR=$(CURDIR)/guests/build QEMU=$(QEMU) LINUX_DIR='$(LINUX_CACHE)' \
	  $(GO) run ./qemu/cmd/bench
	$(GO) run ./cmd/tamavisor-snap bench

# make tcb: lines of code of every package the bare-metal build links
# (internal/tcb; TCBFLAGS=-md for Markdown tables).
tcb:
	$(GO) run ./internal/tcb $(TCBFLAGS)

clean:
	rm -rf tamavisor.elf guests/build
