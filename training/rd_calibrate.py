"""Calibration data and fit of the content-adaptive rate model (``framers.adaptive.ratemodel``).

Two measurements on the *train* clips only (``../shared/data/videos/train``), first ``--frames``
frames of each:

* ``interp``: for strides N in {2, 4, 8, 16}, per dropped frame, the view features of
  ``framers.adaptive.analysis`` (linear / motion-compensated MSE on the gray views, gap, t, detail)
  next to the real full-resolution error of ``framemae`` (RGB MSE, kept frames lossless).
* ``coding``: the kept-frame streams of every stride coded by x264 at the probe preset and CRF
  and at the final preset over a CRF grid (bytes, RGB MSE per frame), to map probe measurements
  to the final encode at any CRF.

* ``rgb``: per frame of x264 streams (final preset, ``RGB_CRFS``), the colour path's error, the
  decoded planes' error (what the corrections predict) and the decoded picture's true RGB error.

* ``transfer``: how the coding error of kept frames reaches the frames rebuilt between them:
  per dropped frame, the ``framemae`` error with lossless kept frames and with kept frames coded
  by x264 (final preset, a CRF grid), next to the coding error of its two kept neighbours.

``fit`` turns the rows into the coefficients stored in ``model_store/ratemodel/<version>/config.json``.

    python -m training.rd_calibrate interp --json out/rd_interp.jsonl
    python -m training.rd_calibrate coding --json out/rd_coding.jsonl
    python -m training.rd_calibrate transfer --json out/rd_transfer.jsonl
    python -m training.rd_calibrate fit --interp out/rd_interp.jsonl --coding out/rd_coding.jsonl \
        --transfer out/rd_transfer.jsonl --out model_store/ratemodel/1.1.0

A new probe (preset or error measure, ``--probe-preset``/``--probe-error``) needs new ``coding``
rows only; ``fit --base`` keeps a model's interp and transfer coefficients and fits the coding rows
of the videos that model was fitted on (model 1.2.0):

    python -m training.rd_calibrate coding --base model_store/ratemodel/1.1.0 \
        --json out/rd_coding_12_0.jsonl --shard 0/2   # and --shard 1/2 into out/rd_coding_12_1.jsonl
    python -m training.rd_calibrate fit --base model_store/ratemodel/1.1.0 \
        --coding out/rd_coding_12_0.jsonl,out/rd_coding_12_1.jsonl --out model_store/ratemodel/1.2.0

Model 1.4.0 adds λ, how the colour path's error and x264's (measured on the YUV planes) make the
RGB error of a decoded picture (``ratemodel.with_floor``), from x264 streams of every frame at six
CRFs (``rgb``):

    python -m training.rd_calibrate rgb --json out/rd_rgb_0.jsonl --shard 0/2   # and 1/2
    python -m training.rd_calibrate fit --base model_store/ratemodel/1.3.0 \
        --rgb out/rd_rgb_0.jsonl,out/rd_rgb_1.jsonl --out model_store/ratemodel/1.4.0

Other probe settings without measuring the final codings again (``reprobe``; the fifteenth
session's 40-frame look-ahead probe, BENCHMARKS.md section 0, not shipped):

    python -m training.rd_calibrate reprobe --rows out/rd_coding_12_0.jsonl,out/rd_coding_12_1.jsonl \
        --json out/rd_coding_la40_0.jsonl --shard 0/2 --probe-x264-params mbtree=1:rc-lookahead=40

Model 1.3.0 fits the same rows again with the slopes a second stride-1 probe measures (the rows
hold the probes at every CRF of ``PROBE_CRFS``, so no new measurement):

    python -m training.rd_calibrate fit --base model_store/ratemodel/1.2.0 --slopes \
        --coding out/rd_coding_12_0.jsonl,out/rd_coding_12_1.jsonl --out model_store/ratemodel/1.3.0
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from framers.adaptive import analysis
from framers.adaptive import ratemodel as rm
from framers.adaptive.coding import (
    PROBE_ERRORS,
    code_frames,
    conversion_mse,
    planes_of,
    rgb_mse_of_planes,
    to_codec_yuv,
    x264_context,
    x264_reported_mse,
    x264_round_trip,
)
from framers.reconstructors.base import KeptFrame
from framers.rgb import to_rgb
from framers.scenes import SceneAnalyser

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".264", ".mov", ".webm")
#: CRFs of the ``rgb`` rows: the span the adaptive mode's targets (28-40 dB) use
RGB_CRFS = (14, 20, 26, 32, 38, 44)


def _done_videos(out: Path) -> set[str]:
    """Videos already in a JSONL output (one line per video): a rerun resumes after them."""
    if not out.exists():
        return set()
    return {json.loads(line)["video"] for line in out.read_text().splitlines() if line.strip()}


def _videos(split: str) -> list[Path]:
    """The split's videos in a fixed order that interleaves sources (sorted names cluster a
    source's clips together, so a partial run would see few kinds of content)."""
    found = [p for p in (DATA_ROOT / split).iterdir() if p.suffix.lower() in VIDEO_SUFFIXES]
    return sorted(found, key=lambda p: hashlib.sha256(p.name.encode()).hexdigest())


