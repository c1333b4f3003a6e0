"""Benchmarks of raftkv against real etcd, side by side on the same machine.

Each benchmark starts its own servers (``bench.procs``) and drives them with one load generator,
so the two are measured alike. Results are printed and written as JSON under ``bench/results``;
they are recorded, never asserted (``tests/integration/test_bench_smoke.py`` only checks that a
short run produces well-formed results).
"""
