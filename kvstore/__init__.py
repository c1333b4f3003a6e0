"""The etcd state machine and its server: MVCC store, applier, leases, watches and gRPC services."""
