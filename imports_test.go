package chatbatch_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/chatbatch/chatbatch/internal/testenv"
)

const module = "github.com/chatbatch/chatbatch"

// TestImportRules keeps the layers of docs/ARCHITECTURE.md §1 true: render
// and store import only the standard library, and so does dashboard (it
// reaches the batch API over HTTP only; it takes its example from
// internal/seed); delivery adds store; the
// conformance suites import only their leaf packages; batch is the only
// package that imports asynq and validator (besides cmd/ and the test
// support in internal/), and besides them it imports only jsontext
// (request decoding), go-redis (the rate limit) and OpenTelemetry's API
// packages, never its SDK or an exporter (the host picks those); adapters
// import leaf packages and their backend, never batch or another adapter;
// batch and adapters may share internal/gcra (the GCRA on Redis).
func TestImportRules(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		testenv.Skip(t, "the go command is not on PATH")
	}
	out, err := goCommand("list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	leaf := map[string]bool{module + "/store": true, module + "/delivery": true, module + "/render": true}
	// shared is what batch and the adapters may import besides the leaf packages.
	shared := map[string]bool{module + "/internal/gcra": true, module + "/internal/jsonfields": true}
	allowed := map[string][]string{
		module + "/render":                {},
		module + "/dashboard":             {module + "/internal/seed"}, // it uses the batch API over HTTP only
		module + "/store":                 {},
		module + "/delivery":              {module + "/store"},
		module + "/store/storetest":       {module + "/store"},
		module + "/delivery/deliverytest": {module + "/store", module + "/delivery"},
		module + "/internal/gcra":         {"github.com/redis/go-redis/v9"},
		module + "/internal/jsonfields":   {},
	}
	checked := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		pkg, imports := fields[0], fields[1:]
		rel := strings.TrimPrefix(pkg, module)
		for _, imp := range imports {
			std := !strings.Contains(strings.SplitN(imp, "/", 2)[0], ".")
			ours := strings.HasPrefix(imp, module+"/")
			switch {
			case std:
			case strings.HasPrefix(rel, "/cmd/"):
			case allowed[pkg] != nil:
				if !contains(allowed[pkg], imp) {
					t.Errorf("%s imports %s; it may import only the standard library and %v", pkg, imp, allowed[pkg])
				}
			case rel == "/batch":
				if !ours && !strings.HasPrefix(imp, "github.com/hibiken/asynq") && !strings.HasPrefix(imp, "github.com/go-playground/validator/") &&
					imp != "github.com/go-json-experiment/json/jsontext" && imp != "github.com/redis/go-redis/v9" && !otelAPI(imp) {
					t.Errorf("batch imports %s", imp)
				}
				if ours && !leaf[imp] && !shared[imp] {
					t.Errorf("batch imports %s; it may import only the leaf packages of the module and %v", imp, shared)
				}
			case strings.HasPrefix(rel, "/adapters/"):
				// An adapter's own packages (bunstore's openers) are one adapter.
				root := module + "/adapters/" + strings.SplitN(strings.TrimPrefix(rel, "/adapters/"), "/", 2)[0]
				if ours && !leaf[imp] && !shared[imp] && imp != root && !strings.HasPrefix(imp, root+"/") {
					t.Errorf("adapter %s imports %s; adapters import leaf packages only, never batch or another adapter", pkg, imp)
				}
			}
			if !std && (strings.HasPrefix(imp, "github.com/hibiken/asynq") || strings.HasPrefix(imp, "github.com/go-playground/validator/")) &&
				rel != "/batch" && !strings.HasPrefix(rel, "/cmd/") && !strings.HasPrefix(rel, "/internal/") {
				t.Errorf("%s imports %s; only batch may", pkg, imp)
			}
		}
		checked++
	}
	if checked < 8 {
		t.Errorf("go list reported only %d packages", checked)
	}
}

