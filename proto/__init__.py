"""etcd-compatible protocol buffers (etcdserverpb, mvccpb, authpb) and their generated code."""
