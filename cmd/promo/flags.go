package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// newFlagSet returns a flag set for a subcommand that prints its usage to
// stderr.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s\n\nFlags (each also read from PROMO_<NAME>, e.g. --data-dir from PROMO_DATA_DIR):\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// envName is the environment variable of a flag: data-dir -> PROMO_DATA_DIR.
func envName(flagName string) string {
	return "PROMO_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseFlags sets flags from their PROMO_* environment variables, then from
// args, which may mix flags and positional arguments. It returns the
// positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := os.LookupEnv(envName(f.Name)); ok && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("invalid value %q for %s: %w", v, envName(f.Name), err)
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// byteSize is a flag for sizes such as 256MiB, 1GiB, 64KB or 1048576.
type byteSize int64

func (b *byteSize) String() string { return formatBytes(int64(*b)) }

func (b *byteSize) Set(s string) error {
	v, err := parseBytes(s)
	if err != nil {
		return err
	}
	*b = byteSize(v)
	return nil
}

var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40},
	{"b", 1},
}

func parseBytes(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || (mult > 1 && n > (1<<62)/mult) {
		return 0, fmt.Errorf("not a size: %q (want e.g. 256MiB, 1GiB or a number of bytes)", s)
	}
	return n * mult, nil
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<40 && n%(1<<40) == 0:
		return strconv.FormatInt(n>>40, 10) + "TiB"
	case n >= 1<<30 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "GiB"
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "KiB"
	}
	return strconv.FormatInt(n, 10)
}

// newLogger returns the process logger: text to stderr at level.
func newLogger(stderr io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("invalid log level %q (want debug, info, warn or error)", level)
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: l})), nil
}

// fieldWord matches a word that may name a Config field: an identifier
// that starts with an upper-case letter.
var fieldWord = regexp.MustCompile(`\b[A-Z][A-Za-z0-9]*\b`)

// fieldFlags are the flags whose names are not their Config fields' in
// kebab case.
var fieldFlags = map[string]string{
	"MaxUploadBytes": "max-upload-size",
	"IDsFile":        "ids",
}

// withFlags names, after each Config field that err names, the flag of fs
// that sets it and its environment variable. Libraries speak of their
// Config ("PostgresURL is required"), users of the command line:
// "PostgresURL (--postgres-url, PROMO_POSTGRES_URL) is required".
func withFlags(fs *flag.FlagSet, err error) error {
	if err == nil {
		return nil
	}
	seen := map[string]bool{}
	msg := fieldWord.ReplaceAllStringFunc(err.Error(), func(word string) string {
		name := flagOf(word)
		if seen[word] || fs.Lookup(name) == nil {
			return word
		}
		seen[word] = true
		return fmt.Sprintf("%s (--%s, %s)", word, name, envName(name))
	})
	if len(seen) == 0 {
		return err
	}
	return &flagError{msg: msg, err: err}
}

// flagOf returns the flag name of a Config field: KeepVersions is
// keep-versions, PostgresURL postgres-url.
func flagOf(field string) string {
	if name, ok := fieldFlags[field]; ok {
		return name
	}
	var b strings.Builder
	for i := range len(field) {
		// A word starts at an upper-case letter after a lower-case one, or
		// at the last of a run of capitals followed by lower case (URLPath).
		if i > 0 && isUpper(field[i]) && (!isUpper(field[i-1]) || i+1 < len(field) && !isUpper(field[i+1])) {
			b.WriteByte('-')
		}
		b.WriteByte(field[i])
	}
	return strings.ToLower(b.String())
}

func isUpper(c byte) bool { return 'A' <= c && c <= 'Z' }

// flagError is a library error told in the words of the command line.
type flagError struct {
	msg string
	err error
}

func (e *flagError) Error() string { return e.msg }

func (e *flagError) Unwrap() error { return e.err }