def _decode(path: Path, frames: int) -> tuple[list[np.ndarray], list[np.ndarray], list[float]]:
    """First ``frames`` frames: RGB [H, W, 3], gray views, detail energies."""
    rgb: list[np.ndarray] = []
    views: list[np.ndarray] = []
    detail: list[float] = []
    scenes = SceneAnalyser()
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            view = scenes.feed(frame)
            rgb.append(to_rgb(frame))
            views.append(view.gray)
            detail.append(analysis.detail_energy(frame.to_ndarray(format="gray"), view.gray))
            if len(rgb) == frames:
                break
    return rgb, views, detail


def run_interp(args: argparse.Namespace) -> int:
    from framers.registry import get_reconstructor

    rebuilder = get_reconstructor("framemae")
    out = Path(args.json)
    done = _done_videos(out)
    for path in _videos(args.split)[: args.max_videos]:
        if path.name in done:
            continue
        rgb, views, detail = _decode(path, args.frames)
        n = len(rgb)
        if n < 17 or min(rgb[0].shape[:2]) < 16:
            continue
        segment = analysis.Segment(0, n, closed=True)
        rows = []
        for stride in (2, 4, 8, 16):
            kept = segment.kept(stride)
            feats = analysis.gap_features(dict(enumerate(views)), kept)
            frames = list(rebuilder.reconstruct([KeptFrame(i, rgb[i]) for i in kept], n, 16))
            for k, i in enumerate(feats.index):
                err = frames[i].astype(np.float32) - rgb[i].astype(np.float32)
                rows.append({
                    "video": path.name, "stride": stride, "index": int(i), "linear": feats.linear[k],
                    "motion": feats.motion[k], "gap": int(feats.gap[k]), "t": feats.t[k], "detail": detail[i],
                    "pixels": int(rgb[i].shape[0] * rgb[i].shape[1]), "mse": float(np.mean(err * err)),
                })
        with out.open("a") as handle:
            handle.write(json.dumps({"video": path.name, "rows": rows}) + "\n")
        print(f"{path.name}: {len(rows)} rows", flush=True)
    return 0


def _fitted_videos(model_dir: str) -> set[str]:
    """The train videos a model's fits used (its config's ``training.videos``)."""
    return set(json.loads((Path(model_dir) / "config.json").read_text())["training"]["videos"])


def run_coding(args: argparse.Namespace) -> int:
    out = Path(args.json)
    done = _done_videos(out)
    shard, shards = (int(x) for x in args.shard.split("/"))
    settings = rm.Probe(args.probe_preset, args.probe_x264_params, args.probe_error)
    fitted = _fitted_videos(args.base) if args.base else None
    videos = [p for p in _videos(args.split) if fitted is None or p.name in fitted]
    for k, path in enumerate(videos[: args.max_videos]):
        if k % shards != shard:
            continue
        if path.name in done:
            continue
        rgb, _, _ = _decode(path, args.frames)
        n = len(rgb)
        if n < 17:
            continue
        segment = analysis.Segment(0, n, closed=True)
        rows = []
        floors = [conversion_mse(f) for f in rgb]
        for stride in analysis.STRIDES:
            frames = [rgb[i] for i in segment.kept(stride)]
            floor = float(np.mean([floors[i] for i in segment.kept(stride)]))
            for probe_crf in rm.PROBE_CRFS:
                probe = code_frames(frames, probe_crf, settings.preset, settings.error, settings.params)
                finals = {crf: code_frames(frames, crf, rm.FINAL_PRESET, "decoded")  # what a reader sees
                          for crf in range(probe_crf - 8, probe_crf + 9, 4)}
                for crf, final in finals.items():
                    rows.append({
                        "video": path.name, "stride": stride, "probe_crf": probe_crf, "crf": crf,
                        **settings.fields(),
                        "probe_bytes": int(probe.bytes.sum()), "bytes": int(final.bytes.sum()),
                        "probe_mse": float(probe.mse.mean()), "mse": float(final.mse.mean()),
                        "frames": len(frames), "floor": floor, "measure": "yuv",
                        "pixels": int(rgb[0].shape[0] * rgb[0].shape[1]),
                    })
        with out.open("a") as handle:
            handle.write(json.dumps({"video": path.name, "rows": rows}) + "\n")
        print(f"{path.name}: {len(rows)} rows", flush=True)
    return 0


