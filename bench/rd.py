"""Rate–distortion of FrameRS against x264 on the same frames: RD points, Bjøntegaard deltas, plots.

Protocol (docs/DESIGN.md, "Quality protocol" and "Rate–distortion against x264"; issue 12):

* Each video is cut to its first ``--frames`` frames (default 96) losslessly
  (``framers.h264_reference.write_trimmed``: FFV1, RGB). That cut is the source of every point, and its
  decoded RGB frames are the reference.
* Anchor: libx264 preset medium, default GOP settings, yuv420p (yuv444p for an odd width or
  height, as ``framers.video_writer.output_pix_fmt``), at each CRF of ``--anchor-crfs``. The decoded RGB
  frames go into the encoder as ``rgb24`` frames and PyAV's reformatter converts them to YUV —
  the colour path the bundle's keyframe encoder uses. Bytes = the raw video bitstream (sum of
  the packet sizes, no container).
* Methods: lists of ``framers.pipeline.compress`` keyword sets. ``strideN[+RECON]`` keeps every
  Nth frame at each kept-frame CRF of ``--keyframe-crfs``; ``adaptive[+RECON]`` calls
  ``compress(source, bundle, target_psnr=T)`` for each T of ``--targets`` (only when
  ``compress`` has that keyword: detected with ``inspect.signature``; otherwise the method is
  skipped with a note). RECON (default ``framemae``) rebuilds the frames. Bytes = the bundle's
  video part (keyframe stream + manifest, no audio; as ``framers evaluate`` counts it).
* Quality: per frame RGB PSNR (peak 255, capped at 60 dB; ``framers.metrics``) of the frames
  rebuilt by ``pipeline.iter_reconstructed`` (anchor: as decoded) against the reference; a
  point's PSNR is the mean over frames; also the PSNR of the mean MSE.
* Per clip and method: Bjøntegaard delta rate and PSNR against the anchor (``framers.bdrate``,
  ``--bd-method cubic`` = VCEG-M33, or ``pchip`` = JVET CTC), over all of the method's points;
  also the BD-rate of the upper convex hull of (anchor ∪ method) points — what switching per
  clip between the method and x264 could give. Over clips: median, mean, best, worst, clips
  that beat x264 (BD-rate < 0). Adaptive: the share of (clip, target) points whose achieved PSNR
  is ≥ target − 0.5 dB.

Output: ``--json`` (rewritten after every clip; a later run with the same frames and anchor
settings keeps the clips and methods it already holds and measures only the rest — ``--fresh``
starts over), ``--md`` (tables), ``--plots DIR`` (``rd_<clip>.png`` per clip, log-rate axis,
and ``rd_summary.png``). ``--jobs N`` measures N clips at once in worker processes.

    .venv/bin/python bench/rd.py ../shared/data/videos/val --methods stride4,stride2,adaptive \\
        --json bench/results/rd_val.json --md bench/results/rd_val.md --plots bench/results/rd_val
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import re
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from framers import __version__, bdrate, pipeline
from framers.evaluate import _rebuilt_frames, _video_bytes
from framers.evaluate_inputs import find_videos
from framers.h264_reference import write_trimmed
from framers.metrics import mse, psnr_from_mse
from framers.video import FrameReader, probe
from framers.video_writer import output_pix_fmt

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VIDEOS = ROOT.parent / "shared" / "data" / "videos" / "val"
DEFAULT_FRAMES = 96
DEFAULT_ANCHOR_CRFS = (14, 18, 22, 26, 30, 34, 38, 42, 46)
DEFAULT_KEYFRAME_CRFS = (14, 20, 26, 32, 38)
DEFAULT_TARGETS = (28.0, 30.0, 32.0, 34.0, 36.0, 38.0, 40.0)
DEFAULT_METHODS = "stride4,stride2,adaptive"
DEFAULT_RECONSTRUCTOR = "framemae"
ANCHOR_PRESET = "medium"
TARGET_TOLERANCE_DB = 0.5
METHOD_PATTERN = re.compile(r"^(?:stride(?P<stride>\d+)|(?P<adaptive>adaptive))(?:\+(?P<recon>[a-z0-9_]+))?$")


# -- methods ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    """One operating point of a method: a label and the keyword arguments for ``pipeline.compress``."""

    label: str
    kwargs: dict[str, Any] = field(hash=False)


@dataclass(frozen=True)
class MethodSpec:
    """A named list of operating points (``kind`` "fixed" or "adaptive") rebuilt with ``reconstructor``."""

    name: str
    kind: str
    reconstructor: str
    points: tuple[Point, ...]

    def settings(self) -> dict[str, Any]:
        """What changes this method's numbers (a resumed run reuses a stored method only if equal)."""
        return {"kind": self.kind, "reconstructor": self.reconstructor,
                "points": [{"label": p.label, **p.kwargs} for p in self.points]}


