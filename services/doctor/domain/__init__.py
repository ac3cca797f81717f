"""Pure domain of the doctor agent (no grpc, no openai)."""
