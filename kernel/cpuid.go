package kernel

import (
	"fmt"

	"tamavisor/svm"
)

// CPUID leaves the model filters (AMD CPUID Specification #25481; APM vol. 3,
// appendix E).
const (
	leafVendor   = 0x0
	leafFeatures = 0x1
	leafMonitor  = 0x5
	leafExtFeat  = 0x7
	leafXSAVE    = 0xd
	leafCache    = 0x4
	leafTopology = 0xb
	leafExtSize  = 0x80000008
	// Topology fields that would tell the guest about the host's cores:
	// leaf 4 EAX bits 25:14 and 31:26, leaf 0x8000_0008 ECX bits 7:0.
	cacheSharingMask = 0xfff << 14
	coresPerPkgMask  = 0x3f << 26
	ncMask           = 0xff
	leafHVBase       = 0x40000000
	leafHVMax        = 0x400000ff
	leafExtMax       = 0x80000000
	leafExtFeats     = 0x80000001
	leafSVM          = 0x8000000a
	maxBasicLeaf     = 0xd
	maxExtLeaf       = 0x80000008
	hvSignatureB     = 0x616d6154 // "Tama"
	hvSignatureC     = 0x6f736956 // "Viso"
	hvSignatureD     = 0x00564872 // "rHV\0"
	apicIDShift      = 24
	logicalShift     = 16
	apicIDMask       = 0xff << apicIDShift
	logicalMask      = 0xff << logicalShift
	hypervisorBit    = 1 << 31 // leaf 1 ECX: running under a hypervisor
)

// Leaf 1 feature bits hidden from guests.
const (
	f1ecxMONITOR = 1 << 3
	f1ecxVMX     = 1 << 5
	f1ecxFMA     = 1 << 12
	f1ecxXSAVE   = 1 << 26
	f1ecxOSXSAVE = 1 << 27
	f1ecxAVX     = 1 << 28
	f1ecxF16C    = 1 << 29
	f1ecxX2APIC  = 1 << 21
	f1edxMCE     = 1 << 7
	f1ecxTSCDL   = 1 << 24 // TSC-deadline timer mode: not emulated
	f1edxAPIC    = 1 << 9  // the emulated xAPIC (shown even where the host lacks it)
	f1edxMCA     = 1 << 14
	f1ecxHidden  = f1ecxMONITOR | f1ecxVMX | f1ecxFMA | f1ecxX2APIC | f1ecxXSAVE | f1ecxOSXSAVE | f1ecxAVX | f1ecxF16C | f1ecxTSCDL
	f1edxHidden  = f1edxMCE | f1edxMCA
)

// Leaf 7 EBX bits passed through (everything else is hidden: AVX2,
// AVX-512, SGX, PQM/PQE, processor trace...).
const (
	f7ebxFSGSBASE   = 1 << 0
	f7ebxBMI1       = 1 << 3
	f7ebxSMEP       = 1 << 7
	f7ebxBMI2       = 1 << 8
	f7ebxERMS       = 1 << 9
	f7ebxADX        = 1 << 19
	f7ebxSMAP       = 1 << 20
	f7ebxCLFLUSHOPT = 1 << 23
	f7ebxSHA        = 1 << 29
	f7ebxAllowed    = f7ebxFSGSBASE | f7ebxBMI1 | f7ebxSMEP | f7ebxBMI2 | f7ebxERMS | f7ebxADX | f7ebxSMAP | f7ebxCLFLUSHOPT | f7ebxSHA
)

// Leaf 0x8000_0001 ECX bits hidden: SVM, and the extended performance
// counters, IBS and watchdog-timer bits.
const (
	e1ecxSVM        = 1 << 2
	e1ecxIBS        = 1 << 10
	e1ecxWDT        = 1 << 13
	e1ecxPerfCtrCor = 1 << 23
	e1ecxPerfCtrNB  = 1 << 24
	e1ecxPerfCtrL2  = 1 << 28
	e1ecxMONITORX   = 1 << 29 // MONITORX/MWAITX: MWAIT is not offered either
	e1ecxHidden     = e1ecxSVM | e1ecxIBS | e1ecxWDT | e1ecxPerfCtrCor | e1ecxPerfCtrNB | e1ecxPerfCtrL2 | e1ecxMONITORX
)

