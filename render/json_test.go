package render_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/chatbatch/chatbatch/render"
)

func mustCompileJSON(t *testing.T, raw string) *render.JSONTemplate {
	t.Helper()
	j, err := render.CompileJSON([]byte(raw))
	if err != nil {
		t.Fatalf("CompileJSON(%q): %v", raw, err)
	}
	return j
}

func TestRenderJSON(t *testing.T) {
	tests := []struct {
		desc string
		raw  string
		vars render.Vars
		want string
	}{
		{
			desc: "compacts and keeps key order",
			raw:  "{ \"z\" : 1 ,\n\t\"a\" : [ true , false , null ] , \"m\" : { } , \"e\" : [ ] }",
			want: `{"z":1,"a":[true,false,null],"m":{},"e":[]}`,
		},
		{
			desc: "numbers keep their literal text",
			raw:  `[1.50, -0, 1e400, 12345678901234567890, 2E-3, 0.1e+2]`,
			want: `[1.50,-0,1e400,12345678901234567890,2E-3,0.1e+2]`,
		},
		{
			desc: "nested substitution",
			raw:  `{"msg":"Hi $name$","meta":{"order":{"id":"$orderId$","tags":["x","$name$-$orderId$",3]}}}`,
			vars: render.Vars{"name": "Alice", "orderId": "ORD-001"},
			want: `{"msg":"Hi Alice","meta":{"order":{"id":"ORD-001","tags":["x","Alice-ORD-001",3]}}}`,
		},
		{
			desc: "keys are not substituted",
			raw:  `{"$name$":"$name$","k $name$":{"$name$":1}}`,
			vars: render.Vars{"name": "N"},
			want: `{"$name$":"N","k $name$":{"$name$":1}}`,
		},
		{
			desc: "missing left as written",
			raw:  `{"a":"$x$ and $y$"}`,
			vars: render.Vars{"y": "Y"},
			want: `{"a":"$x$ and Y"}`,
		},
		{
			desc: "one pass",
			raw:  `["$a$"]`,
			vars: render.Vars{"a": "$b$", "b": "X"},
			want: `["$b$"]`,
		},
		{
			desc: "literal dollars",
			raw:  `{"p":"Price $5 and $10","q":"$$name$"}`,
			vars: render.Vars{"name": "N"},
			want: `{"p":"Price $5 and $10","q":"$N"}`,
		},
		{
			desc: "escaped tokens in the source are tokens",
			raw:  `["\u0024name\u0024"]`,
			vars: render.Vars{"name": "N"},
			want: `["N"]`,
		},
		{
			desc: "source escapes are normalised",
			raw:  `{"\u0041\/":"\u00e9\ud83d\ude00\t\u001f\"\\ \u2028"}`,
			want: `{"A/":"é😀\t\u001f\"\\ \u2028"}`,
		},
		{
			desc: "values are escaped",
			raw:  `{"v":"<$a$>"}`,
			vars: render.Vars{"a": "q\"b\\n\n\r\t\b\f\x00\x01\x1f\x7f"},
			want: `{"v":"<q\"b\\n\n\r\t\b\f\u0000\u0001\u001f` + "\x7f" + `>"}`,
		},
		{
			desc: "line and paragraph separators",
			raw:  `["$a$"]`,
			vars: render.Vars{"a": "x\u2028y\u2029z"},
			want: `["x\u2028y\u2029z"]`,
		},
		{
			desc: "emoji and CJK are raw",
			raw:  `["$a$"]`,
			vars: render.Vars{"a": "😀 您好 <&>"},
			want: `["😀 您好 <&>"]`,
		},
		{
			desc: "invalid UTF-8 in values becomes U+FFFD per byte",
			raw:  `["$a$$b$"]`,
			vars: render.Vars{"a": "x\xe4\xb8", "b": "\xadz\xff"},
			want: `["x\ufffd\ufffd\ufffdz\ufffd"]`,
		},
		{
			desc: "empty value",
			raw:  `{"a":"$a$"}`,
			vars: render.Vars{"a": ""},
			want: `{"a":""}`,
		},
		{desc: "top-level string", raw: ` "$a$" `, vars: render.Vars{"a": "A"}, want: `"A"`},
		{desc: "top-level number", raw: `42`, want: `42`},
		{desc: "top-level null", raw: "\n null \n", want: `null`},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			j := mustCompileJSON(t, tt.raw)
			got := j.Render(tt.vars)
			if string(got) != tt.want {
				t.Fatalf("Render = %s\nwant     %s", got, tt.want)
			}
			if !json.Valid(got) {
				t.Fatalf("Render output is not valid JSON: %q", got)
			}
			app := j.AppendRender([]byte("xx"), tt.vars)
			if string(app) != "xx"+tt.want {
				t.Errorf("AppendRender = %s, want xx%s", app, tt.want)
			}
		})
	}
}

