"""Developer tooling, not shipped in the wheel: the demo, a local Label Studio harness,
the synthetic shapes generator and the tiny demo model."""
