# tamavisor: bare-metal AMD SVM hypervisor on TamaGo.
#   make qemu    build and run tamavisor under QEMU (GUEST=file.bin to run your own guest;
#                DISK=, CTL=, RESTORE=1, RESTORE_GEN=, KEY=, KEYFILE=, CPU=, EXTRA=: see below)
#   make qemu-linux  the same with a Linux guest;  make qemu-gdb  waits for gdb on :1234
#   make guests  assemble every test guest into guests/build/
#   make test    all tests: host unit tests, fuzz runs, end-to-end QEMU runs, then a summary
#   make bench   performance table (exit path vs bare VMRUN, snapshot codec vs raw disk)
#   make tcb     trusted computing base: lines of code per package linked into tamavisor.elf
#   make fuzz-guests     many random guests (FUZZ_GUESTS per CPU model)
#   make security-table  rerun the hostile guests and rewrite the table in docs/security.md

GO       ?= go
TAMAGO   ?= $(shell $(GO) tool -n github.com/usbarmory/tamago/cmd/tamago)
QEMU     ?= qemu-system-x86_64
FUZZSCALE ?= 1
GOENV    := GOOS=tamago GOARCH=amd64 GOOSPKG=github.com/usbarmory/tamago
LDFLAGS  := -T 0x10010000 -R 0x1000

include guests/guests.mk

# Accelerator: KVM only where the host CPU has SVM (nested), else TCG.
ACCEL ?= $(shell grep -qw svm /proc/cpuinfo 2>/dev/null && test -w /dev/kvm && echo kvm || echo tcg)

# CPU model. Under TCG, EPYC,+svm without the features TCG cannot emulate:
# QEMU drops each of them anyway, with one warning per feature and run, so
# this is the same CPU, silently (no NRIP save: tamavisor decodes
# instruction lengths; pdpe1gb, rdrand, XSAVE and AVX stay). Under KVM,
# EPYC,+svm as it is. CPU=max, CPU=EPYC,+svm and the like override.
c := ,
TCG_LACKS := rdseed sha-ni fxsr-opt misalignsse 3dnowprefetch osvw topoext perfctr-core \
	clzero xsaveerptr ibpb nrip-save xsavec xsaves
empty :=
space := $(empty) $(empty)
CPU ?= EPYC,+svm$(if $(filter tcg,$(ACCEL)),$(subst $(space),,$(patsubst %,$(c)-%,$(TCG_LACKS))))

# Scratch files (snapshot disks, control sockets, console logs, the test
# summary) live in out/, which .gitignore covers and make clean removes.
SCRATCH := out

# Variables of make qemu, qemu-linux and qemu-gdb:
#   GUEST=file     guest image (opt/tamavisor/guest); one under guests/build/ is built first
#   DISK=file      snapshot disk (virtio-blk; NVMe with make qemu-uefi); one under out/ that does not exist is
#                  created, sparse, of DISK_SIZE bytes
#   CTL=path       control-channel socket (COM2) for `go run ./cmd/tamavisor snapshot --socket path`
#   RESTORE=1      resume the newest snapshot on DISK (RESTORE=newest says the same)
#   RESTORE_GEN=n  resume generation n of the snapshots on DISK
#   KEY=string     snapshot key (HMAC-SHA256, 16 to 256 bytes; no ' in it),
#   KEYFILE=file     or the key in a file: the same key is needed to restore
#   MODE=clock     tamavisor's clock check (two marks 2 s apart) before the guest;
#   MODE=bench     its exit-path bench instead (with GUEST=guests/build/bench.bin)
#   CPU=model      QEMU CPU model (default above); EXTRA=args: more QEMU arguments
DISK_SIZE ?= 2G
ifneq ($(filter-out 1 newest,$(RESTORE)),)
$(error RESTORE=$(RESTORE): say RESTORE=1 (or newest) to resume the newest snapshot, RESTORE_GEN=<generation> for another one)
endif
ifneq ($(filter qemu qemu-linux qemu-gdb qemu-uefi,$(MAKECMDGOALS)),)
ifneq ($(filter-out clock bench,$(MODE)),)
$(error MODE=$(MODE): make qemu knows MODE=clock and MODE=bench)
endif
ifneq ($(and $(RESTORE)$(RESTORE_GEN),$(if $(DISK),,none)),)
$(error RESTORE needs the snapshot disk: give DISK=file)
endif
endif
ifneq ($(and $(KEY),$(KEYFILE)),)
$(error KEY= and KEYFILE= both given: one snapshot key only)
endif
ifneq ($(and $(MODE),$(RESTORE)$(RESTORE_GEN)),)
$(error MODE=$(MODE) and RESTORE: a restore is a mode of its own)
endif
QEMU_MODE = $(if $(RESTORE)$(RESTORE_GEN),restore,$(MODE))
QEMU_FLAGS = -machine microvm$(c)x-option-roms=on$(c)pit=on$(c)pic=off$(c)rtc=on \
	-accel $(ACCEL) -cpu $(CPU) -m 2G -nographic -monitor none \
	-no-reboot -device isa-debug-exit$(c)iobase=0xf4$(c)iosize=0x04 \
	$(if $(GUEST),-fw_cfg name=opt/tamavisor/guest$(c)file=$(call fwcfgval,$(GUEST))) \
	$(if $(DISK),-global virtio-mmio.force-legacy=false \
	  -drive if=none$(c)id=snapdisk$(c)format=raw$(c)file=$(call fwcfgval,$(DISK)) \
	  -device virtio-blk-device$(c)drive=snapdisk) \
	$(if $(QEMU_MODE),-fw_cfg name=opt/tamavisor/mode$(c)string=$(QEMU_MODE)) \
	$(if $(RESTORE_GEN),-fw_cfg name=opt/tamavisor/restore-generation$(c)string=$(RESTORE_GEN)) \
	$(if $(KEY),-fw_cfg 'name=opt/tamavisor/snapshot-key$(c)string=$(call fwcfgval,$(KEY))') \
	$(if $(KEYFILE),-fw_cfg name=opt/tamavisor/snapshot-key$(c)file=$(call fwcfgval,$(KEYFILE))) \
	$(if $(CTL),-chardev socket$(c)id=ctl$(c)server=on$(c)wait=off$(c)path=$(call fwcfgval,$(CTL)) \
	  -device isa-serial$(c)chardev=ctl$(c)iobase=0x2f8$(c)irq=3)