func TestRenderJSONRoundTrip(t *testing.T) {
	j := mustCompileJSON(t, `{"a":"[$v$]","b":["$v$",{"c":"$w$ $v$"}],"$v$":"k"}`)
	values := []string{
		`plain`,
		`"quoted"`,
		`back\slash \" \\`,
		"new\nline\r\n\ttab",
		"control \x00 \x01 \x1b \x7f",
		"emoji 😀👍🏽 and CJK 您的訂單 已出貨",
		"invalid \xff\xfe utf8 \xe4\xb8",
		"$v$ $w$ $",
		"\u2028\u2029",
		"</script><!--",
		"",
	}
	for _, v := range values {
		for _, w := range values {
			vars := render.Vars{"v": v, "w": w}
			out := j.Render(vars)
			if !json.Valid(out) {
				t.Fatalf("invalid JSON for v=%q w=%q: %q", v, w, out)
			}
			var got map[string]any
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			sv, sw := sanitize(v), sanitize(w)
			want := map[string]any{
				"a":   "[" + sv + "]",
				"b":   []any{sv, map[string]any{"c": sw + " " + sv}},
				"$v$": "k",
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip for v=%q w=%q:\n got %#v\nwant %#v", v, w, got, want)
			}
		}
	}
}

// sanitize is what a value looks like after JSON rendering: each invalid
// UTF-8 byte replaced by U+FFFD.
func sanitize(s string) string { return string([]rune(s)) }

func TestJSONVarsAndMissing(t *testing.T) {
	j := mustCompileJSON(t, `{"$k$":"$b$","x":["$a$",{"y":"$b$ $c$"}],"z":"$5$ $$a$"}`)
	want := []string{"b", "a", "c"}
	if got := j.Vars(); !slices.Equal(got, want) {
		t.Fatalf("Vars() = %q, want %q", got, want)
	}
	j.Vars()[0] = "mutated"
	if got := j.Vars(); !slices.Equal(got, want) {
		t.Fatalf("Vars() after mutation = %q, want %q", got, want)
	}
	if !j.HasVars() {
		t.Error("HasVars() = false")
	}
	if got := j.Missing(render.Vars{"a": "", "k": "x"}); !slices.Equal(got, []string{"b", "c"}) {
		t.Errorf("Missing = %q, want [b c]", got)
	}
	if got := j.Missing(render.Vars{"a": "", "b": "", "c": ""}); got != nil {
		t.Errorf("Missing = %#v, want nil", got)
	}

	plain := mustCompileJSON(t, `{"$k$":"no vars $5"}`)
	if plain.HasVars() || plain.Vars() != nil || plain.Missing(nil) != nil {
		t.Errorf("template without variables: HasVars=%v Vars=%#v Missing=%#v", plain.HasVars(), plain.Vars(), plain.Missing(nil))
	}
}

func TestJSONCompact(t *testing.T) {
	raw := "{\n  \"greeting\": \"Hi $name$\",\n  \"n\": [1, 2.0, \"\\u00e9\"]\n}"
	j := mustCompileJSON(t, raw)
	want := `{"greeting":"Hi $name$","n":[1,2.0,"é"]}`
	got := j.Compact()
	if string(got) != want {
		t.Fatalf("Compact() = %s, want %s", got, want)
	}
	// The result belongs to the caller.
	got[0] = 'X'
	if string(j.Compact()) != want {
		t.Fatal("modifying Compact() output changed the template")
	}
	if string(j.Render(nil)) != want {
		t.Errorf("Render(nil) = %s, want %s", j.Render(nil), want)
	}
	noVars := mustCompileJSON(t, ` [ "a" , 1 ] `)
	out := noVars.Render(render.Vars{"a": "x"})
	out[0] = 'X'
	if string(noVars.Compact()) != `["a",1]` {
		t.Fatal("modifying Render() output changed the template")
	}
}

