// Package render compiles $name$ templates once and renders them per
// recipient.
//
// A batch request carries one message template (and optionally one "extra"
// JSON object) plus thousands of recipients, each with its own variable
// values. Parsing the template for every recipient would repeat the same work
// thousands of times, so the template is compiled once into a list of literal
// runs and variable references, and rendering only has to look up values and
// copy bytes.
//
// # Syntax
//
// A variable token is a dollar sign, a variable name and a dollar sign:
// "$name$", "$orderId$", "$名字$". Two kinds of name make tokens:
//
//   - identifier names, always: non-empty, starting with a Unicode letter or
//     '_', continuing with Unicode letters, Unicode digits, '_', '-' or '.'
//     (see [IsVarName]);
//   - declared names, when the template is compiled with them
//     ([CompileDeclared]): any non-empty text without '$', such as "1",
//     "first name" or "訂單編號". A batch's recipients declare the names of
//     their "$…$" keys (see [ParseKey]).
//
// Anything else is literal text: there is no escape syntax and compilation
// never fails, because message authors routinely write prices such as "$5"
// and must not have to think about escaping them.
//
// Templates are scanned left to right. At each '$', the candidate name is
// the text up to the next '$'; if it is an identifier name or a declared
// one, the '$', the name and the closing '$' are a token; otherwise the '$'
// is literal and scanning resumes at the next byte. A name cannot contain
// '$', so at most one token starts at any position (the longest match is
// the only match). Hence "Price $5 and $10" has no tokens (unless "5 and "
// is declared), "$$name$" is a literal '$' followed by the token $name$,
// and "$a$b$" is the token $a$ followed by the literal text "b$".
//
// # One pass
//
// Substituted values are never scanned again. Rendering "$a$" with
// a="$b$" and b="X" yields "$b$". Values come from recipients, and a
// recipient must not be able to pull another variable's value (or trigger
// exponential expansion) by putting a token in its own data.
//
// # Missing variables
//
// A variable with no entry in [Vars] is left exactly as written ("$name$"),
// so a forgotten value is visible in the delivered message rather than
// silently producing an empty string; [Template.Missing] lets callers reject
// such recipients up front instead. A variable whose value is "" renders as
// nothing.
//
// # JSON
//
// [CompileJSON] parses a JSON value strictly and treats every string value,
// at any depth inside objects and arrays, as a template. Object keys are never
// substituted: they are structure, and substituting them could produce
// duplicate keys. Rendering produces compact JSON that is always valid
// whatever the variable values contain, because values are JSON-escaped as
// they are inserted; everything that does not depend on a value (structure,
// keys, numbers, literal string parts) is encoded once at compile time.
//
// # Concurrency
//
// [Template] and [JSONTemplate] are immutable after compilation and safe for
// concurrent use by any number of goroutines. Rendering never retains the
// [Vars] map.
package render

