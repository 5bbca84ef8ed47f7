package snapshot

import "fmt"

// ManifestVersion is the current version of the manifest chunk.
// Version 1 had no CPUID leaves and no properties; it is upgraded on load.
const ManifestVersion = 2

// MemKind is the kind of a guest memory region.
type MemKind uint32

// Memory region kinds.
const (
	MemRAM      MemKind = 1 // guest RAM; saved in the RAM chunk
	MemROM      MemKind = 2 // read-only memory provided by the hypervisor
	MemMMIO     MemKind = 3 // emulated device registers
	MemReserved MemKind = 4 // present in the map, not backed
)

func (k MemKind) String() string {
	switch k {
	case MemRAM:
		return "ram"
	case MemROM:
		return "rom"
	case MemMMIO:
		return "mmio"
	case MemReserved:
		return "reserved"
	}
	return fmt.Sprintf("kind(%d)", uint32(k))
}

// MemRegion is one entry of the guest memory map.
type MemRegion struct {
	GPA  uint64  `json:"gpa"`
	Size uint64  `json:"size"`
	Kind MemKind `json:"kind"`
	Name string  `json:"name"`
}

// CPUIDLeaf is one CPUID result the guest saw.
type CPUIDLeaf struct {
	Leaf, Subleaf      uint32
	EAX, EBX, ECX, EDX uint32
}

// DeviceEntry describes one device model whose state is in the snapshot as
// chunk "dev:"+Name with the given instance and chunk version StateVersion.
type DeviceEntry struct {
	Name         string `json:"name"`
	Instance     uint32 `json:"instance"`
	StateVersion uint16 `json:"state_version"`
	Required     bool   `json:"required"`
}

// ChunkType returns the chunk type of the device's state, "dev:"+Name.
func (d DeviceEntry) ChunkType() string { return DevicePrefix + d.Name }

// Property is a free-form key/value pair (hypervisor version, guest image
// name, ...).
type Property struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Manifest describes the saved VM: its configuration and every device model,
// so that a restore needs nothing but the snapshot.
type Manifest struct {
	VCPUs      uint32        `json:"vcpus"`
	Memory     []MemRegion   `json:"memory"`
	CPUID      []CPUIDLeaf   `json:"cpuid"`
	Devices    []DeviceEntry `json:"devices"`
	Properties []Property    `json:"properties"`
}

const maxManifestString = 4096

// Validate checks the manifest for consistency: sorted non-overlapping page
// aligned memory regions, valid device names, no duplicate device.
func (m *Manifest) Validate() error {
	if m.VCPUs == 0 {
		return fmt.Errorf("manifest: zero vCPUs")
	}
	var end uint64
	for i, r := range m.Memory {
		if r.GPA%PageSize != 0 || r.Size%PageSize != 0 || r.Size == 0 {
			return fmt.Errorf("manifest: memory region %d (%#x+%#x) not page aligned or empty", i, r.GPA, r.Size)
		}
		if r.GPA+r.Size < r.GPA {
			return fmt.Errorf("manifest: memory region %d overflows", i)
		}
		if i > 0 && r.GPA < end {
			return fmt.Errorf("manifest: memory region %d (%#x) overlaps or is out of order", i, r.GPA)
		}
		if r.Kind < MemRAM || r.Kind > MemReserved {
			return fmt.Errorf("manifest: memory region %d: unknown kind %d", i, r.Kind)
		}
		end = r.GPA + r.Size
	}
	seen := make(map[string]bool)
	for _, d := range m.Devices {
		if err := checkType(d.ChunkType()); err != nil {
			return fmt.Errorf("manifest: device %q: %v", d.Name, err)
		}
		if d.StateVersion == 0 {
			return fmt.Errorf("manifest: device %q: state version 0", d.Name)
		}
		k := fmt.Sprintf("%s/%d", d.Name, d.Instance)
		if seen[k] {
			return fmt.Errorf("manifest: device %q instance %d listed twice", d.Name, d.Instance)
		}
		seen[k] = true
	}
	return nil
}

// ramRegion reports whether [gpa, gpa+size) lies inside one RAM region.
func (m *Manifest) ramRegion(gpa, size uint64) bool {
	for _, r := range m.Memory {
		if r.Kind == MemRAM && gpa >= r.GPA && gpa+size <= r.GPA+r.Size && gpa+size >= gpa {
			return true
		}
	}
	return false
}

// Encode returns the manifest body in the current version.
func (m *Manifest) Encode() []byte {
	e := NewEncoder(256)
	e.PutU32(m.VCPUs)
	encodeMemory(e, m.Memory)
	e.PutU32(uint32(len(m.CPUID)))
	for _, c := range m.CPUID {
		e.PutU32(c.Leaf)
		e.PutU32(c.Subleaf)
		e.PutU32(c.EAX)
		e.PutU32(c.EBX)
		e.PutU32(c.ECX)
		e.PutU32(c.EDX)
	}
	encodeDevices(e, m.Devices)
	e.PutU32(uint32(len(m.Properties)))
	for _, p := range m.Properties {
		e.PutString(p.Key)
		e.PutString(p.Value)
	}
	return e.Bytes()
}