// otelAPI reports whether imp is one of OpenTelemetry's API packages.
func otelAPI(imp string) bool {
	if imp != "go.opentelemetry.io/otel" && !strings.HasPrefix(imp, "go.opentelemetry.io/otel/") {
		return false
	}
	return !strings.HasPrefix(imp, "go.opentelemetry.io/otel/sdk") && !strings.HasPrefix(imp, "go.opentelemetry.io/otel/exporters")
}

// goCommand is the go command with args, without the GOFLAGS of the test
// run: .ci/run sets GOFLAGS=-json for go test, which would turn go list's
// output into JSON the checks below would read past without a match.
func goCommand(args ...string) *exec.Cmd {
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), "GOFLAGS=")
	return cmd
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestEmbedderDependencies is TestEmbedderGoSum's quick check, offline:
// the packages a host imports (batch, store, render, delivery, memstore,
// dashboard) and their tests, which `go mod tidy` in the host's module
// also resolves, reach no database driver, bun, miniredis, chromedp,
// OpenTelemetry SDK or oauth2. Tests that need those live in
// internal/integration, adapters/bunstore/internal/alldb and cmd/.
func TestEmbedderDependencies(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		testenv.Skip(t, "the go command is not on PATH")
	}
	out, err := goCommand("list", "-deps", "-test", "./batch", "./store", "./render", "./delivery", "./adapters/memstore", "./dashboard").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	n, asynq := 0, false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		n++
		asynq = asynq || sc.Text() == "github.com/hibiken/asynq"
		for _, f := range append(coreForbidden, module+"/adapters/bunstore") {
			if strings.HasPrefix(sc.Text(), f) {
				t.Errorf("an embedder's build or test graph reaches %s", sc.Text())
			}
		}
	}
	if n < 20 || !asynq {
		t.Errorf("go list reported %d packages, github.com/hibiken/asynq among them: %v; want one import path a line", n, asynq)
	}
}

// coreForbidden are the module paths (prefixes) a program that embeds
// chatbatch on memstore must not download.
var coreForbidden = []string{
	"github.com/uptrace/bun", "github.com/jackc/pgx", "github.com/go-sql-driver/mysql", "modernc.org/",
	"github.com/mattn/go-sqlite3", "github.com/alicebob/miniredis", "github.com/chromedp", "go.opentelemetry.io/otel/sdk",
	"golang.org/x/oauth2", "github.com/getkin/kin-openapi", "github.com/prometheus/",
}

