"""Backends that turn scheduling decisions into running work (Kubernetes, local processes)."""
