// Package jsonfields adds a message's extra top-level fields
// (batch.Config.ExtraFields, stored verbatim) to a JSON object beside its
// own, as IMKit shows them: the batch API's and chatbatchd's IMKit-shaped
// messages share it.
package jsonfields

import (
	"encoding/json"
	"maps"
	"slices"
)

// Append returns obj, a JSON object as json.Marshal writes it, with each of fields added after its
// own members, in name order, the values byte for byte; a field whose
// name obj already has is left out (the object's own members win).
func Append(obj []byte, fields map[string]json.RawMessage) ([]byte, error) {
	if len(fields) == 0 {
		return obj, nil
	}
	var known map[string]json.RawMessage
	if err := json.Unmarshal(obj, &known); err != nil {
		return nil, err
	}
	b := obj[:len(obj)-1] // without the closing brace
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		if _, taken := known[k]; taken {
			continue
		}
		name, err := json.Marshal(k)
		if err != nil {
			return nil, err
		}
		if len(b) > 1 { // a member before this one
			b = append(b, ',')
		}
		b = append(append(append(b, name...), ':'), fields[k]...)
	}
	return append(b, '}'), nil
}
