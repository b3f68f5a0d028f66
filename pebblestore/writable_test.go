package pebblestore

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestFileWritable writes a table in pieces that straddle its chunks and
// checks the file, that a finished writer refuses more (rather than spin
// on a released buffer), and that Abort removes the file.
func TestFileWritable(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "t.sst")
	w, err := newFileWritable(path)
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	piece := make([]byte, 700_001)
	for i := range 8 { // 5.6 MB: two full chunks and a tail
		for j := range piece {
			piece[j] = byte(i*31 + j)
		}
		want.Write(piece)
		if err := w.Write(piece); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Finish(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("file of %d bytes differs from the %d written", len(got), want.Len())
	}
	if err := w.Write([]byte("late")); err == nil {
		t.Fatal("Write after Finish succeeded")
	}

	aborted := filepath.Join(dir, "a.sst")
	a, err := newFileWritable(aborted)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Write(piece); err != nil {
		t.Fatal(err)
	}
	a.Abort()
	if _, err := os.Stat(aborted); !os.IsNotExist(err) {
		t.Fatalf("aborted table still there: %v", err)
	}
}
