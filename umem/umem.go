package umem

import (
	"errors"
	"fmt"
	"math/bits"

	"github.com/weirlb/weir/internal/hugemem"
)

// Defaults used when a Config field is zero.
const (
	DefaultFrameSize  = 4096
	DefaultFrameCount = 4096
	DefaultHeadroom   = 256
)

// KernelHeadroom is XDP_PACKET_HEADROOM: the kernel places received data this
// many bytes after the configured headroom, so a received packet starts
// Headroom()+KernelHeadroom bytes into its frame (see DataOffset).
const KernelHeadroom = 256

// MinPacketRoom is the smallest packet a frame must be able to hold after
// both headrooms: a 1500-byte MTU Ethernet frame with one 802.1Q tag.
const MinPacketRoom = 1518

// maxFrameCount bounds the area to 64 GiB with 4 KiB frames: far beyond any
// sane queue, small enough that a typo cannot ask for the whole machine.
const maxFrameCount = 1 << 24

// Config describes a UMEM area.
type Config struct {
	// FrameSize is the size of one frame (the kernel's chunk size): 2048 or
	// 4096. Zero means DefaultFrameSize.
	FrameSize uint32
	// FrameCount is the number of frames. Zero means DefaultFrameCount.
	FrameCount uint32
	// Headroom is reserved in front of every received packet, on top of the
	// kernel's own KernelHeadroom, so that encapsulation can prepend outer
	// headers in place. Zero means DefaultHeadroom.
	Headroom uint32
}

func (c Config) withDefaults() Config {
	if c.FrameSize == 0 {
		c.FrameSize = DefaultFrameSize
	}
	if c.FrameCount == 0 {
		c.FrameCount = DefaultFrameCount
	}
	if c.Headroom == 0 {
		c.Headroom = DefaultHeadroom
	}
	return c
}

func (c Config) validate() error {
	if c.FrameSize != 2048 && c.FrameSize != 4096 {
		return fmt.Errorf("umem: frame size %d: must be 2048 or 4096", c.FrameSize)
	}
	if c.FrameCount > maxFrameCount {
		return fmt.Errorf("umem: frame count %d: must be at most %d", c.FrameCount, maxFrameCount)
	}
	if c.Headroom >= c.FrameSize-KernelHeadroom {
		return fmt.Errorf("umem: headroom %d: must be below frame size %d minus the kernel's %d bytes",
			c.Headroom, c.FrameSize, KernelHeadroom)
	}
	if room := c.FrameSize - c.Headroom - KernelHeadroom; room < MinPacketRoom {
		return fmt.Errorf("umem: frame size %d with headroom %d leaves %d bytes for a packet, need %d: use frame size 4096 or less headroom",
			c.FrameSize, c.Headroom, room, MinPacketRoom)
	}
	return nil
}

// Umem is an mmapped area of equal-sized frames shared with the kernel, the
// stack of free frames, and the ledger of where every frame is.
//
// A Umem is owned by one goroutine (the worker of the socket it is registered
// with); no method is safe for concurrent use except Frame and the read-only
// geometry accessors, which the in-memory kernel of package ring also calls.
type Umem struct {
	area      []byte
	frameSize uint32
	shift     uint // log2(frameSize)
	frames    uint32
	headroom  uint32

	// stack[:nfree] holds the base addresses of the free frames; the top is
	// stack[nfree-1]. isFree has bit i set while frame i is on the stack, so
	// a double free is caught at the moment it happens.
	stack  []uint64
	nfree  int
	isFree []uint64

	// The ledger. inHand counts frames user space holds outside the stack
	// and outside every ring. The four totals only grow (modulo 2^64) and
	// are advanced by package ring from Submit and Release.
	inHand           int
	fillSubmitted    uint64
	rxReaped         uint64
	txSubmitted      uint64
	completionReaped uint64

	claimed bool // registered with a socket (or claimed by in-memory rings)
}

