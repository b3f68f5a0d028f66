// Package ring decides where promotions live in the cluster: an id maps to
// one of S slots (Slot), and slots are assigned to read nodes. The same
// code drives shard ownership in read nodes, routing in the proxy and the
// layout of versions in PostgreSQL, so it must never change behaviour for
// a given number of slots.
package ring