import (
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Vars maps a variable name (without the dollar signs) to its value.
//
// It is an alias rather than a defined type so that a plain
// map[string]string built by callers (for example from decoded JSON) can be
// passed without conversion.
type Vars = map[string]string

// IsVarName reports whether name is a valid variable name: non-empty, its
// first rune a Unicode letter or '_', and every other rune a Unicode letter,
// Unicode digit, '_', '-' or '.'.
//
// Names may not start with a digit so that amounts such as "$5$" stay
// literal text.
func IsVarName(name string) bool {
	if name == "" {
		return false
	}
	for i, r := range name {
		if i == 0 {
			if !isNameStart(r) {
				return false
			}
		} else if !isNameRune(r) {
			return false
		}
	}
	return true
}

// ParseVarKey reports whether key has the form "$name$" with
// IsVarName(name), and returns name: a key whose token is one whether
// declared or not. Recipient keys are read with [ParseKey], which also
// accepts declared names.
//
//	ParseVarKey("$orderId$") = "orderId", true
//	ParseVarKey("name")      = "", false
//	ParseVarKey("$5$")       = "", false
func ParseVarKey(key string) (name string, ok bool) {
	if len(key) < 3 || key[0] != '$' || key[len(key)-1] != '$' {
		return "", false
	}
	name = key[1 : len(key)-1]
	if !IsVarName(name) {
		return "", false
	}
	return name, true
}

// MaxNameLen is the longest declared name, in bytes, that [ParseKey]
// accepts. Identifier names ([IsVarName]) have no limit of their own.
const MaxNameLen = 255

// ParseKey reports whether key has the form "$name$" with a name a
// recipient may declare, and returns name: an identifier name
// ([IsVarName]), or any other non-empty text of at most [MaxNameLen]
// bytes without '$'.
//
// Recipient objects mix variable keys ("$orderId$", "$first name$") with
// fixed fields ("receiver"); this is how the two are told apart.
//
//	ParseKey("$orderId$")    = "orderId", true
//	ParseKey("$first name$") = "first name", true
//	ParseKey("$1$")          = "1", true
//	ParseKey("name")         = "", false
//	ParseKey("$a$b$")        = "", false
func ParseKey(key string) (name string, ok bool) {
	if len(key) < 3 || key[0] != '$' || key[len(key)-1] != '$' {
		return "", false
	}
	name = key[1 : len(key)-1]
	if strings.IndexByte(name, '$') >= 0 || (len(name) > MaxNameLen && !IsVarName(name)) {
		return "", false
	}
	return name, true
}

// Declared is a set of declared variable names (without the dollar signs):
// in a template compiled with it ([CompileDeclared], [CompileJSONDeclared]),
// "$name$" is a token for every name in the set, whatever its characters.
// Identifier names need not be in it, as they are tokens anyway. A nil
// Declared declares nothing.
type Declared map[string]struct{}

// NewDeclared returns the set of names.
func NewDeclared(names ...string) Declared {
	if len(names) == 0 {
		return nil
	}
	d := make(Declared, len(names))
	for _, n := range names {
		d[n] = struct{}{}
	}
	return d
}

// isNameStart reports whether r may begin a variable name. utf8.RuneError
// (from invalid input) is not a letter, so invalid bytes never form names.
func isNameStart(r rune) bool {
	if r < utf8.RuneSelf {
		return r == '_' || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z')
	}
	return unicode.IsLetter(r)
}

// isNameRune reports whether r may appear after the first rune of a name.
func isNameRune(r rune) bool {
	if r < utf8.RuneSelf {
		return r == '_' || r == '-' || r == '.' ||
			('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || ('0' <= r && r <= '9')
	}
	return unicode.IsLetter(r) || unicode.IsDigit(r)
}

// tokenEnd reports where the token starting at s[i] (which must be '$')
// ends: the index just past its closing '$', or -1 if no valid token starts
// there. '$' is not a name rune, so the first '$' after the opening one is
// the only possible closing one and the scan is linear overall.
func tokenEnd(s string, i int) int {
	j := i + 1
	for j < len(s) {
		c := s[j]
		if c == '$' {
			if j == i+1 {
				return -1
			}
			return j + 1
		}
		r, size := rune(c), 1
		if c >= utf8.RuneSelf {
			r, size = utf8.DecodeRuneInString(s[j:])
		}
		if j == i+1 {
			if !isNameStart(r) {
				return -1
			}
		} else if !isNameRune(r) {
			return -1
		}
		j += size
	}
	return -1
}

// part is one piece of a compiled template. For literals name is "" and text
// is the literal text. For variables text is the token as written
// ("$name$"), which is exactly what a missing variable renders as, so the
// render loop needs no special case for missing values.
type part struct {
	text string
	name string
}

// declaredEnd is tokenEnd for a declared name: the index just past the
// closing '$' of the token starting at s[i] (a '$') if the text up to the
// next '$' is a name in declared, or -1.
func declaredEnd(s string, i int, declared Declared) int {
	j := strings.IndexByte(s[i+1:], '$')
	if j <= 0 {
		return -1
	}
	if _, ok := declared[s[i+1:i+1+j]]; !ok {
		return -1
	}
	return i + j + 2
}

// scan splits src into literal and variable parts. Literal parts are
// substrings of src, so no text is copied. Adjacent literal text is merged
// into one part.
//
// A declared name is looked up only where no identifier token starts; the
// candidates looked up run from one '$' to the next, so they do not
// overlap and the scan stays linear.
func scan(src string, declared Declared, emit func(p part)) {
	lit := 0
	for i := 0; i < len(src); {
		d := strings.IndexByte(src[i:], '$')
		if d < 0 {
			break
		}
		i += d
		end := tokenEnd(src, i)
		if end < 0 && len(declared) > 0 {
			end = declaredEnd(src, i, declared)
		}
		if end < 0 {
			i++
			continue
		}
		if lit < i {
			emit(part{text: src[lit:i]})
		}
		emit(part{text: src[i:end], name: src[i+1 : end-1]})
		i = end
		lit = end
	}
	if lit < len(src) {
		emit(part{text: src[lit:]})
	}
}

// Template is a compiled text template. It is immutable and safe for
// concurrent use.
type Template struct {
	src    string
	parts  []part
	refs   int      // number of variable parts (a name used twice counts twice)
	litLen int      // total length of literal parts
	vars   []string // distinct names, first-appearance order; nil if none
}

// Compile parses src with no declared names. It never fails: a '$' that
// does not open a token "$name$" with an identifier name is literal text.
func Compile(src string) *Template { return CompileDeclared(src, nil) }

// CompileDeclared parses src with the names in declared as tokens besides
// the identifier names. It never fails: a '$' that does not open a token is
// literal text.
//
// A batch compiles its templates once with the names all its recipients
// declare; a recipient without a value for one of them gets it left as
// written, like any missing variable.
func CompileDeclared(src string, declared Declared) *Template {
	t := &Template{src: src}
	if d := strings.Count(src, "$"); d >= 2 {
		// Each token consumes two dollars and adds at most two parts.
		t.parts = make([]part, 0, d+1)
	}
	var names nameSet
	scan(src, declared, func(p part) {
		t.parts = append(t.parts, p)
		if p.name == "" {
			t.litLen += len(p.text)
			return
		}
		t.refs++
		names.add(p.name)
	})
	t.vars = names.list
	return t
}

// nameSet collects distinct strings in first-appearance order; it serves
// both for variable names and for detecting duplicate object keys. Most sets
// are small, where a linear search beats building a map; a map takes over
// for large ones so that a hostile input with many distinct names cannot
// make compilation quadratic.
type nameSet struct {
	list []string
	m    map[string]struct{}
}

const nameSetLinearMax = 16

// add adds name and reports whether it was not already present.
func (s *nameSet) add(name string) bool {
	if s.m == nil {
		if slices.Contains(s.list, name) {
			return false
		}
		s.list = append(s.list, name)
		if len(s.list) > nameSetLinearMax {
			s.m = make(map[string]struct{}, 2*len(s.list))
			for _, n := range s.list {
				s.m[n] = struct{}{}
			}
		}
		return true
	}
	if _, ok := s.m[name]; ok {
		return false
	}
	s.m[name] = struct{}{}
	s.list = append(s.list, name)
	return true
}

// Source returns the text the template was compiled from.
func (t *Template) Source() string { return t.src }

// Vars returns the distinct variable names used by t in first-appearance
// order. The slice is a fresh copy that the caller may modify; it is nil if t
// has no variables.
func (t *Template) Vars() []string { return slices.Clone(t.vars) }

// HasVars reports whether t contains at least one variable token. Callers use
// it to skip per-recipient rendering entirely for constant messages.
func (t *Template) HasVars() bool { return len(t.vars) > 0 }

// Missing returns the distinct names used by t that have no entry in v, in
// first-appearance order, or nil if there are none. An entry with an empty
// value is not missing.
func (t *Template) Missing(v Vars) []string { return missing(t.vars, v) }

func missing(names []string, v Vars) []string {
	var out []string
	for _, name := range names {
		if _, ok := v[name]; !ok {
			out = append(out, name)
		}
	}
	return out
}

// maxStackRefs is how many variable references a render can resolve without
// allocating; typical messages use only a handful.
const maxStackRefs = 16

// resolve looks up every variable part of parts in v, in order, appending
// the value (or the token text when missing) to vals. Resolving once up
// front lets rendering size the output exactly without a second map lookup.
func resolve(vals []string, parts []part, v Vars) []string {
	for i := range parts {
		p := &parts[i]
		if p.name == "" {
			continue
		}
		val, ok := v[p.name]
		if !ok {
			val = p.text
		}
		vals = append(vals, val)
	}
	return vals
}

// grow makes room for n more bytes in dst with a single exact-size
// allocation. slices.Grow would do, but its append-based growth is not
// always folded into one allocation (for instance under the race detector)
// and may round the capacity up.
func grow(dst []byte, n int) []byte {
	if cap(dst)-len(dst) >= n {
		return dst
	}
	nd := make([]byte, len(dst), len(dst)+n)
	copy(nd, dst)
	return nd
}

// Render returns the template with every variable replaced by its value in
// v. Missing variables are left as written ("$name$"); inserted values are
// not scanned for further tokens.
func (t *Template) Render(v Vars) string {
	if t.refs == 0 {
		return t.src
	}
	var stack [maxStackRefs]string
	vals := stack[:0]
	if t.refs > maxStackRefs {
		vals = make([]string, 0, t.refs)
	}
	vals = resolve(vals, t.parts, v)
	n := t.litLen
	for _, val := range vals {
		n += len(val)
	}
	var b strings.Builder
	b.Grow(n)
	k := 0
	for i := range t.parts {
		p := &t.parts[i]
		if p.name == "" {
			b.WriteString(p.text)
		} else {
			b.WriteString(vals[k])
			k++
		}
	}
	return b.String()
}

// AppendRender appends the rendering of t with v to dst and returns the
// extended slice. It allocates only if dst lacks capacity, which lets
// callers reuse one buffer across recipients.
func (t *Template) AppendRender(dst []byte, v Vars) []byte {
	if t.refs == 0 {
		return append(dst, t.src...)
	}
	var stack [maxStackRefs]string
	vals := stack[:0]
	if t.refs > maxStackRefs {
		vals = make([]string, 0, t.refs)
	}
	vals = resolve(vals, t.parts, v)
	n := t.litLen
	for _, val := range vals {
		n += len(val)
	}
	dst = grow(dst, n)
	k := 0
	for i := range t.parts {
		p := &t.parts[i]
		if p.name == "" {
			dst = append(dst, p.text...)
		} else {
			dst = append(dst, vals[k]...)
			k++
		}
	}
	return dst
}
