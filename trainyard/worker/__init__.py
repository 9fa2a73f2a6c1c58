"""What runs inside a worker: DDP + mixed-precision training and inference (needs `trainyard[worker]`)."""
