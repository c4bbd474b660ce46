package doccheck

import (
	"fmt"
	"regexp"
	"strings"
)

// Class is what kind of command a shell command is, which decides the
// test that runs or checks it.
type Class int

const (
	// Unknown is any other command: it must be in an excerpt block.
	Unknown Class = iota
	// Curl is a curl command (possibly piped into grep and the like):
	// cmd/chatbatchd's tests run it against a chatbatchd.
	Curl
	// Chatbatchd is "chatbatchd …" or "go run ./cmd/chatbatchd …": its
	// flags are parsed by chatbatchd's own flag parsing.
	Chatbatchd
	// Bench is "go run ./cmd/chatbatch-bench …": its flags are parsed by
	// chatbatch-bench's own flag parsing.
	Bench
	// GoTest is "go test …".
	GoTest
	// Assign only sets shell variables ("NAME=value", "export NAME=value")
	// for the commands after it.
	Assign
)

func (c Class) String() string {
	switch c {
	case Curl:
		return "curl"
	case Chatbatchd:
		return "chatbatchd"
	case Bench:
		return "chatbatch-bench"
	case GoTest:
		return "go test"
	case Assign:
		return "assignment"
	}
	return "unknown"
}

// Command is one shell command of a block: its lines joined where they end
// in a backslash or a quote is still open, without comments.
type Command struct {
	Block Block  // the block it is in
	Line  int    // the line it starts on
	Text  string // as written (continuations and quotes kept), without comments
	// Comment is the trailing comment of its last line, without the "#"
	// and trimmed ("" for none). A comment "→ 409 BATCH_FINISHED" states
	// the answer a curl command expects (see Expect).
	Comment string
	// Env are the leading NAME=value words; Args the words after them.
	// Words are unquoted; no expansion is done ("$BATCH_ID" stays as it
	// is). The operators |, ||, && and ; are words of their own.
	Env, Args []string
	Class     Class
}

// Pos is "file:line" of the command.
func (c Command) Pos() string { return fmt.Sprintf("%s:%d", c.Block.File, c.Line) }

// Program returns the arguments given to chatbatchd or chatbatch-bench
// (after "chatbatchd" or "go run ./cmd/…"), for the classes Chatbatchd and
// Bench, up to the first operator.
func (c Command) Program() []string {
	var args []string
	switch {
	case c.Class == Chatbatchd && len(c.Args) > 0 && c.Args[0] == "chatbatchd":
		args = c.Args[1:]
	case c.Class == Chatbatchd || c.Class == Bench:
		args = c.Args[3:]
	default:
		return nil
	}
	for i, a := range args {
		if isOperator(a) {
			return args[:i]
		}
	}
	return args
}

// Stages splits Args at the operators: the programs of a pipeline or a
// list.
func (c Command) Stages() [][]string {
	var out [][]string
	cur := []string{}
	for _, a := range c.Args {
		if isOperator(a) {
			out = append(out, cur)
			cur = []string{}
			continue
		}
		cur = append(cur, a)
	}
	return append(out, cur)
}

// Operators returns the operators between the stages, in order.
func (c Command) Operators() []string {
	var ops []string
	for _, a := range c.Args {
		if isOperator(a) {
			ops = append(ops, a)
		}
	}
	return ops
}

var expectRE = regexp.MustCompile(`^→\s*(\d{3})(?:\s+([A-Z][A-Z0-9_]*))?`)

// Expect is the HTTP status (and error code, if named) the command's
// trailing comment says the answer has ("→ 409 BATCH_FINISHED"); 200 and
// "" when it states none.
func (c Command) Expect() (status int, code string) {
	m := expectRE.FindStringSubmatch(c.Comment)
	if m == nil {
		return 200, ""
	}
	fmt.Sscan(m[1], &status)
	return status, m[2]
}

func isOperator(w string) bool {
	switch w {
	case "|", "||", "&&", ";":
		return true
	}
	return false
}

var assignment = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)

