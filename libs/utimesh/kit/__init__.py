"""Shared service kit: error tree, gRPC server bootstrap, interceptors, logging, settings, channels."""
