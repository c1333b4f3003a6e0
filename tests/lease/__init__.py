"""Lease tests: queue, lessor and apply (no wiring needed), runner and service in-process, and e2e."""
