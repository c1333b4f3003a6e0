"""Generated code for the authpb package; regenerate with `python -m proto.generate`."""
