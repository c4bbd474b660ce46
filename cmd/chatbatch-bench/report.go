package main

import (
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// row is one line of the result table, formatted.
type row struct {
	scenario string // the -scenarios name
	label    string
	db       string
	cb, base string
	ratio    string
	target   string
	result   string // PASS, FAIL, or "" for information
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// group writes 1234567 as 1,234,567.
func group(n int64) string {
	s := strconv.FormatInt(max(n, -n), 10)
	var b strings.Builder
	if n < 0 {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// spread formats a series: its median, and min–max when there are several.
func spread(v []float64, f func(float64) string) string {
	if len(v) == 0 {
		return "—"
	}
	s := f(median(v))
	if len(v) > 1 {
		s += " (" + f(slices.Min(v)) + "–" + f(slices.Max(v)) + ")"
	}
	return s
}

func fmtRate(x float64) string  { return group(int64(x + 0.5)) }
func fmtRatio(x float64) string { return strconv.FormatFloat(x, 'f', 2, 64) + "×" }
func fmtMs(x float64) string    { return strconv.FormatFloat(x, 'f', 1, 64) + " ms" }
func fmtMB(x float64) string    { return strconv.FormatFloat(x/(1<<20), 'f', 1, 64) + " MiB" }

func ratios(a, b []float64) []float64 {
	var r []float64
	for i := range min(len(a), len(b)) {
		if b[i] > 0 {
			r = append(r, a[i]/b[i])
		}
	}
	return r
}

// ratioRow compares chatbatch's rates with a baseline's, run by run; the
// target (if > 0) is met when the median ratio is at least target.
func ratioRow(scenario, label, db string, cb, base []float64, target float64) row {
	r := row{scenario: scenario, label: label, db: db, cb: spread(cb, fmtRate), base: spread(base, fmtRate)}
	rs := ratios(cb, base)
	r.ratio = spread(rs, fmtRatio)
	if target > 0 {
		r.target = "≥ " + fmtRatio(target)
		r.result = passFail(median(rs) >= target)
	}
	return r
}

func passFail(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

func mdCell(s string) string { return strings.ReplaceAll(s, "|", "\\|") }

// printTable writes the rows as a markdown table.
func printTable(w io.Writer, rows []row) {
	fmt.Fprintln(w, "| scenario | db | chatbatch msgs/s | baseline msgs/s | ratio | target | |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---|---|")
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n",
			mdCell("`"+r.scenario+"` "+r.label), r.db, mdCell(r.cb), mdCell(r.base), mdCell(r.ratio), mdCell(orDash(r.target)), r.result)
	}
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// commandLine is how the benchmark was started, shell-quoted, with
// passwords in DSNs replaced.
func commandLine(args []string) string {
	parts := []string{"chatbatch-bench"}
	for _, a := range args {
		parts = append(parts, shellQuote(redactArg(a)))
	}
	return strings.Join(parts, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_=./:,@+%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// redactArg hides the password of a DSN, in URL form (scheme://user:pass@)
// or go-sql-driver's form (user:pass@tcp(…)), also after "-flag=".
func redactArg(a string) string {
	prefix := ""
	if strings.HasPrefix(a, "-") {
		if i := strings.IndexByte(a, '='); i > 0 {
			prefix, a = a[:i+1], a[i+1:]
		}
	}
	return prefix + redactDSN(a)
}

func redactDSN(s string) string {
	if strings.Contains(s, "://") {
		return redactURL(s)
	}
	at := strings.LastIndex(s, "@")
	if at < 0 || !(strings.Contains(s[at:], "@tcp(") || strings.Contains(s[at:], "@unix(")) {
		return s
	}
	if c := strings.IndexByte(s[:at], ':'); c >= 0 {
		return s[:c+1] + "xxxxx" + s[at:]
	}
	return s
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	if _, ok := u.User.Password(); !ok {
		return s
	}
	return u.Redacted()
}
