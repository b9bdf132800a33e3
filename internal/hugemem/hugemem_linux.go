// Package hugemem maps the datapath's large, randomly accessed areas (UMEM
// frames, flow tables) outside the Go heap, populated and, where the kernel
// allows, on transparent huge pages.
package hugemem

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// HugePage is the size of a transparent huge page on x86-64 and arm64 (with
// 4 KiB base pages).
const HugePage = 2 << 20

// Map maps size bytes of anonymous, zeroed memory, populated up front so
// that the first packets do not take page faults (and a UMEM's registration
// pins real pages).
//
// An area of a huge page or more starts on a huge-page boundary and asks for
// transparent huge pages (best effort: THP may be off). The datapath's large
// structures are read at random, a frame or a flow bucket per packet, and
// with 4 KiB pages nearly every such access costs a TLB miss (a default
// queue's 8192 frames of 4 KiB span 8192 pages, far more than a TLB holds;
// with huge pages, 16).
//
// The memory is not the Go heap's: it must hold no Go pointers, and Unmap
// must give it back.
func Map(size int) ([]byte, error) {
	const prot, flags = unix.PROT_READ | unix.PROT_WRITE, unix.MAP_PRIVATE | unix.MAP_ANONYMOUS
	if size < HugePage {
		p, err := unix.MmapPtr(-1, 0, nil, uintptr(size), prot, flags|unix.MAP_POPULATE)
		if err != nil {
			return nil, err
		}
		return unsafe.Slice((*byte)(p), size), nil
	}
	// Map a huge page more than needed and unmap what lies outside the
	// aligned area, which ends at a page boundary (munmap takes whole
	// pages).
	page := uintptr(unix.Getpagesize())
	mapped := (uintptr(size) + page - 1) &^ (page - 1)
	total := mapped + HugePage
	p, err := unix.MmapPtr(-1, 0, nil, total, prot, flags)
	if err != nil {
		return nil, err
	}
	head := -uintptr(p) & (HugePage - 1)
	tail := total - head - mapped
	if head > 0 {
		if err := unix.MunmapPtr(p, head); err != nil {
			unix.MunmapPtr(p, total)
			return nil, fmt.Errorf("trim mapping: %w", err)
		}
	}
	area := unsafe.Add(p, head)
	if tail > 0 {
		if err := unix.MunmapPtr(unsafe.Add(area, mapped), tail); err != nil {
			unix.MunmapPtr(area, mapped+tail)
			return nil, fmt.Errorf("trim mapping: %w", err)
		}
	}
	b := unsafe.Slice((*byte)(area), size)
	_ = unix.Madvise(b, unix.MADV_HUGEPAGE) // EINVAL without THP: 4 KiB pages then
	if err := unix.Madvise(b, unix.MADV_POPULATE_WRITE); err != nil {
		// Before Linux 5.14: fault every page in by hand.
		for i := 0; i < size; i += unix.Getpagesize() {
			b[i] = 0
		}
	}
	return b, nil
}

// Unmap unmaps an area returned by Map (the kernel rounds its length up to
// whole pages, as Map did).
func Unmap(b []byte) error {
	return unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(b)), uintptr(len(b)))
}
