"""The local backend: this machine is one node; workers are supervised process groups.

`LocalBackend` (backend.py) implements trainyard.operator.backend.Backend. The pieces:
`machine` (what this machine offers: CPUs, memory, NVIDIA GPUs), `spawn` and `supervise`
(one supervisor process per worker, and the record-then-go handshake), `records` (the
files under $TRAINYARD_HOME/run that let a restarted server adopt its workers),
`watcher` (the thread that waits on the supervisors' pidfds), `ports` and `procfs`.

`supervise.py` runs as a script in its own interpreter and imports nothing from here.
"""

from trainyard.operator.local.backend import LAUNCH_ID_ENV, LOST_ON_RESTART, LocalBackend

__all__ = ["LAUNCH_ID_ENV", "LOST_ON_RESTART", "LocalBackend"]
