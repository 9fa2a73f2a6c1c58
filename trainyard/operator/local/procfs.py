"""What /proc says about a process: is this pid still the process we started?

A pid alone is not an identity: after a process exits its number is reused. The local
backend records each supervisor's start time (clock ticks after boot, field 22 of
/proc/<pid>/stat) and the boot id; a pid whose start time differs, or a record from
another boot, is a different process.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from functools import cache
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The few fields of /proc/<pid>/stat the backend needs."""

    state: str  # R, S, D, Z (zombie: exited, not yet reaped), ...
    ppid: int
    pgid: int
    start_time: int


def read_stat(pid: int) -> ProcStat | None:
    """/proc/<pid>/stat, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = raw.rsplit(b")", 1)[1].split()
    return ProcStat(
        state=fields[0].decode(),
        ppid=int(fields[1]),
        pgid=int(fields[2]),
        start_time=int(fields[19]),
    )


@cache
def boot_id() -> str:
    """This boot's id: records from an earlier boot name processes that are long gone."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def is_same_process(pid: int, start_time: int, recorded_boot_id: str) -> bool:
    """True when `pid` is still the (not yet exited) process that started at `start_time`."""
    if recorded_boot_id != boot_id():
        return False
    stat = read_stat(pid)
    return stat is not None and stat.start_time == start_time and stat.state not in ("Z", "X")


def processes_with_env(marker: str) -> list[int]:
    """Every live process whose environment holds `marker` ("KEY=VALUE").

    The fallback for finding a worker's processes when its supervisor is gone (killed
    from outside): every process a worker starts inherits the worker's launch id, even
    ones that left its process group. Reads every process's environment, so it is for
    rare paths only.
    """
    return processes_with_any_env([marker]).get(marker, [])


def processes_with_any_env(markers: Collection[str]) -> dict[str, list[int]]:
    """`processes_with_env` for several markers in ONE pass over /proc: marker -> pids
    (markers no process holds are left out). A burst of lost workers then costs one
    scan, not one scan per worker."""
    needles = {marker.encode(): marker for marker in markers}
    found: dict[str, list[int]] = {}
    if not needles:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                variables = environ.read().split(b"\0")
        except OSError:
            continue
        hits = [needles[v] for v in variables if v in needles]
        if hits:
            stat = read_stat(int(entry))
            if stat is not None and stat.state not in ("Z", "X"):
                for marker in hits:
                    found.setdefault(marker, []).append(int(entry))
    return found
