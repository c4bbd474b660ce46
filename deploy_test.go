package chatbatch_test

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestDeployFiles checks Dockerfile, compose.yaml and .ci/build-like-docker
// without a container runtime: the Dockerfile's build line is the
// script's; compose.yaml parses (as the block-style YAML subset it is
// written in: this is a structural check, not docker compose config) and
// has PostgreSQL, Redis, an API process and two workers with health checks.
func TestDeployFiles(t *testing.T) {
	docker := read(t, "Dockerfile")
	script := read(t, ".ci/build-like-docker")
	build := regexp.MustCompile(`CGO_ENABLED=0 go build [^\n]*`)
	df, sc := build.FindString(docker), build.FindString(script)
	if df == "" || !strings.Contains(df, `-trimpath -ldflags "-s -w"`) {
		t.Errorf("the Dockerfile's build line %q lacks CGO_ENABLED=0, -trimpath or -ldflags \"-s -w\"", df)
	}
	norm := func(s string) string { return regexp.MustCompile(`-o \S+`).ReplaceAllString(s, "-o OUT") }
	if norm(df) != norm(sc) {
		t.Errorf("the Dockerfile builds with\n\t%s\nbut .ci/build-like-docker with\n\t%s", df, sc)
	}
	for _, want := range []string{"FROM golang:", "AS build", "FROM gcr.io/distroless/static", ":nonroot", "\nUSER 65532", "\nEXPOSE 8080", `ENTRYPOINT ["/usr/local/bin/chatbatchd"]`, "-healthcheck"} {
		if !strings.Contains(docker, want) {
			t.Errorf("the Dockerfile lacks %q", want)
		}
	}

	doc, err := parseYAMLSubset(read(t, "compose.yaml"))
	if err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	services, _ := doc["services"].(map[string]any)
	get := func(svc string, path ...string) any {
		var v any = services[svc]
		for _, p := range path {
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[p]
		}
		return v
	}
	for _, svc := range []string{"postgres", "redis", "api", "worker"} {
		if services[svc] == nil {
			t.Fatalf("compose.yaml has no service %s", svc)
		}
		test, _ := get(svc, "healthcheck", "test").([]any)
		if len(test) < 2 || (test[0] != "CMD" && test[0] != "CMD-SHELL") {
			t.Errorf("%s: healthcheck.test %v", svc, get(svc, "healthcheck", "test"))
		}
		if svc == "api" || svc == "worker" {
			if test[1] != "/usr/local/bin/chatbatchd" || test[2] != "-healthcheck" {
				t.Errorf("%s: the health check does not run chatbatchd -healthcheck: %v", svc, test)
			}
			env, _ := get(svc, "environment").(map[string]any)
			for _, k := range []string{"CHATBATCHD_DB", "CHATBATCHD_REDIS"} {
				if v, _ := env[k].(string); v == "" {
					t.Errorf("%s: environment lacks %s", svc, k)
				}
			}
			for _, dep := range []string{"postgres", "redis"} {
				if get(svc, "depends_on", dep, "condition") != "service_healthy" {
					t.Errorf("%s: does not wait for %s to be healthy", svc, dep)
				}
			}
		}
	}
	cmd := func(svc string) []any { c, _ := get(svc, "command").([]any); return c }
	if !slices.Contains(cmd("api"), any("-worker=false")) || slices.Contains(cmd("api"), any("-api=false")) {
		t.Errorf("api: command %v, want -worker=false", cmd("api"))
	}
	if env, _ := get("api", "environment").(map[string]any); env["IM_API_KEY"] == nil || env["CHATBATCHD_ADDR"] != "0.0.0.0:8080" {
		t.Errorf("api: environment %v lacks IM_API_KEY or CHATBATCHD_ADDR 0.0.0.0:8080", env)
	}
	if !slices.Contains(cmd("worker"), any("-api=false")) || get("worker", "deploy", "replicas") != "2" {
		t.Errorf("worker: command %v, replicas %v; want -api=false and 2", cmd("worker"), get("worker", "deploy", "replicas"))
	}
	if get("api", "build") != "." {
		t.Errorf("api: build %v, want the Dockerfile here", get("api", "build"))
	}
}

