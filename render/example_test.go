package render_test

import (
	"fmt"

	"github.com/chatbatch/chatbatch/render"
)

func ExampleCompile() {
	tmpl := render.Compile("Hi $name$,您的訂單 $orderId$ 已出貨! Total: $5 $total$")
	fmt.Println(tmpl.Vars())

	recipients := []render.Vars{
		{"name": "Alice", "orderId": "ORD-001", "total": "$12.50"},
		{"name": "Bob", "orderId": "ORD-002"},
	}
	for _, v := range recipients {
		fmt.Println(tmpl.Render(v), tmpl.Missing(v))
	}
	// Output:
	// [name orderId total]
	// Hi Alice,您的訂單 ORD-001 已出貨! Total: $5 $12.50 []
	// Hi Bob,您的訂單 ORD-002 已出貨! Total: $5 $total$ [total]
}

func ExampleCompileJSON() {
	extra, err := render.CompileJSON([]byte(`{
		"title": "Order $orderId$",
		"$name$": ["$name$", 1.50, true]
	}`))
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s\n", extra.Render(render.Vars{"name": `Al "the pal"`, "orderId": "ORD-001"}))

	_, err = render.CompileJSON([]byte(`{"a":{"b":1,"b":2}}`))
	fmt.Println(err)
	// Output:
	// {"title":"Order ORD-001","$name$":["Al \"the pal\"",1.50,true]}
	// a: duplicate key "b"
}
