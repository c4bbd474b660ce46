package store_test

import (
	"testing"

	"github.com/chatbatch/chatbatch/store"
)

// TestDirectRoomID pins IMKit's client scheme: the lower-case hex MD5 of
// the lower-cased IDs, sorted, joined with "_" (the wanted sums are
// MD5 sums of those strings computed outside Go, by md5sum and Python's
// hashlib), whichever order the pair comes in.
func TestDirectRoomID(t *testing.T) {
	long := string(make([]byte, 200))
	for _, c := range []struct{ a, b, want string }{
		{"Sys", "user-A", "04cfda1240d2bdc5b531878d2947187f"}, // "sys_user-a"
		{"bob", "alice", "1d9ac4c2a4f56e22e1d939891a38d764"},  // "alice_bob"
		{"x", "X", "7de161c4973d0202b7d355512bb58294"},        // "x_x"
		{"", "", "b14a7b8059d9c055954c92674ce60032"},          // "_"
		{"名字", "ß", "39d62020cb6953e42ece7ed76db2f57c"},       // "ß_名字"
		{long, "a", "8831a6bdca4caad156ce4e0937508b18"},       // NUL×200 + "_a"
	} {
		for _, p := range [][2]string{{c.a, c.b}, {c.b, c.a}} {
			if got := store.DirectRoomID(p[0], p[1]); got != c.want {
				t.Errorf("DirectRoomID(%.20q, %.20q) = %s, want %s", p[0], p[1], got, c.want)
			}
		}
	}
}
