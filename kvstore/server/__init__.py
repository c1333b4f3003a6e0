"""The member process's server side: the Member (store + applier + log), request checks and gRPC services."""