def run_reprobe(args: argparse.Namespace) -> int:
    """``coding`` rows (``--rows``) with their probe measured again under other probe settings:
    the final codings do not involve the probe, so only each (video, stride, probe CRF)'s probe
    encode is made again (minutes, where ``coding`` takes hours). Writes the rows, updated, one
    line per video into ``--json`` (resumable, sharded like ``coding``)."""
    settings = rm.Probe(args.probe_preset, args.probe_x264_params, args.probe_error)
    by_video: dict[str, list[dict]] = {}
    for row in _rows(args.rows):
        by_video.setdefault(row["video"], []).append(row)
    for path in _shard_todo(args):
        rows = by_video.get(path.name)
        if not rows:
            continue
        rgb, _, _ = _decode(path, max(int(r["frames"]) for r in rows if r["stride"] == 1))
        segment = analysis.Segment(0, len(rgb), closed=True)
        probes = {}
        for stride, probe_crf in sorted({(int(r["stride"]), int(r["probe_crf"])) for r in rows}):
            frames = [rgb[i] for i in segment.kept(stride)]
            probes[(stride, probe_crf)] = code_frames(frames, probe_crf, settings.preset, settings.error,
                                                      settings.params)
        _append_rows(args, path.name, [
            {**r, **settings.fields(), "probe_bytes": int(probes[(r["stride"], r["probe_crf"])].bytes.sum()),
             "probe_mse": float(probes[(r["stride"], r["probe_crf"])].mse.mean())} for r in rows])
    return 0


def _rgb_errors(frames: list[np.ndarray], crf: int) -> dict[str, list[float]]:
    """Per frame of one x264 stream (final preset, ``crf``): the error x264 reports
    (``x264_reported_mse``), the decoded planes' error as the model's calibration reads it
    (``rgb_mse_of_planes``: planes weighted, taken as independent) and the decoded pictures' true
    RGB error, all gray levels²."""
    h, w = frames[0].shape[:2]
    enc = x264_context(w, h, crf, rm.FINAL_PRESET)
    enc.flags |= av.codec.context.Flags.psnr
    dec = av.CodecContext.create("h264", "r")
    sources = [to_codec_yuv(f) for f in frames]
    pixels = [plane.width * plane.height for plane in sources[0].planes]
    reported: dict[int, float] = {}
    decoded: list[av.VideoFrame] = []

    def take(packets: list[av.Packet]) -> None:
        for packet in packets:
            value = x264_reported_mse(packet, pixels)
            reported[int(packet.pts or 0)] = float("nan") if value is None else value
            decoded.extend(dec.decode(av.Packet(bytes(packet))))

    for i, yuv in enumerate(sources):
        yuv.pts = i
        take(enc.encode(yuv))
    take(enc.encode(None))
    decoded.extend(dec.decode(None))
    if len(decoded) != len(frames):
        raise RuntimeError(f"x264 round trip returned {len(decoded)} of {len(frames)} frames")
    return {"x264": [reported[i] for i in range(len(frames))],
            "planes": [rgb_mse_of_planes(planes_of(s), planes_of(d)) for s, d in zip(sources, decoded, strict=True)],
            "rgb": [_mse(to_rgb(d), f) for d, f in zip(decoded, frames, strict=True)]}


