"""Adapters of the consult service's ports: gRPC clients of triage, doctor and pharmacist."""
