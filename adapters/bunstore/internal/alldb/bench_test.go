package alldb_test

// Benchmarks of the bulk write paths, each beside a baseline in the same
// run: the same rows written with plain multi-row INSERTs through
// database/sql with bind parameters, no bun, no conflict handling. The
// ratio bunstore/baseline is what matters; absolute numbers depend on the
// machine.
//
//	CHATBATCH_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/test?sslmode=disable \
//	CHATBATCH_TEST_MYSQL='root@tcp(127.0.0.1:3306)/test' \
//	go test -run='^$' -bench=. -benchtime=20x ./adapters/bunstore/

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uptrace/bun/dialect"

	"github.com/chatbatch/chatbatch/adapters/bunstore"
	"github.com/chatbatch/chatbatch/store"
)

// benchBackends are the databases benchmarked: SQLite as a WAL file (the
// realistic case), PostgreSQL and MySQL when their variables are set.
var benchBackends = []struct {
	name string
	b    *backend
}{
	{"sqlite", backends[1]},
	{"postgres", backends[2]},
	{"mysql", backends[3]},
}

const benchMessagesPerCall = 500

func benchMessages(prefix string, n int) [][]store.Message {
	at := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
	out := make([][]store.Message, n)
	for op := range out {
		msgs := make([]store.Message, benchMessagesPerCall)
		for i := range msgs {
			msgs[i] = store.Message{
				ID: fmt.Sprintf("%s-%d-%d", prefix, op, i), AppID: "app", RoomID: fmt.Sprintf("room-%d", i%50),
				Receiver: fmt.Sprintf("user-%d", i), Sender: "system", Type: "text",
				Text:    fmt.Sprintf("Hi user-%d, your order ORD-%06d has shipped! Track it in the app; reply STOP to opt out. 🚀", i, op*1000+i),
				Extra:   json.RawMessage(fmt.Sprintf(`{"orderId":"ORD-%06d","kind":"shipping"}`, op*1000+i)),
				BatchID: "batch-" + prefix, Index: i, CreatedAt: at.Add(time.Duration(op*1000+i) * time.Millisecond),
			}
		}
		out[op] = msgs
	}
	return out
}

// placeholders returns "(…), (…)" for rows×cols bind parameters in the
// dialect's syntax.
func placeholders(kind dialect.Name, rows, cols int) string {
	var b strings.Builder
	n := 0
	for r := range rows {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for c := range cols {
			if c > 0 {
				b.WriteString(", ")
			}
			n++
			if kind == dialect.PG {
				b.WriteString("$" + strconv.Itoa(n))
			} else {
				b.WriteByte('?')
			}
		}
		b.WriteByte(')')
	}
	return b.String()
}

// timeArg is a time as the baseline binds it: time.Time where the driver
// maps it to the column type, the store's text form on SQLite.
func timeArg(kind dialect.Name, t time.Time) any {
	if kind == dialect.SQLite {
		return t.UTC().Format("2006-01-02 15:04:05.000000") + "Z"
	}
	return t.UTC()
}

