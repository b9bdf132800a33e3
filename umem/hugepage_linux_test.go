package umem

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"
	"unsafe"
)

// A large area starts on a huge-page boundary and, where the kernel has
// transparent huge pages for madvised memory, is backed by them; a small one
// is an ordinary mapping. Both are populated and unmap cleanly.
func TestAreaHugePages(t *testing.T) {
	big, err := New(Config{FrameSize: 4096, FrameCount: 2048}) // 8 MiB
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	start := uintptr(unsafe.Pointer(&big.area[0]))
	if start%hugePage != 0 {
		t.Errorf("area at %#x: not on a huge-page boundary", start)
	}
	thp, _ := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if strings.Contains(string(thp), "[never]") || len(thp) == 0 {
		t.Logf("transparent huge pages off (%q): not checking the backing", thp)
	} else if kb := anonHugeKB(t, start); kb == 0 {
		// Compaction can fail on a fragmented machine; say so rather
		// than fail.
		t.Logf("no huge page backs the area (THP %q)", strings.TrimSpace(string(thp)))
	} else {
		t.Logf("%d kB of the area on huge pages", kb)
	}
	// Every frame is usable from end to end.
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

// anonHugeKB reads the AnonHugePages of the mapping that starts at addr from
// /proc/self/smaps.
func anonHugeKB(t *testing.T, addr uintptr) int {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	prefix := fmt.Sprintf("%x-", addr)
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		// A mapping's header starts with its range; its attributes with
		// "Name:".
		if f := strings.Fields(line); len(f) > 0 && !strings.HasSuffix(f[0], ":") {
			in = strings.HasPrefix(line, prefix)
			continue
		}
		var kb int
		if in && strings.HasPrefix(line, "AnonHugePages:") {
			fmt.Sscanf(strings.TrimPrefix(line, "AnonHugePages:"), "%d", &kb)
			return kb
		}
	}
	t.Fatalf("no mapping at %#x in /proc/self/smaps", addr)
	return 0
}
