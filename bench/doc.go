// Package bench generates promotion files and measures the product against
// baselines of this machine. Workloads are Config structs with Run
// functions; the promo command only binds flags to them.
package bench
