package render_test

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/chatbatch/chatbatch/render"
)

func TestParseKey(t *testing.T) {
	long := strings.Repeat("x ", render.MaxNameLen/2) // 254 bytes, not an identifier
	tests := []struct {
		key    string
		name   string
		wantOK bool
	}{
		{"$orderId$", "orderId", true},
		{"$1$", "1", true},
		{"$first name$", "first name", true},
		{"$訂單編號$", "訂單編號", true},
		{"$ $", " ", true},
		{`$say "hi"$`, `say "hi"`, true},
		{"$5$", "5", true},
		{"$" + long + "$", long, true},
		{"$" + long + "ab$", long + "ab", false}, // 256 bytes
		{"$" + strings.Repeat("a", 300) + "$", strings.Repeat("a", 300), true}, // identifiers: no limit, as before
		{"$$", "", false},
		{"$", "", false},
		{"", "", false},
		{"name", "", false},
		{"$name", "", false},
		{"name$", "", false},
		{"$a$b$", "", false},
		{"$$a$", "", false},
		{" $a$", "", false},
		{"receiver", "", false},
	}
	for _, tt := range tests {
		name, ok := render.ParseKey(tt.key)
		if ok != tt.wantOK || (ok && name != tt.name) || (!ok && name != "") {
			t.Errorf("ParseKey(%.40q) = %.40q, %v; want %.40q, %v", tt.key, name, ok, tt.name, tt.wantOK)
		}
	}
}

func TestRenderDeclared(t *testing.T) {
	tests := []struct {
		desc     string
		src      string
		declared []string
		vars     render.Vars
		want     string
	}{
		{desc: "digit name", src: "No. $1$", declared: []string{"1"}, vars: render.Vars{"1": "one"}, want: "No. one"},
		{desc: "name with a space", src: "Hi $first name$!", declared: []string{"first name"}, vars: render.Vars{"first name": "Ann"}, want: "Hi Ann!"},
		{desc: "CJK name", src: "訂單 $訂單編號$ 已出貨", declared: []string{"訂單編號"}, vars: render.Vars{"訂單編號": "A-1"}, want: "訂單 A-1 已出貨"},
		{desc: "undeclared stays literal", src: "Hi $first name$ $1$", declared: nil, vars: render.Vars{"first name": "Ann", "1": "x"}, want: "Hi $first name$ $1$"},
		{desc: "declared but missing is left as written", src: "Hi $first name$", declared: []string{"first name"}, vars: render.Vars{}, want: "Hi $first name$"},
		{desc: "price stays literal", src: "Price $5 for $1$", declared: []string{"1", "5"}, vars: render.Vars{"1": "you", "5": "five"}, want: "Price $5 for you"},
		{desc: "undeclared numeric token", src: "$5$ $1$", declared: []string{"1"}, vars: render.Vars{"1": "x", "5": "y"}, want: "$5$ x"},
		{desc: "values are not scanned again", src: "$1$|$first name$", declared: []string{"1", "first name"}, vars: render.Vars{"1": "$first name$", "first name": "$1$"}, want: "$first name$|$1$"},
		{desc: "value and literal do not form a token", src: "$1$ name$", declared: []string{"1", " name"}, vars: render.Vars{"1": "$first", " name": "X"}, want: "$first name$"},
		// "$a$b$": one name cannot hold '$', so only $a$ or $b$ can match;
		// the leftmost wins and its closing '$' is not reused.
		{desc: "overlap: leftmost token wins", src: "$a$b$", declared: []string{"a", "b"}, vars: render.Vars{"a": "A", "b": "B"}, want: "Ab$"},
		{desc: "overlap: declared tokens", src: "$x y$z w$", declared: []string{"x y", "z w"}, vars: render.Vars{"x y": "1", "z w": "2"}, want: "1z w$"},
		{desc: "overlap: an undeclared candidate leaves its closing dollar", src: "$x y$z w$", declared: []string{"z w"}, vars: render.Vars{"x y": "1", "z w": "2"}, want: "$x y2"},
		{desc: "overlap: declared but missing still consumes", src: "$x y$z w$", declared: []string{"x y", "z w"}, vars: render.Vars{"z w": "2"}, want: "$x y$z w$"},
		{desc: "identifier tokens keep their rule", src: "$a$1$", declared: []string{"1"}, vars: render.Vars{"1": "one"}, want: "$a$1$"},
		{desc: "double dollar", src: "$$1$", declared: []string{"1"}, vars: render.Vars{"1": "one"}, want: "$one"},
		{desc: "space-only name", src: "a$ $b", declared: []string{" "}, vars: render.Vars{" ": "_"}, want: "a_b"},
		{desc: "adjacent", src: "$1$$2$", declared: []string{"1", "2"}, vars: render.Vars{"1": "a", "2": "b"}, want: "ab"},
		{desc: "identifier name declared too", src: "$name$ $1$", declared: []string{"name", "1"}, vars: render.Vars{"name": "N", "1": "1"}, want: "N 1"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			tmpl := render.CompileDeclared(tt.src, render.NewDeclared(tt.declared...))
			if got := tmpl.Render(tt.vars); got != tt.want {
				t.Errorf("Render(%q) = %q, want %q", tt.src, got, tt.want)
			}
			if got := string(tmpl.AppendRender([]byte("p:"), tt.vars)); got != "p:"+tt.want {
				t.Errorf("AppendRender(%q) = %q, want %q", tt.src, got, "p:"+tt.want)
			}
			if got, want := tmpl.Render(tt.vars), refRenderDeclared(tt.src, tt.declared, tt.vars); got != want {
				t.Errorf("Render(%q) = %q, reference %q", tt.src, got, want)
			}
		})
	}
}

