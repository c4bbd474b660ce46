// Command testreport reads `go test -json` on its standard input and
// reports the run for CI: each package's result as it ends, the output of
// every failed test, and at the end every skipped test with its reason.
// It exits 1 if a test failed, or if a test skipped for a reason that
// none of the regular expressions in the file named by its argument (one
// per line; # starts a comment) matches: in CI a test skips only for a
// documented reason, never for a missing service.
//
//	GOFLAGS=-json go test ./... | go run ./internal/testenv/testreport .ci/allowed-skips
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

type key struct{ pkg, test string }

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go test -json ./... | testreport ALLOWED-SKIPS-FILE")
		os.Exit(2)
	}
	allowed, err := readPatterns(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(2)
	}
	ok, err := report(os.Stdin, os.Stdout, allowed)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

func readPatterns(name string) ([]*regexp.Regexp, error) {
	raw, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	var out []*regexp.Regexp
	for i, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		re, err := regexp.Compile(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, i+1, err)
		}
		out = append(out, re)
	}
	return out, nil
}

type skip struct {
	name, reason string
	allowed      bool
}

// report reads the events and writes the report; it returns whether the
// run passed: no test or package failed and every skip was allowed.
func report(r io.Reader, w io.Writer, allowed []*regexp.Regexp) (bool, error) {
	output := map[key][]string{}
	var skips []skip
	failed, tests, passed := 0, 0, true
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil || e.Action == "" {
			fmt.Fprintf(w, "%s\n", line) // build errors and the like come as text
			if len(line) > 0 {
				passed = false
			}
			continue
		}
		k := key{e.Package, e.Test}
		switch e.Action {
		case "output":
			if e.Test == "" && (strings.HasPrefix(e.Output, "ok ") || strings.HasPrefix(e.Output, "FAIL\t") || strings.HasPrefix(e.Output, "?")) {
				fmt.Fprint(w, e.Output) // the package's summary line
				continue
			}
			output[k] = append(output[k], e.Output)
		case "pass":
			if e.Test != "" {
				tests++
			}
			delete(output, k)
		case "skip":
			if e.Test != "" {
				tests++
				reason := skipReason(output[k])
				s := skip{name: shortPkg(e.Package) + " " + e.Test, reason: reason}
				for _, re := range allowed {
					s.allowed = s.allowed || re.MatchString(reason)
				}
				passed = passed && s.allowed
				skips = append(skips, s)
			}
			delete(output, k)
		case "fail":
			passed = false
			if e.Test != "" {
				tests++
				failed++
				fmt.Fprintf(w, "--- FAIL: %s %s\n%s", shortPkg(e.Package), e.Test, strings.Join(output[k], ""))
			} else if out := output[k]; len(out) > 0 {
				fmt.Fprint(w, strings.Join(out, "")) // a package that failed outside its tests
			}
			delete(output, k)
		}
	}
	if err := sc.Err(); err != nil {
		return false, err
	}
	sort.Slice(skips, func(i, j int) bool { return skips[i].name < skips[j].name })
	fmt.Fprintf(w, "\n%d tests, %d failed, %d skipped:\n", tests, failed, len(skips))
	for _, s := range skips {
		mark := "  allowed "
		if !s.allowed {
			mark = "  NOT ALLOWED "
		}
		fmt.Fprintf(w, "%s%s: %s\n", mark, s.name, s.reason)
	}
	for _, s := range skips {
		if !s.allowed {
			fmt.Fprintf(w, "FAIL: %s skipped for a reason .ci/allowed-skips does not list; in CI a test runs or fails\n", s.name)
		}
	}
	return passed, nil
}

// skipReason is what a skipped test printed, without go test's own lines.
func skipReason(lines []string) string {
	var out []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- SKIP") {
			continue
		}
		out = append(out, t)
	}
	return strings.Join(out, " ")
}

func shortPkg(p string) string {
	return strings.TrimPrefix(strings.TrimPrefix(p, "github.com/chatbatch/chatbatch"), "/")
}
