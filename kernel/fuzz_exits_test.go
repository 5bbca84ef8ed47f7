package kernel

import (
	"encoding/binary"
	"strings"
	"testing"

	"tamavisor/snapshot"
	"tamavisor/svm"
)

// fuzzExitCodes are the exits a hostile guest can cause (plus a few it
// cannot, which the dispatcher must still survive).
var fuzzExitCodes = []svm.ExitCode{
	svm.ExitCPUID, svm.ExitIOIO, svm.ExitVMMCALL, svm.ExitMSR, svm.ExitHLT,
	svm.ExitNPF, svm.ExitShutdown, svm.ExitINVD, svm.ExitVMRUN, svm.ExitVMLOAD,
	svm.ExitVMSAVE, svm.ExitSTGI, svm.ExitCLGI, svm.ExitSKINIT, svm.ExitINVLPGA,
	svm.ExitMONITOR, svm.ExitMWAIT, svm.ExitExcp0 + 18, svm.ExitFERRFreeze,
	svm.ExitExcp0 + svm.VectorDB, svm.ExitExcp0 + svm.VectorAC,
	svm.ExitInvalidLow, svm.ExitINTR, 0x3ff,
	svm.ExitCR0Write, svm.ExitCR0Write + 4, svm.ExitDR0Write, svm.ExitDR0Write + 5, svm.ExitDR0Write + 7,
	svm.ExitWBINVD, svm.ExitXSETBV, svm.ExitRDPMC, svm.ExitVINTR, svm.ExitRDPRU,
}

// FuzzExits plays a hostile guest: a sequence of exits with arbitrary
// exit information, registers, control state and instruction bytes, with
// and without NRIP save, with a snapshot disk attached. The hypervisor
// must never panic (Run recovers and reports "hypervisor error") and must
// return.
func FuzzExits(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31})
	f.Add([]byte("\x02\x00\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x01\x0f\x01\xd9 hostile guest bytes here......"))
	f.Fuzz(func(t *testing.T, data []byte) {
		feat := featNoNRIP
		if len(data) > 0 && data[0]&1 != 0 {
			feat = featNRIP
		}
		e := newEnv(t, feat)
		e.withStore(snapshot.NewMemDevice(16<<20, 512))
		modes := []uint32{Mode16, Mode32, Mode64}
		mode := uint32(Mode64)
		if len(data) > 1 {
			mode = modes[int(data[1])%3]
		}
		vm := e.boot(mode)
		e.input = []byte("\x1dinfo\nsnapshot\ncontinue\n")
		const stepSize = 48
		var steps []step
		for off := 2; off+stepSize <= len(data) && len(steps) < 16; off += stepSize {
			d := data[off : off+stepSize]
			u := func(i int) uint64 { return binary.LittleEndian.Uint64(d[i:]) }
			code := fuzzExitCodes[int(d[0])%len(fuzzExitCodes)]
			flags := d[1]
			info1, info2, rax, rcx, rbx := u(8), u(16), u(24), u(32), u(40)
			insn := append([]byte(nil), d[2:8]...)
			steps = append(steps, func(v *svm.VMCB, r *svm.Regs) {
				s, c := &v.State, &v.Control
				c.ExitCode = uint64(code)
				c.ExitInfo1, c.ExitInfo2 = info1, info2
				s.RAX, r.RCX, r.RBX, r.RDX = rax, rcx, rbx, info2
				if flags&1 != 0 {
					s.RIP = info2 % (testMem + 64)
				}
				if flags&2 != 0 {
					s.RFLAGS ^= svm.RFLAGSIF
				}
				if flags&4 != 0 {
					c.ExitIntInfo = rbx
				}
				if flags&8 != 0 {
					s.CR0 ^= svm.CR0PG
				}
				if flags&16 != 0 {
					s.CS.Attrib ^= svm.SegL | svm.SegDB
				}
				c.NextRIP = s.RIP + uint64(flags>>5)
				vm.Mem.WriteGPA(s.RIP, insn) // fails quietly outside RAM
			})
		}
		e.runner.steps = steps
		stop := vm.Run()
		if stop == nil {
			t.Fatal("Run returned without a stop")
		}
		if strings.Contains(stop.Reason, "hypervisor error") {
			t.Fatalf("an exit handler panicked: %s", stop.Reason)
		}
	})
}
