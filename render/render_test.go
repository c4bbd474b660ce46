package render_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/chatbatch/chatbatch/render"
)

func TestIsVarName(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"name", true},
		{"orderId", true},
		{"_", true},
		{"_x1", true},
		{"a-b.c_d", true},
		{"a1", true},
		{"名字", true},
		{"訂單編號2", true},
		{"été", true},
		{"x٣", true}, // Arabic-Indic digit three is a Unicode digit
		{"", false},
		{"5", false},
		{"5a", false},
		{"-a", false},
		{".a", false},
		{"a b", false},
		{"a$b", false},
		{"$", false},
		{"a\tb", false},
		{"a😀", false},      // emoji are symbols, not letters
		{"\xffabc", false}, // invalid UTF-8
		{"ab\xff", false},
		{"\ufffd", false},
	}
	for _, tt := range tests {
		if got := render.IsVarName(tt.name); got != tt.want {
			t.Errorf("IsVarName(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestParseVarKey(t *testing.T) {
	tests := []struct {
		key    string
		name   string
		wantOK bool
	}{
		{"$orderId$", "orderId", true},
		{"$name$", "name", true},
		{"$名字$", "名字", true},
		{"$a-b.c$", "a-b.c", true},
		{"$_$", "_", true},
		{"name", "", false},
		{"$name", "", false},
		{"name$", "", false},
		{"$5$", "", false},
		{"$$", "", false},
		{"$", "", false},
		{"", "", false},
		{"$a b$", "", false},
		{"$a$b$", "", false},
		{"$$a$", "", false},
		{" $a$", "", false},
		{"$a$ ", "", false},
		{"receiver", "", false},
	}
	for _, tt := range tests {
		name, ok := render.ParseVarKey(tt.key)
		if name != tt.name || ok != tt.wantOK {
			t.Errorf("ParseVarKey(%q) = %q, %v; want %q, %v", tt.key, name, ok, tt.name, tt.wantOK)
		}
	}
}

func TestRender(t *testing.T) {
	tests := []struct {
		desc string
		src  string
		vars render.Vars
		want string
	}{
		{
			desc: "seed example",
			src:  "Hi $name$,您的訂單 $orderId$ 已出貨!",
			vars: render.Vars{"name": "Alice", "orderId": "ORD-001"},
			want: "Hi Alice,您的訂單 ORD-001 已出貨!",
		},
		{desc: "empty", src: "", vars: render.Vars{"a": "x"}, want: ""},
		{desc: "no tokens", src: "plain text", vars: nil, want: "plain text"},
		{desc: "prices are literal", src: "Price $5 and $10", vars: render.Vars{"5": "x"}, want: "Price $5 and $10"},
		{desc: "numeric token is literal", src: "$5$", vars: render.Vars{"5": "x"}, want: "$5$"},
		{desc: "double dollar then token", src: "$$name$", vars: render.Vars{"name": "N"}, want: "$N"},
		{desc: "token then literal", src: "$a$b$", vars: render.Vars{"a": "A", "b": "B"}, want: "Ab$"},
		{desc: "adjacent tokens", src: "$a$$b$", vars: render.Vars{"a": "A", "b": "B"}, want: "AB"},
		{desc: "lone dollar", src: "$", vars: nil, want: "$"},
		{desc: "dollars only", src: "$$$$", vars: nil, want: "$$$$"},
		{desc: "unterminated", src: "cost: $name", vars: render.Vars{"name": "x"}, want: "cost: $name"},
		{desc: "space in name", src: "$a b$", vars: render.Vars{"a b": "x", "a": "y"}, want: "$a b$"},
		{desc: "failed token resumes at next byte", src: "$ $a$", vars: render.Vars{"a": "A"}, want: "$ A"},
		{desc: "dotted and dashed names", src: "$user.first-name$", vars: render.Vars{"user.first-name": "Bo"}, want: "Bo"},
		{desc: "non-ASCII name", src: "你好 $名字$!", vars: render.Vars{"名字": "小明"}, want: "你好 小明!"},
		{desc: "repeated", src: "$a$-$a$-$a$", vars: render.Vars{"a": "x"}, want: "x-x-x"},
		{desc: "one pass", src: "$a$", vars: render.Vars{"a": "$b$", "b": "X"}, want: "$b$"},
		{desc: "one pass across boundary", src: "$a$b$", vars: render.Vars{"a": "$", "b": "X"}, want: "$b$"},
		{desc: "value forms token with literal", src: "$a$name$", vars: render.Vars{"a": "$", "name": "X"}, want: "$name$"},
		{desc: "missing left as written", src: "Hi $name$, $x$", vars: render.Vars{"x": "1"}, want: "Hi $name$, 1"},
		{desc: "nil vars", src: "Hi $name$", vars: nil, want: "Hi $name$"},
		{desc: "empty value", src: "[$a$]", vars: render.Vars{"a": ""}, want: "[]"},
		{desc: "value with newline and emoji", src: "<$a$>", vars: render.Vars{"a": "x\ny😀"}, want: "<x\ny😀>"},
		{desc: "invalid UTF-8 kept in plain text", src: "\xff$a$\xfe", vars: render.Vars{"a": "\xfd"}, want: "\xff\xfd\xfe"},
		{desc: "invalid UTF-8 ends name", src: "$a\xff$", vars: render.Vars{"a": "x"}, want: "$a\xff$"},
		{desc: "token at end", src: "x$a$", vars: render.Vars{"a": "1"}, want: "x1"},
		{desc: "token only", src: "$a$", vars: render.Vars{"a": "1"}, want: "1"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			tmpl := render.Compile(tt.src)
			if got := tmpl.Source(); got != tt.src {
				t.Errorf("Source() = %q, want %q", got, tt.src)
			}
			if got := tmpl.Render(tt.vars); got != tt.want {
				t.Errorf("Render(%q) = %q, want %q", tt.src, got, tt.want)
			}
			prefix := []byte("prefix:")
			if got := string(tmpl.AppendRender(prefix, tt.vars)); got != "prefix:"+tt.want {
				t.Errorf("AppendRender(%q) = %q, want %q", tt.src, got, "prefix:"+tt.want)
			}
		})
	}
}

func TestVarsAndMissing(t *testing.T) {
	tmpl := render.Compile("$b$ $a$ $5$ $b$ $c$ $a$ $$d$")
	wantVars := []string{"b", "a", "c", "d"}
	if got := tmpl.Vars(); !slices.Equal(got, wantVars) {
		t.Fatalf("Vars() = %q, want %q", got, wantVars)
	}
	// Vars returns a copy: modifying it must not affect the template.
	tmpl.Vars()[0] = "zzz"
	if got := tmpl.Vars(); !slices.Equal(got, wantVars) {
		t.Fatalf("Vars() after modifying a returned slice = %q, want %q", got, wantVars)
	}
	if !tmpl.HasVars() {
		t.Error("HasVars() = false, want true")
	}

	tests := []struct {
		vars render.Vars
		want []string
	}{
		{nil, []string{"b", "a", "c", "d"}},
		{render.Vars{"a": "1"}, []string{"b", "c", "d"}},
		{render.Vars{"c": "", "zz": "1"}, []string{"b", "a", "d"}},
		{render.Vars{"a": "", "b": "", "c": "", "d": ""}, nil},
	}
	for _, tt := range tests {
		got := tmpl.Missing(tt.vars)
		if !slices.Equal(got, tt.want) || (tt.want == nil && got != nil) {
			t.Errorf("Missing(%v) = %#v, want %#v", tt.vars, got, tt.want)
		}
	}

	plain := render.Compile("Price $5 and $10")
	if plain.HasVars() {
		t.Error("HasVars() = true for a template without tokens")
	}
	if got := plain.Vars(); got != nil {
		t.Errorf("Vars() = %#v, want nil", got)
	}
	if got := plain.Missing(nil); got != nil {
		t.Errorf("Missing(nil) = %#v, want nil", got)
	}
}

func TestRenderAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("alloc counts")
	}
	tmpl := render.Compile("Hi $name$,您的訂單 $orderId$ 已出貨!")
	v := render.Vars{"name": "Alice", "orderId": "ORD-001"}
	if n := testing.AllocsPerRun(100, func() { _ = tmpl.Render(v) }); n > 1 {
		t.Errorf("Render allocs = %v, want <= 1", n)
	}
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { buf = tmpl.AppendRender(buf[:0], v) }); n != 0 {
		t.Errorf("AppendRender into buffer with capacity allocs = %v, want 0", n)
	}
	constant := render.Compile("no variables here")
	if n := testing.AllocsPerRun(100, func() { _ = constant.Render(v) }); n != 0 {
		t.Errorf("Render without variables allocs = %v, want 0", n)
	}
}

