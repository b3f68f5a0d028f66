// Package localsvc runs the cluster's backing services on this machine,
// without Docker: PostgreSQL from the installed binaries, redis-server, and
// an in-process Kafka-protocol broker (kfake). Integration tests use it
// through localsvctest; promo devcluster uses it directly.
//
// Every service listens on 127.0.0.1 only. Processes are started as
// children of this one and stopped by their PID.
package localsvc
