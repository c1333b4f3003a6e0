"""Checkers: linearizability (Wing-Gong-Lowe search), list-append serializability, watch and lock checks."""
