"""Generated code for the v3lockpb package (etcd's Lock service); regenerate with `python -m proto.generate`."""
