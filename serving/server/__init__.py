"""The gRPC server: start-up and shutdown, the servicer (proto <-> core), auth, limits, metrics."""
