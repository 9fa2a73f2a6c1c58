"""Trainyard: a Kubernetes-native job scheduler for machine-learning work."""

__version__ = "0.1.0"
