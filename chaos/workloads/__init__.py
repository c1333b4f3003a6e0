"""Workloads: what the clients do during a run, and how their history is checked."""
