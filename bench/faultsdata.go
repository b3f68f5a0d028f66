package bench

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"regexp"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/promotion-service/promo/bench/gen"
	"github.com/promotion-service/promo/promotion"
)

// faultData is the dataset of a fault run: every version holds the same
// ids, and the row of an id in a version is a function of the id and the
// version's generation (the how-many-th file the run wrote). An answer is
// checked by recomputing its row, so no version's rows are kept.
type faultData struct {
	ids  []promotion.ID
	text []string // ids as the load asks for them
}

func newFaultData(rows int64, seed uint64) *faultData {
	rng := rand.New(rand.NewPCG(seed, seed^0x5bd1e995))
	d := &faultData{ids: make([]promotion.ID, rows), text: make([]string, rows)}
	for i := range d.ids {
		id := &d.ids[i]
		binary.BigEndian.PutUint64(id[:8], rng.Uint64())
		binary.BigEndian.PutUint64(id[8:], rng.Uint64())
		id[6] = id[6]&0x0f | 0x40
		id[8] = id[8]&0x3f | 0x80
		d.text[i] = id.String()
	}
	return d
}

// faultRecord returns the row of id in generation g.
func faultRecord(id promotion.ID, g int) promotion.Record {
	h := promotion.Mix64(binary.BigEndian.Uint64(id[:8]) ^ promotion.Mix64(binary.BigEndian.Uint64(id[8:])+uint64(g)*0x9e3779b97f4a7c15))
	return promotion.Record{
		ID:          id,
		PriceMicros: int64(h % 100_000_000),
		// Between 2018-01-01 and 2021-01-01.
		Expires: 1514764800 + int64(promotion.Mix64(h)%(3*365*86400)),
	}
}

// expectedBody appends the body a lookup of id in generation g must
// answer to dst.
func expectedBody(dst []byte, id promotion.ID, g int) []byte {
	r := faultRecord(id, g)
	return promotion.AppendJSON(dst, &r)
}

// genFile is the name of the file of generation g; the ingest service
// records it as the source of the version, which is how an answer's
// version is tied back to its generation.
func genFile(g int) string { return fmt.Sprintf("faults-gen-%d.csv", g) }

var genSource = regexp.MustCompile(`faults-gen-(\d+)\.csv$`)

// generationOf returns the generation of a version's source, or -1.
func generationOf(source string) int {
	m := genSource.FindStringSubmatch(source)
	if m == nil {
		return -1
	}
	g, err := strconv.Atoi(m[1])
	if err != nil {
		return -1
	}
	return g
}

// write writes generation g as a CSV file at path.
func (d *faultData) write(path string, g int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var line []byte
	for _, id := range d.ids {
		r := faultRecord(id, g)
		line = gen.AppendRow(line[:0], &r, gen.FormatGo)
		if _, err := w.Write(line); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// pacedReader reads r at rate bytes per second, so that an upload keeps
// the import's COPY streams open for as long as a drill needs.
type pacedReader struct {
	r     io.Reader
	rate  float64
	start time.Time
	n     atomic.Int64 // bytes read so far
	// fast, once set, reads without pacing: the fault is over and the
	// rest of the file goes as fast as the server takes it.
	fast atomic.Bool
}

func (p *pacedReader) Read(b []byte) (int, error) {
	if p.start.IsZero() {
		p.start = time.Now()
	}
	if len(b) > 16<<10 {
		b = b[:16<<10]
	}
	due := p.start.Add(time.Duration(float64(p.n.Load()) / p.rate * float64(time.Second)))
	for d := time.Until(due); d > 0 && !p.fast.Load(); d = time.Until(due) {
		time.Sleep(min(d, 50*time.Millisecond))
	}
	n, err := p.r.Read(b)
	p.n.Add(int64(n))
	return n, err
}
