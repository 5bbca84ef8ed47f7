package fuzzguest

import (
	"bytes"
	"testing"

	"tamavisor/kernel"
)

func TestImagesAreValidAndDeterministic(t *testing.T) {
	modes := map[uint32]int{}
	for seed := range uint64(300) {
		img := Image(seed)
		if again := Image(seed); !bytes.Equal(img.Payload, again.Payload) || img.Mode != again.Mode {
			t.Fatalf("seed %d: two different guests", seed)
		}
		p, err := kernel.ParseImage(kernel.EncodeImage(img))
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if len(p.Payload) != CodeSize || p.Entry != CodeGPA || p.Mode != Modes[seed%3] {
			t.Fatalf("seed %d: parsed %+v", seed, p)
		}
		modes[img.Mode]++
	}
	if len(modes) != 3 {
		t.Errorf("modes used: %v", modes)
	}
	if bytes.Equal(Image(1).Payload, Image(4).Payload) {
		t.Error("seeds 1 and 4 (same mode) gave the same code")
	}
}

// TestImagesHoldExitingInstructions: the mix puts hypercalls, port I/O and
// MSR accesses in every guest (the point of it over plain random bytes).
func TestImagesHoldExitingInstructions(t *testing.T) {
	for seed := range uint64(30) {
		code := Image(seed).Payload
		for _, want := range [][]byte{{0x0F, 0x01, 0xD9}, {0x0F, 0xA2}} {
			if !bytes.Contains(code, want) {
				t.Errorf("seed %d: no % x in the code", seed, want)
			}
		}
	}
}
