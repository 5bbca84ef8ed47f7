package legacy

import (
	"bytes"
	"errors"
	"testing"

	"tamavisor/kernel/devices"
)

func TestPOST(t *testing.T) {
	p := NewPOST()
	if v := p.In(POST_PORT, 1); v != 0xFF || p.Code() != 0xFF {
		t.Fatalf("POST reads %#x before any write", v)
	}
	p.Out(POST_PORT, 1, 0x3C)
	if v := p.In(POST_PORT, 1); v != 0x3C || p.Code() != 0x3C {
		t.Fatalf("POST reads %#x, want 0x3c", v)
	}
	p.Out(POST_PORT, 2, 0x1234) // 0x81 gets 0x12: not ours
	if v := p.In(POST_PORT, 4); v != 0xFFFFFF34 {
		t.Fatalf("dword read %#x, want 0xffffff34", v)
	}
	if v := p.In(POST_PORT, 3); v != devices.Floating {
		t.Fatalf("size 3 read %#x", v)
	}
	q := NewPOST()
	if err := q.UnmarshalState(StateVersion, p.MarshalState()); err != nil || q.Code() != 0x34 {
		t.Fatalf("restore: %v, code %#x", err, q.Code())
	}
	if err := q.UnmarshalState(2, []byte{0}); !errors.Is(err, devices.ErrStateVersion) {
		t.Errorf("version 2: %v", err)
	}
	if err := q.UnmarshalState(StateVersion, nil); !errors.Is(err, devices.ErrStateLength) {
		t.Errorf("empty: %v", err)
	}
}

// TestPCIProbe follows Linux's pci_check_type1 and pci_check_type2.
func TestPCIProbe(t *testing.T) {
	h := NewPCIHost(nil)
	h.Out(0xCFB, 1, 0x01)
	tmp := h.In(CONFIG_ADDRESS, 4)
	h.Out(CONFIG_ADDRESS, 4, CONFIG_ENABLE)
	if v := h.In(CONFIG_ADDRESS, 4); v != CONFIG_ENABLE {
		t.Fatalf("CONFIG_ADDRESS reads %#x, want 0x80000000", v)
	}
	h.Out(CONFIG_ADDRESS, 4, tmp)
	// The host bridge at 00:00.0, as pci_sanity_check looks for it: the
	// IDs, then class and revision, at every size and offset.
	h.Out(CONFIG_ADDRESS, 4, CONFIG_ENABLE)
	if v := h.In(CONFIG_DATA, 2); v != HostBridgeVendor {
		t.Fatalf("vendor %#x", v)
	}
	if v := h.In(CONFIG_DATA+2, 2); v != HostBridgeDevice {
		t.Fatalf("device %#x", v)
	}
	if v := h.In(CONFIG_DATA+3, 1); v != HostBridgeDevice>>8 {
		t.Fatalf("device high byte %#x", v)
	}
	if v := h.In(CONFIG_DATA+2, 4); v != 0xFFFF0000|HostBridgeDevice {
		t.Fatalf("dword read across the end %#x", v)
	}
	h.Out(CONFIG_ADDRESS, 4, CONFIG_ENABLE|0x08)
	if v := h.In(CONFIG_DATA+2, 2); v != HostBridgeClass>>8 {
		t.Fatalf("class %#x", v)
	}
	h.Out(CONFIG_DATA, 4, 0) // read-only
	if v := h.In(CONFIG_DATA, 4); v != HostBridgeClass<<8|HostBridgeRev {
		t.Fatalf("class/revision %#x after a write", v)
	}
	h.Out(CONFIG_ADDRESS, 4, CONFIG_ENABLE|0x10) // BAR0: none
	if v := h.In(CONFIG_DATA, 4); v != 0 {
		t.Fatalf("BAR0 %#x", v)
	}
	h.Out(CONFIG_ADDRESS, 4, 0x08) // enable clear: no configuration cycle
	if v := h.In(CONFIG_DATA, 4); v != devices.Floating {
		t.Fatalf("disabled cycle reads %#x", v)
	}
	// No device anywhere else: vendor ID all ones, every size and offset.
	for _, addr := range []uint32{CONFIG_ENABLE | 1<<8, CONFIG_ENABLE | 0x00FFFF00, CONFIG_ENABLE | 3<<11 | 0x08, CONFIG_ENABLE | 1<<16} {
		h.Out(CONFIG_ADDRESS, 4, addr)
		for off := uint16(0); off < 4; off++ {
			for _, size := range []uint8{1, 2, 4} {
				want := uint32(devices.Floating) >> (32 - 8*uint32(size))
				if v := h.In(CONFIG_DATA+off, size); v != want {
					t.Fatalf("data %#x size %d reads %#x", CONFIG_DATA+off, size, v)
				}
			}
		}
		h.Out(CONFIG_DATA, 4, 0)
	}
	// Mechanism #2 must not appear.
	h.Out(0xCFB, 1, 0)
	h.Out(CONFIG_ADDRESS, 1, 0)
	h.Out(0xCFA, 1, 0)
	if h.In(CONFIG_ADDRESS, 1) == 0 || h.In(0xCFA, 1) == 0 {
		t.Fatal("byte reads of 0xcf8/0xcfa read 0: mechanism #2 would be detected")
	}
	// Reserved and low bits do not hold; narrow writes do not reach it.
	h.Out(CONFIG_ADDRESS, 4, 0xFFFFFFFF)
	h.Out(CONFIG_ADDRESS, 2, 0)
	if v := h.In(CONFIG_ADDRESS, 4); v != 0x80FFFFFC {
		t.Fatalf("CONFIG_ADDRESS %#x, want 0x80fffffc", v)
	}
	if v := h.In(CONFIG_ADDRESS, 3); v != devices.Floating {
		t.Fatalf("size 3 read %#x", v)
	}
	var bus devices.Bus
	if err := h.Register(&bus); err != nil || bus.Lookup(0xCF8) == nil || bus.Lookup(0xCFF) == nil || bus.Lookup(0xD00) != nil {
		t.Fatalf("registration: %v", err)
	}
}

