"""Job durations ("4h", "90m", "1h30m"): one grammar for the API that validates them and
the loop that enforces them (max_runtime)."""

from __future__ import annotations

import re

DURATION = re.compile(
    r"^(?=[0-9])(?:(?P<h>[0-9]{1,6})h)?(?:(?P<m>[0-9]{1,6})m)?(?:(?P<s>[0-9]{1,8})s)?$"
)


def duration_seconds(text: str) -> int:
    """Seconds in a validated duration string ("1h30m" -> 5400)."""
    match = DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration")
    hours, minutes, seconds = (int(match[g] or 0) for g in ("h", "m", "s"))
    return hours * 3600 + minutes * 60 + seconds
