package umem

import (
	"testing"
	"unsafe"

	"github.com/weirlb/weir/internal/hugemem"
)

// A UMEM's area comes from hugemem (whose tests check the huge-page backing):
// a large one starts on a huge-page boundary, a small one is an ordinary
// mapping, and both are usable end to end and unmap cleanly.
func TestAreaHugePages(t *testing.T) {
	big, err := New(Config{FrameSize: 4096, FrameCount: 2048}) // 8 MiB
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	if start := uintptr(unsafe.Pointer(&big.area[0])); start%hugemem.HugePage != 0 {
		t.Errorf("area at %#x: not on a huge-page boundary", start)
	}
	big.area[0], big.area[len(big.area)-1] = 1, 1

	small, err := New(Config{FrameSize: 2048, FrameCount: 64})
	if err != nil {
		t.Fatal(err)
	}
	small.area[len(small.area)-1] = 1
	if err := small.Close(); err != nil {
		t.Fatal(err)
	}
}
