package render_test

import (
	"testing"

	"github.com/chatbatch/chatbatch/render"
)

// benchMessage is about 100 characters with two variables, the typical shape
// of a batch message.
const benchMessage = "Hi $name$, thanks for shopping with us! Your order $orderId$ has shipped and will arrive in 2-3 days."

const benchExtra = `{
	"title": "Order $orderId$ shipped",
	"priority": 2,
	"silent": false,
	"data": {"customer": "$name$", "url": "https://example.com/orders/$orderId$?ref=push", "score": 4.5},
	"tags": ["shipping", "$name$", 7, null]
}`

var benchVars = render.Vars{"receiver": "user-a", "name": "Alice", "orderId": "ORD-001"}

var (
	sinkString string
	sinkBytes  []byte
)

func BenchmarkRender(b *testing.B) {
	tmpl := render.Compile(benchMessage)
	b.ReportAllocs()
	for b.Loop() {
		sinkString = tmpl.Render(benchVars)
	}
}

func BenchmarkAppendRender(b *testing.B) {
	tmpl := render.Compile(benchMessage)
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = tmpl.AppendRender(buf[:0], benchVars)
	}
	sinkBytes = buf
}

func BenchmarkRenderExtra(b *testing.B) {
	j, err := render.CompileJSON([]byte(benchExtra))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("Render", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sinkBytes = j.Render(benchVars)
		}
	})
	b.Run("AppendRender", func(b *testing.B) {
		buf := make([]byte, 0, 512)
		b.ReportAllocs()
		for b.Loop() {
			buf = j.AppendRender(buf[:0], benchVars)
		}
		sinkBytes = buf
	})
}

func BenchmarkCompile(b *testing.B) {
	b.Run("Message", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = render.Compile(benchMessage)
		}
	})
	b.Run("Extra", func(b *testing.B) {
		raw := []byte(benchExtra)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := render.CompileJSON(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
}
