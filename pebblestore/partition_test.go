package pebblestore

import (
	"bytes"
	"math/rand/v2"
	"os"
	"slices"
	"testing"

	"github.com/promotion-service/promo/promotion"
)

// TestSpillReadsBack: rows spilled in runs of every size come back from
// each bucket whole and in the order they were added, whether a bucket's
// rows start mid-unit, span several reads or end one (spill files are read
// in aligned units, spillRead at a time).
func TestSpillReadsBack(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	p := &partition{pool: &blockPool{max: 64}, dir: t.TempDir()}
	defer p.release()
	var want [buckets][]promotion.Row
	add := func(n int, firstBytes int) {
		t.Helper()
		for range n {
			var r promotion.Row
			for i := range r.ID {
				r.ID[i] = byte(rng.Uint32())
			}
			r.ID[0] = byte(rng.IntN(firstBytes))
			r.PriceMicros = rng.Int64N(1e9)
			r.Expires = rng.Int64N(1 << 40)
			r.Seq = rng.Uint64()
			if err := p.add(&r); err != nil {
				t.Fatal(err)
			}
			want[r.ID[0]] = append(want[r.ID[0]], r)
		}
	}
	add(1, buckets)
	if err := p.spillAll(); err != nil { // a run of one row
		t.Fatal(err)
	}
	add(3*spillRead/promotion.RowLen, 3) // buckets 0-2: several reads each, in a few runs (64-block pool)
	add(5000, buckets)
	if err := p.spillAll(); err != nil {
		t.Fatal(err)
	}
	if len(p.runs) < 3 {
		t.Fatalf("%d runs, want several", len(p.runs))
	}
	buf := alignedBuf(spillRead)
	for k := range buckets {
		var s source
		s.addPartition(p, k)
		if len(s.blocks) != 0 {
			t.Fatalf("bucket %d: %d blocks left in memory after spillAll", k, len(s.blocks))
		}
		var got []promotion.Row
		if err := s.each(buf, func(r *promotion.Row) error {
			got = append(got, *r)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want[k]) || int64(len(got)) != s.n {
			t.Fatalf("bucket %d: read %d rows (source says %d), want %d", k, len(got), s.n, len(want[k]))
		}
		for i := range got {
			if got[i] != want[k][i] {
				t.Fatalf("bucket %d row %d: %+v, want %+v", k, i, got[i], want[k][i])
			}
		}
	}
}

// TestSpillWriteFallsBackToBuffered: a write that O_DIRECT refuses (here an
// unaligned buffer and length) is retried buffered and lands whole.
func TestSpillWriteFallsBackToBuffered(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "spill-*.run")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	directIO(f)
	data := make([]byte, 1001)
	for i := range data {
		data[i] = byte(i)
	}
	s := &spiller{f: f}
	if err := s.write(data[1:]); err != nil {
		t.Fatal(err)
	}
	if err := s.write(data[1:]); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if want := append(slices.Clone(data[1:]), data[1:]...); !bytes.Equal(got, want) {
		t.Fatalf("file holds %d bytes, want the %d written", len(got), len(want))
	}
}
