package ring

import "testing"

// moveTo and span, against slot-by-slot copies, for every wrap position of
// both rings (different sizes) and every count.
func TestMoveToWraps(t *testing.T) {
	var words [6]uint32
	src := newConsumer(make([]uint64, 8), shared{&words[0], &words[1], &words[2]})
	dst := newProducer(make([]uint64, 16), shared{&words[3], &words[4], &words[5]})
	for i := range src.slots {
		src.slots[i] = uint64(100 + i)
	}
	for sidx := uint32(0); sidx < 20; sidx++ {
		// Indices near the uint32 wrap as well as small ones.
		sidx := sidx - 4
		for didx := uint32(0); didx < 36; didx++ {
			didx := didx - 10
			for n := uint32(0); n <= src.size; n++ {
				clear(dst.slots)
				src.moveTo(&dst, didx, sidx, n)
				for i := range dst.size {
					want := uint64(0)
					if off := i - (didx & dst.mask); off&dst.mask < n {
						want = src.get(sidx + off&dst.mask)
					}
					if got := dst.slots[i]; got != want {
						t.Fatalf("src %d, dst %d, n %d: slot %d = %d, want %d", sidx, didx, n, i, got, want)
					}
				}
				a, b := span(src.slots, src.mask, sidx, n)
				if uint32(len(a)+len(b)) != n || (len(b) > 0 && len(a) == 0) {
					t.Fatalf("span(%d, %d): %d + %d slots", sidx, n, len(a), len(b))
				}
				for i, v := range append(append([]uint64(nil), a...), b...) {
					if want := src.get(sidx + uint32(i)); v != want {
						t.Fatalf("span(%d, %d)[%d] = %d, want %d", sidx, n, i, v, want)
					}
				}
			}
		}
	}
}