// IsAssignment reports whether a word is NAME=value.
func IsAssignment(w string) bool { return assignment.MatchString(w) }

// Commands splits a shell block into its commands. Blank lines and
// comments are dropped; a line ending in a backslash, or with a quote
// still open, continues on the next. In a console block only lines that
// start with the prompt "$ " are commands (the prompt is dropped).
func Commands(b Block) ([]Command, error) {
	text := b.Text
	if b.Lang == "console" {
		var kept []string
		cont := false
		for _, l := range strings.Split(text, "\n") {
			switch {
			case strings.HasPrefix(l, "$ "):
				kept = append(kept, l[2:])
			case cont:
				kept = append(kept, l)
			default:
				kept = append(kept, "") // output: keeps the line numbers
			}
			cont = strings.HasSuffix(l, "\\")
		}
		text = strings.Join(kept, "\n")
	}
	s := &splitter{src: text, block: b}
	return s.split()
}

type splitter struct {
	src   string
	block Block
	out   []Command

	// the command being read
	start, line int // byte offset and line where it starts; start < 0: none
	words       []string
	word        strings.Builder
	inWord      bool
	comment     string
	raw         strings.Builder // its text without comments
}

func (s *splitter) errorf(line int, format string, args ...any) error {
	return fmt.Errorf("%s:%d: %s", s.block.File, s.block.Line+1+line, fmt.Sprintf(format, args...))
}

func (s *splitter) endWord() {
	if s.inWord {
		s.words = append(s.words, s.word.String())
		s.word.Reset()
		s.inWord = false
	}
}

func (s *splitter) endCommand() {
	s.endWord()
	if len(s.words) > 0 {
		c := Command{Block: s.block, Line: s.block.Line + 1 + s.line, Text: strings.TrimSpace(s.raw.String()), Comment: s.comment}
		i := 0
		if len(s.words) > 0 && s.words[0] == "export" {
			i = 1
		}
		for i < len(s.words) && IsAssignment(s.words[i]) {
			c.Env = append(c.Env, s.words[i])
			i++
		}
		if i == 1 && s.words[0] == "export" { // "export" alone, or "export X" without a value
			c.Env, i = nil, 0
		}
		c.Args = s.words[i:]
		c.Class = classify(c)
		s.out = append(s.out, c)
	}
	s.words, s.comment, s.start = nil, "", -1
	s.raw.Reset()
}

func classify(c Command) Class {
	a := c.Args
	switch {
	case len(a) == 0 && len(c.Env) > 0:
		return Assign
	case len(a) == 0:
		return Unknown
	case a[0] == "curl":
		return Curl
	case a[0] == "chatbatchd":
		return Chatbatchd
	case len(a) >= 3 && a[0] == "go" && a[1] == "run" && strings.TrimSuffix(a[2], "/") == "./cmd/chatbatchd":
		return Chatbatchd
	case len(a) >= 3 && a[0] == "go" && a[1] == "run" && strings.TrimSuffix(a[2], "/") == "./cmd/chatbatch-bench":
		return Bench
	case len(a) >= 2 && a[0] == "go" && a[1] == "test":
		return GoTest
	}
	return Unknown
}

