"""The quota file named by TRAINYARD_QUOTA_FILE, as both processes of `serve` see it.

The loop schedules with it (`operator.config.scheduler_config_source`) and the API
accepts jobs for its queues. Both re-read it when it changes (its modification time,
size or inode), so a new file takes effect without a restart. A file that is invalid
at start fails the start, naming the key and the rule; an invalid NEW file is refused
with a log line, counted, and the previous one is kept. "Invalid" includes what only a
live control plane refuses (an oracle policy), so that no file the loop cannot run is
ever taken: the loop would otherwise fail every cycle on it.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from trainyard.config import QueueConfig, Settings
from trainyard.scheduler.policies import check_live_policy
from trainyard.scheduler.quota import QuotaConfig
from trainyard.scheduler.quota_file import QuotaFileError, load_quota_text

log = logging.getLogger("trainyard.quotas")


class QuotaFile:
    """One quota file, parsed, reloaded on change; `current()` is cheap when unchanged."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reloads = 0  # successful loads after the first
        self.failures = 0  # new versions refused
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._config = self._read()  # raises: an invalid file fails the start

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read(self) -> QuotaConfig:
        try:
            text = self.path.read_text()
        except OSError as exc:
            raise QuotaFileError("", f"cannot read quota file {self.path}: {exc}") from exc
        config = load_quota_text(text)
        for queue in config.queues:
            if queue.policy is not None:
                try:
                    check_live_policy(queue.policy)
                except ValueError as exc:  # an oracle: the simulator's only
                    raise QuotaFileError(f"queues.{queue.name}.policy", str(exc)) from exc
        return config

    def current(self) -> QuotaConfig:
        """The newest valid version of the file."""
        stamp = self._stat()
        if stamp == self._stamp:
            return self._config
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp  # a refused version is not retried until it changes
                try:
                    self._config = self._read()
                except QuotaFileError as exc:
                    self.failures += 1
                    self.last_error = str(exc)
                    log.error("quota file %s refused, keeping the previous one: %s", self.path, exc)
                else:
                    self.reloads += 1
                    self.last_error = None
                    log.info(
                        "quota file %s reloaded: %d queues", self.path, len(self._config.queues)
                    )
        return self._config


_FILES: dict[Path, QuotaFile] = {}
_FILES_LOCK = threading.Lock()


def quota_file(settings: Settings) -> QuotaFile | None:
    """The process's view of the configured quota file (one per path), or None."""
    if settings.quota_file is None:
        return None
    path = Path(settings.quota_file)
    with _FILES_LOCK:
        known = _FILES.get(path)
        if known is None:
            known = _FILES[path] = QuotaFile(path)
    return known


def effective_priority_classes(settings: Settings) -> dict[str, int]:
    """The settings' priority classes, with the quota file's added (the file's value wins
    for a name both define), so the file's `priority_classes` are what submits accept."""
    classes = dict(settings.priority_classes)
    source = quota_file(settings)
    if source is not None:
        classes.update(source.current().priority_classes)
    return classes


def effective_queues(settings: Settings) -> list[QueueConfig]:
    """The settings' queues, then the quota file's (with their policy, if it sets one)."""
    queues = list(settings.queues)
    source = quota_file(settings)
    if source is None:
        return queues
    names = {q.name for q in queues}
    for q in source.current().queues:
        if q.name not in names:
            queues.append(QueueConfig(name=q.name, policy=q.policy or settings.default_policy))
    return queues
