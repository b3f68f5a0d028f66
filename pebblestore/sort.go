package pebblestore

import (
	"encoding/binary"

	"github.com/promotion-service/promo/promotion"
)

// This file sorts the rows of one bucket in memory.

// radixSort sorts a, whose rows share their first depth bytes, by ID then
// seq, using b (as long as a) as scratch. It distributes the rows by the
// byte at depth, recursively; the IDs are random, so parts shrink 256-fold
// per level and small ones are insertion-sorted.
func radixSort(a, b []promotion.Row, depth int) {
	if depth > 15 {
		// Every row has the same ID. Only the order of the last one
		// matters (it wins), so move it to the end in one pass rather
		// than sort: many copies of one ID would be quadratic.
		last := 0
		for i := range a {
			if a[i].Seq > a[last].Seq {
				last = i
			}
		}
		a[last], a[len(a)-1] = a[len(a)-1], a[last]
		return
	}
	if len(a) <= 48 {
		insertionSort(a)
		return
	}
	var count [buckets + 1]int
	for i := range a {
		count[int(a[i].ID[depth])+1]++
	}
	for k := 1; k <= buckets; k++ {
		count[k] += count[k-1]
	}
	pos := count
	for i := range a {
		k := int(a[i].ID[depth])
		b[pos[k]] = a[i]
		pos[k]++
	}
	copy(a, b)
	for k := range buckets {
		if lo, hi := count[k], count[k+1]; hi-lo > 1 {
			radixSort(a[lo:hi], b[lo:hi], depth+1)
		}
	}
}

func insertionSort(a []promotion.Row) {
	for i := 1; i < len(a); i++ {
		x := a[i]
		j := i
		for ; j > 0 && less(&x, &a[j-1]); j-- {
			a[j] = a[j-1]
		}
		a[j] = x
	}
}

// less orders rows by ID, then by Seq. The IDs are compared as two
// big-endian words: two integer compares rather than a byte loop.
func less(x, y *promotion.Row) bool {
	if xh, yh := binary.BigEndian.Uint64(x.ID[:8]), binary.BigEndian.Uint64(y.ID[:8]); xh != yh {
		return xh < yh
	}
	if xl, yl := binary.BigEndian.Uint64(x.ID[8:]), binary.BigEndian.Uint64(y.ID[8:]); xl != yl {
		return xl < yl
	}
	return x.Seq < y.Seq
}

// wideMin is the fewest rows sortRows distributes by two bytes at once:
// below it the 65,536 counters cost more than a second pass.
const wideMin = 16 << 10

// sortRows sorts a, whose rows share their first depth bytes, by ID then
// seq, with b (as long as a) as scratch, and returns the sorted rows: a or
// b. count is scratch for wideSort, 1<<16 + 1 long.
func sortRows(a, b []promotion.Row, depth int, count []int32) []promotion.Row {
	if len(a) < wideMin || depth > 14 {
		radixSort(a, b, depth)
		return a
	}
	return wideSort(a, b, depth, count)
}

// wideSort distributes a into b by the two bytes at depth in one pass and
// sorts each part in place; it returns b. For a bucket of random IDs the
// parts hold a row or two, so one pass replaces radixSort's two passes and
// its copies back.
func wideSort(a, b []promotion.Row, depth int, count []int32) []promotion.Row {
	clear(count)
	for i := range a {
		count[int(binary.BigEndian.Uint16(a[i].ID[depth:]))+1]++
	}
	for k := 1; k < len(count); k++ {
		count[k] += count[k-1]
	}
	for i := range a {
		k := int(binary.BigEndian.Uint16(a[i].ID[depth:]))
		b[count[k]] = a[i]
		count[k]++
	}
	// count[k] is now where part k ends.
	lo := 0
	for k := range 1 << 16 {
		hi := int(count[k])
		switch n := hi - lo; {
		case n <= 1:
		case n <= 48:
			insertionSort(b[lo:hi])
		default:
			radixSort(b[lo:hi], a[lo:hi], depth+2)
		}
		lo = hi
	}
	return b
}
