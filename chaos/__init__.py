"""Tools to run and torment clusters: local member processes, fault injection, workloads, checkers, reports."""
