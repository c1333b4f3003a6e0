"""A small Kubernetes-style control plane whose only state is an etcd-compatible store.

It speaks nothing but etcd's v3 API (KV, Watch, Lease), so it runs unchanged on raftkv and on
real etcd. The pieces, each in its own module, cut the way Kubernetes and client-go cut them:

- ``api/``: objects in Kubernetes' shapes (plain JSON dicts), kinds and their registry keys,
  defaults, validation with field paths, quantities.
- ``store/``: the narrow store interface, its etcd gRPC implementation and an in-memory fake.
- ``client``: typed-ish object client; resourceVersion is the key's mod_revision and every
  write is an optimistic Txn on it.
- ``informer``, ``workqueue``: client-go in miniature (list at R, watch from R+1, relist after
  compaction; a work queue with dirty/processing sets, per-key backoff and a global rate limit).
- ``controllers/``: Deployment, ReplicaSet, node lifecycle and garbage collection.
- ``scheduler``, ``agent`` (a small kubelet, with ``runtime`` running local processes),
  ``leader_election``, ``manager`` (the controller-manager), ``cli/`` (the kubectl-like verbs).
"""