// Leaf 0x8000_0008 EBX: only IBPB is shown (WRMSR PRED_CMD does an IBPB on
// the host); IBRS, STIBP, SSBD (SPEC_CTRL is not offered), RDPRU, CLZERO,
// INVLPGB, WBNOINVD and the rest are hidden.
const e8ebxIBPB = 1 << 12

// CPUIDModel is the CPU a guest sees: the host's CPUID filtered once, when
// the VM is made, into a table; an exit is then a table lookup. The table
// is what a snapshot records as "CPU features the guest saw".
type CPUIDModel struct {
	Entries []CPUIDEntry
	xcr0    uint64 // XSAVE components shown (0: no XSAVE)
}

// CPUIDEntry is one leaf/subleaf.
type CPUIDEntry struct {
	Leaf, Subleaf      uint32
	EAX, EBX, ECX, EDX uint32
}

// subleafLeaves have results that depend on ECX.
func subleafLeaf(leaf uint32) bool {
	switch leaf {
	case leafCache, leafExtFeat, leafTopology, leafXSAVE:
		return true
	}
	return false
}

// NewCPUIDModel filters the host's CPUID (docs/guest-abi.md, "CPU model"),
// for a host without XSAVE support for guests.
func NewCPUIDModel(host svm.CPUIDFunc) *CPUIDModel { return NewCPUIDModelXSAVE(host, 0) }

// cpuidModel is the model of a new VM on this platform.
func (p *Platform) cpuidModel() *CPUIDModel { return NewCPUIDModelXSAVE(p.CPUID, p.HostXCR0) }

// Leaf 0xD and the XSAVE-dependent feature bits (AMD CPUID Specification,
// Fn0000_000D; APM vol. 3, appendix E).
const (
	f7ebxAVX2       = 1 << 5
	fdXSAVEOPT      = 1 << 0 // Fn0000_000D_ECX_x1 EAX: XSAVEOPT (XSAVEC, XGETBV1, XSAVES hidden)
	xsaveLeafAVX    = 2      // subleaf of the AVX component
	xsaveLeafExtras = 1      // subleaf of the XSAVE extensions
)

// NewCPUIDModelXSAVE is NewCPUIDModel for a host whose world switch moves
// the XSAVE components of xcr0 (0: none): XSAVE, AVX and AVX2 are shown
// when xcr0 has AVX, with leaf 0xD describing exactly those components.
// OSXSAVE and leaf 0xD's current size follow the guest (VCPU.cpuid).
func NewCPUIDModelXSAVE(host svm.CPUIDFunc, xcr0 uint64) *CPUIDModel {
	xcr0 &= svm.XCR0Guest
	if xcr0&svm.XCR0AVX == 0 {
		xcr0 = 0 // without AVX there is nothing worth XSAVE to a guest
	}
	m := &CPUIDModel{xcr0: xcr0}
	maxBasic, _, _, _ := host(leafVendor, 0)
	if maxBasic > maxBasicLeaf {
		maxBasic = maxBasicLeaf
	}
	for leaf := uint32(0); leaf <= maxBasic; leaf++ {
		subs := uint32(1)
		if subleafLeaf(leaf) {
			subs = 4
		}
		for sub := uint32(0); sub < subs; sub++ {
			m.add(leaf, sub, host)
		}
	}
	maxExt, _, _, _ := host(leafExtMax, 0)
	if maxExt > maxExtLeaf {
		maxExt = maxExtLeaf
	}
	for leaf := uint32(leafExtMax); leaf <= maxExt; leaf++ {
		m.add(leaf, 0, host)
	}
	m.Entries = append(m.Entries, CPUIDEntry{Leaf: leafHVBase, EAX: leafHVBase,
		EBX: hvSignatureB, ECX: hvSignatureC, EDX: hvSignatureD})
	return m
}

