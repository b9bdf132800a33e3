package lab

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The pattern is the stream the backends' /bytes serve and /upload expect:
// a pseudo-random byte stream fixed by a seed, so both ends of a large
// transfer can produce and check it without sending a checksum along. Byte
// i is byte i%8 (little-endian) of mix(seed + (i/8+1)*golden), a SplitMix64
// step, so any offset can be produced without the bytes before it.

const golden = 0x9e3779b97f4a7c15

func patternWord(seed uint64, k int64) uint64 {
	z := seed + uint64(k+1)*golden
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// FillPattern writes the pattern of seed starting at byte offset off into b.
func FillPattern(b []byte, seed uint64, off int64) {
	k, skip := off/8, int(off%8)
	if skip != 0 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], patternWord(seed, k))
		b = b[copy(b, w[skip:]):]
		k++
	}
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, patternWord(seed, k))
		b = b[8:]
		k++
	}
	if len(b) > 0 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], patternWord(seed, k))
		copy(b, w[:])
	}
}

// NewPattern returns a reader of the first n bytes of the pattern of seed.
func NewPattern(seed uint64, n int64) io.Reader {
	return &patternReader{seed: seed, n: n}
}

type patternReader struct {
	seed   uint64
	off, n int64
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	if rem := p.n - p.off; int64(len(b)) > rem {
		b = b[:rem]
	}
	FillPattern(b, p.seed, p.off)
	p.off += int64(len(b))
	return len(b), nil
}

// CheckPattern reads r to the end and checks that it is the pattern of seed,
// exactly n bytes long (any length if n < 0). It returns the number of
// bytes read, and for a difference the offset of the first wrong byte,
// which tells a corrupted frame from a truncated transfer.
func CheckPattern(r io.Reader, seed uint64, n int64) (int64, error) {
	got := make([]byte, 64<<10)
	want := make([]byte, len(got))
	var off int64
	for {
		m, err := r.Read(got)
		if m > 0 {
			if n >= 0 && off+int64(m) > n {
				return off + int64(m), fmt.Errorf("pattern: more than the %d bytes expected", n)
			}
			FillPattern(want[:m], seed, off)
			if !bytes.Equal(got[:m], want[:m]) {
				i := 0
				for got[i] == want[i] {
					i++
				}
				return off + int64(m), fmt.Errorf("pattern: byte %d is %#02x, want %#02x", off+int64(i), got[i], want[i])
			}
			off += int64(m)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return off, fmt.Errorf("pattern: after %d bytes: %w", off, err)
		}
	}
	if n >= 0 && off != n {
		return off, fmt.Errorf("pattern: got %d of %d bytes: %w", off, n, io.ErrUnexpectedEOF)
	}
	return off, nil
}
