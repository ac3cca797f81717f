"""Pure domain of the consultation (orchestration over ports; no grpc)."""
