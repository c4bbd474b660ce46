package main

import (
	"io"
	"strings"
	"testing"

	"github.com/chatbatch/chatbatch/internal/doccheck"
)

// TestDocsFlags parses every "go run ./cmd/chatbatch-bench …" line of
// README.md and docs/*.md (outside excerpts) with chatbatch-bench's own
// flag parsing; running them is the benchmark itself (.ci/run runs its
// -quick form).
func TestDocsFlags(t *testing.T) {
	cmds, err := doccheck.ShellCommands("../..")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range cmds {
		if c.Class != doccheck.Bench {
			continue
		}
		n++
		if _, err := parseFlags(c.Program(), io.Discard); err != nil {
			t.Errorf("%s: %s: %v", c.Pos(), strings.Join(c.Args, " "), err)
		}
	}
	if n == 0 {
		t.Error("the documentation has no chatbatch-bench line")
	}
	if _, err := parseFlags([]string{"-quik"}, io.Discard); err == nil {
		t.Error("parseFlags accepted -quik")
	}
}
