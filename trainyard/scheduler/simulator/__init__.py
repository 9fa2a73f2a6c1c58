"""Trace replay through the real scheduling core on a virtual clock.

`engine` is pure (no I/O, no clock); `loaders` read trace files, `report` writes the
results and `cli` wires them into `trainyard simulate`.
"""
