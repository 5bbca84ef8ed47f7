package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"

	"tamavisor/kernel"
	"tamavisor/snapshot"
	"tamavisor/snapshot/filedev"
)

// The demo guest: 64-bit code (docs/guest-abi.md) that writes one line to
// the console with the CONSOLE_WRITE hypercall and exits with status 0.
const (
	demoLoad   = 0x10000  // payload GPA
	demoDataAt = 0x100000 // from 1 MiB up, every other page holds random bytes
	hcConsole  = 1        // CONSOLE_WRITE: RBX = GPA, RCX = length
	hcExit     = 2        // EXIT: RBX = status
)

// demoCode returns the payload: code at demoLoad, then the message.
func demoCode(msg string) []byte {
	const codeLen = 32
	var c []byte
	imm := func(op byte, v uint32) { c = binary.LittleEndian.AppendUint32(append(c, op), v) }
	imm(0xbb, demoLoad+codeLen)     // mov ebx, msg
	imm(0xb9, uint32(len(msg)))     // mov ecx, len
	imm(0xb8, hcConsole)            // mov eax, CONSOLE_WRITE
	c = append(c, 0x0f, 0x01, 0xd9) // vmmcall
	c = append(c, 0x31, 0xdb)       // xor ebx, ebx
	imm(0xb8, hcExit)               // mov eax, EXIT
	c = append(c, 0x0f, 0x01, 0xd9) // vmmcall
	c = append(c, 0xeb, 0xfe)       // jmp $ (EXIT does not return)
	for len(c) < codeLen {
		c = append(c, 0x90)
	}
	return append(c, msg...)
}

// demoVM builds, on p, the demo guest of size bytes of RAM as tamavisor
// would start it (kernel.NewVM: its boot structures, register state and
// devices), and fills its RAM from 1 MiB up: every other page random
// (seeded by gen), the others zero.
func demoVM(p *kernel.Platform, size uint64, gen int) (*kernel.VM, error) {
	msg := fmt.Sprintf("demo: hello from the tamavisor-snap demo guest, generation %d\n", gen)
	img, err := kernel.ParseImage(kernel.EncodeImage(&kernel.Image{
		Mode: kernel.Mode64, LoadGPA: demoLoad, Entry: demoLoad, MemSize: size, Name: "demo", Payload: demoCode(msg)}))
	if err != nil {
		return nil, err
	}
	vm, err := kernel.NewVM(p, img)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewSource(int64(gen)))
	page := make([]byte, snapshot.PageSize)
	for gpa := uint64(demoDataAt); gpa+snapshot.PageSize <= size; gpa += 2 * snapshot.PageSize {
		rng.Read(page)
		if err := vm.Mem.WriteGPA(gpa, page); err != nil {
			vm.Destroy()
			return nil, err
		}
	}
	return vm, nil
}

// demoCreated is the creation time of the demo's generation 1 (2026-01-01).
const demoCreated = 1767225600e9

// writeDemo creates a disk image at path holding two snapshots
// (generations 1 and 2) of the demo guest with size bytes of RAM, written
// by the hypervisor's own save (VM.Save).
func writeDemo(path string, size uint64) error {
	dev, err := filedev.Create(path, snapshot.DataStart+2*int64(size+1<<20), 512)
	if err != nil {
		return err
	}
	defer dev.Close()
	s, err := snapshot.Open(dev, snapshot.StoreOptions{})
	if err != nil {
		return err
	}
	p := demoPlatform(size)
	for gen := 1; gen <= 2; gen++ {
		vm, err := demoVM(p, size, gen)
		if err != nil {
			return err
		}
		_, err = vm.Save(s, nil, demoCreated+int64(gen)*1e9, nil)
		vm.Destroy()
		if err != nil {
			return err
		}
	}
	return dev.Flush()
}

// demo writes the demo disk, unless path holds something demo would
// destroy and force is not set.
func demo(path string, size uint64, force bool, stdout, stderr io.Writer) int {
	if !force {
		if why, err := occupied(path); err != nil {
			fmt.Fprintf(stderr, "%s: demo: %v\n", tool, err)
			return exitFailed
		} else if why != "" {
			fmt.Fprintf(stderr, "%s: demo: refusing to overwrite %s: %s; --force overwrites it\n", tool, path, why)
			return exitFailed
		}
	}
	if err := writeDemo(path, size); err != nil {
		fmt.Fprintf(stderr, "%s: demo: %v\n", tool, err)
		return exitFailed
	}
	fmt.Fprintf(stdout, "wrote %s: two snapshots (generations 1 and 2) of the demo guest, %d MiB of RAM\n", path, size>>20)
	return exitOK
}

// occupied says what path holds that writing the demo would destroy, or ""
// if it is missing, empty, or a blank snapshot disk (its commit record area
// all zero).
func occupied(path string) (string, error) {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", nil
	case err != nil:
		return "", err
	case !st.Mode().IsRegular():
		return "it is not a regular file", nil
	case st.Size() == 0:
		return "", nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, snapshot.DataStart)
	n, err := io.ReadFull(f, head)
	if err != nil && err != io.ErrUnexpectedEOF {
		return "", err
	}
	if n == len(head) && isZero(head) {
		return "", nil
	}
	var gens []string
	if dev, err := filedev.OpenReadOnly(path, 512); err == nil {
		defer dev.Close()
		if s, err := snapshot.Open(dev, snapshot.StoreOptions{}); err == nil {
			if recs, err := s.Records(); err == nil {
				for _, r := range recs {
					if r.Commit != nil {
						gens = append(gens, fmt.Sprint(r.Commit.Generation))
					}
				}
			}
		}
	}
	switch {
	case len(gens) == 1:
		return "it holds a snapshot (generation " + gens[0] + ")", nil
	case len(gens) > 1:
		return "it holds snapshots (generations " + joinAnd(gens) + ")", nil
	}
	return fmt.Sprintf("it is not a blank snapshot disk (%d bytes, its first %d are not all zero)", st.Size(), min(n, len(head))), nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func joinAnd(s []string) string {
	switch len(s) {
	case 0:
		return ""
	case 1:
		return s[0]
	}
	out := s[0]
	for _, x := range s[1 : len(s)-1] {
		out += ", " + x
	}
	return out + " and " + s[len(s)-1]
}
