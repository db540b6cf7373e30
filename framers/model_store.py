"""The model store: layout, typed configs and checksums, with no ONNX Runtime import.

Layout: ``<root>/<model>/<version>/{model.onnx, config.json}``; the root is
``$FRAMERS_MODEL_STORE`` or ``<repo>/model_store``. The gateway (installed without ONNX Runtime)
lists versions from here; sessions are opened by ``framers.runtime.load_model``, which checks the
file against the ``StoreConfig`` read here. Both exporters in ``training/`` write their
config.json through ``StoreConfig.for_model_file(...).write(folder)``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import framers
from framers.errors import ModelError
from framers.hashing import sha256_file

STORE_ENV = "FRAMERS_MODEL_STORE"
MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.json"
#: config.json keys every ONNX model config must have
REQUIRED_KEYS = ("name", "version", "sha256", "inputs", "outputs")


def store_root() -> Path:
    """The store's folder: ``$FRAMERS_MODEL_STORE``, else ``<repo>/model_store``."""
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
    """Folder of a model version (the newest when version is None). Raises ModelError."""
    versions = list_versions(name, root)
    if not versions:
        raise ModelError(f"no versions of model {name!r} in {(root or store_root()) / name}")
    chosen = versions[-1] if version is None else version
    if chosen not in versions:
        raise ModelError(f"model {name!r} has no version {chosen!r} (have: {', '.join(versions)})")
    return (root or store_root()) / name / chosen


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of an ONNX model: name, numpy dtype name ("float32", "uint8", ...)
    and dims (an int, or a name such as "batch" for a dynamic axis)."""

    name: str
    dtype: str
    dims: tuple[int | str, ...]
    doc: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(str(data["name"]), str(data["dtype"]), tuple(data["dims"]), str(data.get("doc", "")))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "dims": list(self.dims)}
        if self.doc:
            out["doc"] = self.doc
        return out


@dataclass(frozen=True)
class StoreConfig:
    """A model version's config.json.

    The fields the codec relies on are typed; everything else an exporter records (training
    data, metrics, parity error, the selector's FrameMAE, ...) stays in ``extra`` and is written
    back unchanged. ``sha256`` is the hex digest of ``file``; ``size_bytes`` its size."""

    name: str
    version: str
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    file: str = MODEL_FILE
    size_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: Path | str = "config") -> StoreConfig:
        """Parse a config mapping. Raises ModelError when a required key is missing or malformed."""
        for key in REQUIRED_KEYS:
            if key not in data:
                raise ModelError(f"{where} lacks {key!r}")
        try:
            known = {"name", "version", "sha256", "inputs", "outputs", "file", "size_bytes"}
            return cls(
                name=str(data["name"]),
                version=str(data["version"]),
                sha256=str(data["sha256"]),
                inputs=tuple(TensorSpec.from_dict(s) for s in data["inputs"]),
                outputs=tuple(TensorSpec.from_dict(s) for s in data["outputs"]),
                file=str(data.get("file", MODEL_FILE)),
                size_bytes=None if data.get("size_bytes") is None else int(data["size_bytes"]),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{where}: malformed model config: {exc}") from exc

    @classmethod
    def for_model_file(cls, path: Path, *, name: str, version: str, inputs: list[dict[str, Any]],
                       outputs: list[dict[str, Any]], **extra: Any) -> StoreConfig:
        """The config of an exported model file: its sha256 and size measured here."""
        return cls(name=name, version=version, sha256=sha256_file(path),
                   inputs=tuple(TensorSpec.from_dict(s) for s in inputs),
                   outputs=tuple(TensorSpec.from_dict(s) for s in outputs),
                   file=path.name, size_bytes=path.stat().st_size, extra=dict(extra))

    def get(self, key: str, default: Any = None) -> Any:
        """An exporter-recorded value from ``extra`` (e.g. "variant", "framemae", "training")."""
        return self.extra.get(key, default)

    def to_dict(self) -> dict[str, Any]:
        """The JSON mapping of config.json (typed fields first, then ``extra``)."""
        return {"name": self.name, "version": self.version, "file": self.file, "sha256": self.sha256,
                "size_bytes": self.size_bytes, "inputs": [s.to_dict() for s in self.inputs],
                "outputs": [s.to_dict() for s in self.outputs], **self.extra}

    def write(self, directory: Path) -> Path:
        """Write ``directory``/config.json (pretty-printed); returns its path."""
        path = Path(directory) / CONFIG_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def read_config(directory: Path) -> StoreConfig:
    """The typed config of a model folder. Raises ModelError when missing, unreadable or incomplete."""
    path = Path(directory) / CONFIG_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"missing {path}") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"unreadable model config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path} is not a JSON object")
    return StoreConfig.from_dict(data, path)


def verified_model_file(directory: Path, config: StoreConfig) -> Path:
    """The model file of ``directory`` after checking its sha256 against ``config``.

    Raises ModelError when the file is missing or its digest differs (corrupt or replaced)."""
    path = Path(directory) / config.file
    if not path.is_file():
        raise ModelError(f"missing {path}")
    digest = sha256_file(path)
    if digest != config.sha256:
        raise ModelError(
            f"{path}: sha256 {digest} does not match config {config.sha256} (corrupt or replaced model file)"
        )
    return path
