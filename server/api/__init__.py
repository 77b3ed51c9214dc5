"""The gRPC layer: servicers, the auth and error interceptors, and proto <-> domain conversion."""
