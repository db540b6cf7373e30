"""Training of the Frame Selector (network: ``training.selector_net``) on the frozen FrameMAE encoder.

Network (``SelectorNet``), one encoder pass per clip whatever the source resolution:

    clip uint8 [B, 16, S, S, 3]   every frame of the clip area-resized to S×S (global view)
    → frozen FrameMAE encoder on the *unmasked* clip → tokens [B, 8, g·g, D]
    → Linear(D → 384) → max over the g·g spatial positions of each slot → [B, 384, 8]
    → 3 residual blocks (Conv1d k=3, BatchNorm, ReLU, dropout 0.1) → flatten → 28 logits
    (class = lexicographic kept slot pair, ``framers.geometry.PAIRS``).

"Unmasked" input per FrameMAE variant: ``flowmix`` sees, per frame, its candidates and the
kept flag / position t (``framers.motion.net_input_window``); with every frame kept all three
candidates are the frame itself, the flag is 1 and t is 0. ``plain`` sees all 8 slots.

Training runs on cached encoder tokens (the encoder is frozen), so each epoch is only the head:

    python -m training.selector features --labels data/selector/train_framemae_s96 \
        --framemae model_store/framemae/<version> --flip    # or --ckpt runs/<run>/ckpt.pt
    python -m training.selector train --train data/selector/train_framemae_s96 \
        --val data/selector/val_framemae_s96 --framemae model_store/framemae/<version> \
        --loss soft --tau 0.5 --prior --pick-best --tune-uniform-bias --epochs 15 --out runs/selector

``training/sweep_selector.sh`` trains the variants compared in BENCHMARKS.md section 3 and picks
one by the regret on held-out train videos (selector 1.1.0 = soft targets, τ = 0.5 dB).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from framers.geometry import N_PAIRS, N_SLOTS, UNIFORM_PAIR
from training.framemae_store import framemae_info
from training.labels import load_labels, window_psnr
from training.selector_net import SelectorHead, UnmaskedEncoder, ViewPrior

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- features
def feature_path(labels: Path, tag: str, flip: bool) -> Path:
    return labels / f"tokens_{tag}{'_flip' if flip else ''}.npy"


def encoder_tag(desc: dict[str, Any]) -> str:
    """Cache key of an encoder's tokens: version and sha256 (a version folder can be re-exported)."""
    tag = str(desc["version"]).replace("/", "_").replace(":", "_")
    return f"{tag}_{desc['sha256'][:12]}" if desc.get("sha256") else tag


@torch.no_grad()
def extract(encoder: UnmaskedEncoder, views: np.ndarray, out: Path, flip: bool, batch: int = 16) -> np.ndarray:
    """Encoder tokens of every stored view, float16 [N, 8, g·g, D], cached at ``out`` (resumable)."""
    if out.exists():
        arr = np.load(out, mmap_mode="r")
        if len(arr) == len(views):
            return np.asarray(arr)
    n = len(views)
    tmp = out.with_suffix(".partial.npy")
    shape = (n, N_SLOTS, encoder.grid**2, encoder.dim)
    done_file = out.with_suffix(".done")
    if tmp.exists() and done_file.exists():
        tokens = np.lib.format.open_memmap(tmp, mode="r+")
        done = int(done_file.read_text())
    else:
        tokens = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
        done = 0
    if views.shape[2] != encoder.tile:
        raise SystemExit(f"stored views are {views.shape[2]} px, the encoder wants {encoder.tile}: "
                         "regenerate labels with --view")
    for i in tqdm(range(done, n, batch), desc=f"tokens{' flip' if flip else ''}", unit="batch"):
        v = views[i:i + batch]
        if flip:
            v = v[:, :, :, ::-1]
        tokens[i:i + batch] = encoder(torch.from_numpy(np.ascontiguousarray(v))).numpy().astype(np.float16)
        tokens.flush()
        done_file.write_text(str(min(n, i + batch)))
    del tokens
    tmp.replace(out)
    done_file.unlink(missing_ok=True)
    return np.load(out)


# --------------------------------------------------------------------------- metrics
def mean_mse(mse: np.ndarray) -> np.ndarray:
    return mse.mean(-1)


