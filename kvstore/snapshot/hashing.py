"""etcd's Hash and HashKV algorithms over raftkv's state (crc32 Castagnoli, as etcd computes them).

**Hash** (etcd's ``backend.Hash``): the crc32c of every bucket of the backend in bbolt's order,
each bucket's name and then each of its keys and values, leaving out ``meta``'s
``consistent_index`` and ``term``. raftkv hashes its backend as etcd's buckets would hold it
(``kvstore.snapshot.export``), so it is the hash of what a snapshot of the member contains.

**HashKV** (etcd's ``store.HashByRev``) at revision ``rev`` hashes only the ``key`` bucket: the
name ``key``, then every stored revision with main <= rev, key then value, except that of the
revisions at or below the compaction revision only those that a compaction at rev would keep are
hashed (``etcd_keep``): etcd 3.4's ``keyIndex.keep``, the last revision at or below rev of each
key still alive at rev. When nothing would be kept, etcd skips that filter and hashes every stored
revision at or below the compaction; so does raftkv.

Where raftkv's history differs from etcd 3.4.23's, hashes differ: raftkv keeps a deletion made at
exactly the compaction revision (etcd-io/etcd#18089; fixed in etcd 3.4.34 and 3.5.15), which etcd
3.4.23 removes. The keep filter leaves such a tombstone out, so the hashes agree, except when the
keep set is empty and the filter is skipped: then raftkv's hash includes it and 3.4.23's cannot.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import crc32c

from kvstore.mvcc.backend import Backend, Txn
from kvstore.mvcc.index import TreeIndex
from kvstore.mvcc.revision import Revision, bytes_to_rev
from kvstore.snapshot import etcd_schema as s


def hash_buckets(buckets: Iterable[tuple[bytes, Iterator[tuple[bytes, bytes]]]]) -> int:
    """etcd's backend.Hash over (bucket name, pairs) in bbolt's order, with etcd's ignores."""
    h = 0
    for name, pairs in buckets:
        h = crc32c.crc32c(name, h)
        for key, value in pairs:
            if (name, key) in s.HASH_IGNORES:
                continue
            h = crc32c.crc32c(value, crc32c.crc32c(key, h))
    return h


def etcd_keep(index: TreeIndex, at_rev: int) -> set[Revision]:
    """The revisions etcd 3.4's treeIndex.Keep(at_rev) returns for the same key index."""
    keep: set[Revision] = set()
    for ki in index.key_indexes(b"", b""):
        if ki.is_empty():
            continue
        gens = ki.generations
        gen = 0
        # the first generation that was alive at at_rev, or created after it
        while gen < len(gens) - 1 and gens[gen].revs[-1][0] <= at_rev:
            gen += 1
        revs = gens[gen].revs
        for i in range(len(revs) - 1, -1, -1):
            if revs[i][0] <= at_rev:
                # (etcd drops a tombstone found here; one of a non-last generation is never found)
                if not (i == len(revs) - 1 and gen != len(gens) - 1):
                    keep.add(revs[i])
                break
    return keep


def hash_kv(backend: Backend, txn: Txn, rev: int, compact_rev: int, keep: set[Revision]) -> int:
    """etcd's HashByRev body: crc32c of the key bucket up to rev, with the keep filter at or below
    compact_rev (skipped when keep is empty)."""
    h = crc32c.crc32c(s.KEY)
    filtered = bool(keep)
    for raw_key, raw_value in txn.cursor(db=backend.key_db).iternext():
        main, sub, _ = bytes_to_rev(raw_key)
        if main > rev:
            break  # keys are in revision order: nothing later is hashed
        if filtered and main <= compact_rev and (main, sub) not in keep:
            continue
        h = crc32c.crc32c(raw_value, crc32c.crc32c(raw_key, h))
    return h
