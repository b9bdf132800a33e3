//go:build !linux

package hugemem

// HugePage is the size from which Map would ask for huge pages on Linux.
const HugePage = 2 << 20

// Map returns size bytes of zeroed memory: elsewhere than on Linux, from the
// Go heap, on whatever pages it uses.
func Map(size int) ([]byte, error) { return make([]byte, size), nil }

// Unmap does nothing: the garbage collector frees what Map returned.
func Unmap([]byte) error { return nil }