def _shard_todo(args: argparse.Namespace) -> Iterator[Path]:
    """This shard's videos (``--shard i/n``, ``--max-videos``) not yet in ``--json``."""
    done = _done_videos(Path(args.json))
    shard, shards = (int(x) for x in args.shard.split("/"))
    for k, path in enumerate(_videos(args.split)[: args.max_videos]):
        if k % shards == shard and path.name not in done:
            yield path


def _append_rows(args: argparse.Namespace, video: str, rows: list[dict]) -> None:
    """One video's rows as one JSONL line of ``--json`` (a rerun resumes after it)."""
    with Path(args.json).open("a") as handle:
        handle.write(json.dumps({"video": video, "rows": rows}) + "\n")
    print(f"{video}: {len(rows)} rows", flush=True)


def run_rgb(args: argparse.Namespace) -> int:
    """Rows of how x264's error of a coded picture, as the rate model predicts and the encoder
    reports it (YUV planes), reaches the RGB picture a reader gets (``ratemodel.fit_rgb``)."""
    for path in _shard_todo(args):
        rgb, _, _ = _decode(path, args.frames)
        if len(rgb) < 17:
            continue
        floors = [conversion_mse(f) for f in rgb]
        _append_rows(args, path.name, [{"video": path.name, "crf": crf, "floor": floors, **_rgb_errors(rgb, crf)}
                                       for crf in RGB_CRFS])
    return 0


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    err = a.astype(np.float32) - b.astype(np.float32)
    return float(np.mean(err * err))


def run_transfer(args: argparse.Namespace) -> int:
    from framers.registry import get_reconstructor

    rebuilder = get_reconstructor("framemae")
    for path in _shard_todo(args):
        rgb, _, _ = _decode(path, args.frames)
        n = len(rgb)
        if n < 17 or min(rgb[0].shape[:2]) < 16:
            continue
        segment = analysis.Segment(0, n, closed=True)
        rows = []
        for stride in (2, 4, 8, 16):
            kept = segment.kept(stride)
            lossless = list(rebuilder.reconstruct([KeptFrame(i, rgb[i]) for i in kept], n, 16))
            for crf in (20, 28, 36, 44):
                coded, _ = x264_round_trip([rgb[i] for i in kept], crf, rm.FINAL_PRESET)
                kept_mse = {i: _mse(c, rgb[i]) for i, c in zip(kept, coded, strict=True)}
                rebuilt = list(rebuilder.reconstruct([KeptFrame(i, c) for i, c in zip(kept, coded, strict=True)],
                                                     n, 16))
                for left, right in itertools.pairwise(kept):
                    for i in range(left + 1, right):
                        rows.append({
                            "video": path.name, "stride": stride, "crf": crf, "index": i,
                            "t": (i - left) / (right - left), "interp_mse": _mse(lossless[i], rgb[i]),
                            "left_mse": kept_mse[left], "right_mse": kept_mse[right],
                            "mse": _mse(rebuilt[i], rgb[i]),
                        })
        _append_rows(args, path.name, rows)
    return 0


def _rows(paths: str) -> list[dict]:
    """Rows of comma-separated JSONL files, each video once (shards may overlap)."""
    seen: set[str] = set()
    rows: list[dict] = []
    for path in paths.split(","):
        for line in Path(path).read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                if entry["video"] not in seen:
                    seen.add(entry["video"])
                    rows.extend(entry["rows"])
    return rows