def selection_metrics(logits: np.ndarray, mse: np.ndarray) -> dict[str, float]:
    """Top-k accuracy against the exhaustive-search label (argmin window MSE) and the PSNR
    (mean capped frame PSNR of the window, averaged over windows) of the pairs chosen."""
    label = mean_mse(mse).argmin(1)  # [N]
    order = np.argsort(-logits, axis=1)
    psnr = window_psnr(mse)  # [N, 28]
    rows = np.arange(len(label))
    chosen = order[:, 0]
    pm = -10 * np.log10(np.maximum(mean_mse(mse), 1e-12) / 255.0**2)  # [N, 28] PSNR of window MSE

    def pooled(idx: np.ndarray) -> float:  # PSNR of the mean MSE over all windows
        return float(10 * np.log10(255.0**2 / mean_mse(mse)[rows, idx].mean()))

    return {
        "n": len(label),
        "top1": float((chosen == label).mean()),
        "top5": float((order[:, :5] == label[:, None]).any(1).mean()),
        "psnr_selector": float(psnr[rows, chosen].mean()),
        "psnr_oracle_label": float(psnr[rows, label].mean()),
        "psnr_best_frame_mean": float(psnr.max(1).mean()),
        "psnr_uniform": float(psnr[:, UNIFORM_PAIR].mean()),
        "psnr_random": float(psnr.mean()),
        "regret_db_window_mse": float((pm[rows, label] - pm[rows, chosen]).mean()),
        "pooled_psnr_selector": pooled(chosen),
        "pooled_psnr_oracle_label": pooled(label),
        "pooled_psnr_uniform": pooled(np.full_like(label, UNIFORM_PAIR)),
    }


# --------------------------------------------------------------------------- training
def window_mse_psnr(mse: np.ndarray) -> np.ndarray:
    """[N, 28, 16] per-frame MSE → [N, 28] PSNR of each pair's window MSE (≤ 78 dB)."""
    return (-10 * np.log10(np.maximum(mean_mse(mse), 1e-3) / 255.0**2)).astype(np.float32)