def adaptive_available() -> bool:
    """True when ``framers.pipeline.compress`` accepts ``target_psnr`` (the adaptive mode of issue 12)."""
    return "target_psnr" in inspect.signature(pipeline.compress).parameters


def parse_methods(
    text: str,
    keyframe_crfs: Sequence[int] = DEFAULT_KEYFRAME_CRFS,
    targets: Sequence[float] = DEFAULT_TARGETS,
) -> list[MethodSpec]:
    """``"stride4,stride2+linear,adaptive"`` → method specs.

    ``strideN`` (N ≥ 1) is the stride selector at every CRF of ``keyframe_crfs``; ``adaptive`` is
    ``target_psnr=T`` for every T of ``targets``; ``+RECON`` picks the reconstructor (default
    framemae). Raises ``ValueError`` for an unknown or duplicate item or an empty list.
    """
    from framers.registry import RECONSTRUCTORS

    methods: list[MethodSpec] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        match = METHOD_PATTERN.match(item)
        recon = (match.group("recon") if match else None) or DEFAULT_RECONSTRUCTOR
        if match is None or recon not in RECONSTRUCTORS or (match.group("stride") and int(match.group("stride")) < 1):
            raise ValueError(f"method {item!r}: expected strideN[+RECON] or adaptive[+RECON], RECON in "
                             f"{', '.join(RECONSTRUCTORS)}")
        if match.group("adaptive"):
            name = f"adaptive+{recon}"
            points = tuple(Point(f"t{t:g}", {"target_psnr": float(t)}) for t in targets)
            spec = MethodSpec(name, "adaptive", recon, points)
        else:
            stride = int(match.group("stride"))
            name = f"stride{stride}+{recon}"
            points = tuple(Point(f"crf{c}", {"selector": "stride", "stride": stride, "keyframe_crf": int(c)})
                           for c in keyframe_crfs)
            spec = MethodSpec(name, "fixed", recon, points)
        if any(m.name == spec.name for m in methods):
            raise ValueError(f"method {spec.name} given twice")
        methods.append(spec)
    if not methods:
        raise ValueError("no methods given")
    return methods


# -- measuring ----------------------------------------------------------------------------------------
def _source_frames(source: Path) -> Iterator[np.ndarray]:
    with FrameReader(source) as reader:
        for frame in reader.frames():
            yield frame.rgb


def quality_of(source: Path, frames: Iterator[np.ndarray]) -> dict[str, float | int]:
    """Compare a stream of RGB uint8 frames [H, W, 3] with the source's decoded frames, in order.

    Returns ``frames``, ``psnr`` (mean of per-frame PSNR in dB, each capped at 60) and
    ``psnr_mean_mse`` (PSNR of the mean MSE). Raises ``ValueError`` when the stream has fewer or
    more frames than the source, or a frame of another size.
    """
    errors: list[float] = []
    for reference in _source_frames(source):
        test = next(frames, None)
        if test is None:
            raise ValueError(f"the stream ended after {len(errors)} frames; the source has more")
        errors.append(mse(reference, test))
    if next(frames, None) is not None:
        raise ValueError(f"the stream has more frames than the source ({len(errors)})")
    if not errors:
        raise ValueError("the source has no frames")
    return {
        "frames": len(errors),
        "psnr": float(np.mean([psnr_from_mse(e) for e in errors])),
        "psnr_mean_mse": psnr_from_mse(float(np.mean(errors))),
    }


def encode_anchor(source: Path, dest: Path, crf: int, fps: float, preset: str = ANCHOR_PRESET) -> tuple[int, int]:
    """Encode every frame of ``source`` with libx264 (CRF ``crf``, ``preset``, default GOP) into
    Matroska at ``dest``; return (bitstream bytes = sum of packet sizes, codec extradata bytes:
    the SPS/PPS that Matroska keeps in its header).

    RGB frames enter as ``rgb24`` and PyAV converts them to the stream's pixel format (yuv420p, or
    yuv444p for odd sizes) — the keyframe encoder's colour path.
    """
    total = 0
    rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
    with av.open(str(dest), mode="w", format="matroska") as out:
        stream: Any = None
        for index, rgb in enumerate(_source_frames(source)):
            if stream is None:
                stream = out.add_stream("libx264", rate=rate)
                stream.height, stream.width = rgb.shape[:2]
                stream.pix_fmt = output_pix_fmt(stream.width, stream.height)
                stream.options = {"crf": str(crf), "preset": preset}
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                total += packet.size
                out.mux(packet)
        if stream is None:
            raise ValueError(f"{source.name}: no frames to encode")
        for packet in stream.encode(None):
            total += packet.size
            out.mux(packet)
        extradata = len(stream.codec_context.extradata or b"")
    return total, extradata


