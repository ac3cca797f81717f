"""The pharmacist service: safety review of a plan (deterministic checks on every call, plus an
optional model review that can only make the verdict stricter) behind gRPC."""