func TestDeclaredVarsAndMissing(t *testing.T) {
	tmpl := render.CompileDeclared("$first name$ $1$ $x$ $5$ $1$", render.NewDeclared("first name", "1", "unused"))
	if got, want := tmpl.Vars(), []string{"first name", "1", "x"}; !slices.Equal(got, want) {
		t.Errorf("Vars() = %q, want %q", got, want)
	}
	if got, want := tmpl.Missing(render.Vars{"1": ""}), []string{"first name", "x"}; !slices.Equal(got, want) {
		t.Errorf("Missing = %q, want %q", got, want)
	}
	if render.NewDeclared() != nil {
		t.Error("NewDeclared() is not nil")
	}
	if got := render.CompileDeclared("$1$", nil).Vars(); got != nil {
		t.Errorf("without declared names $1$ is a token: %q", got)
	}
}

func TestRenderJSONDeclared(t *testing.T) {
	raw := `{"title":"$first name$ ($1$)","$1$":["$1$",2,"Price $5"],"q":"$say \"hi\"$","nl":"$a\nb$"}`
	declared := render.NewDeclared("first name", "1", "5", `say "hi"`, "a\nb")
	j, err := render.CompileJSONDeclared([]byte(raw), declared)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := j.Vars(), []string{"first name", "1", `say "hi"`, "a\nb"}; !slices.Equal(got, want) {
		t.Errorf("Vars() = %q, want %q", got, want)
	}
	got := string(j.Render(render.Vars{"first name": `Al "x"`, "1": "$first name$", "a\nb": "\u2028"}))
	want := `{"title":"Al \"x\" ($first name$)","$1$":["$first name$",2,"Price $5"],"q":"$say \"hi\"$","nl":"\u2028"}`
	if got != want || !json.Valid([]byte(got)) {
		t.Errorf("Render =\n %s\nwant\n %s", got, want)
	}
	if got := string(j.Compact()); got != raw || !json.Valid([]byte(got)) {
		t.Errorf("Compact = %s, want %s", got, raw)
	}
	plain := mustCompileJSON(t, raw)
	if got := plain.Vars(); got != nil {
		t.Errorf("CompileJSON: Vars() = %q, want none", got)
	}
}

// refTokenRE matches a token of an identifier name at the start of a
// string (written independently of the package's rune-by-rune scan).
var refTokenRE = regexp.MustCompile(`^\$[\p{L}_][\p{L}\p{Nd}_.\-]*\$`)

// refScanDeclared is the naive reading of the rules: at each position,
// every declared token and the identifier token that start there are
// candidates and the longest wins; a '$' that starts none is literal.
func refScanDeclared(src string, declared []string, lit func(byte), tok func(name, text string)) {
	for i := 0; i < len(src); {
		if src[i] == '$' {
			best := refTokenRE.FindString(src[i:])
			for _, n := range declared {
				if t := "$" + n + "$"; strings.HasPrefix(src[i:], t) && len(t) > len(best) {
					best = t
				}
			}
			if best != "" {
				tok(best[1:len(best)-1], best)
				i += len(best)
				continue
			}
		}
		lit(src[i])
		i++
	}
}

func refRenderDeclared(src string, declared []string, v render.Vars) string {
	var b strings.Builder
	refScanDeclared(src, declared, func(c byte) { b.WriteByte(c) }, func(name, text string) {
		if val, ok := v[name]; ok {
			b.WriteString(val)
		} else {
			b.WriteString(text)
		}
	})
	return b.String()
}

func refNamesDeclared(src string, declared []string) []string {
	var names []string
	refScanDeclared(src, declared, func(byte) {}, func(name, _ string) {
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	})
	return names
}

