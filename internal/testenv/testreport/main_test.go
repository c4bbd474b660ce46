package main

import (
	"regexp"
	"strings"
	"testing"
)

const run = `{"Action":"run","Package":"m/a","Test":"TestOK"}
{"Action":"output","Package":"m/a","Test":"TestOK","Output":"=== RUN   TestOK\n"}
{"Action":"pass","Package":"m/a","Test":"TestOK","Elapsed":0.1}
{"Action":"run","Package":"m/a","Test":"TestCapability"}
{"Action":"output","Package":"m/a","Test":"TestCapability","Output":"    storetest.go:280: *x.Store does not implement store.MessageReader; it answers 501\n"}
{"Action":"output","Package":"m/a","Test":"TestCapability","Output":"--- SKIP: TestCapability (0.00s)\n"}
{"Action":"skip","Package":"m/a","Test":"TestCapability","Elapsed":0}
{"Action":"output","Package":"m/a","Output":"ok  \tm/a\t0.2s\n"}
{"Action":"pass","Package":"m/a","Elapsed":0.2}
`

const serviceSkip = `{"Action":"run","Package":"m/b","Test":"TestPostgres"}
{"Action":"output","Package":"m/b","Test":"TestPostgres","Output":"    x_test.go:9: set CHATBATCH_TEST_POSTGRES to run this test\n"}
{"Action":"skip","Package":"m/b","Test":"TestPostgres","Elapsed":0}
`

const failure = `{"Action":"run","Package":"m/c","Test":"TestBroken"}
{"Action":"output","Package":"m/c","Test":"TestBroken","Output":"    x_test.go:3: got 1, want 2\n"}
{"Action":"fail","Package":"m/c","Test":"TestBroken","Elapsed":0}
{"Action":"output","Package":"m/c","Output":"FAIL\tm/c\t0.1s\n"}
{"Action":"fail","Package":"m/c","Elapsed":0.1}
`

func TestReport(t *testing.T) {
	allowed := []*regexp.Regexp{regexp.MustCompile(`does not implement store\.`)}
	for _, c := range []struct {
		name, in string
		ok       bool
		want     []string
	}{
		{"an allowed skip passes", run, true, []string{"ok  \tm/a", "2 tests, 0 failed, 1 skipped", "allowed m/a TestCapability: storetest.go:280: *x.Store does not implement store.MessageReader"}},
		{"a service skip fails", run + serviceSkip, false, []string{"NOT ALLOWED m/b TestPostgres: x_test.go:9: set CHATBATCH_TEST_POSTGRES", "FAIL: m/b TestPostgres skipped"}},
		{"a failure fails with its output", run + failure, false, []string{"--- FAIL: m/c TestBroken\n    x_test.go:3: got 1, want 2", "FAIL\tm/c"}},
		{"build errors (text) fail", "# m/d\nd.go:1: syntax error\n", false, []string{"d.go:1: syntax error"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out strings.Builder
			ok, err := report(strings.NewReader(c.in), &out, allowed)
			if err != nil || ok != c.ok {
				t.Errorf("report = %v, %v; want %v\n%s", ok, err, c.ok, out.String())
			}
			for _, w := range c.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("the report lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}