func reportRows(b *testing.B, rowsPerOp int) {
	b.ReportMetric(float64(rowsPerOp*b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkSaveMessages saves 500 new messages per call (12 columns, ~100
// bytes of text and a small JSON extra).
func BenchmarkSaveMessages(b *testing.B) {
	for _, bb := range benchBackends {
		b.Run(bb.name, func(b *testing.B) {
			db := bb.b.get(b)
			s := newStore(b, db, nil)
			ctx := context.Background()
			kind := db.Dialect().Name()
			query := "INSERT INTO " + s.TablePrefix() + "messages (app_id, id, room_id, receiver, sender, type, text, extra, fields, batch_id, idx, created_at) VALUES " +
				placeholders(kind, benchMessagesPerCall, 12)
			baseline := func(msgs []store.Message) error {
				args := make([]any, 0, 12*benchMessagesPerCall)
				for _, m := range msgs {
					args = append(args, "app", m.ID, m.RoomID, m.Receiver, m.Sender, m.Type, m.Text, string(m.Extra), nil, m.BatchID, m.Index, timeArg(kind, m.CreatedAt))
				}
				_, err := db.DB.ExecContext(ctx, query, args...)
				return err
			}
			// Warm both paths up (connections, caches, the table's first
			// pages), so that neither pays for going first.
			warm := benchMessages(runID("warm"), 4)
			for i := 0; i < len(warm); i += 2 {
				if err := s.SaveMessages(ctx, "app", warm[i]); err != nil {
					b.Fatal(err)
				}
				if err := baseline(warm[i+1]); err != nil {
					b.Fatal(err)
				}
			}
			b.Run("bunstore", func(b *testing.B) {
				data := benchMessages(runID("bun"), b.N)
				b.ResetTimer()
				for i := range b.N {
					if err := s.SaveMessages(ctx, "app", data[i]); err != nil {
						b.Fatal(err)
					}
				}
				reportRows(b, benchMessagesPerCall)
			})
			b.Run("baseline", func(b *testing.B) {
				data := benchMessages(runID("base"), b.N)
				b.ResetTimer()
				for i := range b.N {
					if err := baseline(data[i]); err != nil {
						b.Fatal(err)
					}
				}
				reportRows(b, benchMessagesPerCall)
			})
		})
	}
}

const (
	benchChunks       = 20
	benchChunkSize    = 500
	benchBatchRecipts = benchChunks * benchChunkSize
)

func benchBatch(id string) (*store.Batch, []store.Chunk) {
	now := time.Now().UTC()
	b := &store.Batch{ID: id, AppID: "app", Sender: "system", Count: benchBatchRecipts, Chunks: benchChunks, CreatedAt: now,
		Payload: []byte(`{"message":"Hi $name$, your order $orderId$ has shipped!","messageType":"text","extra":{"kind":"shipping"}}`)}
	chunks := make([]store.Chunk, benchChunks)
	for c := range chunks {
		rs := make([]store.Recipient, benchChunkSize)
		for i := range rs {
			n := c*benchChunkSize + i
			rs[i] = store.Recipient{Receiver: fmt.Sprintf("user-%05d", n), Vars: map[string]string{"name": fmt.Sprintf("Name %d", n), "orderId": fmt.Sprintf("ORD-%06d", n)}}
		}
		chunks[c] = store.Chunk{ChunkRef: store.ChunkRef{AppID: "app", BatchID: id, No: c}, Start: c * benchChunkSize, Recipients: rs, NotBefore: now}
	}
	return b, chunks
}

// BenchmarkCreateBatch creates a batch of 10,000 recipients in 20 chunks of
// 500 per call; rows/s counts recipients. The baseline writes the same
// batch row and 20 chunk rows (recipients JSON-encoded the same way) in one
// transaction.
func BenchmarkCreateBatch(b *testing.B) {
	for _, bb := range benchBackends {
		b.Run(bb.name, func(b *testing.B) {
			db := bb.b.get(b)
			s := newStore(b, db, nil)
			ctx := context.Background()
			kind := db.Dialect().Name()
			p := s.TablePrefix()
			batchQuery := "INSERT INTO " + p + "batches (app_id, id, sender, count, chunks, payload, created_at, send_at, finished_at, sent, failed, canceled, chunks_done) VALUES " +
				placeholders(kind, 1, 13)
			chunkQuery := "INSERT INTO " + p + "chunks (app_id, batch_id, chunk_no, start_index, size, recipients, not_before) VALUES " +
				placeholders(kind, benchChunks, 7)
			baseline := func(bt *store.Batch, chunks []store.Chunk) error {
				args := make([]any, 0, 7*benchChunks)
				for _, c := range chunks {
					recipients, err := json.Marshal(c.Recipients)
					if err != nil {
						return err
					}
					args = append(args, bt.AppID, bt.ID, c.No, c.Start, len(c.Recipients), string(recipients), timeArg(kind, c.NotBefore))
				}
				return baselineTx(ctx, db.DB, func(tx *sql.Tx) error {
					if _, err := tx.ExecContext(ctx, batchQuery, bt.AppID, bt.ID, bt.Sender, bt.Count, bt.Chunks, bt.Payload,
						timeArg(kind, bt.CreatedAt), nil, nil, 0, 0, 0, 0); err != nil {
						return err
					}
					_, err := tx.ExecContext(ctx, chunkQuery, args...)
					return err
				})
			}
			for i := range 2 { // warm-up, as in BenchmarkSaveMessages
				bt, chunks := benchBatch(runID(fmt.Sprint("warm-bun-", i)))
				if err := s.CreateBatch(ctx, bt, chunks); err != nil {
					b.Fatal(err)
				}
				if err := baseline(benchBatch(runID(fmt.Sprint("warm-base-", i)))); err != nil {
					b.Fatal(err)
				}
			}
			b.Run("bunstore", func(b *testing.B) {
				batches := make([]*store.Batch, b.N)
				chunks := make([][]store.Chunk, b.N)
				for i := range b.N {
					batches[i], chunks[i] = benchBatch(runID(fmt.Sprint("bun-", i)))
				}
				b.ResetTimer()
				for i := range b.N {
					if err := s.CreateBatch(ctx, batches[i], chunks[i]); err != nil {
						b.Fatal(err)
					}
				}
				reportRows(b, benchBatchRecipts)
			})
			b.Run("baseline", func(b *testing.B) {
				batches := make([]*store.Batch, b.N)
				chunks := make([][]store.Chunk, b.N)
				for i := range b.N {
					batches[i], chunks[i] = benchBatch(runID(fmt.Sprint("base-", i)))
				}
				b.ResetTimer()
				for i := range b.N {
					if err := baseline(batches[i], chunks[i]); err != nil {
						b.Fatal(err)
					}
				}
				reportRows(b, benchBatchRecipts)
			})
		})
	}
}

// runID makes IDs unique across the runs of a benchmark function (-count,
// and the framework's N=1 probe), so that every timed row is a new row.
func runID(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, runSeq.Add(1))
}

var runSeq atomic.Int64

// baselineTx runs fn in a plain database/sql transaction.
func baselineTx(ctx context.Context, db *sql.DB, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// BenchmarkDirectRooms is the worker's check of a chunk on a first send:
// 500 receivers, looked up with the users known (the accept's
// MissingUsers saw them, untimed) and the pairs not; their rooms exist
// ("exist", worker (a)) or are made by the call ("new", worker (b)).
// Each call takes 500 receivers no call took before, among 50,000 of
// each kind.
func BenchmarkDirectRooms(b *testing.B) {
	const pool = 50000
	for _, bb := range benchBackends {
		b.Run(bb.name, func(b *testing.B) {
			db := bb.b.get(b)
			s := newStore(b, db, nil)
			ctx := context.Background()
			users := make([]string, 2*pool)
			for i := range users {
				users[i] = fmt.Sprintf("user-%06d", i)
			}
			if err := s.AddUsers(ctx, "app", append(users, "system")...); err != nil {
				b.Fatal(err)
			}
			// The rooms that exist are made through a store without the
			// cache, so that s has not seen them.
			maker, err := bunstore.New(db, &bunstore.Options{TablePrefix: s.TablePrefix(), DirectoryCache: -1})
			if err != nil {
				b.Fatal(err)
			}
			for part := range slices.Chunk(users[:pool], 500) {
				if _, err := maker.DirectRooms(ctx, "app", "system", part); err != nil {
					b.Fatal(err)
				}
			}
			if db.Dialect().Name() == dialect.PG {
				if _, err := db.ExecContext(ctx, "VACUUM (ANALYZE) "+s.TablePrefix()+"users, "+s.TablePrefix()+"rooms, "+s.TablePrefix()+"room_members"); err != nil {
					b.Fatal(err)
				}
			}
			for _, mode := range []struct {
				name  string
				users []string
			}{{"exist", users[:pool]}, {"new", users[pool:]}} {
				b.Run(mode.name, func(b *testing.B) {
					if b.N > pool/500 {
						b.Fatalf("-benchtime %dx: at most %dx, one call per 500 of the %d receivers", b.N, pool/500, pool)
					}
					for i := range b.N {
						part := mode.users[i*500 : (i+1)*500]
						b.StopTimer()
						if missing, err := s.MissingUsers(ctx, "app", append([]string{"system"}, part...)); err != nil || len(missing) > 0 {
							b.Fatal(missing, err)
						}
						b.StartTimer()
						rs, err := s.DirectRooms(ctx, "app", "system", part)
						if err != nil {
							b.Fatal(err)
						}
						for _, r := range rs {
							if r.Err != nil {
								b.Fatal(r.Err)
							}
						}
					}
					reportRows(b, 500)
				})
			}
		})
	}
}

// BenchmarkMissingUsers is the accept's look-up of a request's 10,000
// receivers, all of them users, among 100,000, by a store without the
// directory cache (so that every call looks them all up).
func BenchmarkMissingUsers(b *testing.B) {
	const pool, per = 100000, 10000
	for _, bb := range benchBackends {
		b.Run(bb.name, func(b *testing.B) {
			db := bb.b.get(b)
			seed := newStore(b, db, nil)
			ctx := context.Background()
			users := make([]string, pool)
			for i := range users {
				users[i] = fmt.Sprintf("user-%06d", i)
			}
			if err := seed.AddUsers(ctx, "app", users...); err != nil {
				b.Fatal(err)
			}
			if db.Dialect().Name() == dialect.PG {
				if _, err := db.ExecContext(ctx, "VACUUM (ANALYZE) "+seed.TablePrefix()+"users"); err != nil {
					b.Fatal(err)
				}
			}
			s, err := bunstore.New(db, &bunstore.Options{TablePrefix: seed.TablePrefix(), DirectoryCache: -1})
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := range b.N {
				lo := i * per % pool
				if missing, err := s.MissingUsers(ctx, "app", users[lo:lo+per]); err != nil || len(missing) > 0 {
					b.Fatal(missing, err)
				}
			}
			reportRows(b, per)
		})
	}
}
