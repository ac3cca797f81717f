"""The consult service: the edge-facing API that orchestrates triage and the reviewing agents."""
