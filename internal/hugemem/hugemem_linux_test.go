package hugemem

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// Map gives zeroed, writable memory of exactly the size asked for, on a
// huge-page boundary (and, where THP allows, on huge pages) from a huge page
// up, for sizes that are not whole pages too; Unmap gives it back.
func TestMapUnmap(t *testing.T) {
	for _, size := range []int{100, 3 * 4096, HugePage, 8<<20 + 384*3, 57522048} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			b, err := Map(size)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != size {
				t.Fatalf("len %d, want %d", len(b), size)
			}
			start := uintptr(unsafe.Pointer(&b[0]))
			if size >= HugePage {
				if start%HugePage != 0 {
					t.Errorf("area at %#x: not on a huge-page boundary", start)
				}
				if kb := anonHugeKB(t, start); kb == 0 {
					// THP may be off, or compaction may fail on a
					// fragmented machine: say so rather than fail.
					t.Logf("no huge page backs the area")
				} else {
					t.Logf("%d kB of %d on huge pages", kb, size/1024)
				}
			}
			for i := 0; i < size; i += 4096 {
				if b[i] != 0 {
					t.Fatalf("byte %d is %d, want zeroed memory", i, b[i])
				}
			}
			b[0], b[size-1] = 1, 1
			if err := Unmap(b); err != nil {
				t.Fatal(err)
			}
			if kb := mappingKB(t, start); kb >= 0 {
				t.Fatalf("%d kB still mapped at %#x after Unmap", kb, start)
			}
		})
	}
}

// anonHugeKB returns the AnonHugePages of the mapping that starts at addr,
// from /proc/self/smaps (-1 if no mapping starts there).
func anonHugeKB(t *testing.T, addr uintptr) int { return smapsField(t, addr, "AnonHugePages:") }

// mappingKB returns the size of the mapping that starts at addr, or -1.
func mappingKB(t *testing.T, addr uintptr) int { return smapsField(t, addr, "Size:") }

func smapsField(t *testing.T, addr uintptr, field string) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	prefix := fmt.Sprintf("%x-", addr)
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, ":") || strings.Contains(strings.Fields(line)[0], "-") {
			// A mapping's header line: "start-end perms ...".
			if in {
				return -1
			}
			in = strings.HasPrefix(line, prefix)
			continue
		}
		if in && strings.HasPrefix(line, field) {
			kb, err := strconv.Atoi(strings.Fields(line)[1])
			if err != nil {
				t.Fatalf("smaps line %q: %v", line, err)
			}
			return kb
		}
	}
	return -1
}
