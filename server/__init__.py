"""The personalization server: store, jobs, models, gRPC API (and the search engine in `server.search`)."""