// encodeManifestV1 writes the legacy version 1 layout. It exists only so that
// tests can produce version 1 fixtures.
func encodeManifestV1(m *Manifest) []byte {
	e := NewEncoder(256)
	e.PutU32(m.VCPUs)
	encodeMemory(e, m.Memory)
	encodeDevices(e, m.Devices)
	return e.Bytes()
}

func encodeMemory(e *Encoder, mem []MemRegion) {
	e.PutU32(uint32(len(mem)))
	for _, r := range mem {
		e.PutU64(r.GPA)
		e.PutU64(r.Size)
		e.PutU32(uint32(r.Kind))
		e.PutString(r.Name)
	}
}

func encodeDevices(e *Encoder, devs []DeviceEntry) {
	e.PutU32(uint32(len(devs)))
	for _, d := range devs {
		e.PutString(d.Name)
		e.PutU32(d.Instance)
		e.PutU16(d.StateVersion)
		var f uint8
		if d.Required {
			f |= 1
		}
		e.PutU8(f)
	}
}

func decodeString(d *Decoder, what string) string {
	s := d.String()
	if len(s) > maxManifestString {
		d.Failf("%s longer than %d bytes", what, maxManifestString)
	}
	return s
}

func decodeMemory(d *Decoder) []MemRegion {
	n := d.Count(24)
	mem := make([]MemRegion, 0, n)
	for i := 0; i < n && d.Err() == nil; i++ {
		var r MemRegion
		r.GPA = d.U64()
		r.Size = d.U64()
		r.Kind = MemKind(d.U32())
		r.Name = decodeString(d, "memory region name")
		mem = append(mem, r)
	}
	return mem
}

func decodeDevices(d *Decoder) []DeviceEntry {
	n := d.Count(11)
	devs := make([]DeviceEntry, 0, n)
	for i := 0; i < n && d.Err() == nil; i++ {
		var x DeviceEntry
		x.Name = decodeString(d, "device name")
		x.Instance = d.U32()
		x.StateVersion = d.U16()
		f := d.U8()
		if f&^1 != 0 {
			d.Failf("device %q: unknown flags %#x", x.Name, f)
		}
		x.Required = f&1 != 0
		devs = append(devs, x)
	}
	return devs
}

// manifestV1 is the in-memory form of a version 1 manifest.
type manifestV1 struct {
	VCPUs   uint32
	Memory  []MemRegion
	Devices []DeviceEntry
}

func decodeManifestV1(d *Decoder) (any, error) {
	var m manifestV1
	m.VCPUs = d.U32()
	m.Memory = decodeMemory(d)
	m.Devices = decodeDevices(d)
	if err := d.Finish(); err != nil {
		return nil, err
	}
	return &m, nil
}

// upgradeManifestV1 turns a version 1 manifest into version 2: no CPUID
// leaves were recorded, and a property notes the upgrade.
func upgradeManifestV1(v any) (any, error) {
	old, ok := v.(*manifestV1)
	if !ok {
		return nil, fmt.Errorf("manifest v1 upgrade: unexpected %T", v)
	}
	return &Manifest{
		VCPUs:      old.VCPUs,
		Memory:     old.Memory,
		Devices:    old.Devices,
		Properties: []Property{{Key: "upgraded-from", Value: "manifest v1"}},
	}, nil
}

func decodeManifestV2(d *Decoder) (any, error) {
	var m Manifest
	m.VCPUs = d.U32()
	m.Memory = decodeMemory(d)
	n := d.Count(24)
	m.CPUID = make([]CPUIDLeaf, 0, n)
	for i := 0; i < n && d.Err() == nil; i++ {
		m.CPUID = append(m.CPUID, CPUIDLeaf{d.U32(), d.U32(), d.U32(), d.U32(), d.U32(), d.U32()})
	}
	m.Devices = decodeDevices(d)
	n = d.Count(8)
	m.Properties = make([]Property, 0, n)
	for i := 0; i < n && d.Err() == nil; i++ {
		k := decodeString(d, "property key")
		v := decodeString(d, "property value")
		m.Properties = append(m.Properties, Property{k, v})
	}
	if err := d.Finish(); err != nil {
		return nil, err
	}
	return &m, nil
}

var manifestCodec = Codec{
	Type:    TypeManifest,
	Current: ManifestVersion,
	Decoders: map[uint16]DecodeFunc{
		1: decodeManifestV1,
		2: decodeManifestV2,
	},
	Upgrades: map[uint16]UpgradeFunc{
		1: upgradeManifestV1,
	},
}
