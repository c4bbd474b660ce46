package chatbatch_test

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/chatbatch/chatbatch/internal/doccheck"
)

// TestDocs holds README.md and docs/*.md to one rule: every Go block and
// every shell command either runs in a test or is marked as an excerpt
// (a fenced block right after the line "<!-- excerpt -->").
//
//   - A Go block appears verbatim (line by line, indentation and blank
//     lines aside) in a _test.go file of the repository or a Go file under
//     examples/; the README's in example_test.go, whose Example runs it.
//   - A shell command is one of the classes the tests run or check:
//     curl against the documented server http://127.0.0.1:8080
//     (cmd/chatbatchd's TestDocsCurl runs each), chatbatchd or
//     "go run ./cmd/chatbatchd" lines (cmd/chatbatchd's TestDocsFlags
//     parses their flags; TestDocsProduction runs the production line),
//     "go run ./cmd/chatbatch-bench" lines (cmd/chatbatch-bench's
//     TestDocsFlags), go test commands (checked here: their packages
//     exist, their -run and -bench patterns name functions, and the CI
//     command is .ci/run's), and NAME=value assignments the commands after
//     them use.
//   - Every relative link points to a file that exists, and an anchor to
//     a heading of it.
//
// A failure names file:line of the block or link.
func TestDocs(t *testing.T) {
	blocks, err := doccheck.Load(".")
	if err != nil {
		t.Fatal(err)
	}
	sources, err := doccheck.GoSources(".")
	if err != nil {
		t.Fatal(err)
	}
	ci := ciDefaults(t)
	counts := map[string]int{}
	for _, b := range blocks {
		switch {
		case b.Excerpt:
			counts["excerpt"]++
		case b.IsGo():
			counts["go"]++
			checkGoBlock(t, b, sources)
		case b.IsShell():
			cmds, err := doccheck.Commands(b)
			if err != nil {
				t.Errorf("%v", err)
				continue
			}
			if len(cmds) == 0 {
				t.Errorf("%s: a %s block without a command", b.Pos(), b.Lang)
			}
			for _, c := range cmds {
				counts[c.Class.String()]++
				checkCommand(t, c, ci)
			}
		case b.Lang == "":
			// An unmarked block must not hide commands from the rule.
			if f := strings.Fields(b.Text); len(f) > 0 && slices.Contains([]string{"curl", "go", "chatbatchd", "docker", "git", "npm", "export"}, f[0]) {
				t.Errorf("%s: a block of commands without a language: write ```sh (and make it runnable, or mark it %s)", b.Pos(), doccheck.ExcerptMarker)
			}
		}
	}
	t.Logf("checked: %v", counts)
	if counts["curl"] == 0 || counts["go"] == 0 || counts["chatbatchd"] == 0 || counts["go test"] == 0 {
		t.Errorf("the documentation has too few blocks of some class: %v", counts)
	}
	checkLinks(t)
}

func checkGoBlock(t *testing.T, b doccheck.Block, sources map[string][]string) {
	t.Helper()
	want := doccheck.Lines(b.Text)
	if b.File == "README.md" {
		// The README's Go is the root Example's, which runs.
		if !doccheck.Contains(sources["example_test.go"], want) {
			t.Errorf("%s: the Go block is not in example_test.go verbatim (its Example runs it)", b.Pos())
		}
		return
	}
	for _, lines := range sources {
		if doccheck.Contains(lines, want) {
			return
		}
	}
	t.Errorf("%s: the Go block is in no _test.go file and no Go file under examples/ (verbatim but for indentation and blank lines); put it in a test, or mark it %s", b.Pos(), doccheck.ExcerptMarker)
}

// documentedServer is where every curl of the documentation goes: the
// reference server's default address (the tests substitute their own).
const documentedServer = "http://127.0.0.1:8080"

// curlFilters are the programs a curl's output may be piped into.
var curlFilters = []string{"grep", "head", "tail", "jq", "sed", "wc"}

func checkCommand(t *testing.T, c doccheck.Command, ci map[string]string) {
	t.Helper()
	switch c.Class {
	case doccheck.Unknown:
		t.Errorf("%s: %q is no command a test runs (curl to %s, chatbatchd, go run ./cmd/chatbatchd, go run ./cmd/chatbatch-bench, go test, NAME=value); mark its block %s",
			c.Pos(), firstLine(c.Text), documentedServer, doccheck.ExcerptMarker)
	case doccheck.Curl:
		stages := c.Stages()
		for _, op := range c.Operators() {
			if op != "|" {
				t.Errorf("%s: %q: one command per line (no %q)", c.Pos(), firstLine(c.Text), op)
			}
		}
		for _, s := range stages[1:] {
			if len(s) == 0 || !slices.Contains(curlFilters, s[0]) {
				t.Errorf("%s: curl piped into %q; only %v run in the test", c.Pos(), s, curlFilters)
			}
		}
		urls := 0
		for _, a := range stages[0] {
			if strings.HasPrefix(a, "http://") || strings.HasPrefix(a, "https://") {
				urls++
				if !strings.HasPrefix(a, documentedServer+"/") {
					t.Errorf("%s: curl to %q: the tests run curls against %s only; mark its block %s", c.Pos(), a, documentedServer, doccheck.ExcerptMarker)
				}
			}
		}
		if urls != 1 {
			t.Errorf("%s: a curl with %d URLs; one, on %s", c.Pos(), urls, documentedServer)
		}
	case doccheck.Chatbatchd, doccheck.Bench, doccheck.Assign:
		if ops := c.Operators(); len(ops) > 0 {
			t.Errorf("%s: %q: one command per line (no %v)", c.Pos(), firstLine(c.Text), ops)
		}
	case doccheck.GoTest:
		checkGoTest(t, c, ci)
	}
}

