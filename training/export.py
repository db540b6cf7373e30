"""Export a checkpoint to fp32 ONNX (dynamic batch) and write a model-store folder.

    python -m training.export --ckpt runs/fm_tiny_s0/ckpt.pt --version 2026.11.22-1 \
        [--store model_store] [--metrics bench/framemae_val.json]
    python -m training.export --ckpt runs/plain_tiny_s0/ckpt.pt --out-dir runs/plain_tiny_s0/onnx

Writes model.onnx and config.json (inputs/outputs with names, dtypes, dims; sha256; size;
training data: manifest sha256, steps, minutes, seed; parity error; val metrics if given).
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from framers import motion
from framers.geometry import N_SLOTS
from framers.hashing import sha256_file
from framers.model_store import StoreConfig
from training.cache import DATA_ROOT, split_files
from training.framemae_store import load_checkpoint
from training.model import FlowMixNet, FrameMAE, ModelConfig, count_params

OPSET = 17


def example_inputs(model: nn.Module, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    cfg: ModelConfig = model.cfg  # type: ignore[assignment]
    t = cfg.tile
    if isinstance(model, FlowMixNet):
        return (torch.rand(batch, cfg.in_chans, 16, t, t, generator=gen) - 0.5,)
    assert isinstance(model, FrameMAE)
    slots = torch.stack([torch.randperm(N_SLOTS, generator=gen)[:2].sort().values for _ in range(batch)])
    return torch.rand(batch, 3, 4, t, t, generator=gen), slots


def io_spec(model: nn.Module) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    cfg: ModelConfig = model.cfg  # type: ignore[assignment]
    t = cfg.tile
    if isinstance(model, FlowMixNet):
        return (
            [
                {
                    "name": "x",
                    "dtype": "float32",
                    "dims": ["batch", cfg.in_chans, 16, t, t],
                    "doc": "framers.motion.net_input_window tile: candidates/255-0.5, kept flag, t",
                }
            ],
            [
                {
                    "name": "weights",
                    "dtype": "float32",
                    "dims": ["batch", cfg.n_candidates, 16, t, t],
                    "doc": "softmax mixing weights over framers.motion.CANDIDATES",
                }
            ],
        )
    return (
        [
            {
                "name": "kept",
                "dtype": "float32",
                "dims": ["batch", 3, 4, t, t],
                "doc": "RGB in [0,1] of the 2 kept slots (4 frames)",
            },
            {"name": "slots", "dtype": "int64", "dims": ["batch", 2], "doc": "kept slot indices 0..7"},
        ],
        [{"name": "frames", "dtype": "float32", "dims": ["batch", 3, 16, t, t], "doc": "all 16 frames, RGB in [0,1]"}],
    )


def export_onnx(model: nn.Module, path: Path) -> None:
    inputs, outputs = io_spec(model)
    names_in = [s["name"] for s in inputs]
    names_out = [s["name"] for s in outputs]
    dyn = {n: {0: "batch"} for n in names_in + names_out}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            example_inputs(model),
            str(path),
            input_names=names_in,
            output_names=names_out,
            dynamic_axes=dyn,
            opset_version=OPSET,
            dynamo=False,
        )


def parity(model: nn.Module, path: Path, inputs: tuple[torch.Tensor, ...]) -> float:
    """Max |onnx - torch| / max |torch| on the given inputs."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs, strict=True)}
    got = session.run(None, feed)[0]
    with torch.no_grad():
        ref = model(*inputs).numpy()
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, default=None)
    parser.add_argument("--version", default=None, help="store version folder name")
    parser.add_argument("--store", type=Path, default=Path(__file__).resolve().parents[1] / "model_store")
    parser.add_argument("--out-dir", type=Path, default=None, help="write here instead of the store")
    parser.add_argument("--metrics", type=Path, default=None, help="val metrics JSON to embed")
    parser.add_argument(
        "--set-metrics",
        type=Path,
        default=None,
        metavar="MODEL_DIR",
        help="only write --metrics into MODEL_DIR/config.json (the model file is untouched)",
    )
    args = parser.parse_args()
    if args.set_metrics is not None:
        if args.metrics is None:
            parser.error("--set-metrics needs --metrics")
        path = args.set_metrics / "config.json"
        stored = json.loads(path.read_text())
        stored["metrics"] = json.loads(args.metrics.read_text())
        path.write_text(json.dumps(stored, indent=2) + "\n")
        print(f"updated {path}")
        return
    torch.set_num_threads(1)

    if args.ckpt is None:
        parser.error("--ckpt is required")
    model, cfg, state = load_checkpoint(args.ckpt)
    if args.out_dir is None:
        if args.version is None:
            parser.error("--version or --out-dir is required")
        out = args.store / "framemae" / args.version
    else:
        out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "model.onnx"
    export_onnx(model, onnx_path)
    err = parity(model, onnx_path, example_inputs(model, batch=3, seed=1))
    weights_path = out / "weights.npz"
    np.savez(weights_path, **{k: v.detach().numpy() for k, v in model.state_dict().items()})
    inputs, outputs = io_spec(model)
    flow_preset = str(state.get("flow_preset") or "fast")
    candidate_set = str(state.get("candidates") or motion.DEFAULT_CANDIDATES)
    fine_tune = {k: state[k] for k in ("init", "patterns", "coded", "lr") if state.get(k) is not None}
    config = StoreConfig.for_model_file(
        onnx_path,
        name="framemae",
        version=args.version or out.name,
        inputs=inputs,
        outputs=outputs,
        variant=cfg.variant,
        format=f"onnx opset {OPSET}, fp32, dynamic batch",
        parameters=count_params(model),
        torch_weights={
            "file": "weights.npz",
            "sha256": sha256_file(weights_path),
            "doc": "fp32 state_dict of training.model (parity tests, fine-tuning)",
        },
        model=cfg.to_dict(),
        prior={
            "module": "framers.motion",
            "candidates": list(motion.CANDIDATE_SETS[candidate_set]),
            "flow": f"OpenCV DIS (PRESET_{flow_preset.upper()}) at framers.motion.flow_scale",
            "flow_preset": flow_preset,
            **({"disagreement": True} if state.get("disagreement") else {}),
            "net_scale": "framers.motion.net_scale(H, W) = max(1, min(H, W) // 96)",
        }
        if cfg.variant == "flowmix"
        else None,
        training={
            "manifest_sha256": sha256_file(DATA_ROOT / "manifest.csv"),
            "split": "train",
            "train_files": len(split_files("train")),
            "steps": state["step"],
            "minutes": round(state["elapsed"] / 60.0, 2),
            "seed": state["seed"],
            "batch": state.get("batch"),
            "precision": "fp32",
            **fine_tune,
        },
        onnx_parity_rel_err=err,
        metrics=json.loads(args.metrics.read_text()) if args.metrics else None,
    )
    config.write(out)
    print(f"wrote {onnx_path} ({(config.size_bytes or 0) / 1e6:.2f} MB), parity rel err {err:.2e}")


if __name__ == "__main__":
    main()
