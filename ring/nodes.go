package ring

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Node is a member of the cluster: a read node's name and base URL.
type Node struct {
	Name string
	URL  string
}

var nodeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// ParseNodes parses a membership list, name=url,... (the URL may be left
// out, name alone, where only names matter, as for promo ring assign).
// Names must be unique; URLs must be http(s) with a host.
func ParseNodes(s string, needURL bool) ([]Node, error) {
	var out []Node
	seen := map[string]bool{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, raw, hasURL := strings.Cut(item, "=")
		name = strings.TrimSpace(name)
		if !nodeName.MatchString(name) {
			return nil, fmt.Errorf("ring: invalid node name %q (letters, digits, '.', '_', '-')", name)
		}
		if seen[name] {
			return nil, fmt.Errorf("ring: node %q is listed twice", name)
		}
		seen[name] = true
		n := Node{Name: name}
		if hasURL {
			u, err := url.Parse(strings.TrimSpace(raw))
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return nil, fmt.Errorf("ring: node %s: %q is not an http(s) URL", name, raw)
			}
			n.URL = strings.TrimSuffix(u.String(), "/")
		} else if needURL {
			return nil, fmt.Errorf("ring: node %s has no URL (want name=http://host:port)", name)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, ErrNoNodes
	}
	return out, nil
}

// Names returns the names of nodes.
func Names(nodes []Node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.Name
	}
	return out
}
