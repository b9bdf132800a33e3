// Package ring owns weir's AF_XDP sockets: one socket per NIC queue, bound
// with zero-copy when the driver has it and copy mode otherwise, and its four
// rings shared with the kernel.
//
//   - fill (FillQueue): user space gives the kernel empty frames;
//   - RX (RXQueue): the kernel hands back frames holding received packets;
//   - TX (TXQueue): user space gives the kernel packets to send;
//   - completion (CompletionQueue): the kernel hands back sent frames.
//
// Each ring is a single-producer, single-consumer array of descriptors (RX,
// TX) or frame addresses (fill, completion) with a shared producer and
// consumer index. Our side keeps cached copies of both, so a batch reads the
// other side's index with one atomic load (acquire) only when the cached
// view is short, and publishes its own with one atomic store (release).
// Indices are free-running uint32s that wrap at 2^32. The batch API is
// Reserve/Set/Submit for the rings we fill and Peek/Get/Release for the rings
// we drain; Put and Take copy whole batches, and RXQueue.Descs and
// TXQueue.Slots hand a batch's slots out as (at most two) slices for loops
// that should not pay a mask and bounds check per descriptor. None of it
// allocates, locks or makes a system call.
//
// # Ownership
//
// One goroutine, the queue's worker, owns a Socket, its four rings and its
// umem.Umem. Only FD, Mode, Stats and the other accessors of fixed state may
// be called from other goroutines. A frame belongs to exactly one party at a
// time (see package umem): submitting it to the fill or TX ring gives it to
// the kernel; releasing it from the RX or completion ring gives it back.
// The rings advance the Umem's ledger themselves, so umem.Umem.Check holds at
// every step. After Release the worker may keep an RX frame, transmit it
// (possibly from a lower address after umem.Umem.Prepend), put it back on the
// fill ring, or free it. A completion returns the address that was
// transmitted, which umem.Umem.Free accepts.
//
// # Syscalls
//
// With need_wakeup (the default) the kernel says through ring flags when a
// syscall is needed. TX: when NeedWakeupTX, KickTX (sendto) makes the kernel
// send; in copy mode one kick moves at most Config.TXBudget descriptors,
// the whole TX ring unless set lower (Linux 6.17+; 32 before), so FlushTX
// kicks until the ring is empty, up to a bound. EAGAIN, EBUSY, ENOBUFS and ENETDOWN from a kick mean "not
// now" and are counted, not returned. Reap completions every batch: a full
// completion ring stops TX. RX: when NeedWakeupFill, WakeupRX (recvfrom)
// wakes the driver; on veth it never asks. An idle worker blocks in Wait
// (poll).
//
// # Lifetime
//
// Open creates the socket in the calling thread's network namespace,
// registers the Umem, maps the rings and binds the queue; a failure at any
// step undoes the earlier ones. The caller then puts FD into the XSKMAP slot
// of the queue, calls Refill and starts the worker. Close (after the worker
// stopped) unmaps the rings and closes the socket, so the queue can be bound
// again, and returns every frame to the Umem's free stack; the Umem outlives
// the socket and is closed by its owner. After Close the rings read as empty
// and full and the syscall helpers return ErrClosed.
//
// NewInMemory builds the same Socket over ordinary memory with a SimKernel on
// the other side, for tests and benchmarks of workers without privileges.
//
// All unsafe code and raw system calls of the package are in
// socket_linux.go.
package ring