func (s *splitter) split() ([]Command, error) {
	src := s.src
	s.start = -1
	line := 0
	mark := func(i int) { // the command starts at i
		if s.start < 0 {
			s.start, s.line = i, line
		}
	}
	for i := 0; i < len(src); i++ {
		ch := src[i]
		switch {
		case ch == '\n':
			s.endCommand()
			line++
		case ch == ' ' || ch == '\t' || ch == '\r':
			s.endWord()
			if s.start >= 0 {
				s.raw.WriteByte(' ')
			}
		case ch == '\\' && i+1 < len(src) && src[i+1] == '\n':
			// A continuation: the command goes on on the next line.
			s.endWord()
			s.raw.WriteString("\\\n")
			i++
			line++
		case ch == '#' && !s.inWord:
			end := strings.IndexByte(src[i:], '\n')
			if end < 0 {
				end = len(src) - i
			}
			if s.start >= 0 {
				s.comment = strings.TrimSpace(src[i+1 : i+end])
			}
			i += end - 1
		case ch == '|' || ch == ';' || (ch == '&' && i+1 < len(src) && src[i+1] == '&'):
			s.endWord()
			mark(i)
			op := string(ch)
			if i+1 < len(src) && (src[i+1] == '|' || src[i+1] == '&') && ch != ';' {
				op += string(src[i+1])
				i++
			}
			s.words = append(s.words, op)
			s.raw.WriteString(op)
		default:
			mark(i)
			n, lines, err := s.readWordPart(i)
			if err != nil {
				return nil, s.errorf(line, "%v", err)
			}
			s.raw.WriteString(src[i : i+n])
			line += lines
			i += n - 1
		}
	}
	s.endCommand()
	return s.out, nil
}

// readWordPart reads one piece of a word at i: a quoted string, a $( … )
// substitution, a backslash escape or one plain character. It returns the
// bytes it took and the newlines among them.
func (s *splitter) readWordPart(i int) (n, lines int, err error) {
	src := s.src
	s.inWord = true
	switch c := src[i]; {
	case c == '\'':
		end := strings.IndexByte(src[i+1:], '\'')
		if end < 0 {
			return 0, 0, fmt.Errorf("a single quote is never closed")
		}
		body := src[i+1 : i+1+end]
		s.word.WriteString(body)
		return end + 2, strings.Count(body, "\n"), nil
	case c == '"':
		j := i + 1
		for ; j < len(src) && src[j] != '"'; j++ {
			switch {
			case src[j] == '\\' && j+1 < len(src) && strings.IndexByte("\"\\$`", src[j+1]) >= 0:
				s.word.WriteByte(src[j+1])
				j++
			case src[j] == '$' && j+1 < len(src) && src[j+1] == '(':
				k, err := matchParen(src, j+1)
				if err != nil {
					return 0, 0, err
				}
				s.word.WriteString(src[j : k+1])
				j = k
			default:
				s.word.WriteByte(src[j])
			}
		}
		if j >= len(src) {
			return 0, 0, fmt.Errorf("a double quote is never closed")
		}
		return j - i + 1, strings.Count(src[i:j], "\n"), nil
	case c == '$' && i+1 < len(src) && src[i+1] == '(':
		k, err := matchParen(src, i+1)
		if err != nil {
			return 0, 0, err
		}
		s.word.WriteString(src[i : k+1])
		return k - i + 1, strings.Count(src[i:k], "\n"), nil
	case c == '\\' && i+1 < len(src):
		s.word.WriteByte(src[i+1])
		return 2, 0, nil
	default:
		s.word.WriteByte(c)
		return 1, 0, nil
	}
}

// matchParen returns the index of the parenthesis that closes the one at
// open, skipping quoted text.
func matchParen(src string, open int) (int, error) {
	depth := 0
	for j := open; j < len(src); j++ {
		switch src[j] {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return j, nil
			}
		case '\'':
			end := strings.IndexByte(src[j+1:], '\'')
			if end < 0 {
				return 0, fmt.Errorf("a single quote is never closed")
			}
			j += end + 1
		case '\\':
			j++
		}
	}
	return 0, fmt.Errorf("a $( is never closed")
}

// ShellCommands loads the documentation under root and returns the
// commands of every shell block that is not an excerpt, in file order
// (README.md first): what the runner tests execute or check.
func ShellCommands(root string) ([]Command, error) {
	blocks, err := Load(root)
	if err != nil {
		return nil, err
	}
	var out []Command
	for _, b := range blocks {
		if b.Excerpt || !b.IsShell() {
			continue
		}
		cmds, err := Commands(b)
		if err != nil {
			return nil, err
		}
		out = append(out, cmds...)
	}
	return out, nil
}