// TestResetControl follows Linux's BOOT_CF9 reboot.
func TestResetControl(t *testing.T) {
	resets := 0
	h := NewPCIHost(func() { resets++ })
	cf9 := uint8(h.In(RST_CNT, 1)) &^ (SYS_RST | RST_CPU)
	h.Out(RST_CNT, 1, uint32(cf9|SYS_RST))
	if resets != 0 {
		t.Fatal("reset on writing SYS_RST alone")
	}
	if v := h.In(RST_CNT, 1); v != SYS_RST {
		t.Fatalf("RST_CNT reads %#x, want SYS_RST", v)
	}
	h.Out(RST_CNT, 1, uint32(cf9|SYS_RST|RST_CPU|FULL_RST))
	if resets != 1 {
		t.Fatalf("%d resets, want 1", resets)
	}
	if v := h.In(RST_CNT, 1); v != SYS_RST|FULL_RST {
		t.Fatalf("RST_CNT reads %#x after reset", v)
	}
	h.Out(CONFIG_ADDRESS, 2, RST_CPU<<8) // a word write does not reach RST_CNT
	if resets != 1 {
		t.Fatal("reset by a word write")
	}
	if v := h.In(RST_CNT, 2); v != 0xFFFF {
		t.Fatalf("word read of 0xcf9: %#x", v)
	}
}