func (m *CPUIDModel) add(leaf, sub uint32, host svm.CPUIDFunc) {
	a, b, c, d := host(leaf, sub)
	switch leaf {
	case leafVendor:
		if a > maxBasicLeaf {
			a = maxBasicLeaf
		}
	case leafFeatures:
		b &^= apicIDMask | logicalMask
		b |= 1 << logicalShift // one logical processor, APIC ID 0
		shown := c & (f1ecxXSAVE | f1ecxAVX)
		c = c&^f1ecxHidden | hypervisorBit
		if m.xcr0 != 0 {
			c |= shown
		}
		d = d&^f1edxHidden | f1edxAPIC
	case leafXSAVE:
		if m.xcr0 == 0 {
			a, b, c, d = 0, 0, 0, 0
			break
		}
		switch sub {
		case 0: // supported components, sizes (EBX follows XCR0: VCPU.cpuid)
			size := uint32(svm.XSaveSize(m.xcr0))
			a, b, c, d = uint32(m.xcr0), size, size, 0
		case xsaveLeafExtras:
			a, b, c, d = a&fdXSAVEOPT, 0, 0, 0
		case xsaveLeafAVX:
			a, b, c, d = svm.XSaveAVXSize, svm.XSaveAVXOffset, 0, 0
		default:
			a, b, c, d = 0, 0, 0, 0
		}
	case leafMonitor, leafSVM, leafTopology:
		a, b, c, d = 0, 0, 0, 0
	case leafCache:
		a &^= cacheSharingMask | coresPerPkgMask // one core, cache not shared
	case leafExtSize:
		c &^= ncMask // NC: one core
		b &= e8ebxIBPB
	case leafExtFeat:
		if sub == 0 {
			allowed := uint32(f7ebxAllowed)
			if m.xcr0 != 0 {
				allowed |= f7ebxAVX2
			}
			a, b, c, d = 0, b&allowed, 0, 0
		} else {
			a, b, c, d = 0, 0, 0, 0
		}
	case leafExtMax:
		if a > maxExtLeaf {
			a = maxExtLeaf
		}
	case leafExtFeats:
		c &^= e1ecxHidden
	}
	m.Entries = append(m.Entries, CPUIDEntry{leaf, sub, a, b, c, d})
}

// Lookup returns the guest's view of leaf/subleaf. Leaves outside the
// model return zeros (as for leaves above the maximum on AMD).
func (m *CPUIDModel) Lookup(leaf, sub uint32) (a, b, c, d uint32) {
	if !subleafLeaf(leaf) {
		sub = 0
	}
	for i := range m.Entries {
		e := &m.Entries[i]
		if e.Leaf == leaf && e.Subleaf == sub {
			return e.EAX, e.EBX, e.ECX, e.EDX
		}
	}
	return 0, 0, 0, 0
}

// featureWords are the CPUID registers that list features a guest may use
// (leaf, subleaf, register index 0-3 for EAX-EDX).
var featureWords = []struct {
	leaf, sub uint32
	reg       int
	name      string
}{
	{leafFeatures, 0, 2, "leaf 1 ECX"}, {leafFeatures, 0, 3, "leaf 1 EDX"},
	{leafExtFeat, 0, 1, "leaf 7 EBX"},
	{leafExtFeats, 0, 2, "leaf 0x80000001 ECX"}, {leafExtFeats, 0, 3, "leaf 0x80000001 EDX"},
}

// Compatible checks that a guest which saw model m can run on a host whose
// model is host: same vendor, and every feature bit m shows is also in
// host. A restored guest keeps seeing m.
func (m *CPUIDModel) Compatible(host *CPUIDModel) error {
	_, b, c, d := m.Lookup(leafVendor, 0)
	_, hb, hc, hd := host.Lookup(leafVendor, 0)
	if b != hb || c != hc || d != hd {
		return fmt.Errorf("the guest saw another CPU vendor than this host's")
	}
	for _, w := range featureWords {
		a, b, c, d := m.Lookup(w.leaf, w.sub)
		ha, hb, hc, hd := host.Lookup(w.leaf, w.sub)
		saw, have := [4]uint32{a, b, c, d}[w.reg], [4]uint32{ha, hb, hc, hd}[w.reg]
		if missing := saw &^ have; missing != 0 {
			return fmt.Errorf("the guest saw CPU features this host lacks: CPUID %s bits %#x", w.name, missing)
		}
	}
	return nil
}
