"""What runs inside a worker: DDP + mixed-precision training and inference.

Needs the `worker` extra (torch). Nothing here imports torch at package import time, so the
control plane can import `trainyard.worker` names cheaply; the work starts in `__main__`.
"""
