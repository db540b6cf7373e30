"""Which selectors, reconstructors and models the codec offers (cached `available_methods`)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any


class CatalogUnavailable(RuntimeError):
    """The codec could not list its methods (model store unreadable, codec not installed)."""


class MethodCatalog:
    """Caches framers.registry.available_methods() for `ttl_s`: it may read the model store."""

    def __init__(self, ttl_s: float = 60.0) -> None:
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._value: dict[str, Any] | None = None
        self._expires = 0.0

    def get(self) -> dict[str, Any]:
        with self._lock:
            if self._value is not None and time.monotonic() < self._expires:
                return self._value
            try:
                from framers.registry import available_methods

                value = dict(available_methods())
            except Exception as exc:  # ImportError, ModelError, OSError: all mean "cannot tell"
                raise CatalogUnavailable(f"cannot list the codec's methods: {exc}") from exc
            self._value, self._expires = value, time.monotonic() + self._ttl_s
            return value

    def selectors(self) -> list[str]:
        return [str(s) for s in self.get().get("selectors", [])]

    def reconstructors(self) -> list[str]:
        return [str(r) for r in self.get().get("reconstructors", [])]

    def check_model_store(self) -> tuple[bool, str]:
        """Is the model store reachable? (ok, message). Listing methods alone cannot tell: the
        codec treats a missing store as "no learned models"."""
        try:
            self.get()
            from framers.model_store import STORE_ENV, store_root
        except (CatalogUnavailable, ImportError) as exc:
            return False, str(exc)
        root = store_root()
        if not root.exists():
            if STORE_ENV in os.environ:
                return False, f"model store {root} ({STORE_ENV}) does not exist"
            return True, "ok (no model store: classical methods only)"
        try:
            with os.scandir(root) as entries:
                next(entries, None)
        except OSError as exc:
            return False, f"model store {root} is unreadable: {exc}"
        return True, "ok"