// FuzzRenderDeclared checks CompileDeclared and CompileJSONDeclared
// against the naive longest-match replacer: the names n1 and n2, and
// every third piece of src between dollars, are declared (as a para's
// "$…$" key could declare them); the names found get a, b or no value.
func FuzzRenderDeclared(f *testing.F) {
	for _, s := range [][5]string{
		{"Hi $first name$, #$1$ $訂單編號$ Price $5", "first name", "1", "Ann", "$1$"},
		{"$x y$z w$", "x y", "z w", "1", "2"},
		{"$x y$z w$", "z w", "", "1", "2"},
		{"$a$b$ $$1$", "a", "1", "$b$", "$"},
		{"$ $ $  $", " ", "  ", "x", ""},
		{`$say "hi"$ $a` + "\n" + `b$`, `say "hi"`, "a\nb", "\u2028", "\x00\xff"},
		{"$\xff$ $a\xffb$", "\xff", "a\xffb", "v", "w"},
		{"$" + strings.Repeat("z ", 200) + "$", strings.Repeat("z ", 200), "", "long", ""},
		{"", "", "", "", ""},
	} {
		f.Add(s[0], s[1], s[2], s[3], s[4])
	}
	f.Fuzz(func(t *testing.T, src, n1, n2, a, b string) {
		var declared []string
		for _, n := range []string{n1, n2} {
			name, ok := render.ParseKey("$" + n + "$")
			wantOK := n != "" && !strings.Contains(n, "$") && (len(n) <= render.MaxNameLen || refIsName(n))
			if ok != wantOK || (ok && name != n) {
				t.Fatalf("ParseKey(%q) = %q, %v; want %v", "$"+n+"$", name, ok, wantOK)
			}
			if ok {
				declared = append(declared, n)
			}
		}
		for k, piece := range strings.Split(src, "$") {
			if k%3 == len(a)%3 && piece != "" {
				declared = append(declared, piece)
			}
		}
		set := render.NewDeclared(declared...)

		tmpl := render.CompileDeclared(src, set)
		names := refNamesDeclared(src, declared)
		if got := tmpl.Vars(); !slices.Equal(got, names) {
			t.Fatalf("Vars(%q, %q) = %q, reference %q", src, declared, got, names)
		}
		v, miss := fuzzVars(names, a, b)
		if got := tmpl.Missing(v); !slices.Equal(got, miss) {
			t.Fatalf("Missing = %q, want %q", got, miss)
		}
		want := refRenderDeclared(src, declared, v)
		if got := tmpl.Render(v); got != want {
			t.Fatalf("Render(%q, declared %q, %q) = %q, reference %q", src, declared, v, got, want)
		}
		if got := string(tmpl.AppendRender([]byte("p"), v)); got != "p"+want {
			t.Fatalf("AppendRender = %q, reference %q", got, want)
		}
		if got := tmpl.Render(nil); got != src {
			t.Fatalf("Render(%q, nil) = %q, want the source unchanged", src, got)
		}
		if len(declared) == 0 {
			if got := render.Compile(src).Render(v); got != want {
				t.Fatalf("Compile(%q).Render = %q, CompileDeclared without names %q", src, got, want)
			}
		}

		// The same template as JSON string values (not keys).
		if !utf8.ValidString(src) || strings.ContainsRune(src, 0) {
			return
		}
		q, _ := json.Marshal(src)
		j, err := render.CompileJSONDeclared([]byte(`[`+string(q)+`,{`+string(q)+`:`+string(q)+`}]`), set)
		if err != nil {
			t.Fatalf("CompileJSONDeclared: %v", err)
		}
		if got := j.Vars(); !slices.Equal(got, names) {
			t.Fatalf("JSON Vars = %q, reference %q", got, names)
		}
		out := j.Render(v)
		var got []any
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("JSON Render = %q: %v", out, err)
		}
		clean := render.Vars{}
		for k, val := range v {
			clean[k] = string([]rune(val))
		}
		jwant := refRenderDeclared(src, declared, clean)
		if obj, _ := got[1].(map[string]any); got[0] != jwant || len(obj) != 1 || obj[src] != jwant {
			t.Fatalf("JSON Render of %q = %s, want the strings %q (key unchanged)", src, out, jwant)
		}
	})
}

func ExampleCompileDeclared() {
	// The recipients' keys "$first name$" and "$1$" declare those names.
	declared := render.Declared{}
	for _, key := range []string{"$first name$", "$1$", "$orderId$"} {
		if name, ok := render.ParseKey(key); ok {
			declared[name] = struct{}{}
		}
	}
	tmpl := render.CompileDeclared("Hi $first name$, order $orderId$ costs $1$ (Price $5)", declared)
	fmt.Println(tmpl.Vars())
	fmt.Println(tmpl.Render(render.Vars{"first name": "Ann", "orderId": "ORD-001", "1": "$12"}))
	fmt.Println(tmpl.Render(render.Vars{"orderId": "ORD-002"}))
	// Output:
	// [first name orderId 1]
	// Hi Ann, order ORD-001 costs $12 (Price $5)
	// Hi $first name$, order ORD-002 costs $1$ (Price $5)
}