func read(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// parseYAMLSubset parses the block-style YAML compose.yaml is written in:
// mappings, sequences of scalars, flow sequences of scalars, plain and
// quoted scalars, comments. Anything else (anchors, multi-line strings,
// flow mappings) is an error, so the file stays checkable.
func parseYAMLSubset(src string) (map[string]any, error) {
	type line struct {
		n, indent int
		text      string
	}
	var lines []line
	for i, raw := range strings.Split(src, "\n") {
		if strings.Contains(raw, "\t") {
			return nil, fmt.Errorf("line %d: a tab", i+1)
		}
		text := stripComment(raw)
		if strings.TrimSpace(text) == "" {
			continue
		}
		trimmed := strings.TrimLeft(text, " ")
		if strings.ContainsAny(trimmed[:1], "&*!|>{") || strings.Contains(trimmed, ": &") || strings.Contains(trimmed, ": *") || strings.HasPrefix(trimmed, "<<") {
			return nil, fmt.Errorf("line %d: %q is outside the YAML subset this check reads", i+1, trimmed)
		}
		lines = append(lines, line{i + 1, len(text) - len(trimmed), strings.TrimRight(trimmed, " ")})
	}
	var block func(i, indent int) (any, int, error)
	block = func(i, indent int) (any, int, error) {
		if strings.HasPrefix(lines[i].text, "- ") {
			var seq []any
			for i < len(lines) && lines[i].indent == indent && strings.HasPrefix(lines[i].text, "- ") {
				v, err := scalar(strings.TrimPrefix(lines[i].text, "- "))
				if err != nil {
					return nil, 0, fmt.Errorf("line %d: %v", lines[i].n, err)
				}
				seq = append(seq, v)
				i++
			}
			return seq, i, nil
		}
		m := map[string]any{}
		for i < len(lines) && lines[i].indent == indent {
			l := lines[i]
			key, rest, ok := strings.Cut(l.text, ":")
			if !ok || key == "" || (rest != "" && rest[0] != ' ') {
				return nil, 0, fmt.Errorf("line %d: %q is not key: value", l.n, l.text)
			}
			if k, err := scalar(key); err == nil {
				key, _ = k.(string)
			}
			if _, dup := m[key]; dup {
				return nil, 0, fmt.Errorf("line %d: duplicate key %q", l.n, key)
			}
			i++
			rest = strings.TrimSpace(rest)
			switch {
			case rest != "":
				v, err := scalar(rest)
				if err != nil {
					return nil, 0, fmt.Errorf("line %d: %v", l.n, err)
				}
				m[key] = v
			case i < len(lines) && lines[i].indent > indent:
				v, next, err := block(i, lines[i].indent)
				if err != nil {
					return nil, 0, err
				}
				m[key], i = v, next
			default:
				m[key] = nil
			}
		}
		if i < len(lines) && lines[i].indent > indent {
			return nil, 0, fmt.Errorf("line %d: unexpected indentation", lines[i].n)
		}
		return m, i, nil
	}
	if len(lines) == 0 || lines[0].indent != 0 {
		return nil, fmt.Errorf("not a mapping at the top")
	}
	v, i, err := block(0, 0)
	if err != nil {
		return nil, err
	}
	if i != len(lines) {
		return nil, fmt.Errorf("line %d: unexpected indentation", lines[i].n)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("not a mapping at the top")
	}
	return m, nil
}

// scalar reads a plain or quoted scalar, or a flow sequence of them.
func scalar(s string) (any, error) {
	switch {
	case strings.HasPrefix(s, "["):
		if !strings.HasSuffix(s, "]") {
			return nil, fmt.Errorf("unterminated flow sequence %q", s)
		}
		var out []any
		for _, part := range splitFlow(s[1 : len(s)-1]) {
			v, err := scalar(strings.TrimSpace(part))
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case strings.HasPrefix(s, `"`):
		return strconv.Unquote(s)
	case strings.HasPrefix(s, "'"):
		if len(s) < 2 || !strings.HasSuffix(s, "'") {
			return nil, fmt.Errorf("unterminated string %s", s)
		}
		return strings.ReplaceAll(s[1:len(s)-1], "''", "'"), nil
	}
	return s, nil
}

func splitFlow(s string) []string {
	var parts []string
	start, quote := 0, rune(0)
	for i, r := range s {
		switch {
		case quote != 0:
			if r == quote && (quote == '\'' || i == 0 || s[i-1] != '\\') {
				quote = 0
			}
		case r == '"' || r == '\'':
			quote = r
		case r == ',':
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// stripComment drops a # comment that is outside quotes.
func stripComment(s string) string {
	quote := rune(0)
	for i, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '"' || r == '\'':
			quote = r
		case r == '#' && (i == 0 || s[i-1] == ' '):
			return s[:i]
		}
	}
	return s
}

func TestParseYAMLSubset(t *testing.T) {
	good := "a:\n  b: [\"x, y\", 'z']\n  c:\n    - 1\n    - \"two\" # comment\n  d:\ne: f#g\n"
	m, err := parseYAMLSubset(good)
	if err != nil {
		t.Fatal(err)
	}
	a := m["a"].(map[string]any)
	if fmt.Sprint(a["b"]) != "[x, y z]" || fmt.Sprint(a["c"]) != "[1 two]" || a["d"] != nil || m["e"] != "f#g" {
		t.Errorf("parsed %v", m)
	}
	for _, bad := range []string{
		"a:\n  b: 1\n c: 2\n",    // a dedent into no block
		"a:\n  b: 1\n    c: 2\n", // an indent after a scalar
		"a: 1\na: 2\n",           // a duplicate key
		"a:\n\tb: 1\n",           // a tab
		"a: [1, 2\n",             // an unterminated flow sequence
		"x: &anchor\n  b: 1\n",   // an anchor
		"a:\n  - 1\n  b: 2\n",    // a sequence then a key
		"a: \"unterminated\n",    // a bad quote
		"key without colon\n",    // not a mapping
	} {
		if _, err := parseYAMLSubset(bad); err == nil {
			t.Errorf("parsed %q", bad)
		}
	}
}
