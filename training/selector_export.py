"""Export the Frame Selector (frozen FrameMAE encoder + trained head) to ONNX and the model store.

    python -m training.selector_export --head runs/selector_v1/head.pt \
        --framemae model_store/framemae/<version> --version <version>

Writes ``model_store/selector/<version>/``: model.onnx (input ``clip`` uint8 [batch, 16, S, S, 3],
output ``logits`` float32 [batch, 28]), config.json (IO spec, sha256, the FrameMAE version and
sha256 it was trained against, training data, val metrics, parity) and parity.npz (a fixed
input and the torch logits, used by tests/test_selector.py).
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from framers.clip import VIEW_STEP
from framers.geometry import N_PAIRS
from framers.hashing import sha256_file
from framers.model_store import StoreConfig
from training.cache import DATA_ROOT, split_files
from training.framemae_store import framemae_info
from training.selector_net import SelectorHead, SelectorNet, UnmaskedEncoder

OPSET = 17
ROOT = Path(__file__).resolve().parents[1]


def build(head_path: Path, framemae: Path | None, ckpt: Path | None) -> tuple[SelectorNet, dict[str, Any],
                                                                               dict[str, Any]]:
    state = torch.load(head_path, map_location="cpu", weights_only=False)
    mae, desc = framemae_info(framemae, ckpt)
    enc = UnmaskedEncoder(mae)
    head = SelectorHead(state["dim"], dropout=float(state.get("dropout", 0.1)), prior=bool(state.get("prior", False)))
    head.load_state_dict(state["head"])
    if desc["sha256"] is not None and state["framemae"].get("sha256") not in (None, desc["sha256"]):
        raise SystemExit(f"the head was trained on FrameMAE {state['framemae']['version']}, "
                         f"not {desc['version']}")
    return SelectorNet(enc, head).eval(), desc, state


def example_clip(tile: int, batch: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 16, tile, tile, 3), generator=gen, dtype=torch.uint8)


def export_onnx(net: SelectorNet, path: Path) -> None:
    tile = net.encoder.tile
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example_clip(tile, 2, 0),), str(path), input_names=["clip"],
                          output_names=["logits"], dynamic_axes={"clip": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=OPSET, dynamo=False)


def parity(net: SelectorNet, path: Path, clip: torch.Tensor) -> tuple[float, np.ndarray]:
    """(max |ort - torch| / max |torch|, torch logits) on ``clip``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"clip": clip.numpy()})[0]
    with torch.no_grad():
        ref = net(clip).numpy()
    return float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-12)), ref


def io_spec(tile: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return ([{"name": "clip", "dtype": "uint8", "dims": ["batch", 16, tile, tile, 3],
              "doc": "the 16 frames of a clip, RGB, each whole frame area-resized to "
                     f"{tile}x{tile} by framers.clip.global_view / Clip.view"}],
            [{"name": "logits", "dtype": "float32", "dims": ["batch", N_PAIRS],
              "doc": "scores of the 28 kept slot pairs, lexicographic (0,1)=0 ... (6,7)=27"}])


def write_selector(net: SelectorNet, out: Path, version: str, framemae: dict[str, Any],
                   training: dict[str, Any], metrics: dict[str, Any]) -> StoreConfig:
    """Export ``net`` to ``out``/model.onnx, check ORT-vs-torch parity (< 1e-4 relative), and write
    parity.npz and config.json; returns the config."""
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "model.onnx"
    export_onnx(net, onnx_path)
    clip = example_clip(net.encoder.tile, 2, 1)
    err, ref = parity(net, onnx_path, clip)
    if err >= 1e-4:
        raise SystemExit(f"ONNX parity failed: relative error {err:.2e}")
    np.savez_compressed(out / "parity.npz", clip=clip.numpy(), logits=ref)
    inputs, outputs = io_spec(net.encoder.tile)
    config = StoreConfig.for_model_file(
        onnx_path,
        name="selector",
        version=version,
        inputs=inputs,
        outputs=outputs,
        format=f"onnx opset {OPSET}, fp32, dynamic batch",
        parameters={"head": sum(p.numel() for p in net.head.parameters()),
                    "encoder (frozen FrameMAE)": sum(p.numel() for p in net.encoder.mae.parameters())},
        view={"size": net.encoder.tile,
              "resize": (f"whole frame (global view), framers.clip.global_view: FFmpeg area scaler to "
                         f"{VIEW_STEP * net.encoder.tile}x{VIEW_STEP * net.encoder.tile} RGB, then "
                         f"cv2.INTER_AREA {VIEW_STEP}x box to {net.encoder.tile}x{net.encoder.tile}")},
        classes="lexicographic pair of kept slots (framers.geometry.PAIRS)",
        design=("frozen FrameMAE encoder on the unmasked clip -> Linear(D->384) -> max over each slot's "
                "spatial positions -> [384, 8] -> 3 residual Conv1d blocks, dropout 0.1 -> 28 logits"
                + (" ; plus prior_scale x view prior (-10 log10 MSE of `linear` from each pair on the "
                   "64x64 view itself, training.selector_net.ViewPrior); the head's last layer starts at "
                   "zero and learns the correction" if net.head.use_prior else "")),
        prior_scale=float(net.head.prior_scale.detach()) if net.head.use_prior else None,
        framemae={"version": framemae["version"], "sha256": framemae["sha256"], "variant": framemae.get("variant")},
        training=training,
        metrics=metrics,
        onnx_parity_rel_err=err,
    )
    config.write(out)
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--head", type=Path, required=True)
    parser.add_argument("--framemae", type=Path, default=None, help="model_store/framemae/<version>")
    parser.add_argument("--ckpt", type=Path, default=None, help="FrameMAE checkpoint (default: matched)")
    parser.add_argument("--version", default=None)
    parser.add_argument("--store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--out-dir", type=Path, default=None, help="write here instead of the store")
    parser.add_argument("--report", type=Path, default=None, help="training report.json (default: next to --head)")
    parser.add_argument("--eval", type=Path, default=None, help="bench/eval_selector.py JSON to embed")
    args = parser.parse_args()
    torch.set_num_threads(1)

    net, desc, state = build(args.head, args.framemae, args.ckpt)
    if args.out_dir is not None:
        out = args.out_dir
    elif args.version is not None:
        out = args.store / "selector" / args.version
    else:
        parser.error("--version or --out-dir is required")
    report_path = args.report or args.head.parent / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    training = {
        "manifest_sha256": sha256_file(DATA_ROOT / "manifest.csv"),
        "split": "train",
        "train_files": len(split_files("train")),
        "labels": report.get("train_labels"),
        "label_reconstructor": report.get("label_reconstructor"),
        "label_settings": {k: v for k, v in (report.get("train_label_meta") or {}).items()
                           if k in ("short_side", "engine", "n", "seed", "windows", "context", "view_fn")},
        "windows": report.get("train_windows"),
        "held_out_windows": report.get("held_out_windows"),
        "loss": report.get("loss"),
        "tau_db": report.get("tau"),
        "epochs": report.get("epochs"),
        "head_args": state.get("args"),
    }
    metrics = {"val_labels": report.get("val_labels"), "val": report.get("val")}
    if args.eval is not None:
        metrics["eval_selector"] = json.loads(args.eval.read_text())
    config = write_selector(net, out, args.version or out.name, desc, training, metrics)
    print(f"wrote {out / 'model.onnx'} ({(config.size_bytes or 0) / 1e6:.2f} MB), "
          f"parity rel err {config.get('onnx_parity_rel_err'):.2e}")


if __name__ == "__main__":
    main()
