"""Snapshots in etcd's format: raftkv's backend written as etcd's bbolt file (what Maintenance.Snapshot
streams), read back, restored into a new data directory, and hashed as etcd hashes its backend.

``etcd_schema`` (etcd's buckets and encodings), ``export`` (raftkv's backend as etcd's buckets),
``snapshot_file`` (the file: bbolt plus sha256; verification; status), ``restore`` (a new data
directory from a snapshot of raftkv or of etcd), ``hashing`` (Hash and HashKV), ``stream`` (the
chunks of a snapshot as the Maintenance service sends and etcdctl receives them).
"""
