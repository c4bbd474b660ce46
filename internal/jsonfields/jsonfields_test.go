package jsonfields

import (
	"encoding/json"
	"testing"
)

func TestAppend(t *testing.T) {
	for _, c := range []struct {
		obj    string
		fields map[string]json.RawMessage
		want   string
	}{
		{`{"a":1}`, nil, `{"a":1}`},
		{`{"a":1}`, map[string]json.RawMessage{"z": json.RawMessage(`{"x": [1, 2]}`), "b": json.RawMessage(`"貼圖"`)}, `{"a":1,"b":"貼圖","z":{"x": [1, 2]}}`},
		{`{"a":1}`, map[string]json.RawMessage{"a": json.RawMessage(`2`)}, `{"a":1}`},
		{`{}`, map[string]json.RawMessage{"b": json.RawMessage(`true`), "c": json.RawMessage(`null`)}, `{"b":true,"c":null}`},
	} {
		got, err := Append([]byte(c.obj), c.fields)
		if err != nil || string(got) != c.want {
			t.Errorf("Append(%s, %v) = %s, %v; want %s", c.obj, c.fields, got, err, c.want)
		}
		if !json.Valid(got) {
			t.Errorf("Append(%s, …) = %s: not valid JSON", c.obj, got)
		}
	}
}
