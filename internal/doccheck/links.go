package doccheck

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
)

// Link is an inline Markdown link or image outside code.
type Link struct {
	File   string // the Markdown file it is in
	Line   int
	Target string // as written: "docs/api.md#errors", "https://…", "#try-it"
}

// Pos is "file:line" of the link.
func (l Link) Pos() string { return fmt.Sprintf("%s:%d", l.File, l.Line) }

// Relative reports whether the target is a path in the repository (not a
// URL with a scheme, not an anchor of the same file alone).
func (l Link) Relative() bool {
	t := l.Target
	if strings.HasPrefix(t, "#") || strings.HasPrefix(t, "//") {
		return false
	}
	if i := strings.IndexAny(t, ":/#?"); i > 0 && t[i] == ':' {
		return false // scheme: http:, https:, mailto:
	}
	return true
}

// PathAndAnchor splits the target at "#".
func (l Link) PathAndAnchor() (path, anchor string) {
	path, anchor, _ = strings.Cut(l.Target, "#")
	return path, anchor
}

var (
	linkRE = regexp.MustCompile(`!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	codeRE = regexp.MustCompile("`+[^`]*`+")
)

// Links returns the inline links of a Markdown file, outside fenced code
// blocks and code spans.
func Links(file string, src []byte) []Link {
	var out []Link
	inFence := ""
	for i, line := range strings.Split(string(src), "\n") {
		if m := fence.FindStringSubmatch(line); m != nil {
			switch {
			case inFence == "":
				inFence = m[1]
				continue
			case strings.HasPrefix(m[1], inFence[:1]) && len(m[1]) >= len(inFence) && strings.TrimSpace(m[2]) == "":
				inFence = ""
				continue
			}
		}
		if inFence != "" {
			continue
		}
		line = codeRE.ReplaceAllString(line, "``")
		for _, m := range linkRE.FindAllStringSubmatch(line, -1) {
			out = append(out, Link{File: file, Line: i + 1, Target: m[1]})
		}
	}
	return out
}

// Anchors returns the anchors GitHub gives the headings of a Markdown
// file: the heading's text in lower case, without its punctuation and
// Markdown, spaces turned into hyphens; a repeated one gets -1, -2, ….
func Anchors(src []byte) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	inFence := ""
	for _, line := range strings.Split(string(src), "\n") {
		if m := fence.FindStringSubmatch(line); m != nil {
			if inFence == "" {
				inFence = m[1]
			} else if strings.HasPrefix(m[1], inFence[:1]) && strings.TrimSpace(m[2]) == "" {
				inFence = ""
			}
			continue
		}
		if inFence != "" || !strings.HasPrefix(line, "#") {
			continue
		}
		text := strings.TrimLeft(line, "#")
		if len(text) == len(line) || (text != "" && text[0] != ' ') {
			continue
		}
		slug := Slug(text)
		if n := seen[slug]; n > 0 {
			out[fmt.Sprintf("%s-%d", slug, n)] = true
		} else {
			out[slug] = true
		}
		seen[slug]++
	}
	return out
}

var mdLinkText = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)

// Slug is GitHub's anchor of a heading's text.
func Slug(heading string) string {
	heading = mdLinkText.ReplaceAllString(strings.TrimSpace(heading), "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case unicode.IsLetter(r), unicode.IsDigit(r), r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}
