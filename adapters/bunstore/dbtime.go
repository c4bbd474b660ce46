package bunstore

import (
	"fmt"
	"time"

	"github.com/uptrace/bun/dialect"
	"github.com/uptrace/bun/schema"

	"github.com/chatbatch/chatbatch/adapters/bunstore/internal/sqltext"
)

// dbTime is a time.Time as the store writes and reads it: UTC, truncated
// to the microsecond (the resolution of PostgreSQL's timestamptz and
// MySQL's DATETIME(6)), the zero time written as NULL.
//
// On SQLite, which has no time type, it is TEXT of fixed width,
// "2006-01-02 15:04:05.000000Z": fixed width makes string order equal time
// order (PendingChunks compares and sorts on it), it round-trips exactly,
// and SQLite's own date functions understand it.
type dbTime struct{ t time.Time }

// sqliteTimeLayout is the fixed-width UTC layout of SQLite time columns;
// the trailing Z is appended separately, as a literal.
const sqliteTimeLayout = "2006-01-02 15:04:05.000000"

func toDB(t time.Time) dbTime {
	if t.IsZero() {
		return dbTime{}
	}
	return dbTime{t.UTC().Truncate(time.Microsecond)}
}

// AppendQuery implements schema.QueryAppender: bun calls it to inline the
// value into SQL, for model fields and for ? arguments alike.
func (d dbTime) AppendQuery(gen schema.QueryGen, b []byte) ([]byte, error) {
	if d.t.IsZero() {
		return append(b, "NULL"...), nil
	}
	b = append(b, '\'')
	b = d.appendText(gen.Dialect().Name(), b)
	return append(b, '\''), nil
}

// appendText appends the time (not zero) as the text of a literal of the
// dialect, without the quotes.
func (d dbTime) appendText(kind dialect.Name, b []byte) []byte {
	t := d.t.UTC().Truncate(time.Microsecond)
	switch kind {
	case dialect.SQLite:
		b = t.AppendFormat(b, sqliteTimeLayout)
		return append(b, 'Z')
	case dialect.MySQL:
		// DATETIME(6) has no zone: the store's convention is UTC.
		return t.AppendFormat(b, "2006-01-02 15:04:05.000000")
	default:
		return t.AppendFormat(b, "2006-01-02 15:04:05.000000+00:00")
	}
}

// text is the time as a bind parameter that stores what AppendQuery's
// literal does: the same text, or nil for the zero time.
func (d dbTime) text(kind dialect.Name) any {
	if d.t.IsZero() {
		return nil
	}
	return string(d.appendText(kind, make([]byte, 0, 32)))
}

// Scan implements sql.Scanner for the types the three drivers return:
// time.Time (pgx; go-sql-driver/mysql with parseTime), text (SQLite, or
// MySQL without parseTime) and NULL.
func (d *dbTime) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		d.t = time.Time{}
		return nil
	case time.Time:
		d.t = v.UTC()
		return nil
	case string:
		return d.parse(v)
	case []byte:
		return d.parse(string(v))
	default:
		return fmt.Errorf("bunstore: cannot scan %T into a time", src)
	}
}

func (d *dbTime) parse(s string) error {
	// The first layout is what the store writes on SQLite; the others
	// accept what other writers (or a MySQL connection without parseTime)
	// may have left: an explicit offset, a T separator, no zone (= UTC).
	for _, layout := range []string{
		"2006-01-02 15:04:05.999999999Z07:00",
		"2006-01-02T15:04:05.999999999Z07:00",
		"2006-01-02 15:04:05.999999999",
		"2006-01-02T15:04:05.999999999",
	} {
		if t, err := time.Parse(layout, s); err == nil {
			d.t = t.UTC()
			return nil
		}
	}
	return fmt.Errorf("bunstore: cannot parse time %q", s)
}

// nullString is a nullable text column value. It is not a pointer on
// purpose: bun writes a nil pointer field as DEFAULT and then asks for it
// back with RETURNING, which would turn every bulk insert into a scan.
type nullString struct {
	s     string
	valid bool
}

func someString(s string) nullString { return nullString{s, true} }

// AppendQuery implements schema.QueryAppender.
func (n nullString) AppendQuery(gen schema.QueryGen, b []byte) ([]byte, error) {
	if !n.valid {
		return append(b, "NULL"...), nil
	}
	return sqltext.AppendString(gen, b, n.s), nil
}
