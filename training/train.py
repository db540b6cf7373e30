"""Train a FrameMAE variant on the train clips under a wall-clock budget.

    python -m training.train --variant flowmix --size fm-tiny --minutes 55 --seed 0 --out runs/fm1
    python -m training.train --variant plain --size tiny --minutes 20 --seed 0 --out runs/plain1
    ... --resume   # continue from <out>/ckpt.pt (the time budget counts the earlier minutes)
    # FrameMAE 1.1: fine-tune 1.0.0 on DIS-medium flows, gaps of 2-16 frames, x264-coded kept frames
    python -m training.train --variant flowmix --size fm-tiny --init model_store/framemae/1.0.0/weights.npz \
        --flow-preset medium --patterns gaps --coded 0.5 --lr 2e-4 --minutes 50 --seed 1 --out runs/fm11

Writes <out>/ckpt.pt (every --ckpt-minutes), <out>/history.json, <out>/loss.png. fp32 only
(docs/DESIGN.md, training notes: bf16-trained weights behaved badly in fp32).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from framers import motion
from training.data import GAP_PATTERNS, PATTERNS, FlowMixWindows, PlainWindows, collate_flowmix
from training.model import FlowMixNet, FrameMAE, ModelConfig, build_model, count_params, make_config

LOG_EPS = 1e-5  # per-frame log-MSE floor (≈ 50 dB)


def upsample_region(w: torch.Tensor, s: int, ly: int, lx: int, lc: int) -> torch.Tensor:
    """Rows/cols [ly, ly+lc) × [lx, lx+lc) of the bilinear (half-pixel) ×s upscale of w [..., h, w],
    computed from a low-resolution window with a one-pixel margin (identical values)."""
    h, wd = w.shape[-2:]
    r0, c0 = max(0, ly // s - 1), max(0, lx // s - 1)
    r1, c1 = min(h, (ly + lc) // s + 2), min(wd, (lx + lc) // s + 2)
    up = F.interpolate(w[..., r0:r1, c0:c1], scale_factor=s, mode="bilinear", align_corners=False)
    return up[..., ly - r0 * s : ly - r0 * s + lc, lx - c0 * s : lx - c0 * s + lc]


def flowmix_loss(model: FlowMixNet, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-frame log-MSE of the mixed candidates on the loss crop (mean over interpolated frames)."""
    weights = model(batch["net_in"])  # [B, K, 16, tile, tile]
    cands = batch["cands"].float() / 255.0  # [B, K, 16, 3, lc, lc]
    target = batch["target"].float() / 255.0  # [B, 16, 3, lc, lc]
    mask = batch["loss_mask"]  # [B, 16]
    outs = []
    for i in range(weights.shape[0]):
        ly, lx, lc, crop = (int(v) for v in batch["loss_box"][i])
        up = upsample_region(weights[i], crop // weights.shape[-1], ly, lx, lc).unsqueeze(2)
        outs.append((cands[i] * up).sum(0))
    out = torch.stack(outs)  # [B, 16, 3, lc, lc]
    mse = ((out - target) ** 2).mean(dim=(2, 3, 4))  # [B, 16]
    lin = ((cands[:, 0] - target) ** 2).mean(dim=(2, 3, 4))
    denom = mask.sum().clamp(min=1.0)
    loss = (torch.log(mse + LOG_EPS) * mask).sum() / denom
    with torch.no_grad():
        psnr = (-10 * torch.log10(mse.clamp(min=1e-6)) * mask).sum() / denom
        psnr_lin = (-10 * torch.log10(lin.clamp(min=1e-6)) * mask).sum() / denom
        w_lin = (weights[:, 0].mean(dim=(2, 3)) * mask).sum() / denom
    return loss, {"psnr": float(psnr), "gain": float(psnr - psnr_lin), "w_linear": float(w_lin)}


def plain_loss(model: FrameMAE, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    video = batch["video"].float() / 255.0  # [B, 3, 16, T, T]
    slots = batch["slots"]  # [B, V]
    frame_idx = torch.stack([2 * slots, 2 * slots + 1], dim=-1).reshape(slots.shape[0], -1)  # [B, 2V]
    kept = torch.stack([video[i][:, frame_idx[i]] for i in range(video.shape[0])])  # [B, 3, 2V, T, T]
    pred = model.forward_decoder(model.forward_encoder(kept, slots), slots)
    loss = model.forward_loss(video, pred, slots)
    with torch.no_grad():
        frames = model.unpatchify(pred) * model.std + model.mean
        mse = ((frames.clamp(0, 1) - video) ** 2).mean()
    return loss, {"psnr": float(-10 * torch.log10(mse.clamp(min=1e-10)))}


def lr_at(frac: float, step: int, base: float, warmup: int = 100) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))