// New maps an anonymous area for cfg (zero fields take the defaults) and puts
// every frame on the free stack.
func New(cfg Config) (*Umem, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	size := uint64(cfg.FrameSize) * uint64(cfg.FrameCount)
	area, err := hugemem.Map(int(size))
	if err != nil {
		return nil, fmt.Errorf("umem: map %d frames of %d bytes: %w", cfg.FrameCount, cfg.FrameSize, err)
	}
	u := &Umem{
		area:      area,
		frameSize: cfg.FrameSize,
		shift:     uint(bits.TrailingZeros32(cfg.FrameSize)),
		frames:    cfg.FrameCount,
		headroom:  cfg.Headroom,
		stack:     make([]uint64, cfg.FrameCount),
		isFree:    make([]uint64, (cfg.FrameCount+63)/64),
	}
	u.reset()
	return u, nil
}

// reset puts every frame on the stack, lowest address on top, and zeroes the
// ledger.
func (u *Umem) reset() {
	n := int(u.frames)
	for i := range n {
		u.stack[i] = uint64(n-1-i) << u.shift
	}
	u.nfree = n
	clear(u.isFree)
	for i := range n {
		u.isFree[i>>6] |= 1 << (uint(i) & 63)
	}
	u.inHand = 0
	u.fillSubmitted, u.rxReaped = 0, 0
	u.txSubmitted, u.completionReaped = 0, 0
}

// Close unmaps the area. The Umem must no longer be registered: close the
// socket first.
func (u *Umem) Close() error {
	if u.claimed {
		return errors.New("umem: close while a socket still uses it: close the socket first")
	}
	if u.area == nil {
		return nil
	}
	err := hugemem.Unmap(u.area)
	u.area = nil
	if err != nil {
		return fmt.Errorf("umem: unmap: %w", err)
	}
	return nil
}

// Claim marks the Umem as used by one socket without registering it with the
// kernel; in-memory rings (package ring's simulator) use it. Register claims
// too. A Umem serves one socket at a time.
func (u *Umem) Claim() error {
	if u.area == nil {
		return errors.New("umem: claim of a closed umem")
	}
	if u.claimed {
		return errors.New("umem: already used by an open socket: give every socket its own umem")
	}
	u.claimed = true
	return nil
}

// Reclaim ends the claim of the socket that used the Umem: the kernel no
// longer holds any frame, so every frame, including those user space still
// held, goes back on the free stack and the ledger restarts from zero.
// package ring calls it from Socket.Close; nobody else should.
func (u *Umem) Reclaim() {
	u.claimed = false
	u.reset()
}

// FrameSize is the size of one frame in bytes.
func (u *Umem) FrameSize() uint32 { return u.frameSize }

// Frames is the number of frames.
func (u *Umem) Frames() uint32 { return u.frames }

// Headroom is the configured headroom (not counting KernelHeadroom).
func (u *Umem) Headroom() uint32 { return u.headroom }

// DataOffset is where, relative to its frame's base, the kernel puts a
// received packet: Headroom()+KernelHeadroom. It is also a good place to
// build a packet in a frame taken with Alloc, leaving the same room in front.
func (u *Umem) DataOffset() uint32 { return u.headroom + KernelHeadroom }

// MaxPacket is the largest packet the kernel can receive into a frame.
func (u *Umem) MaxPacket() uint32 { return u.frameSize - u.DataOffset() }

// Size is the size of the whole area in bytes.
func (u *Umem) Size() uint64 { return uint64(len(u.area)) }

// Base is the base address of the frame that contains addr (aligned mode:
// frames start at multiples of the frame size).
func (u *Umem) Base(addr uint64) uint64 { return addr &^ uint64(u.frameSize-1) }

// Room is the number of bytes in front of addr inside its frame: what
// Prepend can use.
func (u *Umem) Room(addr uint64) uint32 { return uint32(addr & uint64(u.frameSize-1)) }

