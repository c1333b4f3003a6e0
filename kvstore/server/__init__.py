"""The member process's server side: the Member (store + applier + log), request checks, gRPC services,
membership changes (``reconfig``), a starting member's identity (``identity``), what members ask each
other (``peer_requests``) and what a learner serves (``learner``)."""
