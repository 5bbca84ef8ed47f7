package filedev

import (
	"path/filepath"
	"testing"

	"tamavisor/snapshot"
)

func TestFileDevice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	d, err := Create(path, 1<<20, 512)
	if err != nil {
		t.Fatal(err)
	}
	var _ snapshot.BlockDevice = d
	buf := make([]byte, 1024)
	for i := range buf {
		buf[i] = byte(i)
	}
	if _, err := d.WriteAt(buf, 512); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(buf[:100], 512); err == nil {
		t.Error("unaligned write accepted")
	}
	if _, err := d.WriteAt(buf, 1<<20-512); err == nil {
		t.Error("write past the end accepted")
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	d.Close()
	d, err = OpenReadOnly(path, 512)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	got := make([]byte, 1024)
	if _, err := d.ReadAt(got, 512); err != nil || string(got) != string(buf) || d.Size() != 1<<20 {
		t.Errorf("read back: %v", err)
	}
}