def plot_history(history: list[dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    steps = np.array([h["step"] for h in history])
    loss = np.array([h["loss"] for h in history])
    k = max(1, len(loss) // 50)
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].plot(steps, loss, alpha=0.3, label="loss")
    axes[0].plot(steps[k - 1 :], smooth, label=f"mean of {k}")
    axes[0].set_xlabel("step")
    axes[0].set_title(title)
    axes[0].legend()
    key = "gain" if "gain" in history[0] else "psnr"
    vals = np.array([h[key] for h in history])
    axes[1].plot(steps[k - 1 :], np.convolve(vals, np.ones(k) / k, mode="valid"))
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("train PSNR gain over linear (dB)" if key == "gain" else "train PSNR (dB)")
    axes[1].axhline(0.0, color="grey", lw=0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def widen_inputs(weights: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``weights`` (a stored model's state dict) fitted to ``target``'s shapes where only the
    input channels of a convolution grew: the new channels get zero weights, so the widened
    network starts out computing exactly what the stored one did. Other mismatches are left for
    ``load_state_dict`` to refuse."""
    out = dict(weights)
    for key, value in weights.items():
        want = target.get(key)
        if want is not None and value.ndim >= 2 and want.shape[0] == value.shape[0] \
                and want.shape[2:] == value.shape[2:] and want.shape[1] > value.shape[1]:
            grown = torch.zeros(want.shape, dtype=value.dtype)
            grown[:, : value.shape[1]] = value
            out[key] = grown
    return out


def batches(args: argparse.Namespace, cfg: ModelConfig) -> Iterator[dict[str, torch.Tensor]]:
    if cfg.variant == "flowmix":
        patterns = GAP_PATTERNS if args.patterns == "gaps" else PATTERNS
        ds = FlowMixWindows(cfg.tile, args.seed, patterns=patterns, flow_preset=args.flow_preset, coded=args.coded,
                            candidate_set=args.candidates, disagreement=args.disagreement)
        yield from DataLoader(
            ds,
            batch_size=args.batch,
            num_workers=args.workers,
            collate_fn=collate_flowmix,
            persistent_workers=args.workers > 0,
        )
        return
    keeps = [2, 3] if args.n_keep == 0 else [args.n_keep]
    loaders = [
        iter(DataLoader(PlainWindows(cfg.tile, args.seed + k, k), batch_size=args.batch, num_workers=args.workers))
        for k in keeps
    ]
    while True:
        for it in loaders:
            yield next(it)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=["flowmix", "plain"], default="flowmix")
    parser.add_argument("--size", default=None, help="fm-tiny (flowmix default) | tiny (plain default) | ...")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-keep", type=int, default=0, help="plain: kept slots (0 = alternate 2 and 3)")
    parser.add_argument("--ckpt-minutes", type=float, default=3.0)
    parser.add_argument("--init", type=Path, default=None,
                        help="flowmix: start from these weights (a model store's weights.npz), not at random")
    parser.add_argument("--flow-preset", choices=sorted(motion.FLOW_PRESETS), default=motion.DEFAULT_FLOW_PRESET,
                        help="flowmix: DIS preset of the candidates' flows (recorded in the export's config)")
    parser.add_argument("--candidates", choices=sorted(motion.CANDIDATE_SETS), default=motion.DEFAULT_CANDIDATES,
                        help="flowmix: the candidate set (framers.motion.CANDIDATE_SETS; in the export's config)")
    parser.add_argument("--disagreement", action="store_true",
                        help="flowmix, trajectory candidates: also input each trajectory's sample disagreement")
    parser.add_argument("--patterns", choices=["paper", "gaps"], default="paper",
                        help="flowmix keep patterns: paper = uniform/stride 4/slot pairs; "
                        "gaps = also every 2nd, 8th, 16th")
    parser.add_argument("--coded", type=float, default=0.0,
                        help="flowmix: probability that a sample's kept frames are x264-coded (CRF 18-34)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    size = args.size or ("fm-tiny" if args.variant == "flowmix" else "tiny")
    cfg = make_config(args.variant, size)
    if args.disagreement:
        if args.candidates != "trajectory":
            parser.error("--disagreement needs --candidates trajectory")
        cfg.in_chans = motion.IN_CHANNELS + motion.DISAGREEMENT_CHANNELS
    model = build_model(cfg)
    if args.init is not None:
        with np.load(args.init) as weights:
            model.load_state_dict(widen_inputs({k: torch.from_numpy(weights[k]) for k in weights.files},
                                               model.state_dict()))
        print(f"initialised from {args.init}")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.05)
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt_path = args.out / "ckpt.pt"
    step, elapsed, history = 0, 0.0, []
    if args.resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, elapsed, history = state["step"], state["elapsed"], state["history"]
        print(f"resumed at step {step}, {elapsed / 60:.1f} min")
    budget = args.minutes * 60.0
    print(f"{cfg.variant}/{size}: {count_params(model) / 1e6:.2f} M parameters", flush=True)

    def save() -> None:
        state = {
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "step": step,
            "elapsed": elapsed,
            "history": history,
            "config": cfg.to_dict(),
            "seed": args.seed,
            "batch": args.batch,
            "minutes_budget": args.minutes,
            "flow_preset": args.flow_preset,
            "candidates": args.candidates,
            "disagreement": args.disagreement,
            "patterns": args.patterns,
            "coded": args.coded,
            "init": str(args.init) if args.init else None,
            "lr": args.lr,
        }
        torch.save(state, args.out / "ckpt.tmp")
        (args.out / "ckpt.tmp").replace(ckpt_path)
        (args.out / "history.json").write_text(json.dumps(history))
        plot_history(history, args.out / "loss.png", f"{cfg.variant}/{size}")

    model.train()
    t_last = time.time()
    t_ckpt = t_last
    bar = tqdm(total=int(budget), initial=int(elapsed), unit="s", desc=f"train {cfg.variant}")
    for batch in batches(args, cfg):
        if elapsed >= budget:
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(elapsed / budget, step, args.lr)
        if cfg.variant == "flowmix":
            assert isinstance(model, FlowMixNet)
            loss, stats = flowmix_loss(model, batch)
        else:
            assert isinstance(model, FrameMAE)
            loss, stats = plain_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        now = time.time()
        elapsed += now - t_last
        bar.update(int(elapsed) - bar.n)
        t_last = now
        history.append({"step": step, "loss": float(loss.detach()), "time": elapsed, **stats})
        bar.set_postfix(step=step, loss=f"{float(loss.detach()):.4f}", **{k: f"{v:.3f}" for k, v in stats.items()})
        if now - t_ckpt > args.ckpt_minutes * 60:
            save()
            t_ckpt = now
    bar.close()
    save()
    print(f"done: {step} steps, {elapsed / 60:.1f} min -> {ckpt_path}")


if __name__ == "__main__":
    main()