func TestManyRefs(t *testing.T) {
	// More references than fit in Render's stack buffer.
	src := ""
	want := ""
	v := render.Vars{}
	for i := range 40 {
		name := fmt.Sprintf("v%d", i)
		src += fmt.Sprintf("[$%s$]", name)
		if i%3 == 0 {
			want += fmt.Sprintf("[$%s$]", name)
			continue
		}
		v[name] = fmt.Sprint(i * i)
		want += fmt.Sprintf("[%d]", i*i)
	}
	tmpl := render.Compile(src)
	if got := tmpl.Render(v); got != want {
		t.Errorf("Render = %q, want %q", got, want)
	}
	if got := string(tmpl.AppendRender(nil, v)); got != want {
		t.Errorf("AppendRender = %q, want %q", got, want)
	}
}

func TestConcurrentRender(t *testing.T) {
	tmpl := render.Compile("Hi $name$,您的訂單 $orderId$ 已出貨!")
	jt, err := render.CompileJSON([]byte(`{"to":"$name$","items":["$orderId$",1]}`))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for g := range 16 {
		wg.Go(func() {
			var buf []byte
			for i := range 200 {
				name := fmt.Sprintf("user-%d-%d", g, i)
				order := fmt.Sprintf("ORD-%03d", i)
				v := render.Vars{"name": name, "orderId": order}
				want := "Hi " + name + ",您的訂單 " + order + " 已出貨!"
				if got := tmpl.Render(v); got != want {
					errs <- fmt.Sprintf("Render = %q, want %q", got, want)
					return
				}
				buf = tmpl.AppendRender(buf[:0], v)
				if string(buf) != want {
					errs <- fmt.Sprintf("AppendRender = %q, want %q", buf, want)
					return
				}
				wantJSON := `{"to":"` + name + `","items":["` + order + `",1]}`
				if got := string(jt.Render(v)); got != wantJSON {
					errs <- fmt.Sprintf("JSON Render = %s, want %s", got, wantJSON)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
