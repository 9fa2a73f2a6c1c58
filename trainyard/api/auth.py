"""Bearer tokens: creation, hashing, lookup, and the admin token written at first start.

Tokens are 256-bit random strings (`secrets.token_urlsafe(32)`) and the store keeps only
their SHA-256, with an optional expiry and a revocation time. A fast unsalted hash is
the right tool here, unlike for passwords: with 256 bits of entropy a stolen hash cannot
be reversed by guessing, and a deterministic hash lets the server find a token with one
indexed lookup instead of comparing against every row (which also leaves no timing side
channel on the token's value).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from trainyard.layout import ensure_private_dir
from trainyard.store import (
    TokenRecord,
    find_token,
    insert_token,
    now_us,
    read_transaction,
    write_transaction,
)

ADMIN_USER = "admin"
ADMIN_TOKEN_FILE = "admin-token"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user name and whether they are an admin."""

    user: str
    is_admin: bool


def generate_token() -> str:
    """A new random token (43 URL-safe characters)."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The SHA-256 hex digest stored in place of the token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def create_token(
    engine: Engine,
    *,
    user: str,
    admin: bool,
    description: str | None = None,
    expires_in_seconds: float | None = None,
) -> str:
    """Create and store a token for `user`; returns the token, which is shown only once."""
    return issue_token(
        engine,
        user=user,
        admin=admin,
        description=description,
        expires_in_seconds=expires_in_seconds,
    )[0]


def issue_token(
    engine: Engine,
    *,
    user: str,
    admin: bool,
    description: str | None = None,
    expires_in_seconds: float | None = None,
) -> tuple[str, TokenRecord]:
    """`create_token`, also returning the stored record (id, expiry) for display."""
    token = generate_token()
    expires_at = None
    if expires_in_seconds is not None:
        expires_at = now_us() + int(expires_in_seconds * 1_000_000)
    with write_transaction(engine) as conn:
        record = insert_token(
            conn,
            token_hash=hash_token(token),
            user=user,
            role="admin" if admin else "user",
            description=description,
            expires_at=expires_at,
        )
    return token, record


def ensure_admin_token(engine: Engine, *, home: Path, configured: str | None) -> Path | None:
    """Make sure an admin token exists; returns the file it was written to, if any.

    With TRAINYARD_ADMIN_TOKEN set, that token is registered and no file is written.
    Otherwise $TRAINYARD_HOME/admin-token (mode 0600) holds it: created at first start,
    and re-registered if the database is new (e.g. switched to PostgreSQL).
    """
    if configured:
        _register(engine, configured, "admin token from TRAINYARD_ADMIN_TOKEN")
        return None
    ensure_private_dir(home)
    path = home / ADMIN_TOKEN_FILE
    token = _read_admin_token(path)
    if token is None:
        token = _write_admin_token(path)
    _register(engine, token, f"admin token from {path}")
    return path


class AdminTokenFileError(RuntimeError):
    """The admin-token file cannot be trusted (a link, someone else's, empty)."""


def _write_admin_token(path: Path) -> str:
    """Create the admin-token file with a new token, atomically; returns the token.

    The token is written to a private temporary file that is then hard-linked into place:
    the link either creates the file complete or fails because it exists, so a server
    starting at the same moment never reads a half-written (empty) file.
    """
    token = generate_token()
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(token + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:  # another server won the race: use its token
            existing = _read_admin_token(path)
            if existing is None:
                raise AdminTokenFileError(f"{path} vanished while it was being created") from None
            return existing
    finally:
        temporary.unlink(missing_ok=True)
    return token


def _read_admin_token(path: Path) -> str | None:
    """The token in an existing admin-token file, or None when there is no file.

    Refuses a symbolic link or a file owned by another user (whoever could plant it
    would choose the admin token), and makes a group- or world-readable file private.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP: a symbolic link
        raise AdminTokenFileError(f"{path} must be a regular file, not a link ({exc})") from exc
    with os.fdopen(fd, "r", encoding="utf-8") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise AdminTokenFileError(f"{path} must be a regular file")
        if info.st_uid != os.getuid():
            raise AdminTokenFileError(f"{path} belongs to another user (uid {info.st_uid})")
        if info.st_mode & 0o077:
            os.fchmod(handle.fileno(), 0o600)
        token = handle.read().strip()
    if not token:
        raise AdminTokenFileError(f"{path} is empty; delete it to create a new admin token")
    return token


def _register(engine: Engine, token: str, description: str) -> None:
    token_hash = hash_token(token)
    with write_transaction(engine) as conn:
        if find_token(conn, token_hash=token_hash) is None:
            insert_token(
                conn, token_hash=token_hash, user=ADMIN_USER, role="admin", description=description
            )


class TokenVerifier:
    """Token -> Principal, looked up in the store on every request.

    No cache: a revoked or expired token must be refused at once by every process and
    replica, and a lookup is one indexed read (measured in BENCHMARKS.md, "Tokens").
    Whatever a cache saved would have to be re-validated against the store per request
    anyway, which costs the same read.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def lookup(self, token: str) -> Principal | str:
        """The principal for `token`, or why it is refused (blocking: one store read)."""
        with read_transaction(self._engine) as conn:
            record = find_token(conn, token_hash=hash_token(token))
        if record is None:
            return "invalid or unknown token"
        refusal = record.refusal(now_us())
        if refusal is not None:
            return refusal
        return Principal(user=record.user, is_admin=record.is_admin)
