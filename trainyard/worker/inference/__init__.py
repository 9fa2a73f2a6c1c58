"""Inference with a trained workload: batch JSONL files, and HTTP with dynamic batching."""
