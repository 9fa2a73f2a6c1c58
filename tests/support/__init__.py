"""Helpers shared by test packages: real databases and real API servers on loopback."""
