// Package bench generates promotion files and measures the product against
// baselines of this machine. Workloads are Config structs with Run
// functions; the promo command only binds flags to them.
//
// A baseline that stands for a server (the bare fasthttp server of
// RunBareServer) runs in a child process, as the server does, started by
// StartBareChild; on Linux the child dies with this process. The cluster
// benchmark runs on a devcluster.
//
// RunFaults runs fault drills against a devcluster under a lookup load
// (promo bench faults, FAULTS.md): it kills, stops and freezes the
// services one at a time, with promo ingest and one read node as child
// processes of its own, and checks every answer against the row of the
// version it names.
package bench
