"""`trainyard serve`'s side of the loop process: start it, restart it if it dies, stop it.

The loop must keep running as long as the API does, but a loop that crashes (a bug, the
database gone) must not take the API down with it: it is a child process, restarted
with backoff, and terminated when `serve` exits.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping


class LoopProcess:
    """Runs `python -m trainyard.operator` with `env`, restarting it when it exits."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = dict(env)
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, name="loop-process", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return  # stop() ran meanwhile: never start a loop nobody will stop
            env = {**self._env, "TRAINYARD_LOOP_PARENT_PID": str(os.getpid())}
            self._process = subprocess.Popen(
                [sys.executable, "-m", "trainyard.operator"], env=env, stdin=subprocess.DEVNULL
            )

    def _supervise(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            process = self._process
            assert process is not None
            started = time.monotonic()
            code = process.wait()
            if self._stopping.is_set():
                return
            print(f"trainyard: scheduling loop exited {code}; restarting", file=sys.stderr)
            delay = 1.0 if time.monotonic() - started > 60 else min(delay * 2, 30.0)
            if self._stopping.wait(delay):
                return
            self._spawn()
            if self._stopping.is_set():
                return

    def stop(self, timeout: float = 30.0) -> None:
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)


def loop_environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """The loop's environment: the server's, plus the settings given on the command line."""
    env = dict(os.environ)
    env.update(overrides)
    return env
