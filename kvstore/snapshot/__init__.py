"""Snapshots in etcd's format: raftkv's backend written as etcd's bbolt file (what Maintenance.Snapshot
streams), read back, restored into a new data directory, and hashed as etcd hashes its backend.

- ``etcd_schema``: etcd's buckets and how etcd encodes what each holds;
- ``export``: raftkv's backend as etcd's buckets, from one read transaction;
- ``snapshot_file``: the file (bbolt, then sha256): writing, verifying, ``etcdctl snapshot status``;
- ``restore``: a new member data directory from a snapshot of raftkv or of etcd;
- ``hashing``: etcd's Hash and HashKV algorithms;
- ``maintenance``: Snapshot, Hash and HashKV on a running member, transport-free;
- ``stream``: receiving a snapshot stream into a file, as ``etcdctl snapshot save`` does;
- ``errors``: ``SnapshotError``, this layer's one error.
"""
