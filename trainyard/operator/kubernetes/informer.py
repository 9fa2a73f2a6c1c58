"""A watch-backed cache of one kind of object: what client-go calls a reflector + store.

List, then watch from the list's resourceVersion with the official client's
`kubernetes.watch.Watch`; when the apiserver says that version is gone (410, etcd
compacted it) list again and watch on from the new one; when the connection breaks,
back off and watch on from the last version seen; every `resync_seconds` list again
anyway, so a missed event cannot leave the cache wrong for long. Objects are kept as
small records (`convert`), never as whole documents.

Events are read as raw JSON (`deserialize=False` would lose the watch's own error
handling, so the list function is wrapped in a plain function, which makes `Watch`
return dicts): turning every pod event into generated model objects costs more CPU
than everything else the backend does.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import urllib3
from kubernetes import watch
from kubernetes.client.rest import ApiException

log = logging.getLogger(__name__)

R = TypeVar("R")
ListCall = Callable[..., Any]
ChangeHandler = Callable[[str, Any, Any], None]
"""on_change(key, old record or None, new record or None)."""

_PAGE = 500


def object_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta.get('name')}" if namespace else str(meta.get("name"))


def _version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _older(candidate: str, current: str) -> bool:
    """True when resourceVersion `candidate` is known to predate `current` (same object)."""
    try:
        return int(candidate) < int(current)
    except ValueError:
        return False


class WatchCache(Generic[R]):
    """The current set of objects of one kind, kept by list + watch in a thread."""

    def __init__(
        self,
        *,
        name: str,
        list_call: ListCall,
        convert: Callable[[Mapping[str, Any]], R],
        on_change: ChangeHandler | None = None,
        resync_seconds: float = 300.0,
        watch_timeout_seconds: int = 240,
        request_timeout: float = 30.0,
        label_selector: str | None = None,
    ) -> None:
        self.name = name
        self._list_call = list_call
        self._convert = convert
        self._on_change = on_change
        self._resync = resync_seconds
        self._watch_timeout = watch_timeout_seconds
        self._request_timeout = request_timeout
        self._selector = {"label_selector": label_selector} if label_selector else {}
        self._lock = threading.Lock()
        self._items: dict[str, R] = {}
        self._versions: dict[str, str] = {}
        self._version = ""
        self._stopping = threading.Event()
        self._watch: watch.Watch | None = None
        self._thread: threading.Thread | None = None
        self._listed_at = -float("inf")
        self.synced = threading.Event()
        self.relists = 0
        """Lists done so far (the first, resyncs and recoveries from 410)."""
        self.gone = 0
        """Times the apiserver answered 410 Gone to a watch."""

    # ------------------------------------------------------------------ reading
    def items(self) -> dict[str, R]:
        with self._lock:
            return dict(self._items)

    def values(self) -> list[R]:
        with self._lock:
            return list(self._items.values())

    def get(self, key: str) -> R | None:
        with self._lock:
            return self._items.get(key)

    def wait_synced(self, timeout: float) -> bool:
        return self.synced.wait(timeout)

    @property
    def resource_version(self) -> str:
        return self._version

    # ------------------------------------------------------------------ writing
    def upsert(self, obj: Mapping[str, Any]) -> None:
        """Record an object we just wrote (its create/read response), ahead of the watch."""
        self._apply("MODIFIED", obj)

    def _apply(self, kind: str, obj: Mapping[str, Any]) -> None:
        key = object_key(obj)
        version = _version(obj)
        with self._lock:
            known = self._versions.get(key)
            if known is not None and version and _older(version, known):
                return  # the watch is behind something we already recorded
            old = self._items.get(key)
            if kind == "DELETED":
                self._items.pop(key, None)
                self._versions.pop(key, None)
                new = None
            else:
                new = self._convert(obj)
                self._items[key] = new
                self._versions[key] = version
        if self._on_change is not None:
            self._on_change(key, old, new)

    def _replace(self, objects: list[Mapping[str, Any]]) -> None:
        fresh = {object_key(obj): obj for obj in objects}
        with self._lock:
            vanished = [key for key in self._items if key not in fresh]
        for key in vanished:
            with self._lock:
                old = self._items.pop(key, None)
                self._versions.pop(key, None)
            if self._on_change is not None and old is not None:
                self._on_change(key, old, None)
        for obj in fresh.values():
            self._apply("MODIFIED", obj)

    # ------------------------------------------------------------------ running
    def start(self, *, resume_from: str | None = None) -> None:
        """Start the list/watch thread; `resume_from` (after a `stop()`) makes it watch on
        from that resourceVersion instead of where it stopped, as a client that was
        disconnected for a while would."""
        if resume_from is not None:
            self._version = resume_from
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"watch-{self.name}", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        current = self._watch
        if current is not None:
            current.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _list(self) -> None:
        objects: list[Mapping[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": _PAGE, **self._selector}
            if token:
                kwargs["_continue"] = token
            response = self._list_call(
                _preload_content=False, _request_timeout=self._request_timeout, **kwargs
            )
            page = json.loads(response.data)
            objects += page.get("items") or []
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                break
        self._replace(objects)
        self._version = str(meta.get("resourceVersion") or "")
        self.relists += 1
        self.synced.set()

    def _raw_list(self, **kwargs: Any) -> Any:
        # A plain function: Watch finds no return type on it, so it yields raw dicts.
        return self._list_call(**kwargs)

    def _watch_once(self, seconds: int) -> None:
        self._watch = watch.Watch()
        try:
            for event in self._watch.stream(
                self._raw_list,
                resource_version=self._version,
                timeout_seconds=max(1, seconds),
                allow_watch_bookmarks=True,
                _request_timeout=seconds + self._request_timeout,
                **self._selector,
            ):
                if self._stopping.is_set():
                    return
                kind = event.get("type")
                obj = event.get("raw_object") or event.get("object") or {}
                version = _version(obj)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._apply(kind, obj)
                if version:
                    self._version = version
        finally:
            self._watch = None

    def _run(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                now = time.monotonic()
                if not self._version or now - self._listed_at >= self._resync:
                    self._list()
                    self._listed_at = time.monotonic()
                remaining = self._resync - (time.monotonic() - self._listed_at)
                self._watch_once(int(min(self._watch_timeout, max(1.0, remaining))))
                backoff = 0.5
            except ApiException as exc:
                if exc.status == 410:
                    self.gone += 1
                    log.info("%s: resourceVersion %s gone; relisting", self.name, self._version)
                    self._version = ""
                    continue
                log.warning(
                    "%s: apiserver error %s %s; retrying", self.name, exc.status, exc.reason
                )
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                if self._stopping.is_set():
                    return
                log.warning("%s: watch failed (%s); retrying", self.name, exc)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)
