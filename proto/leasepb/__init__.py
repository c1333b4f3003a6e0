"""Generated code for the leasepb package; regenerate with `python -m proto.generate`."""