// Frame returns n bytes at addr. The slice's capacity ends at the end of the
// frame, and it panics if addr+n crosses it: a descriptor can never span two
// frames in aligned mode.
func (u *Umem) Frame(addr uint64, n uint32) []byte {
	end := u.Base(addr) + uint64(u.frameSize)
	return u.area[addr : addr+uint64(n) : end]
}

// Area is the whole mapped area: frame f spans
// Area()[f*FrameSize() : (f+1)*FrameSize()], and an address is an offset into
// it. A batch loop slices frames out of it directly, with one bounds check per
// frame, rather than call Frame for each (its checks and the reloads of the
// Umem's fields around every store to the batch cost more than the
// slicing). Mind the frame boundaries, as Frame does.
func (u *Umem) Area() []byte { return u.area }

// Prepend grows the packet of length n at addr by hdr bytes towards the front
// of its frame, for outer headers. It returns the new address (addr-hdr),
// which is what goes into the TX descriptor, and the slice of hdr+n bytes
// starting there; the caller writes the outer headers into its first hdr
// bytes. ok is false, and nothing changes, if the frame has less than hdr
// bytes of room in front of addr.
func (u *Umem) Prepend(addr uint64, n, hdr uint32) (newAddr uint64, pkt []byte, ok bool) {
	if u.Room(addr) < hdr {
		return addr, nil, false
	}
	newAddr = addr - uint64(hdr)
	return newAddr, u.Frame(newAddr, hdr+n), true
}

// Available is the number of frames on the free stack.
func (u *Umem) Available() int { return u.nfree }

// Alloc pops up to len(dst) free frames into dst and returns how many. The
// addresses are frame bases. The frames are in hand until they are submitted
// to a ring or given back with Free.
func (u *Umem) Alloc(dst []uint64) int {
	n := min(len(dst), u.nfree)
	// Locals let the compiler keep them in registers across the stores.
	stack, isFree, shift, top := u.stack, u.isFree, u.shift, u.nfree
	for i := range dst[:n] {
		a := stack[top-1-i]
		dst[i] = a
		f := a >> shift
		isFree[f>>6] &^= 1 << (f & 63)
	}
	u.nfree = top - n
	u.inHand += n
	return n
}

// AllocOne pops one free frame.
func (u *Umem) AllocOne() (addr uint64, ok bool) {
	if u.nfree == 0 {
		return 0, false
	}
	u.nfree--
	a := u.stack[u.nfree]
	f := a >> u.shift
	u.isFree[f>>6] &^= 1 << (f & 63)
	u.inHand++
	return a, true
}

// Free gives frames in hand back to the free stack. Any address inside a
// frame is accepted (a completion returns whatever address was transmitted,
// which may point into the headroom) and masked to the frame base. It panics
// on an address outside the area or a frame that is already free: both are
// bugs that would otherwise hand one frame to two packets.
func (u *Umem) Free(addrs []uint64) {
	stack, isFree, shift, frames, n := u.stack, u.isFree, u.shift, uint64(u.frames), u.nfree
	for i, a := range addrs {
		f := a >> shift
		if f >= frames {
			u.freeFailed(addrs[:i], n, a)
		}
		w, bit := f>>6, uint64(1)<<(f&63)
		if isFree[w]&bit != 0 {
			u.freeFailed(addrs[:i], n, a)
		}
		isFree[w] |= bit
		stack[n] = f << shift
		n++
	}
	u.nfree = n
	u.inHand -= len(addrs)
}

// FreeOne gives one frame back; see Free.
func (u *Umem) FreeOne(addr uint64) {
	u.Free([]uint64{addr})
}

// freeFailed records the frames of a batch freed before the bad address and
// panics about it.
func (u *Umem) freeFailed(done []uint64, nfree int, addr uint64) {
	u.nfree = nfree
	u.inHand -= len(done)
	if addr>>u.shift >= uint64(u.frames) {
		panic(fmt.Sprintf("umem: free of address %#x outside the area of %d frames", addr, u.frames))
	}
	panic(fmt.Sprintf("umem: double free of frame %#x (address %#x)", u.Base(addr), addr))
}

