package chatbatch_test

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"
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
		t.Skip("the go command is not on PATH")
	}
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	leaf := map[string]bool{module + "/store": true, module + "/delivery": true, module + "/render": true}
	// shared is what batch and the adapters may import besides the leaf packages.
	shared := map[string]bool{module + "/internal/gcra": true}
	allowed := map[string][]string{
		module + "/render":                {},
		module + "/dashboard":             {module + "/internal/seed"}, // it uses the batch API over HTTP only
		module + "/store":                 {},
		module + "/delivery":              {module + "/store"},
		module + "/store/storetest":       {module + "/store"},
		module + "/delivery/deliverytest": {module + "/store", module + "/delivery"},
		module + "/internal/gcra":         {"github.com/redis/go-redis/v9"},
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

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestEmbedderDependencies keeps what an embedder downloads small: the
// packages a host imports (batch, store, render, delivery) and their
// tests, which `go mod tidy` in the host's module also resolves, reach no
// database driver, bun, miniredis or chromedp. Tests that need those live
// in internal/integration and the adapters.
func TestEmbedderDependencies(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the go command is not on PATH")
	}
	out, err := exec.Command("go", "list", "-deps", "-test", "./batch", "./store", "./render", "./delivery").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	forbidden := []string{"github.com/uptrace/bun", "github.com/jackc/pgx", "github.com/go-sql-driver/mysql", "modernc.org/sqlite",
		"github.com/mattn/go-sqlite3", "github.com/alicebob/miniredis", "github.com/chromedp", module + "/adapters/bunstore"}
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		n++
		for _, f := range forbidden {
			if strings.HasPrefix(sc.Text(), f) {
				t.Errorf("an embedder's build or test graph reaches %s", sc.Text())
			}
		}
	}
	if n < 20 {
		t.Errorf("go list reported only %d packages", n)
	}
}

// TestBunstoreLinksOneDriver: bunstore itself links no database driver,
// and a program for one database (bunstore and bunpostgres, bunmysql or
// bunsqlite) links only that database's; bunopen, for a DSN chosen at run
// time, links all three.
func TestBunstoreLinksOneDriver(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the go command is not on PATH")
	}
	drivers := map[string]string{"pgx": "github.com/jackc/pgx/v5/stdlib", "mysql": "github.com/go-sql-driver/mysql", "sqlite": "modernc.org/sqlite"}
	for pkgs, want := range map[string]string{
		"./adapters/bunstore": "",
		"./adapters/bunstore ./adapters/bunstore/bunpostgres": "pgx",
		"./adapters/bunstore ./adapters/bunstore/bunmysql":    "mysql",
		"./adapters/bunstore ./adapters/bunstore/bunsqlite":   "sqlite",
		"./adapters/bunstore ./adapters/bunstore/bunopen":     "pgx mysql sqlite",
	} {
		out, err := exec.Command("go", append([]string{"list", "-deps"}, strings.Fields(pkgs)...)...).Output()
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
