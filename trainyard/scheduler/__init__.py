"""The scheduling core: pure and deterministic (no I/O, no database, no Kubernetes, no clock)."""
