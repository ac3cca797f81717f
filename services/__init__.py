"""utimesh services: one package per service (domain, ports, adapters, servicer, composition root)."""