def targets(mse: np.ndarray, loss: str, tau: float) -> np.ndarray:
    """[N, 28] target distributions: one-hot argmin (ce) or softmax(PSNR of window MSE / tau) (soft,
    regret)."""
    m = mean_mse(mse)
    if loss == "ce":
        t = np.zeros_like(m)
        t[np.arange(len(m)), m.argmin(1)] = 1.0
        return t
    pm = window_mse_psnr(mse)
    z = (pm - pm.max(1, keepdims=True)) / tau
    e = np.exp(z)
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def split_by_video(videos: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (train, held-out) windows, held-out = whole videos (no overlapping windows)."""
    names = sorted(set(videos.tolist()))
    rng = np.random.default_rng(seed)
    held = set(rng.choice(names, size=max(1, round(frac * len(names))), replace=False).tolist())
    mask = np.array([v in held for v in videos.tolist()])
    return np.flatnonzero(~mask), np.flatnonzero(mask)


@torch.no_grad()
def predict(head: SelectorHead, tokens: np.ndarray, prior: np.ndarray, batch: int = 256) -> np.ndarray:
    head.eval()
    out = [head(torch.from_numpy(np.asarray(tokens[i:i + batch], dtype=np.float32)),
                torch.from_numpy(prior[i:i + batch])).numpy()
           for i in range(0, len(tokens), batch)]
    return np.concatenate(out)


@torch.no_grad()
def view_prior(views: np.ndarray, batch: int = 64) -> np.ndarray:
    """ViewPrior of stored views uint8 [N, 16, S, S, 3] → [N, 28] float32."""
    prior = ViewPrior()
    return np.concatenate([prior(torch.from_numpy(views[i:i + batch])).numpy()
                           for i in range(0, len(views), batch)]).astype(np.float32)


def train_head(tok: list[np.ndarray], pri: np.ndarray, tgt: np.ndarray, gap: np.ndarray, dim: int,
               args: argparse.Namespace, held: tuple[np.ndarray, np.ndarray, np.ndarray] | None
               ) -> tuple[SelectorHead, list[dict[str, float]]]:
    """Train on token arrays ``tok`` (views; same windows/targets), pick the epoch best on ``held``
    (tokens, mse) by the mean regret (dB of window MSE behind the exhaustive-search pair).
    ``gap`` [N, 28]: dB lost by each pair against the best (PSNR of window MSE); loss ``regret``
    adds ``args.regret`` × its expectation under the predicted distribution to the soft CE."""
    torch.manual_seed(args.seed)
    head = SelectorHead(dim, dropout=args.dropout, prior=args.prior, prior_scale=1.0 / args.tau)
    opt = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=args.wd)
    n = len(tgt)
    steps = args.epochs * math.ceil(n / args.batch)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, k / steps))))
    rng = np.random.default_rng(args.seed)
    history: list[dict[str, float]] = []
    best, best_state = -1e9, None
    t0 = time.time()
    for epoch in range(args.epochs):
        head.train()
        perm = rng.permutation(n)
        total = 0.0
        for i in range(0, n, args.batch):
            idx = np.sort(perm[i:i + args.batch])
            view = tok[int(rng.integers(len(tok)))]
            x = torch.from_numpy(np.asarray(view[idx], dtype=np.float32))
            y = torch.from_numpy(tgt[idx])
            logits = head(x, torch.from_numpy(pri[idx]))
            logp = F.log_softmax(logits, dim=1)
            loss = -(y * logp).sum(1).mean()
            if args.loss == "regret":
                loss = loss + args.regret * (logp.exp() * torch.from_numpy(gap[idx])).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        rec: dict[str, float] = {"epoch": epoch + 1, "loss": total / n, "seconds": time.time() - t0}
        if held is not None:
            m = selection_metrics(predict(head, held[0], held[1]), held[2])
            rec.update({f"held_{k}": v for k, v in m.items()
                        if k in ("top1", "top5", "psnr_selector", "regret_db_window_mse", "pooled_psnr_selector")})
            score = -m["regret_db_window_mse"]
            if score > best:
                best, best_state = score, {k: v.clone() for k, v in head.state_dict().items()}
        history.append(rec)
        print(json.dumps(rec), flush=True)
    if best_state is not None and args.pick_best:
        head.load_state_dict(best_state)
    return head, history


def tune_uniform_bias(logits: np.ndarray, mse: np.ndarray) -> float:
    """The bias added to the uniform pair's logit (0..4) that minimises the mean regret on
    held-out windows: the model then departs from (1, 5) only when it is confident."""
    grid = np.arange(0.0, 4.01, 0.25)
    regrets = []
    for b in grid:
        shifted = logits.copy()
        shifted[:, UNIFORM_PAIR] += b
        regrets.append(selection_metrics(shifted, mse)["regret_db_window_mse"])
    print("held-out regret by uniform bias:", {float(b): round(r, 4) for b, r in zip(grid, regrets, strict=True)})
    return float(grid[int(np.argmin(regrets))])


def cmd_features(args: argparse.Namespace) -> None:
    mae, desc = framemae_info(args.framemae, args.ckpt)
    enc = UnmaskedEncoder(mae).eval()
    data = load_labels(args.labels)
    for flip in [False, True] if args.flip else [False]:
        extract(enc, data["view"], feature_path(args.labels, encoder_tag(desc), flip), flip)


def cmd_baselines(args: argparse.Namespace) -> None:
    """Regret and accuracy of the untrained choices on the held-out train videos that ``train``
    uses for epoch choice (same split) and on val: always uniform, and the view prior alone."""
    tr, va = load_labels(args.train), load_labels(args.val)
    _, held_idx = split_by_video(tr["video"], args.held_out, args.seed)
    uniform = np.zeros((len(held_idx), N_PAIRS), np.float32)
    uniform[:, UNIFORM_PAIR] = 1.0
    report = {
        "held_out_windows": len(held_idx),
        "held_out": {"uniform": selection_metrics(uniform, tr["mse"][held_idx]),
                     "view_prior": selection_metrics(view_prior(tr["view"][held_idx]), tr["mse"][held_idx])},
        "val": {"view_prior": selection_metrics(view_prior(va["view"]), va["mse"])},
    }
    text = json.dumps(report, indent=1)
    if args.json:
        args.json.write_text(text)
    print(text)


def cmd_train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    mae, desc = framemae_info(args.framemae, args.ckpt)
    enc = UnmaskedEncoder(mae).eval()
    tag = encoder_tag(desc)
    tr = load_labels(args.train)
    va = load_labels(args.val)
    tr_tok = [extract(enc, tr["view"], feature_path(args.train, tag, False), False)]
    if args.flip:
        tr_tok.append(extract(enc, tr["view"], feature_path(args.train, tag, True), True))
    va_tok = extract(enc, va["view"], feature_path(args.val, tag, False), False)
    fit_idx, held_idx = split_by_video(tr["video"], args.held_out, args.seed) if args.held_out > 0 \
        else (np.arange(len(tr["mse"])), np.array([], dtype=np.int64))
    tgt = targets(tr["mse"], args.loss, args.tau)
    pm = window_mse_psnr(tr["mse"])
    gap = pm.max(1, keepdims=True) - pm  # [N, 28] dB behind the best pair
    tr_pri, va_pri = view_prior(tr["view"]), view_prior(va["view"])
    held = (tr_tok[0][held_idx], tr_pri[held_idx], tr["mse"][held_idx]) if len(held_idx) else None
    started = time.time()
    head, history = train_head([t[fit_idx] for t in tr_tok], tr_pri[fit_idx], tgt[fit_idx], gap[fit_idx], enc.dim,
                               args, held)
    bias = 0.0
    if args.tune_uniform_bias and held is not None:
        bias = tune_uniform_bias(predict(head, held[0], held[1]), held[2])
        with torch.no_grad():
            head.fc.bias[UNIFORM_PAIR] += bias
        print(f"uniform pair logit bias {bias:+.2f} (tuned on held-out train videos)")
    held_m = selection_metrics(predict(head, held[0], held[1]), held[2]) if held is not None else {}
    val = selection_metrics(predict(head, va_tok, va_pri), va["mse"])
    train_m = selection_metrics(predict(head, tr_tok[0][fit_idx], tr_pri[fit_idx]), tr["mse"][fit_idx])
    if args.prior:
        prior_only = selection_metrics(va_pri, va["mse"])
        print("val, view prior alone:", json.dumps(prior_only))
    print("val", json.dumps(val, indent=1))
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save({"head": head.state_dict(), "dim": enc.dim, "dropout": args.dropout, "prior": args.prior,
                "framemae": desc,
                "args": {k: str(v) for k, v in vars(args).items() if k != "func"}}, args.out / "head.pt")
    label_meta = json.loads((args.train / "meta.json").read_text()) if (args.train / "meta.json").exists() else {}
    report = {"framemae": desc, "train_labels": str(args.train),
              "label_reconstructor": label_meta.get("reconstructor"), "train_label_meta": label_meta,
              "val_labels": str(args.val),
              "train_windows": len(fit_idx), "held_out_windows": len(held_idx),
              "loss": args.loss, "tau": args.tau, "epochs": args.epochs, "uniform_bias": bias,
              "seconds": time.time() - started,
              "prior": args.prior, "held_out": held_m, "val": val, "train": train_m, "history": history,
              "val_view_prior_alone": selection_metrics(va_pri, va["mse"])}
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out / 'head.pt'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("features")
    p.add_argument("--labels", type=Path, required=True)
    p.add_argument("--flip", action="store_true")
    p.set_defaults(func=cmd_features)
    p = sub.add_parser("baselines", help="uniform and view-prior metrics on held-out train videos and val")
    p.add_argument("--train", type=Path, required=True)
    p.add_argument("--val", type=Path, required=True)
    p.add_argument("--held-out", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    p.set_defaults(func=cmd_baselines)
    p = sub.add_parser("train")
    p.add_argument("--train", type=Path, required=True)
    p.add_argument("--val", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--loss", choices=["ce", "soft", "regret"], default="soft")
    p.add_argument("--regret", type=float, default=1.0, help="loss regret: weight of the expected dB lost")
    p.add_argument("--tau", type=float, default=0.5, help="soft targets: temperature in dB")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--wd", type=float, default=0.05)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--held-out", type=float, default=0.15, help="share of train videos held out for epoch choice")
    p.add_argument("--pick-best", action="store_true")
    p.add_argument("--prior", action="store_true", help="add the view prior (exhaustive linear search on the view)")
    p.add_argument("--tune-uniform-bias", action="store_true",
                   help="add to the uniform pair's logit the bias that minimises held-out regret")
    p.add_argument("--flip", action="store_true", help="also train on horizontally flipped views")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_train)
    for q in sub.choices.values():
        q.add_argument("--framemae", type=Path, default=None, help="model_store/framemae/<version>")
        q.add_argument("--ckpt", type=Path, default=None, help="FrameMAE checkpoint (default: matched to --framemae)")
    args = parser.parse_args()
    if args.command != "baselines" and args.framemae is None and args.ckpt is None:
        parser.error("--framemae or --ckpt is required")
    torch.set_num_threads(getattr(args, "threads", 1))
    args.func(args)


if __name__ == "__main__":
    main()
