"""The operator: the scheduling loop (store -> core -> backend -> store) and its backends.

`backend` is the contract every backend implements and the one module the API may use;
`launch` turns a job and its placement into worker processes/pods (shared by both
backends); `loop` is the reconciler; `local` and `kubernetes` are the backends.
"""