def run_fit(args: argparse.Namespace) -> int:
    if args.rgb:
        # λ of the floor's overlap with x264's error: measured on x264 streams of their own, so it
        # joins a base model whose other coefficients stay (model 1.4.0)
        if not args.base or args.coding:
            raise SystemExit("--rgb fits λ onto a --base model (without --coding)")
        base = json.loads((Path(args.base) / "config.json").read_text())
        rows = _rows(args.rgb)
        config = rm.add_rgb(base, rows, args.version or Path(args.out).name)
        training = {**base["training"], "rgb_videos": sorted({r["video"] for r in rows}),
                    "base_command": base["training"]["command"]}
        return _write_config(args, config, training)
    if not args.coding:
        raise SystemExit("fit needs --coding (or --rgb)")
    coding = _rows(args.coding)
    if args.base:
        # a new probe: only the probe -> final corrections change (interp and transfer rows do not
        # involve the probe), the rest comes from the base model with its training record
        base = json.loads((Path(args.base) / "config.json").read_text())
        # only videos the base model was fitted on: clips no fit used stay held out (BENCHMARKS.md
        # section 0 measures the rate model on them)
        fitted = _fitted_videos(args.base)
        coding = [r for r in coding if r["video"] in fitted]
        config = rm.refit_coding(base, coding, args.version or Path(args.out).name, args.slopes)
        training = {**base["training"], "coding_rows": len(coding),
                    "coding_videos": sorted({r["video"] for r in coding}),
                    "base_command": base["training"]["command"]}
    else:
        if not args.interp:
            raise SystemExit("fit needs --interp (or --base)")
        if args.slopes:
            raise SystemExit("--slopes refits a --base model's coding corrections only")
        interp = _rows(args.interp)
        transfer = _rows(args.transfer) if args.transfer else []
        config = rm.fit(interp, coding, transfer)
        training = {
            "data": f"{args.split} clips of ../shared/data/videos (train split only)",
            "interp_rows": len(interp),
            "coding_rows": len(coding),
            "videos": sorted({r["video"] for r in interp}),
            "coding_videos": sorted({r["video"] for r in coding}),
            "transfer_videos": sorted({r["video"] for r in transfer}),
        }
    return _write_config(args, config, training)


def _write_config(args: argparse.Namespace, config: dict, training: dict) -> int:
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    config["training"] = {**training, "command": " ".join(sys.argv)}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(json.dumps(config["metrics"], indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("interp", "coding", "transfer", "rgb"):
        p = sub.add_parser(name)
        p.add_argument("--json", required=True)
        p.add_argument("--split", default="train")
        p.add_argument("--frames", type=int, default=48)
        p.add_argument("--max-videos", type=int, default=1000)
        p.add_argument("--shard", default="0/1", help="i/n: this process takes every n-th video from the i-th")
        if name == "coding":
            p.add_argument("--probe-preset", default=rm.PROBE_PRESET, help="x264 preset of the probe encodes")
            p.add_argument("--probe-x264-params", default=rm.PROBE_X264_PARAMS,
                           help="x264's own options on top of the preset (key=value:...; '' for none)")
            p.add_argument("--base", help="only the videos this model folder was fitted on (clips no fit "
                                          "used stay held out)")
            p.add_argument("--probe-error", default=rm.PROBE_ERROR, choices=PROBE_ERRORS,
                           help="how the probe measures its error (framers.adaptive.coding.PROBE_ERRORS)")
    p = sub.add_parser("reprobe", help="coding rows with the probe measured again under other settings")
    p.add_argument("--rows", required=True, help="`coding` rows (comma-separated files)")
    p.add_argument("--json", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--shard", default="0/1", help="i/n: this process takes every n-th video from the i-th")
    p.add_argument("--max-videos", type=int, default=1000)
    p.add_argument("--probe-preset", default=rm.PROBE_PRESET)
    p.add_argument("--probe-x264-params", default=rm.PROBE_X264_PARAMS)
    p.add_argument("--probe-error", default=rm.PROBE_ERROR, choices=PROBE_ERRORS)
    p = sub.add_parser("fit")
    p.add_argument("--interp", help="rows of `interp` (comma-separated files); not with --base")
    p.add_argument("--base", help="a model folder whose interp/transfer coefficients are kept; only the "
                                  "coding rows are fitted (a new probe preset or error measure)")
    p.add_argument("--version", help="version of the --base refit (default: the --out folder's name)")
    p.add_argument("--coding", help="rows of `coding` (comma-separated files)")
    p.add_argument("--rgb", help="rows of `rgb` (comma-separated files): with --base, fits λ of the floor's "
                                 "overlap with x264's error (model 1.4)")
    p.add_argument("--slopes", action="store_true",
                   help="with --base: the corrections also take the bytes and MSE slopes of a second "
                        "stride-1 probe (model 1.3; the coding rows must hold every probe CRF)")
    p.add_argument("--transfer", help="rows of `transfer` (comma-separated files): fits κ (model 1.1)")
    p.add_argument("--split", default="train")
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    return {"interp": run_interp, "coding": run_coding, "transfer": run_transfer, "rgb": run_rgb,
            "reprobe": run_reprobe, "fit": run_fit}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
