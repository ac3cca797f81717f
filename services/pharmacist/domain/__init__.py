"""Pure domain logic of the pharmacist: no gRPC, no HTTP, no model clients."""