func TestCompileJSONErrors(t *testing.T) {
	tests := []struct {
		desc   string
		raw    string
		path   string
		offset int64
		reason string
	}{
		{"empty", ``, "", 0, "unexpected end of JSON input"},
		{"whitespace only", "  \n", "", 3, "unexpected end of JSON input"},
		{"duplicate key", `{"a":1,"a":2}`, "", 7, `duplicate key "a"`},
		{"nested duplicate key", `{"a":{"b":1,"b":2}}`, "a", 12, `duplicate key "b"`},
		{"duplicate after unescaping", `{"ab":1,"\u0061b":2}`, "", 8, `duplicate key "ab"`},
		{"duplicate key in large object", `{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":0,"k11":1,"k12":2,"k13":3,"k14":4,"k15":5,"k16":6,"k17":7,"k3":0}`, "", 135, `duplicate key "k3"`},
		{"NUL escape in array", `{"x":["ok","a\u0000"]}`, "x[1]", 13, "contains a NUL character"},
		{"raw NUL in string", "{\"x\":\"a\x00\"}", "x", 7, "contains a NUL character"},
		{"NUL escape in key", `{"a":{"b\u0000":1}}`, "a", 8, "object key contains a NUL character"},
		{"invalid UTF-8 in string", "{\"s\":[\"ok\",\"a\xffb\"]}", "s[1]", 13, "is not valid UTF-8"},
		{"invalid UTF-8 in key", "{\"k\xff\":1}", "", 3, "object key is not valid UTF-8"},
		{"invalid UTF-8 outside strings", "[1,\xff]", "[1]", 3, "is not valid UTF-8"},
		{"truncated UTF-8 in string", "[\"\xe4\xb8\"]", "[0]", 2, "is not valid UTF-8"},
		{"unpaired high surrogate", `["\ud83d"]`, "[0]", 2, `contains an unpaired UTF-16 surrogate escape`},
		{"unpaired low surrogate", `["\ude00"]`, "[0]", 2, `contains an unpaired UTF-16 surrogate escape`},
		{"reversed surrogates", `["\ude00\ud83d"]`, "[0]", 2, `contains an unpaired UTF-16 surrogate escape`},
		{"trailing data", `{"a":1} {"b":2}`, "", 8, "unexpected data after the JSON value"},
		{"trailing comma garbage", `[1],`, "", 3, "unexpected data after the JSON value"},
		{"missing colon", `{"a" 1}`, "", 5, "invalid character '1' after object key"},
		{"closing brace after key", `{"a"}`, "", 4, "invalid character '}' after object key"},
		{"missing comma", `{"a":1 "b":2}`, "", 7, "invalid character '\"' after object key:value pair"},
		{"trailing comma in object", `{"a":1,}`, "", 7, "invalid character '}' looking for beginning of object key string"},
		{"unquoted key", `{a:1}`, "", 1, "invalid character 'a' looking for beginning of object key string"},
		{"trailing comma in array", `{"a":[1,]}`, "a[1]", 8, "invalid character ']' looking for beginning of value"},
		{"missing array comma", `[1 2]`, "", 3, "invalid character '2' after array element"},
		{"bad value", `{"a":{"b":[0,x]}}`, "a.b[1]", 13, "invalid character 'x' looking for beginning of value"},
		{"single quotes", `{'a':1}`, "", 1, `invalid character '\'' looking for beginning of object key string`},
		{"non-ASCII outside strings", `[é]`, "[0]", 1, "invalid character 'é' looking for beginning of value"},
		{"bad literal", `{"a":tru}`, "a", 8, "invalid character '}' in literal true (expecting 'e')"},
		{"truncated literal", `nul`, "", 3, "unexpected end of JSON input"},
		{"leading zero", `[01]`, "", 2, "invalid character '1' after array element"},
		{"plus sign", `[+1]`, "[0]", 1, "invalid character '+' looking for beginning of value"},
		{"bare minus", `[-]`, "[0]", 2, "invalid character ']' in numeric literal"},
		{"bad fraction", `[1.]`, "[0]", 3, "invalid character ']' after decimal point in numeric literal"},
		{"bad exponent", `[1e]`, "[0]", 3, "invalid character ']' in exponent of numeric literal"},
		{"control character in string", "[\"a\nb\"]", "[0]", 3, `invalid character '\n' in string literal`},
		{"bad escape", `["\x"]`, "[0]", 3, "invalid character 'x' in string escape code"},
		{"bad unicode escape", `["\u12G4"]`, "[0]", 6, `invalid character 'G' in \u hexadecimal character escape`},
		{"unterminated string", `{"a":"abc`, "a", 9, "unexpected end of JSON input"},
		{"unterminated object", `{"a":1`, "", 6, "unexpected end of JSON input"},
		{"unterminated array", `[1,[2`, "[1]", 5, "unexpected end of JSON input"},
		{"key with space in path", `{"key with space":{"b":1,"b":1}}`, `["key with space"]`, 25, `duplicate key "b"`},
		{"quoted key in path", `{"a":{"x.y":[{"\"q\"":[nul]}]}}`, `a["x.y"][0]["\"q\""][0]`, 26, "invalid character ']' in literal null (expecting 'l')"},
		{"non-ASCII key in path", `{"訂單":{"名字":x}}`, `訂單.名字`, 20, "invalid character 'x' looking for beginning of value"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			j, err := render.CompileJSON([]byte(tt.raw))
			if err == nil {
				t.Fatalf("CompileJSON(%q) = %s, want error", tt.raw, j.Compact())
			}
			if j != nil {
				t.Errorf("CompileJSON returned a template with an error")
			}
			var je *render.JSONError
			if !errors.As(err, &je) {
				t.Fatalf("error %T %v is not a *JSONError", err, err)
			}
			if je.Path != tt.path || je.Reason != tt.reason || je.Offset != tt.offset {
				t.Errorf("CompileJSON(%q) error = {Path:%q Offset:%d Reason:%q}\n want {Path:%q Offset:%d Reason:%q}",
					tt.raw, je.Path, je.Offset, je.Reason, tt.path, tt.offset, tt.reason)
			}
			wantMsg := tt.reason
			if tt.path != "" {
				wantMsg = tt.path + ": " + tt.reason
			}
			if err.Error() != wantMsg {
				t.Errorf("Error() = %q, want %q", err.Error(), wantMsg)
			}
		})
	}
}

