package render

import (
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// maxDepth bounds object/array nesting. The parser is recursive, and the
// input comes from API clients, so an unbounded depth would let one request
// exhaust a goroutine stack.
const maxDepth = 64

// JSONTemplate is a compiled JSON value whose nested string values (in
// objects and arrays, at any depth; not object keys) are templates. It is
// immutable and safe for concurrent use.
//
// Internally the whole value is one flat list of parts: literal parts hold
// already-encoded compact JSON (structure, keys, numbers, and the literal
// pieces of strings, quotes included) and variable parts name the value to
// insert, JSON-escaped, at that point. Rendering therefore never re-parses
// or re-encodes anything that does not depend on a variable.
type JSONTemplate struct {
	parts  []part
	refs   int
	litLen int
	vars   []string
}

// JSONError reports where raw JSON is unacceptable.
type JSONError struct {
	// Path locates the offending element relative to the root, e.g. `a.b[2]`
	// or `["key with space"]`; it is "" for the root. Problems with an object
	// key (duplicates, bad characters) are reported at the object's path.
	Path string
	// Offset is the byte offset in raw where the problem was found (best
	// effort).
	Offset int64
	// Reason is lower-case and human readable, e.g. `duplicate key "a"`,
	// `invalid character '}' after object key`, `contains a NUL character`,
	// `is not valid UTF-8`, `unexpected data after the JSON value`.
	Reason string
}

// Error returns "Path: Reason", or just Reason when Path is "", so that the
// message can be shown to API clients as is.
func (e *JSONError) Error() string {
	if e.Path == "" {
		return e.Reason
	}
	return e.Path + ": " + e.Reason
}

// CompileJSON parses raw strictly and compiles every string value.
//
// It returns a *JSONError for invalid JSON syntax, trailing data after the
// value, a duplicate key within one object (compared after unescaping), a
// NUL character (raw or written as \u0000) in any string or key, invalid
// UTF-8 anywhere, a \u escape that is an unpaired UTF-16 surrogate, and
// nesting deeper than 64 levels. These are rejected rather than repaired
// because downstream consumers disagree on how to handle them (last key wins
// versus first, C strings truncating at NUL), and a request that means
// different things to different systems is better refused.
//
// The top-level value may be any JSON value; callers that need an object
// check that themselves.
func CompileJSON(raw []byte) (*JSONTemplate, error) { return CompileJSONDeclared(raw, nil) }

// CompileJSONDeclared is [CompileJSON] with the names in declared as
// tokens besides the identifier names (see [CompileDeclared]).
func CompileJSONDeclared(raw []byte, declared Declared) (*JSONTemplate, error) {
	c := &jsonCompiler{raw: raw, declared: declared}
	if err := c.value(0); err != nil {
		return nil, err
	}
	c.skipSpace()
	if c.pos < len(c.raw) {
		return nil, c.fail(c.pos, "unexpected data after the JSON value")
	}
	return c.finish(), nil
}

// Vars returns the distinct variable names used in string values, in
// document order. The slice is a fresh copy; it is nil if there are none.
func (j *JSONTemplate) Vars() []string { return slices.Clone(j.vars) }

// HasVars reports whether any string value contains a variable token.
func (j *JSONTemplate) HasVars() bool { return len(j.vars) > 0 }

// Missing returns the distinct names used by j that have no entry in v, in
// document order, or nil if there are none.
func (j *JSONTemplate) Missing(v Vars) []string { return missing(j.vars, v) }

// Render returns the value as compact JSON with variables substituted in
// string values. The result is always valid JSON, whatever the values
// contain, and is a fresh slice the caller owns.
func (j *JSONTemplate) Render(v Vars) []byte { return j.AppendRender(nil, v) }

// AppendRender appends the rendering of j with v to dst and returns the
// extended slice. It allocates only if dst lacks capacity.
func (j *JSONTemplate) AppendRender(dst []byte, v Vars) []byte {
	if j.refs == 0 {
		for i := range j.parts {
			dst = append(dst, j.parts[i].text...)
		}
		return dst
	}
	var stack [maxStackRefs]string
	vals := stack[:0]
	if j.refs > maxStackRefs {
		vals = make([]string, 0, j.refs)
	}
	vals = resolve(vals, j.parts, v)
	n := j.litLen
	for _, val := range vals {
		n += escapedLen(val)
	}
	dst = grow(dst, n)
	k := 0
	for i := range j.parts {
		p := &j.parts[i]
		if p.name == "" {
			dst = append(dst, p.text...)
		} else {
			dst = appendEscaped(dst, vals[k])
			k++
		}
	}
	return dst
}

// Compact returns the compiled value as compact JSON with no substitutions:
// every variable token is left as written. The result is a fresh slice.
func (j *JSONTemplate) Compact() []byte { return j.AppendRender(nil, nil) }

// pathElem is one step of a JSON path: an object key or an array index.
type pathElem struct {
	key   string
	index int
	isKey bool
}

// seg is a compile-time part whose literal text is still a range of
// jsonCompiler.out; finish turns all literal ranges into substrings of a
// single string so that the compiled template holds one contiguous block.
type seg struct {
	start, end int
	name, text string // variable name and token text; name == "" for literals
}

type jsonCompiler struct {
	raw      []byte
	pos      int
	path     []pathElem
	out      []byte // every literal byte of the output, in order
	litStart int    // start in out of the literal run not yet turned into a seg
	segs     []seg
	refs     int
	names    nameSet
	buf      []byte // scratch for unescaping strings
	declared Declared
}

func (c *jsonCompiler) finish() *JSONTemplate {
	c.flush()
	all := string(c.out)
	j := &JSONTemplate{
		parts: make([]part, len(c.segs)),
		refs:  c.refs,
		vars:  c.names.list,
	}
	for i, s := range c.segs {
		if s.name == "" {
			j.parts[i] = part{text: all[s.start:s.end]}
			j.litLen += s.end - s.start
		} else {
			j.parts[i] = part{text: s.text, name: s.name}
		}
	}
	return j
}

// flush ends the current literal run.
func (c *jsonCompiler) flush() {
	if len(c.out) > c.litStart {
		c.segs = append(c.segs, seg{start: c.litStart, end: len(c.out)})
	}
	c.litStart = len(c.out)
}

func (c *jsonCompiler) addVar(name, token string) {
	c.flush()
	// The token is kept as written, unescaped: a missing variable renders
	// as its token, which AppendRender escapes like any value (a declared
	// name may hold a quote, a backslash or a control character).
	c.segs = append(c.segs, seg{name: name, text: token})
	c.refs++
	c.names.add(name)
}

func (c *jsonCompiler) fail(offset int, reason string) *JSONError {
	return &JSONError{Path: formatPath(c.path), Offset: int64(offset), Reason: reason}
}

func (c *jsonCompiler) eof() *JSONError {
	return c.fail(len(c.raw), "unexpected end of JSON input")
}

// badChar reports an unexpected byte at c.pos; context completes the
// sentence "invalid character 'x' ...", following encoding/json's wording so
// that messages look familiar.
func (c *jsonCompiler) badChar(context string) *JSONError {
	b := c.raw[c.pos]
	if b >= utf8.RuneSelf {
		r, size := utf8.DecodeRune(c.raw[c.pos:])
		if r == utf8.RuneError && size == 1 {
			return c.fail(c.pos, "is not valid UTF-8")
		}
		return c.fail(c.pos, "invalid character "+quoteRune(r)+" "+context)
	}
	return c.fail(c.pos, "invalid character "+quoteRune(rune(b))+" "+context)
}

func quoteRune(r rune) string {
	switch r {
	case '\'':
		return `'\''`
	case '"':
		return `'"'`
	}
	s := strconv.Quote(string(r))
	return "'" + s[1:len(s)-1] + "'"
}

func (c *jsonCompiler) skipSpace() {
	for c.pos < len(c.raw) {
		switch c.raw[c.pos] {
		case ' ', '\t', '\n', '\r':
			c.pos++
		default:
			return
		}
	}
}

// value parses one JSON value at c.pos; depth is the nesting level of the
// enclosing container (0 at the root).
func (c *jsonCompiler) value(depth int) error {
	c.skipSpace()
	if c.pos >= len(c.raw) {
		return c.eof()
	}
	switch b := c.raw[c.pos]; {
	case b == '{':
		return c.object(depth + 1)
	case b == '[':
		return c.array(depth + 1)
	case b == '"':
		s, err := c.str("")
		if err != nil {
			return err
		}
		c.stringValue(s)
		return nil
	case b == '-' || ('0' <= b && b <= '9'):
		return c.number()
	case b == 't':
		return c.literal("true")
	case b == 'f':
		return c.literal("false")
	case b == 'n':
		return c.literal("null")
	default:
		return c.badChar("looking for beginning of value")
	}
}

func (c *jsonCompiler) object(depth int) error {
	if depth > maxDepth {
		return c.fail(c.pos, "exceeds the maximum nesting depth of "+strconv.Itoa(maxDepth))
	}
	c.pos++ // '{'
	c.out = append(c.out, '{')
	c.skipSpace()
	if c.pos >= len(c.raw) {
		return c.eof()
	}
	if c.raw[c.pos] == '}' {
		c.pos++
		c.out = append(c.out, '}')
		return nil
	}
	var keys nameSet
	members := 0
	for {
		c.skipSpace()
		if c.pos >= len(c.raw) {
			return c.eof()
		}
		if c.raw[c.pos] != '"' {
			return c.badChar("looking for beginning of object key string")
		}
		keyOff := c.pos
		key, err := c.str("object key ")
		if err != nil {
			return err
		}
		if !keys.add(key) {
			return c.fail(keyOff, "duplicate key "+string(appendQuoted(nil, key)))
		}
		if members > 0 {
			c.out = append(c.out, ',')
		}
		members++
		c.out = appendQuoted(c.out, key)
		c.skipSpace()
		if c.pos >= len(c.raw) {
			return c.eof()
		}
		if c.raw[c.pos] != ':' {
			return c.badChar("after object key")
		}
		c.pos++
		c.out = append(c.out, ':')
		c.path = append(c.path, pathElem{key: key, isKey: true})
		if err := c.value(depth); err != nil {
			return err
		}
		c.path = c.path[:len(c.path)-1]
		c.skipSpace()
		if c.pos >= len(c.raw) {
			return c.eof()
		}
		switch c.raw[c.pos] {
		case ',':
			c.pos++
		case '}':
			c.pos++
			c.out = append(c.out, '}')
			return nil
		default:
			return c.badChar("after object key:value pair")
		}
	}
}

func (c *jsonCompiler) array(depth int) error {
	if depth > maxDepth {
		return c.fail(c.pos, "exceeds the maximum nesting depth of "+strconv.Itoa(maxDepth))
	}
	c.pos++ // '['
	c.out = append(c.out, '[')
	c.skipSpace()
	if c.pos >= len(c.raw) {
		return c.eof()
	}
	if c.raw[c.pos] == ']' {
		c.pos++
		c.out = append(c.out, ']')
		return nil
	}
	for i := 0; ; i++ {
		if i > 0 {
			c.out = append(c.out, ',')
		}
		c.path = append(c.path, pathElem{index: i})
		if err := c.value(depth); err != nil {
			return err
		}
		c.path = c.path[:len(c.path)-1]
		c.skipSpace()
		if c.pos >= len(c.raw) {
			return c.eof()
		}
		switch c.raw[c.pos] {
		case ',':
			c.pos++
		case ']':
			c.pos++
			c.out = append(c.out, ']')
			return nil
		default:
			return c.badChar("after array element")
		}
	}
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }

// number validates a number literal and copies its text unchanged, so that
// precision and formatting chosen by the client survive (no float64
// round trip).
func (c *jsonCompiler) number() error {
	start := c.pos
	if c.raw[c.pos] == '-' {
		c.pos++
		if c.pos >= len(c.raw) {
			return c.eof()
		}
	}
	switch b := c.raw[c.pos]; {
	case b == '0':
		c.pos++
	case '1' <= b && b <= '9':
		for c.pos < len(c.raw) && isDigit(c.raw[c.pos]) {
			c.pos++
		}
	default:
		return c.badChar("in numeric literal")
	}
	if c.pos < len(c.raw) && c.raw[c.pos] == '.' {
		c.pos++
		if c.pos >= len(c.raw) {
			return c.eof()
		}
		if !isDigit(c.raw[c.pos]) {
			return c.badChar("after decimal point in numeric literal")
		}
		for c.pos < len(c.raw) && isDigit(c.raw[c.pos]) {
			c.pos++
		}
	}
	if c.pos < len(c.raw) && (c.raw[c.pos] == 'e' || c.raw[c.pos] == 'E') {
		c.pos++
		if c.pos < len(c.raw) && (c.raw[c.pos] == '+' || c.raw[c.pos] == '-') {
			c.pos++
		}
		if c.pos >= len(c.raw) {
			return c.eof()
		}
		if !isDigit(c.raw[c.pos]) {
			return c.badChar("in exponent of numeric literal")
		}
		for c.pos < len(c.raw) && isDigit(c.raw[c.pos]) {
			c.pos++
		}
	}
	c.out = append(c.out, c.raw[start:c.pos]...)
	return nil
}

func (c *jsonCompiler) literal(word string) error {
	for i := 0; i < len(word); i++ {
		if c.pos >= len(c.raw) {
			return c.eof()
		}
		if c.raw[c.pos] != word[i] {
			return c.badChar("in literal " + word + " (expecting " + quoteRune(rune(word[i])) + ")")
		}
		c.pos++
	}
	c.out = append(c.out, word...)
	return nil
}

// str parses the string starting at c.pos (a '"') and returns it unescaped.
// what prefixes reasons about the string's content ("object key " for keys)
// because key problems are reported at the enclosing object's path.
func (c *jsonCompiler) str(what string) (string, error) {
	c.pos++ // opening quote
	buf := c.buf[:0]
	for {
		// Copy the run of bytes that need no attention in one go.
		run := c.pos
		for c.pos < len(c.raw) {
			b := c.raw[c.pos]
			if b == '"' || b == '\\' || b < 0x20 || b >= utf8.RuneSelf {
				break
			}
			c.pos++
		}
		buf = append(buf, c.raw[run:c.pos]...)
		if c.pos >= len(c.raw) {
			return "", c.eof()
		}
		switch b := c.raw[c.pos]; {
		case b == '"':
			c.pos++
			c.buf = buf
			return string(buf), nil
		case b == '\\':
			var err error
			if buf, err = c.escape(buf, what); err != nil {
				return "", err
			}
		case b == 0:
			return "", c.fail(c.pos, what+"contains a NUL character")
		case b < 0x20:
			return "", c.badChar("in string literal")
		default:
			r, size := utf8.DecodeRune(c.raw[c.pos:])
			if r == utf8.RuneError && size == 1 {
				return "", c.fail(c.pos, what+"is not valid UTF-8")
			}
			buf = append(buf, c.raw[c.pos:c.pos+size]...)
			c.pos += size
		}
	}
}

// escape decodes the escape sequence at c.pos (a '\\') onto buf.
func (c *jsonCompiler) escape(buf []byte, what string) ([]byte, error) {
	start := c.pos
	c.pos++
	if c.pos >= len(c.raw) {
		return buf, c.eof()
	}
	b := c.raw[c.pos]
	switch b {
	case '"', '\\', '/':
		c.pos++
		return append(buf, b), nil
	case 'b':
		c.pos++
		return append(buf, '\b'), nil
	case 'f':
		c.pos++
		return append(buf, '\f'), nil
	case 'n':
		c.pos++
		return append(buf, '\n'), nil
	case 'r':
		c.pos++
		return append(buf, '\r'), nil
	case 't':
		c.pos++
		return append(buf, '\t'), nil
	case 'u':
		c.pos++
		r, err := c.hex4()
		if err != nil {
			return buf, err
		}
		if r == 0 {
			return buf, c.fail(start, what+"contains a NUL character")
		}
		if utf16.IsSurrogate(r) {
			// A valid pair is a high surrogate immediately followed by an
			// escaped low surrogate; anything else cannot be represented in
			// UTF-8 and is treated like invalid UTF-8.
			if r < 0xdc00 && c.pos+1 < len(c.raw) && c.raw[c.pos] == '\\' && c.raw[c.pos+1] == 'u' {
				c.pos += 2
				r2, err := c.hex4()
				if err != nil {
					return buf, err
				}
				if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
					return utf8.AppendRune(buf, dec), nil
				}
			}
			return buf, c.fail(start, what+"contains an unpaired UTF-16 surrogate escape")
		}
		return utf8.AppendRune(buf, r), nil
	default:
		return buf, c.badChar("in string escape code")
	}
}

