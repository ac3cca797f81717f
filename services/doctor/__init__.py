"""The doctor agent service: clinical reasoning as explicit claims, offline or with a model."""
