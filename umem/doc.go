// Package umem owns the UMEM: the mmapped area of equal-sized frames that an
// AF_XDP socket and the kernel share, the stack of free frames, and the
// ledger of where every frame is.
//
// # Frames and addresses
//
// The area is split into Frames() frames of FrameSize() bytes (2048 or
// 4096, aligned mode). An address is a byte offset into the area; the frame
// that contains it starts at Base(addr). The kernel writes a received packet
// at DataOffset() = Headroom() + KernelHeadroom bytes into a frame, so every
// received packet has at least that much room in front of it: Prepend grows
// a packet into that room so encapsulation writes outer headers in place and
// transmits from the new, lower address. Frame(addr, n) returns the bytes;
// its capacity stops at the end of the frame.
//
// # Ownership
//
// Every frame is in exactly one place at any time:
//
//   - free: on the free stack (Alloc takes, Free gives back);
//   - in hand: taken by the worker from the free stack, the RX ring or the
//     completion ring, and not yet freed or submitted;
//   - kernel RX: submitted to the fill ring and not yet reaped from the RX
//     ring;
//   - kernel TX: submitted to the TX ring and not yet reaped from the
//     completion ring.
//
// Package ring advances the ledger when frames cross a ring (FillSubmitted,
// RXReaped, TXSubmitted, CompletionReaped), so Accounting and Check see the
// same picture as the rings. Free accepts any address inside a frame, because
// a completion returns the transmitted address, which may lie in the
// headroom; it panics on a double free or a foreign address rather than hand
// one frame to two packets.
//
// # Lifetime
//
// New maps and populates the area (on transparent huge pages when it is
// 2 MiB or more and the kernel has them, so that frames spread over the
// area do not each cost a TLB miss). A Umem serves one socket at a time:
// Register (called by ring.Open) claims it and registers it with the kernel
// (XDP_UMEM_REG). When the socket is closed the kernel gives up every frame,
// and ring's Socket.Close calls Reclaim: all frames are free again and the
// Umem can be registered with a new socket. Close unmaps the area and is
// refused while a socket still uses it.
//
// A Umem is owned by the goroutine that owns its socket; nothing here locks.
// Frame and the geometry accessors only read and may be called by the
// in-memory kernel of package ring from another goroutine.
//
// # Locked memory
//
// Registration pins the area and charges it to RLIMIT_MEMLOCK unless the
// process has CAP_IPC_LOCK. Call RaiseMemlock at start-up; a refused
// registration (ENOBUFS) says to raise the limit or grant the capability.
package umem