fwcfgval = $(subst $(c),$(c)$(c),$(1))

# What make qemu* runs must exist: a GUEST under guests/build/ is
# assembled, a DISK under out/ created; make qemu builds every guest.
repopath = $(patsubst $(CURDIR)/%,%,$(patsubst ./%,%,$(1)))
QEMU_DEPS = tamavisor.elf $(filter guests/build/%,$(call repopath,$(GUEST))) \
	$(filter $(SCRATCH)/%,$(call repopath,$(DISK)))

$(SCRATCH)/%.img:
	@mkdir -p $(dir $@)
	truncate -s $(DISK_SIZE) $@

# run-qemu: run tamavisor in QEMU with the arguments $(1), then print one
# line saying how it ended, and fail unless tamavisor powered off with
# status 0. isa-debug-exit makes QEMU exit with status*2+1 (boot/boot.go's
# statuses, docs/guest-abi.md); but QEMU also exits 1 when it cannot start
# (its reason on stderr), and 0 when the machine resets (a triple fault, as
# -no-reboot turns a reset into an exit) or a signal stops it. A console
# log (the serial chardev's logfile) tells a status 0 from a failed start:
# tamavisor's first line is in it.
define run-qemu
@mkdir -p $(SCRATCH); log=$(SCRATCH)/console.$$$$.log; \
	trap 'rm -f $$log' EXIT; trap 'exit 130' INT TERM HUP; \
	echo "$(QEMU) $(strip $(QEMU_FLAGS)) -chardev stdio,id=con,logfile=$$log -serial chardev:con $(strip $(1))"; \
	$(QEMU) $(QEMU_FLAGS) -chardev stdio$(c)id=con$(c)logfile=$$log -serial chardev:con $(1); \
	s=$$?; started=; ok=; grep -q 'tamavisor: starting' $$log 2>/dev/null && started=1; \
	if [ $$s -ne 0 ] && [ -z "$$started" ]; then \
	  msg="QEMU failed to start (exit $$s): see its message above"; \
	elif [ $$s -eq 0 ] && [ -z "$$started" ]; then \
	  msg="QEMU exited without a tamavisor status and tamavisor printed nothing: the machine reset at boot (triple fault?); CPU models without pdpe1gb and rdrand (qemu64) cannot run TamaGo"; \
	elif [ $$s -eq 0 ]; then \
	  msg="QEMU exited without a tamavisor status (triple fault or reset of the hypervisor, or QEMU stopped by a signal)"; \
	elif [ $$((s % 2)) -eq 0 ]; then \
	  msg="QEMU exited with $$s, which is not a tamavisor status (QEMU error$$([ $$s -gt 128 ] && echo ", or killed by signal $$((s - 128))"))"; \
	else \
	  st=$$(( (s - 1) / 2 )); \
	  case $$st in \
	  0) ok=1; what="powered off: guest exit status 0 (or quit, a suspend, a guest reset or ACPI power-off)";; \
	  99) what="powered off: guest exit status 99 or more (clamped)";; \
	  100) what="a VM was stopped by the hypervisor (report above)";; \
	  101) what="guest image or configuration refused (error above)";; \
	  102) what="restore refused (reason above)";; \
	  110) what="SVM not available on CPU model $(CPU)";; \
	  111) what="hypervisor internal error";; \
	  *) if [ $$st -lt 99 ]; then what="powered off: guest exit status $$st"; else what="unknown status"; fi;; \
	  esac; \
	  case $$s in 137|139) what="$$what, or QEMU was killed by signal $$((s - 128))";; esac; \
	  msg="tamavisor status $$st: $$what"; \
	fi; \
	echo "make $@: $$msg"; [ -n "$$ok" ]