func TestPCIHostState(t *testing.T) {
	h := NewPCIHost(nil)
	h.Out(CONFIG_ADDRESS, 4, 0x80012344)
	h.Out(RST_CNT, 1, FULL_RST)
	st := h.MarshalState()
	g := NewPCIHost(nil)
	if err := g.UnmarshalState(StateVersion, st); err != nil {
		t.Fatal(err)
	}
	if g.In(CONFIG_ADDRESS, 4) != 0x80012344 || g.In(RST_CNT, 1) != FULL_RST {
		t.Fatal("state not restored")
	}
	for name, b := range map[string][]byte{
		"reserved": {0, 0, 0, 0x40, 0},
		"low bits": {1, 0, 0, 0x80, 0},
		"RST_CPU":  {0, 0, 0, 0x80, RST_CPU},
	} {
		if err := g.UnmarshalState(StateVersion, b); !errors.Is(err, devices.ErrStateInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if !bytes.Equal(g.MarshalState(), st) {
		t.Fatal("rejected state changed the bridge")
	}
	if err := g.UnmarshalState(StateVersion, st[:4]); !errors.Is(err, devices.ErrStateLength) {
		t.Errorf("short: %v", err)
	}
}

// TestI8042 follows Linux: i8042_flush finds the output buffer never
// empties (no controller), kb_wait sees the input buffer empty, 0xFE
// resets.
func TestI8042(t *testing.T) {
	resets := 0
	k := NewI8042(func() { resets++ })
	const bufferSize = 16 // I8042_BUFFER_SIZE
	flushed := false
	for i := 0; i <= bufferSize; i++ {
		if k.In(I8042_STATUS, 1)&STR_OBF == 0 {
			flushed = true
			break
		}
		k.In(I8042_DATA, 1)
	}
	if flushed {
		t.Fatal("output buffer emptied: Linux would go on probing")
	}
	if k.In(I8042_STATUS, 1)&STR_IBF != 0 {
		t.Fatal("input buffer full: kb_wait would spin")
	}
	if k.In(I8042_DATA, 1) != 0xFF {
		t.Fatal("data port does not float")
	}
	for _, cmd := range []uint8{0xAA, 0x20, 0x60, 0xD1, 0xF1, 0xFF, 0xEE} {
		k.Out(I8042_COMMAND, 1, uint32(cmd))
		k.Out(I8042_DATA, 1, uint32(cmd))
	}
	if resets != 0 {
		t.Fatalf("%d resets from commands that do not pulse bit 0", resets)
	}
	for i, cmd := range []uint8{0xFE, 0xF0, 0xFA} {
		k.Out(I8042_COMMAND, 1, uint32(cmd))
		if resets != i+1 {
			t.Fatalf("command %#x: %d resets", cmd, resets)
		}
	}
	k.Out(0x63, 2, 0xFE00) // 0x63, then 0x64
	if resets != 4 {
		t.Fatal("word write reaching 0x64 did not reset")
	}
	if v := k.In(I8042_DATA, 2); v != 0xFFFF {
		t.Fatalf("word read at 0x60: %#x", v)
	}
	var bus devices.Bus
	if err := k.Register(&bus); err != nil {
		t.Fatal(err)
	}
	for port, want := range map[uint16]bool{0x60: true, 0x61: false, 0x62: false, 0x63: false, 0x64: true, 0x65: false} {
		if (bus.Lookup(port) != nil) != want {
			t.Errorf("port %#x registered: %v", port, !want)
		}
	}
	if len(k.MarshalState()) != 0 || k.UnmarshalState(StateVersion, nil) != nil {
		t.Fatal("empty state")
	}
	if err := k.UnmarshalState(StateVersion, []byte{0}); !errors.Is(err, devices.ErrStateLength) {
		t.Errorf("non-empty state: %v", err)
	}
}

// TestAllOnOneBus registers the stubs together, as a VM does.
func TestAllOnOneBus(t *testing.T) {
	var bus devices.Bus
	for _, r := range []interface{ Register(*devices.Bus) error }{NewPOST(), NewPCIHost(nil), NewI8042(nil)} {
		if err := r.Register(&bus); err != nil {
			t.Fatal(err)
		}
	}
}
