"""bench/rd.py's measurements: the x264 anchor points and the method points of one clip
(bytes, bitstream bytes, PSNR per frame against the trimmed source)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from framers import pipeline
from framers.adaptive.coding import X264_THREADS
from framers.evaluate import _rebuilt_frames, _video_bytes
from framers.evaluate_report import round_opt
from framers.h264_sei import SeiDropper
from framers.metrics import mse, psnr_from_mse
from framers.rgb import to_rgb
from framers.video import FrameReader
from framers.video_writer import mux_rgb, output_pix_fmt

ANCHOR_PRESET = "medium"
#: how a method point's ``bytes`` are counted (part of a method's settings: a change re-measures)
BYTES_COUNTED = "frs-zip-less-audio"


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
        """What changes this method's numbers (a resumed run reuses a stored method only if equal):
        the points, the reconstructor, the models in the store (a refitted rate model changes the
        decisions) and how bytes are counted (the .frs container)."""
        from framers import model_store

        return {"kind": self.kind, "reconstructor": self.reconstructor,
                "points": [{"label": p.label, **p.kwargs} for p in self.points],
                "models": model_store.latest_versions(), "bytes": BYTES_COUNTED}


def source_frames(source: Path) -> Generator[np.ndarray, None, None]:
    """The RGB frames of ``source`` (a generator: ``close()`` closes the file)."""
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
    for reference in source_frames(source):
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

    RGB frames are converted to the stream's pixel format (yuv420p, or yuv444p for odd sizes) by
    ``framers.rgb.to_yuv`` (``video_writer.mux_rgb``) — the keyframe encoder's colour path.
    x264's SEI text is dropped from the packets before they are muxed and counted, as our side's
    keyframe stream drops it (``framers.h264_sei``): the same stream either side would store; and
    x264 runs on the same fixed thread count as ours (``framers.adaptive.coding.X264_THREADS``:
    its bytes depend on it).
    """
    total = 0
    rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
    with av.open(str(dest), mode="w", format="matroska") as out:
        stream: Any = None
        sei: SeiDropper | None = None
        for index, rgb in enumerate(source_frames(source)):
            if stream is None:
                stream = out.add_stream("libx264", rate=rate)
                stream.height, stream.width = rgb.shape[:2]
                stream.pix_fmt = output_pix_fmt(stream.width, stream.height)
                stream.options = {"crf": str(crf), "preset": preset}
                stream.codec_context.thread_count = X264_THREADS  # as our side's streams
                sei = SeiDropper(stream)
            total += mux_rgb(out, stream, rgb, index, sei)
        if stream is None:
            raise ValueError(f"{source.name}: no frames to encode")
        total += mux_rgb(out, stream, None, sei=sei)
        extradata = len(stream.codec_context.extradata or b"")
    return total, extradata


def bitstream_bytes(bundle: Path) -> int:
    """Bytes of the coded kept frames of a bundle (folder or .frs), like x264's side (packets + codec
    extradata): no container, no audio, no manifest (the manifest plays the container's part —
    timestamps, layout, checksums — and is reported apart as ``manifest_bytes``)."""
    from framers import bundle as fb

    with fb.open_bundle(bundle) as folder:
        streams = [p for p in folder.rglob("*") if p.is_file() and p.name not in (fb.AUDIO, fb.MANIFEST)]
        return _coded_bytes(sorted(streams))


def _coded_bytes(files: list[Path]) -> int:
    total = 0
    for file in files:
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
            yield to_rgb(frame)


def _rate_fields(n_bytes: int, frames: int, fps: float, width: int, height: int) -> dict[str, float]:
    seconds = frames / fps if fps > 0 else frames / 25.0
    return {"bytes": int(n_bytes), "kbps": round(n_bytes * 8 / seconds / 1000.0, 3),
            "bpp": round(n_bytes * 8 / (width * height * frames), 6)}


def measure_anchor(source: Path, workdir: Path, crf: int, info: dict[str, Any]) -> dict[str, Any]:
    """One x264 point: encode, decode, compare. Fields: crf, bytes (packets), kbps, bpp,
    bitstream_bytes (packets + extradata), psnr, psnr_mean_mse, encode_seconds, seconds."""
    started = time.perf_counter()
    dest = workdir / f"anchor-crf{crf}.mkv"
    n_bytes, extradata = encode_anchor(source, dest, crf, info["fps"])
    encode_seconds = time.perf_counter() - started
    quality = quality_of(source, _decoded(dest))
    dest.unlink()
    return {"crf": crf, **_rate_fields(n_bytes, int(quality["frames"]), info["fps"], info["width"], info["height"]),
            "bitstream_bytes": n_bytes + extradata,
            "psnr": round_opt(quality["psnr"]), "psnr_mean_mse": round_opt(quality["psnr_mean_mse"]),
            "encode_seconds": round_opt(encode_seconds, 3), "seconds": round_opt(time.perf_counter() - started, 3)}


