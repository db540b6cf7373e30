"""The torch FrameMAE behind a stored ONNX model: from a store folder's ``weights.npz`` or from a
training checkpoint (``runs/<run>/ckpt.pt``). Used by the exporter, the selector's training and
label generation with ``--engine torch``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from framers.hashing import sha256_file
from framers.model_store import MODEL_FILE, StoreConfig, read_config
from training.model import ModelConfig, build_model

ROOT = Path(__file__).resolve().parents[1]


def load_checkpoint(path: Path) -> tuple[nn.Module, ModelConfig, dict[str, Any]]:
    """(model in eval mode, its architecture, the whole checkpoint dict) of a training checkpoint."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    cfg = ModelConfig(**state["config"])
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    model.eval()
    return model, cfg, state


def model_from_store(directory: Path, config: StoreConfig | None = None) -> nn.Module | None:
    """The torch model of a store folder from its ``torch_weights`` (weights.npz), sha256-checked;
    None when the folder records no torch weights. Raises SystemExit on a checksum mismatch."""
    config = config or read_config(directory)
    spec = config.get("torch_weights")
    if not spec or not (directory / spec["file"]).is_file():
        return None
    path = directory / spec["file"]
    if sha256_file(path) != spec["sha256"]:
        raise SystemExit(f"{path}: sha256 does not match {directory / 'config.json'}")
    model = build_model(ModelConfig(**config.get("model")))
    with np.load(path) as data:
        model.load_state_dict({k: torch.from_numpy(data[k]) for k in data.files})
    return model.eval()


def matches_onnx(model: nn.Module, onnx_path: Path) -> bool:
    """True when the model's patch embedding and final norm are initialisers of the ONNX file."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    inits = [numpy_helper.to_array(t) for t in graph.initializer]
    sd = model.state_dict()
    for key in ("patch_embed.proj.weight", "norm.weight", "blocks.0.attn.qkv.bias"):
        ref = sd[key].numpy()
        if not any(a.shape == ref.shape and np.array_equal(a, ref) for a in inits):
            return False
    return True


def find_framemae(framemae: Path, ckpt: Path | None = None) -> tuple[nn.Module, dict[str, Any], Path]:
    """The torch FrameMAE whose weights are those of the stored ONNX in ``framemae`` (a
    model_store version folder): ``ckpt`` if given, else the runs/*/ckpt.pt that matches."""
    onnx_path = framemae / MODEL_FILE
    candidates = [ckpt] if ckpt is not None else sorted((ROOT / "runs").glob("*/ckpt.pt"))
    for path in candidates:
        try:
            model, _, state = load_checkpoint(path)
        except (RuntimeError, KeyError, TypeError):
            continue
        if matches_onnx(model, onnx_path):
            return model, state, path
    raise SystemExit(f"no checkpoint matching {onnx_path} among {[str(c) for c in candidates]}")


def framemae_info(framemae: Path | None, ckpt: Path | None) -> tuple[nn.Module, dict[str, Any]]:
    """(torch FrameMAE, description {version, sha256, checkpoint, variant}) from a store folder (its
    weights.npz, else the runs/*/ckpt.pt whose weights are in its ONNX) or a bare checkpoint."""
    if framemae is not None:
        cfg = read_config(framemae)
        model = model_from_store(framemae, cfg) if ckpt is None else None
        if model is not None:
            if not matches_onnx(model, framemae / MODEL_FILE):
                raise SystemExit(f"{framemae}: weights.npz does not match model.onnx")
            source = str(framemae / cfg.get("torch_weights")["file"])
        else:
            model, _, path = find_framemae(framemae, ckpt)
            source = str(path)
        return model, {"version": cfg.version, "sha256": cfg.sha256, "checkpoint": source,
                       "variant": cfg.get("variant")}
    assert ckpt is not None
    model, _, state = load_checkpoint(ckpt)
    return model, {"version": f"unstored:{ckpt}:{state['step']}", "sha256": None, "checkpoint": str(ckpt),
                   "variant": state["config"]["variant"]}
