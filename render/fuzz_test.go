package render_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/chatbatch/chatbatch/render"
)

// The reference implementation below is deliberately written differently
// from the package (regexp for names, "find the next '$'" instead of a
// rune-by-rune scan) so that the fuzzers compare two independent readings of
// the rules.

var refNameRE = regexp.MustCompile(`^[\p{L}_][\p{L}\p{Nd}_.\-]*$`)

func refIsName(s string) bool { return refNameRE.MatchString(s) }

// refScan calls tok for every token and lit for every literal byte.
func refScan(src string, lit func(byte), tok func(name, text string)) {
	for i := 0; i < len(src); {
		if src[i] == '$' {
			if j := strings.IndexByte(src[i+1:], '$'); j >= 0 {
				if name := src[i+1 : i+1+j]; refIsName(name) {
					tok(name, src[i:i+j+2])
					i += j + 2
					continue
				}
			}
		}
		lit(src[i])
		i++
	}
}

func refRender(src string, v render.Vars) string {
	var b strings.Builder
	refScan(src, func(c byte) { b.WriteByte(c) }, func(name, text string) {
		if val, ok := v[name]; ok {
			b.WriteString(val)
		} else {
			b.WriteString(text)
		}
	})
	return b.String()
}

func refNames(src string, names []string) []string {
	refScan(src, func(byte) {}, func(name, _ string) {
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	})
	return names
}

// fuzzVars assigns a to every third name, b to the next, and leaves the rest
// missing; it returns the vars and the expected Missing result.
func fuzzVars(names []string, a, b string) (render.Vars, []string) {
	v := render.Vars{}
	var miss []string
	for i, n := range names {
		switch i % 3 {
		case 0:
			v[n] = a
		case 1:
			v[n] = b
		default:
			miss = append(miss, n)
		}
	}
	return v, miss
}

func FuzzRender(f *testing.F) {
	for _, s := range [][3]string{
		{"Hi $name$,您的訂單 $orderId$ 已出貨!", "Alice", "ORD-001"},
		{"Price $5 and $10", "$5$", "x"},
		{"$$name$", "$", "$name$"},
		{"$a$b$", "$b$", "$a$"},
		{"$a$$b$$c$", "$", "c$"},
		{"$名字$ $x.y-z$ $_$", "\xff\xfe", "😀"},
		{"$a\xff$ $\xe4\xb8$", "\x00", ""},
		{"$$$$", "$", "$$"},
		{"", "a", "b"},
		{"$a$-$a$-$b$-$c$-$d$", "long value with $tokens$ inside", ""},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, src, a, b string) {
		for _, s := range []string{src, a, b} {
			if got, want := render.IsVarName(s), refIsName(s); got != want {
				t.Fatalf("IsVarName(%q) = %v, reference says %v", s, got, want)
			}
			name, ok := render.ParseVarKey("$" + s + "$")
			if ok != refIsName(s) || (ok && name != s) {
				t.Fatalf("ParseVarKey(%q) = %q, %v", "$"+s+"$", name, ok)
			}
		}
		tmpl := render.Compile(src)
		names := refNames(src, nil)
		if got := tmpl.Vars(); !slices.Equal(got, names) {
			t.Fatalf("Vars(%q) = %q, reference %q", src, got, names)
		}
		if tmpl.HasVars() != (len(names) > 0) {
			t.Fatalf("HasVars(%q) = %v", src, tmpl.HasVars())
		}
		v, miss := fuzzVars(names, a, b)
		if got := tmpl.Missing(v); !slices.Equal(got, miss) {
			t.Fatalf("Missing = %q, want %q", got, miss)
		}
		want := refRender(src, v)
		if got := tmpl.Render(v); got != want {
			t.Fatalf("Render(%q, %q) = %q, reference %q", src, v, got, want)
		}
		if got := string(tmpl.AppendRender([]byte("p"), v)); got != "p"+want {
			t.Fatalf("AppendRender(%q, %q) = %q, reference %q", src, v, got, want)
		}
		if got := tmpl.Render(nil); got != src {
			t.Fatalf("Render(%q, nil) = %q, want the source unchanged", src, got)
		}
	})
}

// decodeUseNumber decodes JSON keeping numbers as their literal text.
func decodeUseNumber(t *testing.T, data []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decoding %q: %v", data, err)
	}
	return v
}

// tokens returns the token stream of data, which captures key order and
// number text that decoding into maps loses.
func tokens(t *testing.T, data []byte) []json.Token {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var toks []json.Token
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return toks
		}
		if err != nil {
			t.Fatalf("tokenizing %q: %v", data, err)
		}
		toks = append(toks, tok)
	}
}

