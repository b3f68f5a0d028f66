package pgstore

import (
	"encoding/binary"
	"testing"

	"github.com/promotion-service/promo/promotion"
)

var bloomSink uint64

// BenchmarkBloom measures testAndSet of distinct ids in a filter of the
// default size, which is far larger than the CPU caches, one id at a time
// and, as Batch.Add does, in groups of pendRows whose words are loaded
// first.
func BenchmarkBloom(b *testing.B) {
	f := newBloom(DefaultConfig("x").FilterBytes)
	var ids [pendRows]promotion.ID
	n := uint64(0)
	next := func() {
		for k := range ids {
			binary.BigEndian.PutUint64(ids[k][:8], promotion.Mix64(n))
			binary.BigEndian.PutUint64(ids[k][8:], n)
			n++
		}
	}
	b.Run("single", func(b *testing.B) {
		for b.Loop() {
			next()
			for k := range ids {
				f.testAndSet(ids[k])
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*pendRows), "ns/id")
	})
	b.Run("grouped", func(b *testing.B) {
		for b.Loop() {
			next()
			for k := range ids {
				bloomSink += f.load(ids[k])
			}
			for k := range ids {
				f.testAndSet(ids[k])
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*pendRows), "ns/id")
	})
}

// BenchmarkBloomSmall is BenchmarkBloom's grouped case in a filter of the
// size one table of a version gets (the default size over 16 tables).
func BenchmarkBloomSmall(b *testing.B) {
	f := newBloom(DefaultConfig("x").FilterBytes / 16)
	var ids [pendRows]promotion.ID
	n := uint64(0)
	for b.Loop() {
		for k := range ids {
			binary.BigEndian.PutUint64(ids[k][:8], promotion.Mix64(n))
			binary.BigEndian.PutUint64(ids[k][8:], n)
			n++
		}
		for k := range ids {
			bloomSink += f.load(ids[k])
		}
		for k := range ids {
			f.testAndSet(ids[k])
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*pendRows), "ns/id")
}
