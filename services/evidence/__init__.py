"""The evidence service: a curated guideline corpus, hybrid retrieval, and claim grounding."""