// hex4 reads the four hex digits of a \u escape at c.pos.
func (c *jsonCompiler) hex4() (rune, error) {
	var r rune
	for range 4 {
		if c.pos >= len(c.raw) {
			return 0, c.eof()
		}
		b := c.raw[c.pos]
		switch {
		case '0' <= b && b <= '9':
			r = r<<4 | rune(b-'0')
		case 'a' <= b && b <= 'f':
			r = r<<4 | rune(b-'a'+10)
		case 'A' <= b && b <= 'F':
			r = r<<4 | rune(b-'A'+10)
		default:
			return 0, c.badChar(`in \u hexadecimal character escape`)
		}
		c.pos++
	}
	return r, nil
}

// stringValue emits a string value, pre-encoding its literal pieces and
// recording its variables. Tokens are recognised in the unescaped text, so
// "\u0024name\u0024" is the variable $name$, as the value means.
func (c *jsonCompiler) stringValue(s string) {
	c.out = append(c.out, '"')
	if strings.IndexByte(s, '$') < 0 {
		c.out = appendEscaped(c.out, s)
	} else {
		scan(s, c.declared, func(p part) {
			if p.name == "" {
				c.out = appendEscaped(c.out, p.text)
			} else {
				c.addVar(p.name, p.text)
			}
		})
	}
	c.out = append(c.out, '"')
}

// formatPath renders a path in the JavaScript-like form clients expect:
// identifier keys with dots, other keys as ["quoted"], indexes as [n].
func formatPath(path []pathElem) string {
	if len(path) == 0 {
		return ""
	}
	var b []byte
	for i, e := range path {
		switch {
		case !e.isKey:
			b = append(b, '[')
			b = strconv.AppendInt(b, int64(e.index), 10)
			b = append(b, ']')
		case isIdentKey(e.key):
			if i > 0 {
				b = append(b, '.')
			}
			b = append(b, e.key...)
		default:
			b = append(b, '[')
			b = appendQuoted(b, e.key)
			b = append(b, ']')
		}
	}
	return string(b)
}

// isIdentKey reports whether key can be written bare in a path. '.', '-' and
// '$' are excluded (unlike in variable names) because they would make the
// path ambiguous or unreadable.
func isIdentKey(key string) bool {
	if key == "" {
		return false
	}
	for i, r := range key {
		switch {
		case isNameStart(r):
		case i > 0 && r != '-' && r != '.' && isNameRune(r):
		default:
			return false
		}
	}
	return true
}
