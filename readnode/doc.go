// Package readnode is a cluster read node. It pulls the ring slots it
// holds of each committed dataset version from PostgreSQL into a local
// versioned Pebble store, reports the version prepared, and serves
// GET /promotions/{id} from it with package lookup once the cluster has
// activated that version. Dataset events from Kafka only wake it: the
// state to reach is always read from PostgreSQL. A lookup cache, such as
// package cache's Redis one, is built by a function handed over in Config,
// which the node calls with the cluster's id once it has read it from
// PostgreSQL.
//
// The ring it follows is the membership in PostgreSQL (Config.Nodes only
// seeds it). During a membership change the node also pulls the slots it
// gains in the ring being prepared, into the versions it keeps, reports
// them prepared, and the ring activates once every member did
// (membership.go).
//
// Invariants:
//   - a version is served only once every one of its slots has been pulled
//     and its row counts and checksums match the ones ingest recorded; a
//     pull that fails leaves nothing behind, and is tried again after a
//     delay that doubles up to PullBackoffMax (at once when the version
//     or the newest one changes), while the node goes on serving and
//     pulling the other versions; /readyz and the metrics show the failure;
//   - a node answers only for the slots it holds in the serving ring (and
//     those the pending ring gives it, once pulled, so that nothing is told
//     421 at the switch; and for DropGrace after a ring change, those it
//     lost), and only those of
//     which its serving local version holds the rows (421 otherwise), and only
//     from the cluster's latest activation, an (epoch, version) stamp, or a
//     newer one (503 while it catches up), so a key never goes back to an
//     older version, while a rollback (a higher epoch) is followed;
//   - a version is activated for the cluster only when every slot of it is
//     prepared on a replica: an import's newest version unless the
//     activation guard held it, or an operator's requested one;
//   - a node reports the version it serves every HeartbeatInterval from a
//     goroutine of its own, whatever a pull is doing, so that ingest's
//     retention never drops the version the cluster serves.
package readnode