def measure_point(source: Path, workdir: Path, spec: MethodSpec, point: Point, info: dict[str, Any]) -> dict[str, Any]:
    """One method point: compress into a single-file bundle (.frs, what a user stores), rebuild
    with ``spec.reconstructor``, compare.

    Fields: label, params, bytes (the .frs file without its audio member), kbps, bpp,
    bitstream_bytes (keyframe packets + extradata), manifest_bytes (the manifest member as stored:
    deflated, with its ZIP headers), kept_frames, psnr, psnr_mean_mse, compress_seconds, seconds
    (compress + rebuild + compare); adaptive points also target_psnr, predicted_psnr (the plan's),
    estimated_psnr (the plan's again with the kept frames' coding error x264 measured; None for
    a video whose CRF was measured by trial encodes), recoded (the kept frames were coded twice:
    the first coding's estimate fell short of the target or well over it; then recoded_reason,
    "short" or "over", first_estimate, first_predicted and first_segments (the first plan), and
    kept_first: the second coding came out worse and the
    first was kept; bracketed: a surplus corrected into a miss was coded a third time between the two),
    surplus_left (more than 1 dB over but not coded again: a second coding would not fit the time bound),
    interp_error_ratio (the last coding's rebuilt sample: measured / predicted
    interpolation error), kept_error_ratio (its decoded kept frames' RGB error / x264's own report),
    achieved_minus_target, segments ([start, stop, stride, CRF] of the
    plan coded) and probe_crf / slope_probe_crf (the analysis's probes).
    """
    from framers import bundle as fb

    started = time.perf_counter()
    bundle = workdir / f"bundle-{spec.name}-{point.label}{fb.SINGLE_FILE_SUFFIX}".replace("+", "_")
    try:
        result = pipeline.compress(source, bundle, **point.kwargs)
        compress_seconds = time.perf_counter() - started
        n_bytes = _video_bytes(bundle)
        n_manifest = fb.stored_sizes(bundle)[fb.MANIFEST]
        with fb.open_bundle(bundle) as folder:  # unpacked once for the stream, manifest and rebuild
            n_bitstream = bitstream_bytes(folder)
            selection = fb.read_manifest(folder, verify=False).selection
            with _rebuilt_frames(folder, spec.reconstructor) as frames:
                quality = quality_of(source, frames)
    finally:
        if bundle.is_dir():
            shutil.rmtree(bundle, ignore_errors=True)
        elif bundle.exists():
            bundle.unlink()
    record: dict[str, Any] = {
        "label": point.label, "params": dict(point.kwargs),
        **_rate_fields(n_bytes, int(quality["frames"]), info["fps"], info["width"], info["height"]),
        "bitstream_bytes": n_bitstream,
        "manifest_bytes": n_manifest,
        "kept_frames": result.kept_frames,
        "psnr": round_opt(quality["psnr"]), "psnr_mean_mse": round_opt(quality["psnr_mean_mse"]),
        "compress_seconds": round_opt(compress_seconds, 3), "seconds": round_opt(time.perf_counter() - started, 3),
    }
    if "target_psnr" in point.kwargs:
        record["target_psnr"] = point.kwargs["target_psnr"]
        record["predicted_psnr"] = selection.get("predicted_psnr")
        record["estimated_psnr"] = selection.get("estimated_psnr")
        recoded = selection.get("recoded")
        record["recoded"] = recoded is not None
        if recoded is not None:  # why (a short or a surplus estimate) and whether the first coding stayed
            record["recoded_reason"] = recoded.get("reason", "short")
            record["first_estimate"] = recoded.get("first_estimate")
            record["first_predicted"] = recoded.get("first_predicted")
            record["first_segments"] = recoded.get("first_segments")
            record["kept_first"] = bool(recoded.get("kept_first"))
            record["bracketed"] = "bracketed" in recoded
            record["brackets"] = int(recoded.get("brackets", 1 if "bracketed" in recoded else 0))
        # more than 1 dB over, not coded again: the second coding would pass issue 12's time bound
        record["surplus_left"] = selection.get("surplus_left") is not None
        sample = selection.get("rebuild_sample")
        if sample:  # the rebuilt sample's corrections: interpolation error, x264's error in RGB
            record["interp_error_ratio"] = sample.get("interp_error_ratio")
            record["kept_error_ratio"] = sample.get("coding_error_ratio")
        record["achieved_minus_target"] = round_opt(quality["psnr"] - point.kwargs["target_psnr"])
        report = result.adaptive or {}
        record["segments"] = [[s["start"], s["stop"], s["stride"], s["crf"]] for s in report.get("segments", [])]
        record["probe_crf"] = report.get("probe_crf")
        record["slope_probe_crf"] = report.get("slope_probe_crf")
    return record
