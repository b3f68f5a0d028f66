package bench

import (
	"bufio"
	"bytes"
	"errors"
	"io"

	"github.com/promotion-service/promo/ingest/csv"
)

// BareParse is the parse baseline: one goroutine reads r line by line and
// parses the id, price and date of each row with the product's own row
// parser, and does nothing else. An import is compared with it to show
// what sorting, writing and ingesting cost on top of reading the file.
func BareParse(r io.Reader) (rows int64, err error) {
	br := bufio.NewReaderSize(r, 1<<20)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			line = bytes.TrimSuffix(line, []byte{'\n'})
			if _, perr := csv.ParseRow(line); perr == nil {
				rows++
			}
		}
		switch {
		case errors.Is(err, io.EOF):
			return rows, nil
		case errors.Is(err, bufio.ErrBufferFull):
			return rows, errors.New("bench: line longer than 1 MiB")
		case err != nil:
			return rows, err
		}
	}
}
