"""The parts of the peer transport (``raft.transport.Transport``), one job per module: framing, dialing,
outgoing peer writers, the listener and its verification, snapshot streaming, shared state."""
