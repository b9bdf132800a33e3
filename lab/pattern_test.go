package lab

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// slowPattern is the definition of the pattern, byte by byte.
func slowPattern(seed uint64, off, n int64) []byte {
	b := make([]byte, n)
	for i := range b {
		pos := off + int64(i)
		b[i] = byte(patternWord(seed, pos/8) >> (8 * (pos % 8)))
	}
	return b
}

func TestFillPatternMatchesDefinition(t *testing.T) {
	for _, seed := range []uint64{0, 1, 1 << 63} {
		for off := int64(0); off < 20; off++ {
			for n := int64(0); n < 30; n++ {
				got := make([]byte, n)
				FillPattern(got, seed, off)
				if want := slowPattern(seed, off, n); !bytes.Equal(got, want) {
					t.Fatalf("seed %d off %d n %d: got %x, want %x", seed, off, n, got, want)
				}
			}
		}
	}
	a, b := make([]byte, 64), make([]byte, 64)
	FillPattern(a, 1, 0)
	FillPattern(b, 2, 0)
	if bytes.Equal(a, b) {
		t.Error("seeds 1 and 2 give the same bytes")
	}
}

func TestPatternRoundTrip(t *testing.T) {
	const n = 1<<20 + 5
	// OneByteReader and HalfReader make the reader serve odd offsets.
	for name, r := range map[string]io.Reader{
		"whole":    NewPattern(42, n),
		"one byte": iotest.OneByteReader(io.LimitReader(NewPattern(42, n), 5000)),
		"halves":   iotest.HalfReader(NewPattern(42, n)),
	} {
		want := int64(n)
		if name == "one byte" {
			want = 5000
		}
		if got, err := CheckPattern(r, 42, want); err != nil || got != want {
			t.Errorf("%s: CheckPattern = %d, %v; want %d, nil", name, got, err, want)
		}
	}
}

func TestCheckPatternFindsDifferences(t *testing.T) {
	good := slowPattern(5, 0, 100000)

	bad := bytes.Clone(good)
	bad[77777] ^= 1
	if _, err := CheckPattern(bytes.NewReader(bad), 5, -1); err == nil || !strings.Contains(err.Error(), "byte 77777 ") {
		t.Errorf("flipped bit: %v, want a difference at byte 77777", err)
	}
	if _, err := CheckPattern(bytes.NewReader(good[:99999]), 5, 100000); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short stream: %v, want ErrUnexpectedEOF", err)
	}
	if _, err := CheckPattern(bytes.NewReader(good), 5, 99999); err == nil {
		t.Error("long stream accepted")
	}
	if _, err := CheckPattern(bytes.NewReader(good), 6, -1); err == nil {
		t.Error("wrong seed accepted")
	}
	wantErr := errors.New("reset")
	if _, err := CheckPattern(iotest.ErrReader(wantErr), 5, -1); !errors.Is(err, wantErr) {
		t.Errorf("read error: %v, want it wrapped", err)
	}
	if got, err := CheckPattern(bytes.NewReader(good), 5, -1); err != nil || got != 100000 {
		t.Errorf("any length: %d, %v", got, err)
	}
}

func BenchmarkPattern(b *testing.B) {
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	for i := 0; b.Loop(); i++ {
		FillPattern(buf, 1, int64(i)*int64(len(buf)))
	}
}
