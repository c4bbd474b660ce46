// Package doccheck reads the repository's Markdown documentation
// (README.md and docs/*.md) into its fenced code blocks, splits shell
// blocks into commands and classifies them, so that tests can hold the
// documentation to one rule: every Go block and every shell command either
// runs in a test or is marked as an excerpt.
//
// The convention: a fenced block whose previous non-blank line is
//
//	<!-- excerpt -->
//
// is documentation only. Every other Go block appears verbatim in a test
// file (or a Go file under examples/), and every other shell command is of
// a class a test runs or checks: curl against the documented server,
// chatbatchd and chatbatch-bench command lines, go test, and shell
// variables set for the commands after them.
//
// The package uses only the standard library.
package doccheck

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// ExcerptMarker marks the fenced block right after it as documentation
// only.
const ExcerptMarker = "<!-- excerpt -->"

// Block is one fenced code block of a Markdown file.
type Block struct {
	File    string // path relative to the repository root, with slashes
	Line    int    // line of the opening fence, from 1
	Lang    string // the first word of the info string ("go", "sh", …); "" for none
	Text    string // the content between the fences, ending in a newline unless empty
	Excerpt bool   // preceded by ExcerptMarker
	// Section and Subsection are the texts of the nearest "## " and
	// "### " headings above the block ("" when there is none).
	Section, Subsection string
}

// Pos is "file:line" of the block.
func (b Block) Pos() string { return fmt.Sprintf("%s:%d", b.File, b.Line) }

// IsGo reports whether the block is Go source.
func (b Block) IsGo() bool { return b.Lang == "go" }

// IsShell reports whether the block holds shell commands.
func (b Block) IsShell() bool {
	switch b.Lang {
	case "sh", "bash", "shell", "console", "zsh":
		return true
	}
	return false
}

// Files lists the documentation files under root: README.md, then
// docs/*.md in name order. Paths are relative to root.
func Files(root string) ([]string, error) {
	files := []string{"README.md"}
	if _, err := os.Stat(filepath.Join(root, "README.md")); err != nil {
		return nil, err
	}
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		return nil, err
	}
	sort.Strings(docs)
	for _, d := range docs {
		rel, err := filepath.Rel(root, d)
		if err != nil {
			return nil, err
		}
		files = append(files, filepath.ToSlash(rel))
	}
	return files, nil
}

// Load parses every file of Files(root).
func Load(root string) ([]Block, error) {
	files, err := Files(root)
	if err != nil {
		return nil, err
	}
	var blocks []Block
	for _, f := range files {
		src, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(f)))
		if err != nil {
			return nil, err
		}
		bs, err := Parse(f, src)
		if err != nil {
			return nil, err
		}
		blocks = append(blocks, bs...)
	}
	return blocks, nil
}

// fence is an opening or closing code fence: three or more backticks or
// tildes, indented by at most three spaces.
var fence = regexp.MustCompile("^ {0,3}(`{3,}|~{3,})(.*)$")

// Parse reads the fenced code blocks of one Markdown file. An unclosed
// fence is an error.
func Parse(file string, src []byte) ([]Block, error) {
	lines := strings.Split(string(src), "\n")
	var (
		blocks              []Block
		section, subsection string
		prev                string // the previous non-blank line outside blocks
	)
	for i := 0; i < len(lines); i++ {
		line := strings.TrimRight(lines[i], "\r")
		m := fence.FindStringSubmatch(line)
		if m == nil {
			switch {
			case strings.HasPrefix(line, "## "):
				section, subsection = strings.TrimSpace(line[3:]), ""
			case strings.HasPrefix(line, "### "):
				subsection = strings.TrimSpace(line[4:])
			}
			if strings.TrimSpace(line) != "" {
				prev = strings.TrimSpace(line)
			}
			continue
		}
		marker, info := m[1], strings.TrimSpace(m[2])
		lang := ""
		if f := strings.Fields(info); len(f) > 0 {
			lang = strings.ToLower(f[0])
		}
		b := Block{File: file, Line: i + 1, Lang: lang, Excerpt: prev == ExcerptMarker, Section: section, Subsection: subsection}
		var body []string
		closed := false
		for i++; i < len(lines); i++ {
			l := strings.TrimRight(lines[i], "\r")
			t := strings.TrimLeft(l, " ")
			if len(l)-len(t) <= 3 && strings.HasPrefix(t, marker[:1]) &&
				strings.TrimRight(t, marker[:1]) == "" && len(t) >= len(marker) {
				closed = true
				break
			}
			body = append(body, l)
		}
		if !closed {
			return nil, fmt.Errorf("%s:%d: the code fence is never closed", file, b.Line)
		}
		if len(body) > 0 {
			b.Text = strings.Join(body, "\n") + "\n"
		}
		blocks = append(blocks, b)
		prev = ""
	}
	return blocks, nil
}
