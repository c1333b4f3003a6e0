"""The etcd state machine and its server: MVCC store, applier, leases, watches, membership, alarms,
the backend quota, auto-compaction, corruption checks and gRPC services."""
