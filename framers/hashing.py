"""SHA-256 of files and bytes: the one digest the bundle manifest, the model store and the
exporters record (hex, lowercase)."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK_BYTES = 1 << 20


def sha256_file(path: Path, chunk: int = CHUNK_BYTES) -> str:
    """Hex SHA-256 of a file, read in ``chunk``-byte pieces (constant memory). Raises OSError."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for piece in iter(lambda: handle.read(chunk), b""):
            digest.update(piece)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()
