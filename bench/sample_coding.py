"""Can a short trial coding at the final preset foretell x264 medium's error of the whole video?

Issue 12's remaining second codings come from plans that keep every frame and whose predicted
x264 medium error misses the real one by 2-6 dB (val: ``backpack``, ``teddy``, ``juggle`` at
31-37 dB). A trial coding of a sample before the real one would cost a fraction of a coding. For
each clip (first ``--frames`` frames, cut losslessly as ``bench/rd.py`` does) and target, this
makes the adaptive plan (``AdaptiveSelector.make_plan``) and, where it keeps every frame at one
CRF, codes with the bundle's own keyframe encoder (x264 medium, x264's reported error per frame):
every frame (the truth), and the first K frames alone (the sample), for each K of ``--samples``.
Printed per point (JSON lines): measured / predicted mean coding MSE of the whole coding
(``full/pred``), of the sample coded alone (``sK/predK``) and of the same K frames inside the
whole coding (``fullK/predK``). A sample is useful where ``sK/predK`` ≈ ``full/pred``. Also, at
the planned CRF, x264 medium's mean coding MSE over that of the rate model's probe settings
(``med/probe``) and of the same probe with a 40-frame look-ahead like medium's (``med/probe_la40``):
if the look-ahead were what the probe misses, the second would vary less between clips.

    .venv/bin/python bench/sample_coding.py ../shared/data/videos/val/cotracker__gradio_demo_videos_backpack.mp4 \\
      --targets 31,34,37
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from framers.adaptive.coding import ProbeEncoder, codec_yuv
from framers.adaptive.selector import AdaptiveSelector
from framers.clip import Clip
from framers.geometry import CLIP_LEN
from framers.h264_reference import write_trimmed
from framers.keyframes import KeyframeEncoder
from framers.video import FrameReader


def coded_mse(pictures: Sequence, crf: int) -> np.ndarray:
    """x264's per-frame coding MSE (RGB gray levels², ``KeyframeEncoder.coding_mse``) of
    ``pictures`` (the codec's YUV, ``codec_yuv``) coded alone as one stream at ``crf``."""
    with tempfile.TemporaryDirectory() as tmp:
        encoder = KeyframeEncoder(Path(tmp), pictures[0].width, pictures[0].height, "x264", crf)
        for picture in pictures:
            encoder.write(picture, crf)
        encoder.close()
        return np.array([encoder.coding_mse[i] for i in range(len(pictures))])


def probe_mse(pictures: Sequence, crf: int, preset: str, params: str) -> float:
    """Mean x264-reported coding MSE of ``pictures`` coded as one probe stream (``ProbeEncoder``)."""
    encoder = ProbeEncoder(pictures[0].width, pictures[0].height, crf, preset, "x264", params)
    for i, picture in enumerate(pictures):
        encoder.write_yuv(i, picture)
    return float(encoder.finish().mse.mean())


def points(video: Path, frames: int, targets: Sequence[float], samples: Sequence[int]) -> Iterator[dict]:
    """One record per target whose plan keeps every frame at one CRF (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        cut = Path(tmp) / "cut.mkv"
        write_trimmed(video, frames, cut)

        def open_clips() -> Iterator[Clip]:
            with FrameReader(cut) as reader:
                yield from reader.clips(CLIP_LEN)

        pictures = [codec_yuv(clip, i) for clip in open_clips() for i in range(len(clip))]
        for target in targets:
            chooser = AdaptiveSelector(target_psnr=target)
            plan = chooser.make_plan(open_clips)
            record: dict = {"clip": video.name, "target": target,
                            "plan": [[c.stride, c.crf] for c in plan.choices]}
            if any(c.stride != 1 for c in plan.choices) or len({c.crf for c in plan.choices}) > 1:
                yield {**record, "skipped": "not every frame kept at one CRF"}
                continue
            crf = plan.choices[0].crf
            predicted = np.concatenate([
                np.maximum(m[0].kept_mse - m[0].floor, 0.0) * chooser.model.mse_factor(
                    np.array([crf - plan.probe_crf]), plan.probe_crf, 1, m[0].mse_slope)[0]
                for m in chooser._measures])
            full = coded_mse(pictures, crf)
            record["full/pred"] = round(float(full.mean() / predicted.mean()), 2)
            probe = chooser.model.probe
            longer = ":".join([*(p for p in probe.params.split(":") if p and not p.startswith("rc-lookahead")),
                               "rc-lookahead=40"])
            record["med/probe"] = round(float(full.mean()) / probe_mse(pictures, crf, probe.preset, probe.params), 2)
            record["med/probe_la40"] = round(float(full.mean()) / probe_mse(pictures, crf, probe.preset, longer), 2)
            for k in samples:
                alone = coded_mse(pictures[:k], crf)
                record[f"s{k}/pred{k}"] = round(float(alone.mean() / predicted[:k].mean()), 2)
                record[f"full{k}/pred{k}"] = round(float(full[:k].mean() / predicted[:k].mean()), 2)
            yield record


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--targets", default="31,34,37")
    parser.add_argument("--samples", default="8,16", help="sample lengths K (frames from the start)")
    args = parser.parse_args(argv)
    targets = [float(t) for t in args.targets.split(",")]
    samples = [int(k) for k in args.samples.split(",")]
    for video in args.videos:
        for record in points(video, args.frames, targets, samples):
            print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
