"""Pure domain of the evidence service: corpus, text analysis, retrieval and grounding.

No gRPC here; the dense embedder and any online search come in through `ports`."""