func TestCompileJSONAccepts(t *testing.T) {
	for _, raw := range []string{
		`{}`, `[]`, `""`, `0`, `-0.0e-0`, `true`, `false`, `null`,
		`{"a":{"a":{"a":1}}}`, // same key at different levels is fine
		`[{"a":1},{"a":2}]`,   // and in sibling objects
		`{"":1}`,              // empty key
		`["\ud83d\ude00"]`,
		"[\"\u2028\"]",
		` [ ] `,
	} {
		j, err := render.CompileJSON([]byte(raw))
		if err != nil {
			t.Errorf("CompileJSON(%q): %v", raw, err)
			continue
		}
		var want, got any
		if err := json.Unmarshal([]byte(raw), &want); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(j.Compact(), &got); err != nil {
			t.Errorf("Compact() of %q is invalid: %v", raw, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Compact() of %q = %s", raw, j.Compact())
		}
	}
}

func TestCompileJSONDepth(t *testing.T) {
	nest := func(n int, open, close string) string {
		return strings.Repeat(open, n) + strings.Repeat(close, n)
	}
	// 64 levels are fine, 65 are not; objects and arrays count alike.
	for _, ok := range []string{
		nest(64, "[", "]"),
		strings.Repeat(`{"a":`, 64) + "1" + strings.Repeat("}", 64),
		strings.Repeat(`{"a":[`, 32) + strings.Repeat(`]}`, 32),
	} {
		if _, err := render.CompileJSON([]byte(ok)); err != nil {
			t.Errorf("CompileJSON(%.20q...): %v", ok, err)
		}
	}
	_, err := render.CompileJSON([]byte(nest(65, "[", "]")))
	var je *render.JSONError
	if !errors.As(err, &je) {
		t.Fatalf("65 nested arrays: err = %v, want *JSONError", err)
	}
	if je.Reason != "exceeds the maximum nesting depth of 64" || je.Offset != 64 || je.Path != strings.Repeat("[0]", 64) {
		t.Errorf("65 nested arrays: %+v", je)
	}
	_, err = render.CompileJSON([]byte(strings.Repeat(`{"a":`, 65) + "1" + strings.Repeat("}", 65)))
	if !errors.As(err, &je) || je.Reason != "exceeds the maximum nesting depth of 64" {
		t.Errorf("65 nested objects: err = %v", err)
	}
	// Very deep input must fail cleanly, not exhaust the stack.
	if _, err := render.CompileJSON([]byte(nest(1_000_000, "[", "]"))); err == nil {
		t.Error("1e6 nested arrays accepted")
	}
}

func TestRenderJSONAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("alloc counts")
	}
	j := mustCompileJSON(t, `{"a":"Hi $name$","b":{"c":[1,"$orderId$"]},"d":true}`)
	v := render.Vars{"name": "Alice \"A\"\n", "orderId": "ORD-001"}
	if n := testing.AllocsPerRun(100, func() { _ = j.Render(v) }); n > 1 {
		t.Errorf("Render allocs = %v, want <= 1", n)
	}
	buf := make([]byte, 0, 512)
	if n := testing.AllocsPerRun(100, func() { buf = j.AppendRender(buf[:0], v) }); n != 0 {
		t.Errorf("AppendRender into buffer with capacity allocs = %v, want 0", n)
	}
	if !bytes.Equal(buf, j.Render(v)) {
		t.Error("AppendRender and Render differ")
	}
}
