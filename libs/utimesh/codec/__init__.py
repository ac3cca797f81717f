"""Mapping between protobuf contracts and domain types. Servicers and clients call these and
nothing else: no proto message reaches domain code."""
