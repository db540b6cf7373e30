"""The model store: ``<root>/<model>/<version>/{model.onnx, config.json}``.

The root is ``$FRAMERS_MODEL_STORE`` or ``<repo>/model_store``. ``load_model`` checks the
file's sha256 against config.json and the session's inputs/outputs (names, dtypes, dims)
against the config's IO spec, and raises ``ModelError`` on any mismatch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

import framers
from framers import runtime
from framers.errors import ModelError

STORE_ENV = "FRAMERS_MODEL_STORE"
MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.json"
ORT_DTYPES = {
    "float32": "tensor(float)",
    "int64": "tensor(int64)",
    "float16": "tensor(float16)",
    "uint8": "tensor(uint8)",
    "int32": "tensor(int32)",
}


def store_root() -> Path:
    env = os.environ.get(STORE_ENV)
    return Path(env) if env else Path(framers.__file__).resolve().parents[1] / "model_store"


def _version_key(version: str) -> list[tuple[int, object]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\-_]", version)]


def list_versions(name: str, root: Path | None = None) -> list[str]:
    """Versions of a model (folders holding a config.json), oldest first."""
    base = (root or store_root()) / name
    if not base.is_dir():
        return []
    found = [d.name for d in base.iterdir() if (d / CONFIG_FILE).is_file()]
    return sorted(found, key=_version_key)


def latest_versions(root: Path | None = None) -> dict[str, str]:
    """The newest version of every model in the store ({} when the store is empty)."""
    base = root or store_root()
    if not base.is_dir():
        return {}
    latest = {d.name: list_versions(d.name, base) for d in sorted(base.iterdir()) if d.is_dir()}
    return {name: versions[-1] for name, versions in latest.items() if versions}


def model_dir(name: str, version: str | None = None, root: Path | None = None) -> Path:
    """Folder of a model version (the newest when version is None)."""
    versions = list_versions(name, root)
    if not versions:
        raise ModelError(f"no versions of model {name!r} in {(root or store_root()) / name}")
    chosen = versions[-1] if version is None else version
    if chosen not in versions:
        raise ModelError(f"model {name!r} has no version {chosen!r} (have: {', '.join(versions)})")
    return (root or store_root()) / name / chosen


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"missing {path}") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"unreadable model config {path}: {exc}") from exc
    for key in ("name", "version", "sha256", "inputs", "outputs"):
        if key not in config:
            raise ModelError(f"{path} lacks {key!r}")
    return config


def _check_io(kind: str, spec: list[dict[str, Any]], actual: list[ort.NodeArg], where: Path) -> None:
    if [s["name"] for s in spec] != [a.name for a in actual]:
        raise ModelError(
            f"{where}: {kind} names {[a.name for a in actual]} do not match config {[s['name'] for s in spec]}"
        )
    for s, a in zip(spec, actual, strict=True):
        dtype = ORT_DTYPES.get(s["dtype"], s["dtype"])
        if dtype != a.type:
            raise ModelError(f"{where}: {kind} {a.name!r} has dtype {a.type}, config says {s['dtype']}")
        dims = list(a.shape)
        if len(dims) != len(s["dims"]):
            raise ModelError(f"{where}: {kind} {a.name!r} has rank {len(dims)}, config says {s['dims']}")
        for want, got in zip(s["dims"], dims, strict=True):
            if isinstance(want, int) != isinstance(got, int) or (isinstance(want, int) and want != got):
                raise ModelError(f"{where}: {kind} {a.name!r} has dims {dims}, config says {s['dims']}")


@dataclass(frozen=True)
class LoadedModel:
    directory: Path
    config: dict[str, Any]
    session: ort.InferenceSession

    @property
    def version(self) -> str:
        return str(self.config["version"])


_verified: dict[str, LoadedModel] = {}
_lock = threading.Lock()


def load_model(directory: Path, default_threads: int = 0) -> LoadedModel:
    """Verify (checksum, IO spec) and open a stored model; cached per process.

    ``default_threads``: onnxruntime threads unless FRAMERS_ORT_THREADS says otherwise
    (0 = onnxruntime's default)."""
    key = f"{Path(directory).resolve()}#{default_threads}"
    with _lock:
        if key in _verified:
            return _verified[key]
        config = read_config(Path(directory))
        path = Path(directory) / MODEL_FILE
        if not path.is_file():
            raise ModelError(f"missing {path}")
        digest = sha256_file(path)
        if digest != config["sha256"]:
            raise ModelError(
                f"{path}: sha256 {digest} does not match config {config['sha256']} (corrupt or replaced model file)"
            )
        session = runtime.get_session(path, default_threads)
        _check_io("input", config["inputs"], session.get_inputs(), path)
        _check_io("output", config["outputs"], session.get_outputs(), path)
        loaded = LoadedModel(Path(directory), config, session)
        _verified[key] = loaded
        return loaded


def clear_cache() -> None:
    with _lock:
        _verified.clear()
    runtime.clear_sessions()
