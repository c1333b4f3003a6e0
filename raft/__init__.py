"""Consensus: the pure Raft core, its asyncio driver, the write-ahead log, snapshots and peer transport."""
