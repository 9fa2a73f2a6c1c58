"""Secrets by reference: `env_from_secret` in a job document, resolved on the local backend.

A job names a secret and a key (`{"WANDB_API_KEY": {"secret": "wandb", "key": "api-key"}}`)
instead of carrying the value in `env`, so the store, the API and every list page never
hold it. On Kubernetes the names are a Secret and one of its keys (the pod gets a
`secretKeyRef`). On the local backend they are a file, $TRAINYARD_HOME/secrets/<secret>/<key>,
that only the service user may read: this module reads it when the worker starts.

Refused, with an error naming the secret and the key: a missing file, a link, a file that
is not the service user's or that group or others may read (whoever could write or read
it there is not the job's owner), and a value that cannot be an environment variable.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainyard.layout import secrets_dir

SECRET_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""A DNS-1123 subdomain (at most 253 characters): what Kubernetes allows a Secret's name."""
SECRET_KEY = r"^(\.[-_a-zA-Z0-9][-._a-zA-Z0-9]{0,251}|[-_a-zA-Z0-9][-._a-zA-Z0-9]{0,252})$"
"""What Kubernetes allows a Secret's data key: [-._a-zA-Z0-9], at most 253, and neither
`.` nor `..` nor starting with `..` (spelt without lookahead, for schema generators)."""
MAX_VALUE_BYTES = 1024 * 1024


class SecretError(ValueError):
    """A referenced secret cannot be used (missing, unsafe, or not a valid value)."""


def valid_secret_name(name: str) -> bool:
    return len(name) <= 253 and re.fullmatch(SECRET_NAME, name) is not None


def valid_secret_key(key: str) -> bool:
    return re.fullmatch(SECRET_KEY, key) is not None


def resolve_local_secret_env(home: Path, spec: Mapping[str, Any]) -> dict[str, str]:
    """The environment variables `spec["env_from_secret"]` names, read from the home dir.

    `spec` is a job document (only `env_from_secret` is read). One trailing newline of a
    file is dropped (`echo value > file` is how such files are usually written).
    Raises SecretError for the first reference that cannot be used.
    """
    references = spec.get("env_from_secret") or {}
    environment: dict[str, str] = {}
    for variable, reference in sorted(references.items()):
        name, key = str(reference["secret"]), str(reference["key"])
        environment[variable] = _read_secret(home, name, key)
    return environment


def _read_secret(home: Path, name: str, key: str) -> str:
    where = f"secret {name!r} key {key!r}"
    if not valid_secret_name(name) or not valid_secret_key(key):
        raise SecretError(f"{where}: not a valid secret name and key")
    path = secrets_dir(home) / name / key
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise SecretError(f"{where}: no such secret: create {path} (mode 0600)") from None
    except OSError as exc:  # ELOOP: a symbolic link
        raise SecretError(f"{where}: {path} cannot be opened ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise SecretError(f"{where}: {path} is not a regular file")
        if info.st_uid != os.getuid():
            raise SecretError(
                f"{where}: {path} belongs to uid {info.st_uid}, not the service (uid {os.getuid()})"
            )
        if info.st_mode & 0o077:
            raise SecretError(
                f"{where}: {path} is readable by others (mode {stat.S_IMODE(info.st_mode):04o});"
                " make it 0600"
            )
        raw = handle.read(MAX_VALUE_BYTES + 1)
    if len(raw) > MAX_VALUE_BYTES:
        raise SecretError(f"{where}: larger than {MAX_VALUE_BYTES} bytes")
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"{where}: the value is not UTF-8 text") from None
    if "\x00" in value:
        raise SecretError(f"{where}: the value contains a NUL character")
    return value
