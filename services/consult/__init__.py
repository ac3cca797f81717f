"""The consult service: the edge-facing API that orchestrates triage and the reviewing agents."""

#: The ErrorInfo domain of every error consult and its job workers return.
DOMAIN = "consult.utimesh.dev"
