"""The kubectl-like verbs of ``raftkv kube``: one module per verb, each with ``add_arguments``
and ``run``; ``cmd/kube.py`` only wires them to the command line."""