def bitstream_bytes(bundle: Path) -> int:
    """Bytes of the coded kept frames of a bundle folder, like x264's side (packets + codec
    extradata): no container, no audio, no manifest (the manifest plays the container's part —
    timestamps, layout, checksums — and is reported apart as ``manifest_bytes``)."""
    from framers import bundle as fb

    total = 0
    for file in sorted(p for p in bundle.rglob("*") if p.is_file() and p.name not in (fb.AUDIO, fb.MANIFEST)):
        try:
            with av.open(str(file)) as container:
                streams = container.streams.video
                if not streams:
                    raise ValueError("no video stream")
                stream = streams[0]
                total += sum(packet.size for packet in container.demux(stream) if packet.size)
                total += len(stream.codec_context.extradata or b"")
        except (av.error.FFmpegError, ValueError):
            total += file.stat().st_size
    return total


def _decoded(path: Path) -> Iterator[np.ndarray]:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def _rate_fields(n_bytes: int, frames: int, fps: float, width: int, height: int) -> dict[str, float]:
    seconds = frames / fps if fps > 0 else frames / 25.0
    return {"bytes": int(n_bytes), "kbps": round(n_bytes * 8 / seconds / 1000.0, 3),
            "bpp": round(n_bytes * 8 / (width * height * frames), 6)}


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


@dataclass
class Config:
    """Everything a worker needs to measure one clip (picklable)."""

    frames: int
    anchor_crfs: tuple[int, ...]
    methods: tuple[MethodSpec, ...]
    bd_method: str = "cubic"
    rate: str = "bundle"
    tmp_dir: Path | None = None
    verbose: bool = True

    def anchor_settings(self) -> dict[str, Any]:
        return {"codec": "libx264", "preset": ANCHOR_PRESET, "crfs": list(self.anchor_crfs),
                "pix_fmt": "yuv420p (yuv444p for odd sizes)", "input": "rgb24 via PyAV's reformatter"}


def _say(config: Config, message: str) -> None:
    if config.verbose:
        print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def measure_anchor(source: Path, workdir: Path, crf: int, info: dict[str, Any]) -> dict[str, Any]:
    """One x264 point: encode, decode, compare. Fields: crf, bytes (packets), kbps, bpp,
    bitstream_bytes (packets + extradata), psnr, psnr_mean_mse, encode_seconds, seconds."""
    started = time.perf_counter()
    dest = workdir / f"anchor-crf{crf}.mkv"
    n_bytes, extradata = encode_anchor(source, dest, crf, info["fps"])
    encode_seconds = time.perf_counter() - started
    quality = quality_of(source, _decoded(dest))
    dest.unlink()
    return {"crf": crf, **_rate_fields(n_bytes, quality["frames"], info["fps"], info["width"], info["height"]),
            "bitstream_bytes": n_bytes + extradata,
            "psnr": _round(quality["psnr"]), "psnr_mean_mse": _round(quality["psnr_mean_mse"]),
            "encode_seconds": _round(encode_seconds, 3), "seconds": _round(time.perf_counter() - started, 3)}


