"""The lease a Lock or Election call acts for (etcd's ``concurrency.NewSession`` as its services use it).

etcd's services open a session with the caller's lease and orphan it at once: nothing here keeps a
lease alive, the caller does. A lease of 0 (``NoLease``) makes the session grant a fresh one with
the default TTL of 60 seconds, which then lives on unrenewed (etcd's behaviour, kept as it is:
clients may see that lease in LeaseLeases and the key goes when it expires).
"""

from __future__ import annotations

from kvstore.concurrency.client import Client

NO_LEASE = 0
DEFAULT_SESSION_TTL = 60  # etcd: concurrency.defaultSessionTTL


async def session_lease(client: Client, lease: int) -> int:
    if lease == NO_LEASE:
        return await client.grant(DEFAULT_SESSION_TTL)
    return lease