// The ledger methods below are called by package ring when frames cross
// between user space and the kernel; a worker never calls them itself.

// FillSubmitted records n frames in hand published to the fill ring.
func (u *Umem) FillSubmitted(n uint32) { u.fillSubmitted += uint64(n); u.inHand -= int(n) }

// RXReaped records n frames taken off the RX ring into user space's hands.
func (u *Umem) RXReaped(n uint32) { u.rxReaped += uint64(n); u.inHand += int(n) }

// TXSubmitted records n frames in hand published to the TX ring.
func (u *Umem) TXSubmitted(n uint32) { u.txSubmitted += uint64(n); u.inHand -= int(n) }

// CompletionReaped records n frames taken off the completion ring.
func (u *Umem) CompletionReaped(n uint32) { u.completionReaped += uint64(n); u.inHand += int(n) }

// Accounting says where the frames are. Every frame is in exactly one place:
// Free + KernelRX + KernelTX + InHand == Total.
type Accounting struct {
	Total  int
	Free   int // on the free stack
	InHand int // taken by user space (Alloc, RX, completion), not yet freed or submitted
	// KernelRX counts frames submitted to the fill ring and not yet reaped
	// from the RX ring: in the fill ring, in the driver, or in the RX ring.
	KernelRX int
	// KernelTX counts frames submitted to the TX ring and not yet reaped
	// from the completion ring: in the TX ring, on the wire, or in the
	// completion ring. A TX descriptor the kernel rejects as invalid
	// (ring's Stats.TXInvalidDescs) completes on recent kernels (6.18);
	// a kernel that drops it silently leaves its frame counted here until
	// the socket is closed.
	KernelTX int
}

// InKernel is the number of frames the kernel owns.
func (a Accounting) InKernel() int { return a.KernelRX + a.KernelTX }

func (a Accounting) String() string {
	return fmt.Sprintf("total %d = free %d + in hand %d + kernel rx %d + kernel tx %d",
		a.Total, a.Free, a.InHand, a.KernelRX, a.KernelTX)
}

// Accounting returns the ledger. Call it from the owning goroutine.
func (u *Umem) Accounting() Accounting {
	return Accounting{
		Total:    int(u.frames),
		Free:     u.nfree,
		InHand:   u.inHand,
		KernelRX: int(int64(u.fillSubmitted - u.rxReaped)),
		KernelTX: int(int64(u.txSubmitted - u.completionReaped)),
	}
}

// Check verifies the ledger: no count is negative or larger than the area,
// they add up to the number of frames, and the free stack holds distinct,
// aligned frames that match the free bitmap. Call it from the owning
// goroutine; it is O(frames) and does not allocate on success.
func (u *Umem) Check() error {
	a := u.Accounting()
	total := int(u.frames)
	for _, c := range [...]struct {
		name string
		n    int
	}{{"free", a.Free}, {"in hand", a.InHand}, {"kernel rx", a.KernelRX}, {"kernel tx", a.KernelTX}} {
		if c.n < 0 || c.n > total {
			return fmt.Errorf("umem: %s count %d outside [0, %d]: %v", c.name, c.n, total, a)
		}
	}
	if a.Free+a.InHand+a.KernelRX+a.KernelTX != total {
		return fmt.Errorf("umem: frames do not add up: %v", a)
	}
	marked := 0
	for _, w := range u.isFree {
		marked += bits.OnesCount64(w)
	}
	if marked != u.nfree {
		return fmt.Errorf("umem: free bitmap has %d frames, free stack %d", marked, u.nfree)
	}
	mask := uint64(u.frameSize - 1)
	for _, addr := range u.stack[:u.nfree] {
		f := addr >> u.shift
		if addr&mask != 0 || f >= uint64(u.frames) || u.isFree[f>>6]&(1<<(f&63)) == 0 {
			return fmt.Errorf("umem: free stack holds %#x, not a free frame base", addr)
		}
	}
	// Every stack entry is marked and there are as many marks as entries,
	// so the entries are distinct.
	return nil
}
