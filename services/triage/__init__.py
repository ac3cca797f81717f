"""The triage service: the deterministic rules engine (utimesh.rules) behind gRPC."""