// checkGoTest checks a go test command without running it: its packages
// exist, -run and -bench name functions of them, the variables it sets
// are the ones .ci/run sets, and a -race command is .ci/run's.
func checkGoTest(t *testing.T, c doccheck.Command, ci map[string]string) {
	t.Helper()
	if ops := c.Operators(); len(ops) > 0 {
		t.Errorf("%s: one command per line (no %v)", c.Pos(), ops)
	}
	g, err := doccheck.ParseGoTest(c.Args)
	if err != nil {
		t.Errorf("%s: %v", c.Pos(), err)
		return
	}
	for _, e := range c.Env {
		name, value, _ := strings.Cut(e, "=")
		if want, ok := ci[name]; ok && value != want {
			t.Errorf("%s: %s=%s, but .ci/run sets %s", c.Pos(), name, value, want)
		}
	}
	if slices.Contains(c.Args, "-race") {
		line := strings.Join(c.Args, " ")
		if !strings.Contains(ci[".ci/run"], "\n"+line+"\n") {
			t.Errorf("%s: %q is not the command .ci/run runs", c.Pos(), line)
		}
	}
	var funcs []string
	for _, p := range g.Packages {
		dir := filepath.FromSlash(strings.TrimSuffix(strings.TrimSuffix(p, "..."), "/"))
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			t.Errorf("%s: package %s does not exist", c.Pos(), p)
			continue
		}
		funcs = append(funcs, testFuncs(t, dir, strings.HasSuffix(p, "..."))...)
	}
	for _, m := range []struct{ flag, pattern, prefix string }{
		{"-run", g.Run, "Test"}, {"-bench", g.Bench, "Benchmark"}, {"-fuzz", g.Fuzz, "Fuzz"},
	} {
		if m.pattern == "" || m.pattern == "^$" {
			continue
		}
		top, _, _ := strings.Cut(m.pattern, "/")
		re, err := regexp.Compile(top)
		if err != nil {
			t.Errorf("%s: %s %q: %v", c.Pos(), m.flag, m.pattern, err)
			continue
		}
		found := false
		for _, f := range funcs {
			if (strings.HasPrefix(f, m.prefix) || (m.flag == "-run" && (strings.HasPrefix(f, "Example") || strings.HasPrefix(f, "Fuzz")))) && re.MatchString(f) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("%s: %s %q matches no %s function in %v", c.Pos(), m.flag, m.pattern, m.prefix, g.Packages)
		}
	}
}

var testFunc = regexp.MustCompile(`(?m)^func ((?:Test|Benchmark|Fuzz|Example)\w*)\(`)

// testFuncs returns the test, benchmark, fuzz and example functions of
// the _test.go files in dir (and below it, with all).
func testFuncs(t *testing.T, dir string, all bool) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != dir && (!all || d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range testFunc.FindAllStringSubmatch(string(src), -1) {
			out = append(out, m[1])
		}
		return nil
	})
	if err != nil {
		t.Errorf("reading %s: %v", dir, err)
	}
	return out
}

// ciDefaults reads .ci/run: the values it gives the test variables
// (export NAME="${NAME:-VALUE}"), and its text under the key ".ci/run".
func ciDefaults(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{".ci/run": string(raw)}
	for _, m := range regexp.MustCompile(`(?m)^export (CHATBATCH_TEST_\w+)="\$\{\w+:-([^}]*)\}"$`).FindAllStringSubmatch(string(raw), -1) {
		out[m[1]] = m[2]
	}
	if len(out) < 4 {
		t.Fatalf(".ci/run sets only %v of the test variables", out)
	}
	return out
}

func checkLinks(t *testing.T) {
	t.Helper()
	files, err := doccheck.Files(".")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range files {
		src, err := os.ReadFile(filepath.FromSlash(f))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range doccheck.Links(f, src) {
			target, anchor := l.PathAndAnchor()
			switch {
			case strings.HasPrefix(l.Target, "#"):
				target = f
			case !l.Relative():
				continue
			default:
				target = path.Clean(path.Join(path.Dir(f), target))
			}
			n++
			if strings.HasPrefix(target, "../") {
				t.Errorf("%s: %q leaves the repository", l.Pos(), l.Target)
				continue
			}
			st, err := os.Stat(filepath.FromSlash(target))
			if err != nil {
				t.Errorf("%s: the link %q points to %s, which does not exist", l.Pos(), l.Target, target)
				continue
			}
			if anchor == "" {
				continue
			}
			if st.IsDir() || !strings.HasSuffix(target, ".md") {
				t.Errorf("%s: the link %q has an anchor into something that is not Markdown", l.Pos(), l.Target)
				continue
			}
			md, err := os.ReadFile(filepath.FromSlash(target))
			if err != nil {
				t.Fatal(err)
			}
			if !doccheck.Anchors(md)[anchor] {
				t.Errorf("%s: the link %q: %s has no heading with the anchor #%s", l.Pos(), l.Target, target, anchor)
			}
		}
	}
	if n < 20 {
		t.Errorf("only %d relative links checked", n)
	}
}

func firstLine(s string) string {
	line, _, cut := strings.Cut(s, "\n")
	if cut {
		return fmt.Sprint(line, " …")
	}
	return line
}
