# boot/usb.mk - tamavisor on UEFI machines, included by the root Makefile
# (paths are relative to the repository root).
#
#   make usb-image  a GPT disk image with one FAT32 EFI system partition:
#                   EFI/BOOT/BOOTX64.EFI, a standalone GRUB with
#                   boot/usb/grub.cfg built in, and tamavisor.elf, which GRUB
#                   boots through multiboot2. Write it to a USB stick (README,
#                   "Real boards"). Built without root: sgdisk, mkfs.fat, mtools.
#   make qemu-uefi  boot that image under QEMU q35 + OVMF from an emulated USB
#                   stick, console on the serial port (GUEST=, MODE=, DISK=,
#                   RESTORE=1, RESTORE_GEN=, KEY=, KEYFILE=, CTL=, CPU=, EXTRA= as
#                   for make qemu; the snapshot disk is an NVMe drive, as on a
#                   real board)
#
# Tools, from Debian: grub-efi-amd64-bin (grub-mkstandalone), dosfstools
# (mkfs.fat), mtools (mmd, mcopy), gdisk (sgdisk), ovmf.

GRUB_MKSTANDALONE ?= grub-mkstandalone
# mkfs.fat and sgdisk live in /usr/sbin, which a user's PATH may lack.
sbin = $(firstword $(wildcard /usr/sbin/$(1) /sbin/$(1)) $(1))
MKFS_FAT ?= $(call sbin,mkfs.fat)
SGDISK ?= $(call sbin,sgdisk)
OVMF_CODE ?= /usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS ?= /usr/share/OVMF/OVMF_VARS_4M.fd

# USB_DIR= and USB_KERNEL= put the image elsewhere and another kernel in it
# (the end-to-end test images the kernel under test).
USB_DIR ?= $(SCRATCH)/usb
USB_KERNEL ?= tamavisor.elf
USB_IMAGE := $(USB_DIR)/tamavisor-usb.img
USB_EFI := $(USB_DIR)/BOOTX64.EFI
USB_ESP := $(USB_DIR)/esp.img

# Sizes: a FAT32 ESP needs at least 65525 clusters, 33 MiB with 512-byte
# clusters; 64 MiB holds GRUB (~5 MiB with every module) and the kernel.
# The partition starts at 1 MiB; the backup GPT takes the last 33 sectors.
USB_ESP_MIB := 64
USB_IMAGE_MIB := 66
USB_ESP_START := 2048
ESP_TYPE := ef00

# GRUB modules GRUB loads itself (the memdisk holds all of them).
USB_GRUB_MODULES := part_gpt fat search multiboot2 serial terminal echo

.PHONY: usb-image qemu-uefi

usb-image: $(USB_IMAGE)

$(USB_EFI): boot/usb/grub.cfg
	@mkdir -p $(dir $@)
	$(GRUB_MKSTANDALONE) -O x86_64-efi -o $@ --modules="$(USB_GRUB_MODULES)" \
	  --locales= --fonts= --themes= "boot/grub/grub.cfg=boot/usb/grub.cfg"

$(USB_IMAGE): $(USB_EFI) $(USB_KERNEL)
	@mkdir -p $(dir $@)
	rm -f $@.tmp $(USB_ESP)
	$(MKFS_FAT) -F 32 -s 1 -n TAMAVISOR -C $(USB_ESP) $$(( $(USB_ESP_MIB) * 1024 )) >/dev/null
	mmd -i $(USB_ESP) ::/EFI ::/EFI/BOOT
	mcopy -i $(USB_ESP) $(USB_EFI) ::/EFI/BOOT/BOOTX64.EFI
	mcopy -i $(USB_ESP) $(USB_KERNEL) ::/tamavisor.elf
	truncate -s $(USB_IMAGE_MIB)M $@.tmp
	$(SGDISK) --clear --new=1:$(USB_ESP_START):+$(USB_ESP_MIB)M --typecode=1:$(ESP_TYPE) \
	  --change-name=1:"EFI system partition" $@.tmp >/dev/null
	dd if=$(USB_ESP) of=$@.tmp bs=512 seek=$(USB_ESP_START) conv=notrunc status=none
	rm -f $(USB_ESP)
	mv $@.tmp $@
	@echo "make usb-image: $@ ($(USB_IMAGE_MIB) MiB): write it to a USB stick with dd (README, Real boards)"

# OVMF's variable store is written by the firmware: each run gets a fresh
# copy under out/, the code stays read-only. The stick is read-only too.
UEFI_FLAGS = -machine q35 -accel $(ACCEL) -cpu $(CPU) -m 2G -nographic -monitor none \
	-no-reboot -device isa-debug-exit$(c)iobase=0xf4$(c)iosize=0x04 \
	-drive if=pflash$(c)format=raw$(c)unit=0$(c)readonly=on$(c)file=$(call fwcfgval,$(OVMF_CODE)) \
	-drive if=pflash$(c)format=raw$(c)unit=1$(c)file=$(USB_DIR)/OVMF_VARS.fd \
	-drive if=none$(c)id=stick$(c)format=raw$(c)readonly=on$(c)file=$(USB_IMAGE) \
	-device qemu-xhci$(c)id=xhci -device usb-storage$(c)bus=xhci.0$(c)drive=stick \
	$(if $(GUEST),-fw_cfg name=opt/tamavisor/guest$(c)file=$(call fwcfgval,$(GUEST))) \
	$(if $(DISK),-drive if=none$(c)id=snapdisk$(c)format=raw$(c)file=$(call fwcfgval,$(DISK)) \
	  -device nvme$(c)serial=$(NVME_SERIAL)$(c)drive=snapdisk) \
	$(if $(QEMU_MODE),-fw_cfg name=opt/tamavisor/mode$(c)string=$(QEMU_MODE)) \
	$(if $(RESTORE_GEN),-fw_cfg name=opt/tamavisor/restore-generation$(c)string=$(RESTORE_GEN)) \
	$(if $(KEY),-fw_cfg 'name=opt/tamavisor/snapshot-key$(c)string=$(call fwcfgval,$(KEY))') \
	$(if $(KEYFILE),-fw_cfg name=opt/tamavisor/snapshot-key$(c)file=$(call fwcfgval,$(KEYFILE))) \
	$(if $(CTL),-chardev socket$(c)id=ctl$(c)server=on$(c)wait=off$(c)path=$(call fwcfgval,$(CTL)) \
	  -device isa-serial$(c)chardev=ctl$(c)iobase=0x2f8$(c)irq=3)

# The snapshot disk (DISK=) is QEMU's NVMe controller with this serial
# number, which tamavisor prints when it finds the drive.
NVME_SERIAL ?= tamavisor-snap

# make qemu-uefi prints how the run ended as make qemu does (run-qemu).
qemu-uefi: QEMU_FLAGS = $(UEFI_FLAGS)
qemu-uefi: $(USB_IMAGE) $(filter guests/build/%,$(call repopath,$(GUEST))) \
	$(filter $(SCRATCH)/%,$(call repopath,$(DISK)))
	@test -r $(OVMF_CODE) -a -r $(OVMF_VARS) || { echo "make qemu-uefi: no OVMF at $(OVMF_CODE): apt-get install ovmf (or set OVMF_CODE= and OVMF_VARS=)"; exit 1; }
	cp $(OVMF_VARS) $(USB_DIR)/OVMF_VARS.fd
	$(call run-qemu,$(EXTRA))
