package doccheck

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Lines returns the lines of text, each trimmed, blank ones dropped: the
// form in which a Go block is compared with the source it comes from.
func Lines(text string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// Contains reports whether needle occurs in hay as consecutive lines.
func Contains(hay, needle []string) bool {
	if len(needle) == 0 {
		return true
	}
	for i := 0; i+len(needle) <= len(hay); i++ {
		if hay[i] != needle[0] {
			continue
		}
		match := true
		for j := 1; j < len(needle); j++ {
			if hay[i+j] != needle[j] {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}

// GoSources returns, by path relative to root, the Lines of every file a
// Go block may be taken from: the repository's _test.go files and the Go
// files under examples/. Directories named testdata, vendor or starting
// with "." are skipped.
func GoSources(root string) (map[string][]string, error) {
	out := map[string][]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			name := d.Name()
			if rel != "." && (strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || !(strings.HasSuffix(rel, "_test.go") || strings.HasPrefix(rel, "examples/")) {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		out[rel] = Lines(string(src))
		return nil
	})
	return out, err
}

// GoTestArgs is what a "go test" command asks for.
type GoTestArgs struct {
	Packages         []string // "./…" patterns, in order
	Run, Bench, Fuzz string   // the patterns of -run, -bench and -fuzz ("" when not given)
}

// goTestValueFlags are go test's and the test binary's flags that take a
// value, when it is given as the next word.
var goTestValueFlags = map[string]bool{
	"run": true, "bench": true, "benchtime": true, "count": true, "cpu": true, "fuzz": true, "fuzztime": true,
	"fuzzminimizetime": true, "timeout": true, "tags": true, "p": true, "parallel": true, "coverprofile": true,
	"cpuprofile": true, "memprofile": true, "blockprofile": true, "mutexprofile": true, "o": true, "exec": true,
	"skip": true, "list": true, "covermode": true, "coverpkg": true, "outputdir": true, "shuffle": true, "vet": true,
}

// ParseGoTest reads the words of a "go test" command (from "go").
func ParseGoTest(args []string) (GoTestArgs, error) {
	var g GoTestArgs
	if len(args) < 2 || args[0] != "go" || args[1] != "test" {
		return g, fmt.Errorf("not a go test command")
	}
	for i := 2; i < len(args); i++ {
		a := args[i]
		if isOperator(a) {
			break
		}
		if !strings.HasPrefix(a, "-") {
			g.Packages = append(g.Packages, a)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !hasValue && goTestValueFlags[name] {
			if i+1 >= len(args) {
				return g, fmt.Errorf("flag -%s needs a value", name)
			}
			i++
			value = args[i]
		}
		switch name {
		case "run":
			g.Run = value
		case "bench":
			g.Bench = value
		case "fuzz":
			g.Fuzz = value
		}
	}
	if len(g.Packages) == 0 {
		return g, fmt.Errorf("no package named (go test in the current directory is not what the documentation means)")
	}
	return g, nil
}
