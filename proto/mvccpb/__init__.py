"""Generated code for the mvccpb package; regenerate with `python -m proto.generate`."""
