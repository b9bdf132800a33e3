package flows

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/weirlb/weir/internal/hugemem"
	"github.com/weirlb/weir/packet"
)

// A table of a huge page or more lives in its own mapping, on a huge-page
// boundary. Close unmaps it, and a closed table used by mistake panics
// instead of touching unmapped memory; Capacity still answers.
func TestLargeTableMappingAndClose(t *testing.T) {
	tb, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if tb.mem == nil {
		t.Fatalf("a %d-byte table is on the Go heap, want its own mapping", tb.MemoryBytes())
	}
	if start := uintptr(unsafe.Pointer(&tb.buckets[0])); start%hugemem.HugePage != 0 {
		t.Errorf("buckets at %#x: not on a huge-page boundary", start)
	}
	k, h := testKey(1, packet.ProtoTCP), hashOf(1)
	tb.Insert(&k, h, 7, t0)
	if b, ok := tb.Lookup(&k, h, t0); !ok || b != 7 {
		t.Fatalf("Lookup: %d, %v", b, ok)
	}
	capacity := tb.Capacity()
	tb.Close()
	if tb.Capacity() != capacity {
		t.Errorf("Capacity after Close: %d, want %d", tb.Capacity(), capacity)
	}
	defer func() {
		if recover() == nil {
			t.Error("Lookup on a closed table did not panic")
		}
	}()
	tb.Lookup(&k, h, t0)
}

// Tables that are dropped without Close give their mappings back once the
// garbage collector finds them unreachable: forty 57 MB tables do not add
// up.
func TestLargeTableUnmappedWhenUnreachable(t *testing.T) {
	const n = 40
	rss0 := rssBytes(t)
	for range n {
		tb, err := New(DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		tb.buckets[len(tb.buckets)-1].tags[0] = 1
		runtime.GC()
	}
	// Cleanups run on their own goroutine after a collection.
	var grown int64
	for range 100 {
		runtime.GC()
		if grown = rssBytes(t) - rss0; grown < 4*57<<20 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("resident memory grew %d MB over %d dropped tables: their mappings leak", grown>>20, n)
}

// rssBytes reads the process's resident set size from /proc/self/statm.
func rssBytes(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return pages * int64(os.Getpagesize())
}
