package svm

// XSAVE-managed state (APM vol. 2, 11.5 "XSAVE/XRSTOR"; vol. 3, CPUID Fn0000_000D).
const (
	XCR0X87 = 1 << 0 // x87 state (must always be set)
	XCR0SSE = 1 << 1 // XMM registers and MXCSR
	XCR0AVX = 1 << 2 // upper halves of the YMM registers

	// XCR0Guest are the components tamavisor manages for guests.
	XCR0Guest = XCR0X87 | XCR0SSE | XCR0AVX

	CR4OSXSAVE = 1 << 18

	CPUIDXSAVE = 1 << 26 // CPUID Fn0000_0001 ECX: XSAVE/XRSTOR and XCR0
	CPUIDAVX   = 1 << 28 // CPUID Fn0000_0001 ECX: AVX

	// Standard-format XSAVE area layout (APM vol. 2, 11.5.2).
	XSaveLegacySize = 512 // the FXSAVE image
	XSaveHeaderSize = 64  // XSTATE_BV, XCOMP_BV, reserved
	XSaveAVXOffset  = XSaveLegacySize + XSaveHeaderSize
	XSaveAVXSize    = 256
	XSaveAlign      = 64
)

// ValidXCR0 reports whether v is an XCR0 value a guest may set when the
// host manages the components in allowed: x87 set, nothing outside
// allowed, AVX only with SSE (APM vol. 3, XSETBV).
func ValidXCR0(v, allowed uint64) bool {
	return v&XCR0X87 != 0 && v&^allowed == 0 && (v&XCR0AVX == 0 || v&XCR0SSE != 0)
}

// XSaveSize is the size of a standard-format XSAVE area holding the
// components of xcr0 (among XCR0Guest).
func XSaveSize(xcr0 uint64) int {
	if xcr0&XCR0AVX != 0 {
		return XSaveAVXOffset + XSaveAVXSize
	}
	return XSaveLegacySize + XSaveHeaderSize
}
