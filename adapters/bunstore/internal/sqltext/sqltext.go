// Package sqltext writes values into SQL text as bun's dialects do, but
// in one copy where it can. On MySQL and SQLite bunstore's statements
// carry their values inline, 500 messages a statement, and the
// dialects' own string writer goes rune by rune: on MySQL it was a sixth
// of the worker's CPU. Its tests (that the text is byte for byte the
// dialects' own) live in adapters/bunstore/internal/alldb, which may
// import every dialect; a test here would put them in the go.sum of every
// program that imports bunstore.
package sqltext

import (
	"unicode/utf8"

	"github.com/uptrace/bun/schema"
)

// AppendString writes s as a quoted SQL literal, as gen's dialect does.
// Most values (IDs, a rendered message) hold no quote, backslash or NUL
// and are valid UTF-8: for those every dialect's literal is s between
// quotes, written here in one copy. The rest goes to the dialect.
func AppendString(gen schema.QueryGen, b []byte, s string) []byte {
	ascii := true
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\'', c == '\\', c == 0:
			return gen.Dialect().AppendString(b, s)
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	if !ascii && !utf8.ValidString(s) {
		return gen.Dialect().AppendString(b, s)
	}
	b = append(b, '\'')
	b = append(b, s...)
	return append(b, '\'')
}

// IDList is a list of strings that bun writes as 'a', 'b', … for an
// IN (?), as bun.List does, through AppendString.
type IDList []string

// AppendQuery implements schema.QueryAppender.
func (l IDList) AppendQuery(gen schema.QueryGen, b []byte) ([]byte, error) {
	if len(l) == 0 {
		return append(b, "NULL"...), nil // as bun.List: IN (NULL) matches nothing
	}
	for i, s := range l {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = AppendString(gen, b, s)
	}
	return b, nil
}