endef

SOURCES := $(shell find . \( -name '*.go' -o -name '*.s' \) -not -path './qemu/*' -not -name '*_test.go') go.mod go.sum

.PHONY: all qemu qemu-gdb test test-unit test-fuzz test-e2e bench tcb guests clean fuzz-guests security-table install

all: tamavisor.elf

guests: $(GUESTS_BIN)

# The linker's output gets a Multiboot2 header in its leading zero padding
# (internal/mb2header), so that GRUB boots the same file as QEMU -kernel.
tamavisor.elf: $(SOURCES) guests/build/demo.bin guests/build/alive.bin
	@mkdir -p $(SCRATCH)
	$(GOENV) $(TAMAGO) build -ldflags "$(LDFLAGS)" -o $(SCRATCH)/tamavisor.link.elf .
	$(GO) run ./internal/mb2header -o $@ $(SCRATCH)/tamavisor.link.elf

qemu: $(QEMU_DEPS) $(GUESTS_BIN)
	$(call run-qemu,$(EXTRA) -kernel tamavisor.elf)

qemu-gdb: $(QEMU_DEPS)
	@echo "waiting for gdb on :1234 (gdb tamavisor.elf -ex 'target remote :1234'; QEMU is stopped until gdb continues)"
	$(call run-qemu,$(EXTRA) -kernel tamavisor.elf -S -s)

# make qemu-linux: boot a Linux guest, by default Debian's cloud kernel and a
# busybox initramfs that guests/linux/fetch.sh fetches once into
# LINUX_CACHE. KERNEL= (bzImage), INITRD= (empty: none), CMDLINE= (empty:
# tamavisor's default) and MEM= (e.g. 512M; empty: 256 MiB) override.
LINUX_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/tamavisor/linux
KERNEL  ?= $(LINUX_CACHE)/bzImage
INITRD  ?= $(LINUX_CACHE)/initramfs.cpio.gz
CMDLINE ?=
MEM     ?=
LINUX_FWCFG = -fw_cfg name=opt/tamavisor/kernel$(c)file=$(call fwcfgval,$(KERNEL)) \
	$(if $(INITRD),-fw_cfg name=opt/tamavisor/initrd$(c)file=$(call fwcfgval,$(INITRD))) \
	$(if $(CMDLINE),-fw_cfg 'name=opt/tamavisor/cmdline$(c)string=$(call fwcfgval,$(CMDLINE))') \
	$(if $(MEM),-fw_cfg name=opt/tamavisor/mem$(c)string=$(MEM))

.PHONY: qemu-linux
qemu-linux: $(QEMU_DEPS)
	$(if $(filter $(LINUX_CACHE)/%,$(KERNEL) $(INITRD)),TAMAVISOR_LINUX_DIR='$(LINUX_CACHE)' guests/linux/fetch.sh)
	$(call run-qemu,$(LINUX_FWCFG) $(EXTRA) -kernel tamavisor.elf)

# make test runs every stage even after a failure, then prints one line per
# stage (internal/testrun) and fails if any stage failed.
SUMMARY := $(SCRATCH)/test-summary.txt
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

# make install: the host tools (tamavisor, tamavisor-snap, tamavisor-image)
# into $(go env GOBIN) or $(go env GOPATH)/bin.
install:
	$(GO) install ./cmd/tamavisor ./cmd/tamavisor-snap ./cmd/tamavisor-image

clean:
	rm -rf tamavisor.elf guests/build out qemu/out

include boot/usb.mk