// TestEmbedderGoSum is docs/ARCHITECTURE.md's promise that an embedder
// downloads only what it links, checked as an embedder meets it: a module
// of its own that requires chatbatch (replaced by this checkout) and
// imports some of its packages, then `go mod tidy`, then its go.sum. A
// program on memstore gets no bun, database driver, miniredis, chromedp,
// OpenTelemetry SDK or oauth2 module; one on bunstore and PostgreSQL gets
// no SQLite, MySQL, miniredis or chromedp module. go mod tidy resolves the
// imports of the tests of every package the program imports, which is why
// the cross-database tests live apart (adapters/bunstore/internal/alldb,
// internal/integration).
//
// It needs the Go module proxy for the modules this checkout's own tests
// do not use; without it the test skips, unless
// CHATBATCH_REQUIRE_GOPROXY=1 (as in .ci/run) makes that a failure.
func TestEmbedderGoSum(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		testenv.Skip(t, "the go command is not on PATH")
	}
	root, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(read(t, "go.mod"))
	if goVersion == nil {
		t.Fatal("go.mod has no go line")
	}
	for _, c := range []struct {
		name      string
		imports   []string
		forbidden []string
		present   []string // so that an empty or failed tidy cannot pass
	}{
		{
			name:      "memstore",
			imports:   []string{"batch", "store", "render", "delivery", "adapters/memstore", "dashboard"},
			forbidden: coreForbidden,
			present:   []string{"github.com/hibiken/asynq", "github.com/go-playground/validator/v10", "go.opentelemetry.io/otel"},
		},
		{
			name:    "bunstore-postgres",
			imports: []string{"batch", "store", "adapters/bunstore", "adapters/bunstore/bunpostgres"},
			forbidden: []string{"modernc.org/", "github.com/mattn/go-sqlite3", "github.com/uptrace/bun/driver/sqliteshim",
				"github.com/uptrace/bun/dialect/sqlitedialect", "github.com/go-sql-driver/mysql", "github.com/uptrace/bun/dialect/mysqldialect",
				"github.com/alicebob/miniredis", "github.com/chromedp"},
			present: []string{"github.com/hibiken/asynq", "github.com/uptrace/bun", "github.com/uptrace/bun/dialect/pgdialect", "github.com/jackc/pgx/v5"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			var imports strings.Builder
			for _, p := range c.imports {
				fmt.Fprintf(&imports, "\t_ %q\n", module+"/"+p)
			}
			write(t, filepath.Join(dir, "go.mod"), fmt.Sprintf("module example.com/embedder\n\ngo %s\n\nrequire %s v0.0.0\n\nreplace %s => %s\n",
				goVersion[1], module, module, root))
			write(t, filepath.Join(dir, "main.go"), "package main\n\nimport (\n"+imports.String()+")\n\nfunc main() {}\n")
			cmd := goCommand("mod", "tidy")
			cmd.Dir = dir
			cmd.Env = append(cmd.Env, "GOWORK=off")
			out, err := cmd.CombinedOutput()
			if err != nil {
				if os.Getenv("CHATBATCH_REQUIRE_GOPROXY") == "" && regexp.MustCompile(`dial tcp|lookup |proxy|connection refused|no such host|GOPROXY`).Match(out) {
					testenv.Skip(t, "go mod tidy could not download modules (set CHATBATCH_REQUIRE_GOPROXY=1 to fail instead): %s", lastLines(out, 3))
				}
				t.Fatalf("go mod tidy in a module importing %v: %v\n%s", c.imports, err, out)
			}
			modules := map[string]bool{}
			for _, line := range strings.Split(read(t, filepath.Join(dir, "go.sum")), "\n") {
				if f := strings.Fields(line); len(f) > 0 {
					modules[f[0]] = true
				}
			}
			for _, p := range c.present {
				if !modules[p] {
					t.Errorf("go.sum lacks %s, which the program links: the check saw %d modules", p, len(modules))
				}
			}
			for m := range modules {
				for _, f := range c.forbidden {
					if strings.HasPrefix(m, f) {
						t.Errorf("go.sum of a program importing %v holds %s (go mod why -m %s tells which test brings it)", c.imports, m, m)
					}
				}
			}
			t.Logf("%s: %d modules in go.sum", c.name, len(modules))
		})
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestBunstoreLinksOneDriver: bunstore itself links no database driver,
// and a program for one database (bunstore and bunpostgres, bunmysql or
// bunsqlite) links only that database's; bunopen, for a DSN chosen at run
// time, links all three.
func TestBunstoreLinksOneDriver(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		testenv.Skip(t, "the go command is not on PATH")
	}
	drivers := map[string]string{"pgx": "github.com/jackc/pgx/v5/stdlib", "mysql": "github.com/go-sql-driver/mysql", "sqlite": "modernc.org/sqlite"}
	for pkgs, want := range map[string]string{
		"./adapters/bunstore": "",
		"./adapters/bunstore ./adapters/bunstore/bunpostgres": "pgx",
		"./adapters/bunstore ./adapters/bunstore/bunmysql":    "mysql",
		"./adapters/bunstore ./adapters/bunstore/bunsqlite":   "sqlite",
		"./adapters/bunstore ./adapters/bunstore/bunopen":     "pgx mysql sqlite",
	} {
		out, err := goCommand(append([]string{"list", "-deps"}, strings.Fields(pkgs)...)...).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkgs, err)
		}
		deps := map[string]bool{}
		for _, l := range strings.Fields(string(out)) {
			deps[l] = true
		}
		for name, path := range drivers {
			if got, wanted := deps[path], strings.Contains(want, name); got != wanted {
				t.Errorf("%s: links %s = %v, want %v", pkgs, path, got, wanted)
			}
		}
	}
}
