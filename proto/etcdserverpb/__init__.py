"""Generated code for the etcdserverpb package; regenerate with `python -m proto.generate`."""
