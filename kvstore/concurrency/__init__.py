"""etcd's clientv3/concurrency recipes, run inside the server for the Lock and Election services.

etcd serves ``v3lockpb.Lock`` and ``v3electionpb.Election`` by running its client-side recipes
(``concurrency.Mutex``, ``concurrency.Election``) against itself through an in-process client; raftkv
does the same: the recipes here speak only to a ``Client`` (``client``: Txn, Range, DeleteRange,
LeaseGrant, Watch), which the server implements over its own KV, lease and watch services
(``kvstore.server.local_client``). There is no state of their own: a lock or an election is a set
of keys under a prefix, each attached to its owner's lease.

- ``keys``: the requests the recipes make (prefix ranges sorted by create revision, ...).
- ``session``: the lease a call uses (etcd's ``NewSession``: lease 0 grants one of 60 s).
- ``wait``: waiting until every key created before ours is deleted (``waitDeletes``).
- ``mutex``: Lock and Unlock (etcd 3.5's ``Mutex``).
- ``election``: Campaign, Proclaim, Resign, Leader and Observe (etcd's ``Election``).
"""

from kvstore.concurrency.client import Client, Watch

__all__ = ["Client", "Watch"]