// stringValues returns the string values (not keys) of data in document
// order.
func stringValues(t *testing.T, data []byte) []string {
	t.Helper()
	var out []string
	type frame struct{ object, wantKey bool }
	var stack []frame
	for _, tok := range tokens(t, data) {
		top := len(stack) - 1
		isKey := top >= 0 && stack[top].object && stack[top].wantKey
		if top >= 0 && stack[top].object {
			if d, ok := tok.(json.Delim); !ok || d != '}' {
				stack[top].wantKey = !stack[top].wantKey
			}
		}
		switch tok := tok.(type) {
		case json.Delim:
			switch tok {
			case '{':
				stack = append(stack, frame{object: true, wantKey: true})
			case '[':
				stack = append(stack, frame{})
			default:
				stack = stack[:top]
			}
		case string:
			if !isKey {
				out = append(out, tok)
			}
		}
	}
	return out
}

// mapStrings replaces every string value (not key) in a decoded value.
func mapStrings(v any, fn func(string) string) any {
	switch v := v.(type) {
	case string:
		return fn(v)
	case []any:
		for i := range v {
			v[i] = mapStrings(v[i], fn)
		}
	case map[string]any:
		for k := range v {
			v[k] = mapStrings(v[k], fn)
		}
	}
	return v
}

func FuzzRenderJSON(f *testing.F) {
	for _, s := range [][3]string{
		{`{"msg":"Hi $name$","meta":{"order":{"id":"$orderId$","tags":["x","$name$-$orderId$",3]}}}`, "Alice", "ORD-001"},
		{`{"$a$":"$a$","b":["$b$",1.50e+3,true,null,{}]}`, `"quote" \ back`, "new\nline"},
		{`{"a":"\u0024a\u0024","b":"\ud83d\ude00 $b$ \u2028"}`, "\xff\xe4\xb8", "\u2028\u2029"},
		{`["$x$$y$", "$$x$", "Price $5"]`, "$y$", "</script>"},
		{` { "k" : [ -0 , 1e9 , "" ] } `, "", ""},
		{`{"a":{"b":1,"b":2}}`, "", ""},
		{`{"x":["ok","a\u0000"]}`, "", ""},
		{`"$a$"`, "\x00\x01\x1f\x7f", "😀您好"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, raw, a, b string) {
		j, err := render.CompileJSON([]byte(raw))
		if err != nil {
			var je *render.JSONError
			if !errors.As(err, &je) || je.Reason == "" || je.Offset < 0 || je.Offset > int64(len(raw)) {
				t.Fatalf("CompileJSON(%q) error %#v", raw, err)
			}
			return
		}
		if !json.Valid([]byte(raw)) {
			t.Fatalf("CompileJSON accepted invalid JSON %q", raw)
		}

		compact := j.Compact()
		if !json.Valid(compact) {
			t.Fatalf("Compact() of %q is not valid JSON: %q", raw, compact)
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, compact); err != nil || !bytes.Equal(buf.Bytes(), compact) {
			t.Fatalf("Compact() of %q is not compact: %q", raw, compact)
		}
		if !reflect.DeepEqual(tokens(t, compact), tokens(t, []byte(raw))) {
			t.Fatalf("Compact() of %q changed the value: %q", raw, compact)
		}

		// Variables are recognised in the decoded string values.
		var names []string
		for _, s := range stringValues(t, []byte(raw)) {
			names = refNames(s, names)
		}
		if got := j.Vars(); !slices.Equal(got, names) {
			t.Fatalf("Vars() of %q = %q, reference %q", raw, got, names)
		}
		v, miss := fuzzVars(names, a, b)
		if got := j.Missing(v); !slices.Equal(got, miss) {
			t.Fatalf("Missing = %q, want %q", got, miss)
		}

		out := j.Render(v)
		if !json.Valid(out) {
			t.Fatalf("Render of %q with %q is not valid JSON: %q", raw, v, out)
		}
		buf.Reset()
		if err := json.Compact(&buf, out); err != nil || !bytes.Equal(buf.Bytes(), out) {
			t.Fatalf("Render of %q is not compact: %q", raw, out)
		}
		if app := j.AppendRender([]byte("[1,"), v); !bytes.Equal(app[3:], out) {
			t.Fatalf("AppendRender = %q, Render = %q", app, out)
		}

		// Values are inserted with invalid UTF-8 replaced, each value on
		// its own.
		clean := render.Vars{}
		for k, val := range v {
			clean[k] = string([]rune(val))
		}
		want := mapStrings(decodeUseNumber(t, []byte(raw)), func(s string) string {
			return refRender(s, clean)
		})
		if got := decodeUseNumber(t, out); !reflect.DeepEqual(got, want) {
			t.Fatalf("Render of %q with %q = %q\n decodes to %#v\n want %#v", raw, v, out, got, want)
		}
	})
}