def measure_point(source: Path, workdir: Path, spec: MethodSpec, point: Point, info: dict[str, Any]) -> dict[str, Any]:
    """One method point: compress into a bundle folder, rebuild with ``spec.reconstructor``, compare.

    Fields: label, params, bytes (bundle video part: files as stored), kbps, bpp, bitstream_bytes
    (keyframe packets + extradata; manifest apart as manifest_bytes), kept_frames, psnr, psnr_mean_mse,
    compress_seconds, seconds (compress + rebuild + compare); adaptive points also target_psnr and
    achieved_minus_target.
    """
    started = time.perf_counter()
    bundle = workdir / f"bundle-{spec.name}-{point.label}".replace("+", "_")
    try:
        result = pipeline.compress(source, bundle, **point.kwargs)
        compress_seconds = time.perf_counter() - started
        n_bytes = _video_bytes(bundle)
        n_bitstream = bitstream_bytes(bundle)
        n_manifest = (bundle / "manifest.json").stat().st_size if bundle.is_dir() else 0
        with _rebuilt_frames(bundle, spec.reconstructor) as frames:
            quality = quality_of(source, frames)
    finally:
        if bundle.is_dir():
            shutil.rmtree(bundle, ignore_errors=True)
        elif bundle.exists():
            bundle.unlink()
    record: dict[str, Any] = {
        "label": point.label, "params": dict(point.kwargs),
        **_rate_fields(n_bytes, quality["frames"], info["fps"], info["width"], info["height"]),
        "bitstream_bytes": n_bitstream,
        "manifest_bytes": n_manifest,
        "kept_frames": result.kept_frames,
        "psnr": _round(quality["psnr"]), "psnr_mean_mse": _round(quality["psnr_mean_mse"]),
        "compress_seconds": _round(compress_seconds, 3), "seconds": _round(time.perf_counter() - started, 3),
    }
    if "target_psnr" in point.kwargs:
        record["target_psnr"] = point.kwargs["target_psnr"]
        record["achieved_minus_target"] = _round(quality["psnr"] - point.kwargs["target_psnr"])
    return record


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def measure_clip(path: Path, config: Config, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """All anchor and method points of one video, and its BD numbers (see the module docstring).

    ``previous``: this clip's record from an earlier run with the same frames and anchor settings;
    its anchor and every method with unchanged settings are kept, the rest measured.
    A failing point is recorded with ``error`` and left out of the BD fits.
    """
    info_src = probe(path)
    record: dict[str, Any] = previous or {}
    record.update(video=path.name, path=str(path), source_frames=info_src.frames)
    record.setdefault("methods", {})
    with tempfile.TemporaryDirectory(prefix="framers-rd-", dir=config.tmp_dir) as tmp:
        workdir = Path(tmp)
        source = workdir / "source.mkv"
        frames = write_trimmed(path, config.frames, source)
        info = {"width": info_src.width, "height": info_src.height, "fps": info_src.fps}
        frames_iter = _source_frames(source)
        first = next(frames_iter)
        frames_iter.close()
        info["height"], info["width"] = first.shape[:2]  # display orientation, as measured
        record.update(frames=frames, width=info["width"], height=info["height"], fps=_round(info["fps"], 3))
        _say(config, f"{path.name}: {frames} frames {info['width']}x{info['height']} @ {info['fps']:.2f} fps")

        if record.get("anchor", {}).get("settings") != config.anchor_settings():
            points = []
            for crf in config.anchor_crfs:
                try:
                    point = measure_anchor(source, workdir, crf, info)
                except Exception as exc:  # a point's failure is a result
                    point = {"crf": crf, "error": _error_text(exc)}
                points.append(point)
                _say(config, f"  x264 crf {crf}: " + (point.get("error") or
                     f"{point['kbps']:.0f} kbps, {point['psnr']:.2f} dB ({point['seconds']:.1f} s)"))
            record["anchor"] = {"settings": config.anchor_settings(), "points": points}

        for spec in config.methods:
            old = record["methods"].get(spec.name)
            if old is not None and not _has_work({"methods": {spec.name: old}}, [spec]):
                continue
            entry: dict[str, Any] = {"settings": spec.settings(), "points": []}
            record["methods"][spec.name] = entry
            if spec.kind == "adaptive" and not adaptive_available():
                entry["skipped"] = "framers.pipeline.compress has no target_psnr keyword yet (issue 12)"
                _say(config, f"  {spec.name}: skipped ({entry['skipped']})")
                continue
            for point in spec.points:
                try:
                    result = measure_point(source, workdir, spec, point, info)
                except Exception as exc:  # a point's failure is a result
                    result = {"label": point.label, "params": dict(point.kwargs), "error": _error_text(exc)}
                    if config.verbose:
                        traceback.print_exc()
                entry["points"].append(result)
                _say(config, f"  {spec.name} {point.label}: " + (result.get("error") or
                     f"{result['kbps']:.0f} kbps, {result['psnr']:.2f} dB ({result['seconds']:.1f} s)"))
    add_bd(record, config.bd_method, config.rate)
    return record


# -- Bjøntegaard numbers -----------------------------------------------------------------------------
RATE_KEYS = {"bundle": "bytes", "bitstream": "bitstream_bytes"}


def _curve(points: Sequence[dict[str, Any]], rate: str = "bundle") -> tuple[list[float], list[float]]:
    key = RATE_KEYS[rate]
    ok = [p for p in points if "error" not in p and p.get("psnr") is not None and (p.get(key) or 0) > 0]
    return [float(p[key]) for p in ok], [float(p["psnr"]) for p in ok]


def add_bd(record: dict[str, Any], bd_method: str = "cubic", rate: str = "bundle") -> None:
    """Set ``bd_rate`` (%), ``bd_psnr`` (dB) and ``bd_rate_hull_union`` (%) on every method of a clip
    record, against its anchor; where undefined (< 4 points, no overlap) the value is None and
    ``bd_error`` says why. ``bd_rate_hull_union``: the upper hull of anchor ∪ method points vs the
    anchor (≤ 0 by construction up to fit error). ``rate``: "bundle" (``bytes``: x264 packets vs
    the bundle's files as stored) or "bitstream" (``bitstream_bytes``: no container on either side).
    Points without the chosen field (older records) are left out."""
    a_rate, a_psnr = _curve(record.get("anchor", {}).get("points", []), rate)
    for entry in record.get("methods", {}).values():
        entry.pop("bd_error", None)
        entry.pop("bd_hull_error", None)
        entry.update(bd_method=bd_method, bd_rate_basis=rate, bd_rate=None, bd_psnr=None, bd_rate_hull_union=None)
        if "skipped" in entry:
            continue
        m_rate, m_psnr = _curve(entry["points"], rate)
        try:
            entry["bd_rate"] = _round(bdrate.bd_rate(a_rate, a_psnr, m_rate, m_psnr, bd_method), 3)
            entry["bd_psnr"] = _round(bdrate.bd_psnr(a_rate, a_psnr, m_rate, m_psnr, bd_method), 4)
        except ValueError as exc:
            entry["bd_error"] = str(exc)
        try:
            all_rate, all_psnr = a_rate + m_rate, a_psnr + m_psnr
            hull = bdrate.upper_hull(all_rate, all_psnr)
            entry["bd_rate_hull_union"] = _round(bdrate.bd_rate(
                a_rate, a_psnr, [all_rate[i] for i in hull], [all_psnr[i] for i in hull], bd_method), 3)
        except ValueError as exc:
            entry["bd_hull_error"] = str(exc)


def summarize(clips: Sequence[dict[str, Any]], method_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per method over clips: BD-rate median / mean / best / worst (%), clips beating x264 (BD-rate < 0),
    median BD-PSNR and hull-union BD-rate; for adaptive points the share with achieved PSNR
    ≥ target − 0.5 dB and the median of achieved − target."""
    summary: dict[str, dict[str, Any]] = {}
    for name in method_names:
        entries = [c["methods"][name] for c in clips if name in c.get("methods", {})]
        rates = [e["bd_rate"] for e in entries if e.get("bd_rate") is not None]
        psnrs = [e["bd_psnr"] for e in entries if e.get("bd_psnr") is not None]
        hulls = [e["bd_rate_hull_union"] for e in entries if e.get("bd_rate_hull_union") is not None]
        item: dict[str, Any] = {
            "clips": len(entries), "clips_with_bd": len(rates),
            "skipped": sum(1 for e in entries if "skipped" in e),
            "bd_rate_median": _round(statistics.median(rates), 3) if rates else None,
            "bd_rate_mean": _round(statistics.fmean(rates), 3) if rates else None,
            "bd_rate_best": _round(min(rates), 3) if rates else None,
            "bd_rate_worst": _round(max(rates), 3) if rates else None,
            "clips_beating_x264": sum(1 for r in rates if r < 0),
            "bd_psnr_median": _round(statistics.median(psnrs), 4) if psnrs else None,
            "bd_rate_hull_union_median": _round(statistics.median(hulls), 3) if hulls else None,
            "point_errors": sum(1 for e in entries for p in e["points"] if "error" in p),
        }
        deltas = [p["achieved_minus_target"] for e in entries for p in e["points"]
                  if p.get("achieved_minus_target") is not None]
        if deltas:
            item["target_points"] = len(deltas)
            item["target_met_share"] = _round(sum(1 for d in deltas if d >= -TARGET_TOLERANCE_DB) / len(deltas), 4)
            item["achieved_minus_target_median"] = _round(statistics.median(deltas), 3)
        summary[name] = item
    return summary


# -- reports ------------------------------------------------------------------------------------------
def build_report(clips: list[dict[str, Any]], config: Config, started: float, notes: list[str]) -> dict[str, Any]:
    """The JSON document: settings, per-clip records (in input order) and the summary."""
    names = [m.name for m in config.methods]
    return {
        "framers_version": __version__,
        "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(time.perf_counter() - started, 1),
        "measured_seconds": round(sum(p.get("seconds") or 0.0 for c in clips
                                      for p in [*c.get("anchor", {}).get("points", []),
                                                *(q for m in c.get("methods", {}).values() for q in m["points"])]), 1),
        "settings": {"frames": config.frames, "anchor": config.anchor_settings(), "bd_method": config.bd_method,
                     "rate_basis": config.rate, "methods": {m.name: m.settings() for m in config.methods},
                     "psnr_cap_db": 60.0,
                     "rate": "bytes: x264 packets / bundle keyframe file + manifest as stored; bitstream_bytes: "
                             "packets + codec extradata of the kept frames (manifest: manifest_bytes)"},
        "notes": notes,
        "clips": clips,
        "summary": summarize(clips, names),
    }


def _fmt(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:+.{digits}f}{suffix}" if suffix == " %" else f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def to_markdown(report: dict[str, Any]) -> str:
    """Summary table, per-clip BD-rate table, adaptive target table and every RD point."""
    settings = report["settings"]
    names = list(settings["methods"])
    clips = report["clips"]
    anchor = settings["anchor"]
    lines = [
        "# Rate–distortion against x264 (bench/rd.py)", "",
        f"{len(clips)} clips, first {settings['frames']} frames (lossless cut); anchor libx264 preset "
        f"{anchor['preset']}, CRF {', '.join(map(str, anchor['crfs']))}, 4:2:0 (4:4:4 if odd size), same RGB "
        f"frames and colour path; rate for BD: {settings.get('rate_basis', 'bundle')} (bundle: x264 packets vs "
        f"the bundle's keyframe file + manifest as stored; bitstream: no container on either side); PSNR: RGB, "
        f"capped at 60 dB per frame, mean over frames. BD: {settings['bd_method']} "
        f"({'VCEG-M33' if settings['bd_method'] == 'cubic' else 'JVET CTC PCHIP'}); negative = fewer bytes "
        f"than x264. framers {report['framers_version']}, {report['created']}; points measured in "
        f"{report.get('measured_seconds', 0):.0f} s (this run {report['seconds']:.0f} s).", "",
    ]
    lines += [f"Note: {n}" for n in report.get("notes", [])]
    if report.get("notes"):
        lines.append("")
    lines += ["## Summary over clips", "",
              "| method | clips | BD-rate median | mean | best | worst | beat x264 | BD-PSNR median "
              "| hull(x264 ∪ method) median | target met (±0.5 dB) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        s = report["summary"][name]
        if s["skipped"] and not s["clips_with_bd"]:
            lines.append(f"| {name} | skipped | – | – | – | – | – | – | – | – |")
            continue
        met = (f"{100 * s['target_met_share']:.0f} % of {s['target_points']}" if "target_met_share" in s else "–")
        lines.append(
            f"| {name} | {s['clips_with_bd']}/{s['clips']} | {_fmt(s['bd_rate_median'], 1, ' %')} "
            f"| {_fmt(s['bd_rate_mean'], 1, ' %')} | {_fmt(s['bd_rate_best'], 1, ' %')} "
            f"| {_fmt(s['bd_rate_worst'], 1, ' %')} | {s['clips_beating_x264']} of {s['clips_with_bd']} "
            f"| {_fmt(s['bd_psnr_median'], 2, ' dB')} | {_fmt(s['bd_rate_hull_union_median'], 1, ' %')} | {met} |")
    lines += ["", "## BD-rate per clip (BD-PSNR in brackets)", "",
              "| clip | size | frames | x264 PSNR range | " + " | ".join(names) + " |",
              "|---|---|---|---|" + "---|" * len(names)]
    for clip in clips:
        _, a_psnr = _curve(clip.get("anchor", {}).get("points", []))
        span = f"{min(a_psnr):.1f}–{max(a_psnr):.1f}" if a_psnr else "–"
        cells = []
        for name in names:
            e = clip["methods"].get(name, {})
            if "skipped" in e:
                cells.append("skipped")
            elif e.get("bd_rate") is None:
                cells.append("n/a" + (f" ({e['bd_error'][:40]}…)" if e.get("bd_error") else ""))
            else:
                psnr_delta = f"{e['bd_psnr']:+.2f} dB" if e.get("bd_psnr") is not None else "BD-PSNR n/a"
                cells.append(f"{e['bd_rate']:+.1f} % ({psnr_delta})")
        if "error" in clip and "width" not in clip:
            blanks = " | ".join("" for _ in names)
            lines.append(f"| {clip['video']} | error: {str(clip['error'])[:80]} | | | {blanks} |")
            continue
        lines.append(f"| {clip['video']} | {clip['width']}x{clip['height']} | {clip['frames']} | {span} | "
                     + " | ".join(cells) + " |")
    lines += ["", "## RD points", "", "| clip | method | point | kbps | PSNR | PSNR(MSE) | target Δ | seconds |",
              "|---|---|---|---|---|---|---|---|"]
    for clip in clips:
        for p in clip.get("anchor", {}).get("points", []):
            lines.append(f"| {clip['video']} | x264 medium | crf{p['crf']} | " + (
                f"error: {p['error']} | | | | |" if "error" in p else
                f"{p['kbps']:.1f} | {p['psnr']:.2f} | {p['psnr_mean_mse']:.2f} | – | {p['seconds']:.1f} |"))
        for name in names:
            for p in clip["methods"].get(name, {}).get("points", []):
                delta = p.get("achieved_minus_target")
                lines.append(f"| {clip['video']} | {name} | {p['label']} | " + (
                    f"error: {p['error']} | | | | |" if "error" in p else
                    f"{p['kbps']:.1f} | {p['psnr']:.2f} | {p['psnr_mean_mse']:.2f} | "
                    f"{_fmt(delta, 2) if delta is not None else '–'} | {p['seconds']:.1f} |"))
    return "\n".join(lines) + "\n"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem)[:80]


def write_plots(report: dict[str, Any], folder: Path) -> list[Path]:
    """``rd_<clip>.png`` per clip (PSNR vs kbit/s on a log axis: the x264 anchor and every method,
    adaptive points labelled with their target) and ``rd_summary.png`` (BD-rate per clip and method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    names = list(report["settings"]["methods"])
    key = RATE_KEYS[report["settings"].get("rate_basis", "bundle")]

    def kbps(p: dict[str, Any]) -> float:
        """The point's rate in kbit/s on the report's rate basis."""
        return p["kbps"] * p.get(key, p["bytes"]) / p["bytes"]

    colours = plt.get_cmap("tab10")
    written: list[Path] = []
    for clip in report["clips"]:
        fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
        anchor = [p for p in clip.get("anchor", {}).get("points", []) if "error" not in p]
        if anchor:
            anchor.sort(key=kbps)
            ax.plot([kbps(p) for p in anchor], [p["psnr"] for p in anchor], "k-o", ms=4, label="x264 medium (anchor)")
        for i, name in enumerate(names):
            entry = clip["methods"].get(name, {})
            pts = sorted((p for p in entry.get("points", []) if "error" not in p), key=kbps)
            if not pts:
                continue
            bd = entry.get("bd_rate")
            label = f"{name} (BD-rate {bd:+.1f} %)" if bd is not None else name
            ax.plot([kbps(p) for p in pts], [p["psnr"] for p in pts], "-s", ms=4, color=colours(i + 1), label=label)
            for p in pts:
                if "target_psnr" in p:
                    ax.annotate(f"{p['target_psnr']:g}", (kbps(p), p["psnr"]), fontsize=7,
                                xytext=(3, -8), textcoords="offset points", color=colours(i + 1))
        ax.set_xscale("log")
        ax.set_xlabel(f"rate (kbit/s, {report['settings'].get('rate_basis', 'bundle')} bytes, log scale)")
        ax.set_ylabel("PSNR (dB, RGB, mean over frames)")
        ax.set_title(f"{clip['video']} ({clip.get('width')}x{clip.get('height')}, {clip.get('frames')} frames)",
                     fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = folder / f"rd_{_slug(clip['video'])}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    # summary: BD-rate per clip, grouped by method
    clips = report["clips"]
    fig, ax = plt.subplots(figsize=(max(8, 0.5 * len(clips) * max(1, len(names)) + 2), 5), dpi=110)
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        values = [c["methods"].get(name, {}).get("bd_rate") for c in clips]
        xs = [k + (i - (len(names) - 1) / 2) * width for k in range(len(clips))]
        ax.bar([x for x, v in zip(xs, values, strict=True) if v is not None], [v for v in values if v is not None],
               width=width, color=colours(i + 1), label=f"{name} (median "
               f"{_fmt(report['summary'][name]['bd_rate_median'], 1, ' %')})")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xticks(range(len(clips)))
    ax.set_xticklabels([_slug(c["video"])[:28] for c in clips], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("BD-rate vs x264 medium (%)")
    ax.set_title(f"Bjøntegaard delta rate per clip ({report['settings']['bd_method']}; below 0: fewer bytes "
                 f"than x264 at equal PSNR)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    path = folder / "rd_summary.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)
    return written


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)


def load_previous(path: Path, config: Config) -> dict[str, dict[str, Any]]:
    """Clip records of an earlier report at ``path`` with the same frames and anchor, by path.

    Raises ``ValueError`` when the report was made with another frame count or anchor (start a
    new file or pass ``--fresh``). Records that failed as a whole are not carried over.
    """
    if not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    settings = old.get("settings", {})
    if settings.get("frames") != config.frames or settings.get("anchor") != config.anchor_settings():
        raise ValueError(f"{path} was made with other frames/anchor settings; use another --json or --fresh")
    return {c["path"]: c for c in old.get("clips", []) if "error" not in c}


# -- command line -------------------------------------------------------------------------------------
def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("videos", nargs="*", type=Path, default=[DEFAULT_VIDEOS], metavar="VIDEO_OR_DIR",
                        help=f"video files or folders (default {DEFAULT_VIDEOS})")
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="first F frames of each video (default 96)")
    parser.add_argument("--anchor-crfs", type=_ints, default=DEFAULT_ANCHOR_CRFS, metavar="LIST",
                        help="x264 CRF sweep (default %(default)s)")
    parser.add_argument("--keyframe-crfs", type=_ints, default=DEFAULT_KEYFRAME_CRFS, metavar="LIST",
                        help="kept-frame CRF sweep of the strideN methods (default %(default)s)")
    parser.add_argument("--targets", type=_floats, default=DEFAULT_TARGETS, metavar="LIST",
                        help="target PSNRs (dB) of the adaptive method (default %(default)s)")
    parser.add_argument("--methods", default=DEFAULT_METHODS,
                        help="comma-separated strideN[+RECON] / adaptive[+RECON] (default %(default)s)")
    parser.add_argument("--bd-method", choices=bdrate.METHODS, default="cubic",
                        help="cubic (VCEG-M33, default) or pchip (JVET CTC)")
    parser.add_argument("--rate", choices=sorted(RATE_KEYS), default="bundle",
                        help="bytes for BD: bundle (x264 packets vs the bundle's files as stored, default) or "
                             "bitstream (no container overhead on either side)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "rd.json", metavar="OUT.json",
                        help="results; clips already in it (same frames/anchor) are kept (default %(default)s)")
    parser.add_argument("--md", type=Path, metavar="OUT.md", help="also write markdown tables")
    parser.add_argument("--plots", type=Path, metavar="DIR", help="write rd_<clip>.png and rd_summary.png here")
    parser.add_argument("--jobs", type=int, default=1, help="clips measured at once (worker processes; default 1)")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing --json (measure everything)")
    parser.add_argument("--tmp-dir", type=Path, help="where the cut sources and bundles go (default: the system's)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (2 for bad arguments)."""
    args = build_parser().parse_args(None if argv is None else list(argv))
    try:
        methods = parse_methods(args.methods, args.keyframe_crfs, args.targets)
        videos = find_videos(args.videos)
        if args.frames < 1 or args.jobs < 1 or not args.anchor_crfs:
            raise ValueError("--frames and --jobs must be ≥ 1 and --anchor-crfs non-empty")
    except (ValueError, FileNotFoundError) as exc:
        print(f"rd: {exc}", file=sys.stderr)
        return 2
    if not videos:
        print("rd: no video files found", file=sys.stderr)
        return 2
    config = Config(frames=args.frames, anchor_crfs=tuple(args.anchor_crfs), methods=tuple(methods),
                    bd_method=args.bd_method, rate=args.rate, tmp_dir=args.tmp_dir, verbose=not args.quiet)
    try:
        previous = {} if args.fresh else load_previous(args.json, config)
    except ValueError as exc:
        print(f"rd: {exc}", file=sys.stderr)
        return 2
    notes: list[str] = []
    if any(m.kind == "adaptive" for m in methods) and not adaptive_available():
        notes.append("adaptive skipped: framers.pipeline.compress has no target_psnr keyword yet (issue 12)")
        print(f"rd: note: {notes[-1]}", flush=True)
    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}

    def complete(done: int) -> None:
        ordered = [results[str(v)] for v in videos if str(v) in results]
        report = build_report(ordered, config, started, notes)
        _write_text(args.json, json.dumps(report, indent=1))
        if args.md:
            _write_text(args.md, to_markdown(report))
        if config.verbose:
            print(f"{time.strftime('%H:%M:%S')} [{done}/{len(videos)} clips] written {args.json}", flush=True)

    todo = []
    for path in videos:
        record = previous.get(str(path))
        if record is None or _has_work(record, methods):
            todo.append(path)
        else:
            add_bd(record, config.bd_method, config.rate)
            results[str(path)] = record
    if results:
        print(f"rd: {len(results)} clips carried over from {args.json}", flush=True)

    def failed(path: Path, exc: BaseException) -> dict[str, Any]:
        return {"video": path.name, "path": str(path), "error": _error_text(exc), "methods": {}}

    done = len(results)
    if args.jobs == 1:
        for path in todo:
            try:
                results[str(path)] = measure_clip(path, config, previous.get(str(path)))
            except Exception as exc:  # an unreadable video is recorded, the others still run
                results[str(path)] = failed(path, exc)
                traceback.print_exc()
            done += 1
            complete(done)
    else:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = {pool.submit(measure_clip, p, config, previous.get(str(p))): p for p in todo}
            for future in as_completed(futures):
                path = futures[future]
                try:
                    results[str(path)] = future.result()
                except Exception as exc:
                    results[str(path)] = failed(path, exc)
                done += 1
                complete(done)
    if not todo:
        complete(done)
    report = json.loads(args.json.read_text())
    if args.plots:
        for plot in write_plots(report, args.plots):
            if config.verbose:
                print(f"plot: {plot}")
    if config.verbose:
        print(to_markdown(report).split("## BD-rate per clip")[0].rstrip())
    return 0


def _has_work(record: dict[str, Any], methods: Sequence[MethodSpec]) -> bool:
    """True when a carried-over clip still has work: a missing/changed method, or an adaptive method
    that was skipped before and can run now."""
    for m in methods:
        old = record.get("methods", {}).get(m.name)
        if old is None or old.get("settings") != m.settings():
            return True
        if "skipped" in old and adaptive_available():
            return True
    return False


if __name__ == "__main__":
    sys.exit(main())
