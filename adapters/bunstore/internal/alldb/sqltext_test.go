package alldb_test

import (
	"math/rand/v2"
	"testing"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/mysqldialect"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"github.com/uptrace/bun/schema"

	"github.com/chatbatch/chatbatch/adapters/bunstore/internal/sqltext"
)

// TestSQLTextAsDialect checks that sqltext.AppendString's one-copy path
// writes what each dialect's own AppendString writes, for the strings it
// takes (plain ASCII and UTF-8) and those it hands on (quotes,
// backslashes, NUL, invalid UTF-8), and for random strings of those bytes;
// and that sqltext.IDList writes a list as bun.List does.
func TestSQLTextAsDialect(t *testing.T) {
	cases := []string{
		"", "user-0000001", "dm:sender-1:user-0000001", "Hello $name$, your order shipped",
		"héllo wörld ✓ 你好 🎉", "it's", `back\slash`, "nul\x00byte", "bad\xffutf8", "\xe4\xbd",
		"''", `\'`, "tab\tnew\nline", "--comment", "?", "a?b", "%s",
	}
	alphabet := []string{"a", "Z", "0", " ", "'", `\`, "\x00", "é", "🎉", "\xff", "\xe4", "?", "\n"}
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		var s string
		for range r.IntN(12) {
			s += alphabet[r.IntN(len(alphabet))]
		}
		cases = append(cases, s)
	}
	for _, d := range []schema.Dialect{mysqldialect.New(), sqlitedialect.New(), pgdialect.New()} {
		gen := schema.NewQueryGen(d)
		for _, s := range cases {
			want := string(d.AppendString([]byte("x"), s))
			if got := string(sqltext.AppendString(gen, []byte("x"), s)); got != want {
				t.Errorf("%s: AppendString(%q) = %q, the dialect writes %q", d.Name(), s, got, want)
			}
		}
		for _, l := range [][]string{nil, {}, {"a"}, cases[:40], cases[40:]} {
			want, err := bun.List(l).AppendQuery(gen, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := sqltext.IDList(l).AppendQuery(gen, nil); string(got) != string(want) {
				t.Errorf("%s: IDList(%q) writes %q, bun.List %q", d.Name(), l, got, want)
			}
		}
	}
}
