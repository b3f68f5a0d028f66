package ring

import (
	"strings"
	"testing"
)

func TestParseNodes(t *testing.T) {
	nodes, err := ParseNodes(" a=http://127.0.0.1:9001/ , b=http://127.0.0.1:9002", true)
	if err != nil || len(nodes) != 2 || nodes[0] != (Node{"a", "http://127.0.0.1:9001"}) || nodes[1].Name != "b" {
		t.Fatalf("%+v %v", nodes, err)
	}
	if nodes, err := ParseNodes("a,b,c", false); err != nil || len(Names(nodes)) != 3 {
		t.Fatalf("names only: %+v %v", nodes, err)
	}
	for in, want := range map[string]string{
		"":                          "no nodes",
		"a=http://x:1,a=http://y:2": "twice",
		"a b=http://x:1":            "invalid node name",
		"a=ftp://x":                 "not an http(s) URL",
		"a=http://":                 "not an http(s) URL",
		"a":                         "has no URL",
	} {
		if _, err := ParseNodes(in, true); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseNodes(%q): %v, want %q", in, err, want)
		}
	}
}
