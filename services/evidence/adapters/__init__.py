"""Adapters of the evidence service's ports: the optional dense embedder and online search."""
