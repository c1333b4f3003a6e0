"""etcd-compatible protocol buffers (etcdserverpb, mvccpb, authpb, leasepb) and their generated code."""
