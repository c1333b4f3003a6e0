"""Generated code for the v3electionpb package (etcd's Election service); regenerate with `python -m proto.generate`."""
