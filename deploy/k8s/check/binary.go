package check

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Command is what one promo subcommand accepts and serves.
type Command struct {
	// Flags maps each flag's name to whether it takes a value (false for
	// a boolean flag such as --join).
	Flags map[string]bool
	// Routes are the GET paths the command's server registers.
	Routes map[string]bool
}

// EnvName is the environment variable of a flag, as cmd/promo reads it:
// data-dir is PROMO_DATA_DIR.
func EnvName(flag string) string {
	return "PROMO_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// helpFlag matches a flag line of Go's flag.PrintDefaults: "  -name type"
// for a flag with a value, "  -name" for a boolean one.
var helpFlag = regexp.MustCompile(`(?m)^  -([A-Za-z0-9][A-Za-z0-9_-]*)(?:[ \t]+(\S+))?`)

// HelpFlags runs `bin command -h` and returns the flags it lists.
func HelpFlags(ctx context.Context, bin, command string) (map[string]bool, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, command, "-h")
	cmd.Stdout, cmd.Stderr = &out, &out
	// Environment variables are flag values to promo: none may leak in.
	cmd.Env = []string{}
	err := cmd.Run()
	// -h exits 2 after printing the usage; anything else is a failure.
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 2) {
		return nil, fmt.Errorf("%s %s -h: %w\n%s", bin, command, err, out.String())
	}
	flags := map[string]bool{}
	for _, m := range helpFlag.FindAllStringSubmatch(out.String(), -1) {
		flags[m[1]] = m[2] != ""
	}
	if len(flags) == 0 {
		return nil, fmt.Errorf("%s %s -h listed no flags:\n%s", bin, command, out.String())
	}
	return flags, nil
}

// routeMethods are the httpserver.Router methods that register a route;
// Probe and Read answer GET.
var routeMethods = map[string]bool{"Probe": true, "Read": true}

// Routes returns the GET paths registered, with a literal path, by calls
// to Probe or Read in the non-test Go files of the package directories.
func Routes(dirs ...string) (map[string]bool, error) {
	routes := map[string]bool{}
	fset := token.NewFileSet()
	for _, dir := range dirs {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			return nil, err
		}
		if len(files) == 0 {
			return nil, fmt.Errorf("no Go files in %s", dir)
		}
		for _, name := range files {
			if strings.HasSuffix(name, "_test.go") {
				continue
			}
			src, err := os.ReadFile(name)
			if err != nil {
				return nil, err
			}
			f, err := parser.ParseFile(fset, name, src, parser.SkipObjectResolution)
			if err != nil {
				return nil, fmt.Errorf("cannot parse %s: %w", name, err)
			}
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || len(call.Args) == 0 {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok || !routeMethods[sel.Sel.Name] {
					return true
				}
				lit, ok := call.Args[0].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					return true
				}
				if path, err := strconv.Unquote(lit.Value); err == nil && strings.HasPrefix(path, "/") {
					routes[path] = true
				}
				return true
			})
		}
	}
	return routes, nil
}

// ServerPackages are the packages, relative to the repository root, whose
// routes each promo server command serves.
var ServerPackages = map[string][]string{
	"standalone": {"standalone", "lookup"},
	"ingest":     {"ingestsvc", "ingest"},
	"readnode":   {"readnode", "lookup"},
	"proxy":      {"proxy"},
}

// Commands returns the flags and routes of every server command of the
// promo binary bin, whose source is in repo.
func Commands(ctx context.Context, bin, repo string) (map[string]Command, error) {
	cmds := map[string]Command{}
	for name, pkgs := range ServerPackages {
		flags, err := HelpFlags(ctx, bin, name)
		if err != nil {
			return nil, err
		}
		dirs := make([]string, len(pkgs))
		for i, p := range pkgs {
			dirs[i] = filepath.Join(repo, p)
		}
		routes, err := Routes(dirs...)
		if err != nil {
			return nil, err
		}
		cmds[name] = Command{Flags: flags, Routes: routes}
	}
	return cmds, nil
}
