"""GPU check for a machine with an NVIDIA GPU (issue 17): does the worker really use the GPU,
are the models' answers the same there, and how fast is the codec with it. Run by bench/gpu.sh.

1. Environment: onnxruntime build and providers, `nvidia-smi -L`.
2. Parity of every ONNX model of the model store (``$FRAMERS_MODEL_STORE`` or model_store/):
   the same seeded inputs through a CPU session and a CUDA session (fp32, TF32 off), max abs
   diff per output, and ms per batch on each. Fails above ``--tolerance``.
3. Codec throughput at each ``--resolutions`` (default 480p, 1080p), reusing bench/throughput.py
   (same test videos and timing): decode, decode+encode (the floor of any reconstruction),
   compress with the service default (adaptive, target 35 dB) and fixed stride 4,
   reconstruct framemae and linear; fps and ratios to decode / decode+encode, and the share of
   the wall time spent inside onnxruntime (``model_share``): the part a GPU can speed up.
4. After the codec ran: every live onnxruntime session must have CUDAExecutionProvider first
   (``session.get_providers()``); onnxruntime silently falls back to the CPU when the CUDA
   libraries do not load, which this catches.
5. ``h264_nvenc``: in PyAV's FFmpeg, and whether it really encodes a few frames; the encoder
   the codec picks (``framers.nvenc``, FRAMERS_VIDEO_ENCODER=auto) and encode fps of the test
   videos' frames with libx264 and with h264_nvenc (when it works), output bytes beside them.
6. framemae's composition step (bench/compose_paths.py): ms per frame of the numpy/OpenCV path
   against the ONNX graph ``framemae_compose`` on the device provider, and their max difference.

Writes ``gpu_check.json`` into ``--out`` and exits non-zero when CUDA is not used or parity fails.
``--allow-cpu`` is the dry run for machines without a GPU: the CPU provider stands in for CUDA
(results marked ``"dry_run": true``, nothing about a GPU can be read from them).

    bench/gpu.sh "$OUT"                                # on the GPU machine
    .venv/bin/python bench/gpu_check.py --allow-cpu --resolutions 240p --frames 16 --out /tmp/g
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import onnxruntime as ort
from throughput import CACHE_DIR, DEFAULT_SOURCE, cached_video, decode_encode, decode_only, machine_info, timed

from framers import defaults
from framers.pipeline import compress, reconstruct

ROOT = Path(__file__).resolve().parents[1]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
NUMPY_DTYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int64)": np.int64,
                "tensor(int32)": np.int32, "tensor(float16)": np.float16}


SPATIAL = 24


class CheckFailed(RuntimeError):
    """A hard check failed (CUDA not used, parity out of tolerance)."""


# ---------------------------------------------------------------- environment


def environment() -> dict[str, Any]:
    """onnxruntime build, its providers, and the GPUs nvidia-smi sees."""
    smi = shutil.which("nvidia-smi")
    gpus = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout.strip() if smi else None
    return {"onnxruntime": ort.__version__, "ort_device": ort.get_device(),
            "available_providers": ort.get_available_providers(), "nvidia_smi": gpus, "machine": machine_info()}


def device_providers(allow_cpu: bool) -> list[Any]:
    """Providers of the device session: CUDA in strict fp32 (TF32 off), CPU only in a dry run."""
    if CUDA in ort.get_available_providers():
        return [(CUDA, {"use_tf32": "0"}), CPU]
    if allow_cpu:
        return [CPU]
    raise CheckFailed(f"{CUDA} is not in this onnxruntime build ({ort.get_available_providers()}); "
                      "install the `gpu` extra (onnxruntime-gpu), not the `cpu` one")


# ---------------------------------------------------------------- model parity


def model_files(root: Path) -> list[tuple[str, Path]]:
    """(name/version, onnx path) of every model in the store whose config names a file."""
    found = []
    for config in sorted(root.glob("*/*/config.json")):
        file = json.loads(config.read_text()).get("file")
        if file and (config.parent / file).is_file():
            found.append((f"{config.parent.parent.name}/{config.parent.name}", config.parent / file))
    return found


def make_inputs(session: ort.InferenceSession, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs shaped by the model's own input metadata (symbolic dims = ``batch``, named
    heights and widths = SPATIAL); integer inputs are below min(8, batch), so they index batches."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for arg in session.get_inputs():
        # named image sizes (framemae_compose's "height", "flow_width", ...) get SPATIAL pixels
        shape = [d if isinstance(d, int) and d > 0 else SPATIAL if isinstance(d, str) and ("height" in d or "width"
                 in d) else batch for d in arg.shape]
        dtype = NUMPY_DTYPES[arg.type]
        if dtype == np.uint8:
            feeds[arg.name] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        elif np.issubdtype(dtype, np.integer):
            feeds[arg.name] = rng.integers(0, min(8, batch), size=shape).astype(dtype)  # valid indices too
        else:  # the models take pixels/255 - 0.5 and flags in [0, 1]
            feeds[arg.name] = rng.uniform(-0.5, 1.0, size=shape).astype(dtype)
    return feeds


def ms_per_run(session: ort.InferenceSession, feeds: dict[str, np.ndarray], repeats: int) -> float:
    session.run(None, feeds)  # warm-up: CUDA kernels are chosen on the first run
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def parity(root: Path, allow_cpu: bool, tolerance: float, batch: int, repeats: int) -> list[dict[str, Any]]:
    """CPU vs device outputs of every model on the same inputs."""
    results = []
    for name, path in model_files(root):
        cpu = ort.InferenceSession(str(path), providers=[CPU])
        dev = ort.InferenceSession(str(path), providers=device_providers(allow_cpu))
        if dev.get_providers()[0] != CUDA and not allow_cpu:
            raise CheckFailed(f"{name}: the CUDA session runs on {dev.get_providers()} (CUDA libraries missing?)")
        feeds = make_inputs(cpu, batch)
        ref, out = cpu.run(None, feeds), dev.run(None, feeds)
        outputs = {}
        for arg, a, b in zip(cpu.get_outputs(), ref, out, strict=True):
            diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
            outputs[arg.name] = {"shape": list(a.shape), "max_abs_diff": diff,
                                 "max_abs_ref": float(np.max(np.abs(a))) if a.size else 0.0}
        worst = max(o["max_abs_diff"] for o in outputs.values())
        # uint8 outputs (framemae_compose's frames) are rounded: a value within float error of a
        # half gray level may round either way on another device
        tol = max(tolerance, 1.0) if any(a.dtype == np.uint8 for a in ref) else tolerance
        results.append({
            "model": name, "device_providers": dev.get_providers(), "batch": batch, "outputs": outputs,
            "max_abs_diff": worst, "tolerance": tol, "ok": worst <= tol,
            "ms_per_batch": {"cpu": ms_per_run(cpu, feeds, repeats), "device": ms_per_run(dev, feeds, repeats)},
        })
    if not results:
        raise CheckFailed(f"no ONNX model found under {root}")
    bad = [r["model"] for r in results if not r["ok"]]
    if bad:
        raise CheckFailed(f"CPU/device parity above tolerance: {bad} ({json.dumps(results)})")
    return results


# ---------------------------------------------------------------- codec throughput


def codec_methods(video: Path, work: Path) -> dict[str, Callable[[], int]]:
    """The timed methods of one resolution (bundles first, so the reconstructions have input)."""
    default_bundle, stride_bundle = work / "default", work / "stride"

    def run_compress(bundle: Path, **kwargs: Any) -> int:
        shutil.rmtree(bundle, ignore_errors=True)
        return compress(video, bundle, **kwargs).frames

    return {
        "decode": lambda: decode_only(video),
        "decode+encode": lambda: decode_encode(video, work / "copy.mp4"),
        # The service default (framers.defaults, core/settings.py): adaptive at TARGET_PSNR (35 dB).
        "compress/default": lambda: run_compress(default_bundle, target_psnr=defaults.TARGET_PSNR),
        "compress/stride4": lambda: run_compress(stride_bundle, selector="stride", stride=4),
        "reconstruct/framemae": lambda: reconstruct(stride_bundle, work / "fm.mp4", reconstructor="framemae").frames,
        "reconstruct/linear": lambda: reconstruct(stride_bundle, work / "lin.mp4", reconstructor="linear").frames,
    }


class ModelClock:
    """Seconds spent in ``InferenceSession.run`` (all sessions of this process) while installed."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._original = ort.InferenceSession.run

    def __enter__(self) -> ModelClock:
        original, clock = self._original, self

        def run(session: ort.InferenceSession, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(session, *args, **kwargs)
            finally:
                clock.seconds += time.perf_counter() - t0

        ort.InferenceSession.run = run  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        ort.InferenceSession.run = self._original  # type: ignore[method-assign]


def throughput(resolutions: list[str], frames: int, runs: int, source: Path, cache_dir: Path) -> dict[str, Any]:
    """Median fps per method and resolution, methods interleaved as in bench/throughput.py."""
    out: dict[str, Any] = {}
    for res in resolutions:
        video = cached_video(source, res, frames, cache_dir)
        with tempfile.TemporaryDirectory(prefix="framers-gpu-") as tmp:
            methods = codec_methods(video, Path(tmp))
            samples: dict[str, list[Any]] = {m: [] for m in methods}
            model_s: dict[str, list[float]] = {m: [] for m in methods}
            for _ in range(runs):
                for name, fn in methods.items():
                    with ModelClock() as clock:
                        samples[name].append(timed(fn))
                    model_s[name].append(clock.seconds)
        rows = {}
        for name, runs_of in samples.items():
            wall = statistics.median(s.wall_s for s in runs_of)
            rows[name] = {"fps": runs_of[0].frames / wall, "cpu_ms_per_frame": 1000 * statistics.median(
                s.cpu_s for s in runs_of) / runs_of[0].frames, "frames": runs_of[0].frames,
                "model_share": statistics.median(m / s.wall_s for m, s in zip(model_s[name], runs_of, strict=True))}
        for row in rows.values():
            row["x_decode"] = row["fps"] / rows["decode"]["fps"]
            row["x_decode_encode"] = row["fps"] / rows["decode+encode"]["fps"]
        out[res] = {"video": video.name, "methods": rows}
    return out


def live_sessions() -> list[dict[str, Any]]:
    """Providers of every onnxruntime session alive in this process (the codec's cached ones)."""
    return [{"providers": s.get_providers()} for s in gc.get_objects() if isinstance(s, ort.InferenceSession)]


def check_codec_sessions(sessions: list[dict[str, Any]], allow_cpu: bool) -> None:
    if not sessions:
        raise CheckFailed("the codec created no onnxruntime session: nothing ran a model")
    on_cpu = [s for s in sessions if s["providers"][0] != CUDA]
    if on_cpu and not allow_cpu:
        raise CheckFailed(f"{len(on_cpu)} of the codec's {len(sessions)} sessions do not run on CUDA: {on_cpu}")


# ---------------------------------------------------------------- NVENC


def nvenc(frames: int = 8) -> dict[str, Any]:
    """Whether PyAV's FFmpeg has h264_nvenc and can open it and encode a few frames."""
    result: dict[str, Any] = {"in_build": "h264_nvenc" in av.codecs_available}
    if not result["in_build"]:
        return result | {"works": False, "error": "h264_nvenc is not in this FFmpeg build"}
    try:
        with tempfile.TemporaryDirectory() as tmp, av.open(str(Path(tmp) / "n.mp4"), "w") as out:
            stream = out.add_stream("h264_nvenc", rate=Fraction(30))
            stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
            for i in range(frames):
                frame = av.VideoFrame.from_ndarray(np.full((360, 640, 3), i * 20, np.uint8), format="rgb24")
                frame.pts = i
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        return result | {"works": True}
    except Exception as exc:  # no GPU or driver: FFmpeg's error text says which
        return result | {"works": False, "error": f"{type(exc).__name__}: {exc}"}


def encoders(resolutions: list[str], frames: int, source: Path, cache_dir: Path) -> dict[str, Any]:
    """The codec's H.264 encoder choice, and encode fps (VideoWriter, frames decoded beforehand)
    with libx264 and, where it works, h264_nvenc; output bytes beside them (quality not compared)."""
    from framers import nvenc as choice
    from framers.video import FrameReader
    from framers.video_writer import VideoWriter

    choice.reset()
    works, why = choice.nvenc_status()
    out: dict[str, Any] = {"auto_picks": choice.h264_encoder(), "nvenc_works": works, "why": why,
                           "nvenc_options": choice.nvenc_options(defaults.OUTPUT_CRF), "fps": {}}
    names = ["libx264", "h264_nvenc"] if works else ["libx264"]
    previous = os.environ.get(choice.ENCODER_ENV)
    try:
        for res in resolutions:
            with FrameReader(cached_video(source, res, frames, cache_dir)) as reader:
                decoded = [(f.rgb, f.pts) for f in reader.frames()]
                time_base, fps = reader.time_base, reader.fps
            height, width = decoded[0][0].shape[:2]
            rows = {}
            for name in names:
                os.environ[choice.ENCODER_ENV] = name
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "e.mp4"
                    t0 = time.perf_counter()
                    with VideoWriter(path, width, height, time_base, fps) as writer:
                        for rgb, pts in decoded:
                            writer.write(rgb, pts)
                    wall = time.perf_counter() - t0
                    rows[name] = {"fps": len(decoded) / wall, "bytes": path.stat().st_size}
            out["fps"][res] = rows
    finally:
        if previous is None:
            os.environ.pop(choice.ENCODER_ENV, None)
        else:
            os.environ[choice.ENCODER_ENV] = previous
        choice.reset()
    return out


def compose(resolutions: list[str], runs: int) -> dict[str, Any]:
    """bench/compose_paths.py on the device provider: numpy/OpenCV vs the ONNX composition graph."""
    import compose_paths

    rows = {res: compose_paths.measure(res, runs) for res in resolutions if res in compose_paths.SIZES}
    for row in rows.values():  # recorded, not enforced: the CPU provider's bound is 1 (tests/test_compose_onnx.py)
        row["parity_ok"] = row["max_abs_diff"] <= 2
    return rows


# ---------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "bench/results/gpu"))
    parser.add_argument("--allow-cpu", action="store_true", help="dry run without a GPU (CPU stands in for CUDA)")
    parser.add_argument("--resolutions", default="480p,1080p")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="resized test videos (built once)")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="max abs diff CPU vs CUDA (fp32, TF32 off)")
    parser.add_argument("--batch", type=int, default=8, help="batch of the parity inputs")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per model and provider")
    parser.add_argument("--model-store", type=Path,
                        default=Path(os.environ.get("FRAMERS_MODEL_STORE") or ROOT / "model_store"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every check, write gpu_check.json, return the exit status (0 = all hard checks pass)."""
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"command": " ".join(sys.argv), "dry_run": args.allow_cpu, "ok": False}
    started = time.perf_counter()
    try:
        report["environment"] = environment()
        device_providers(args.allow_cpu)  # fails at once when the build has no CUDA
        report["parity"] = parity(args.model_store, args.allow_cpu, args.tolerance, args.batch, args.repeats)
        report["throughput"] = throughput(args.resolutions.split(","), args.frames, args.runs, args.source,
                                          args.cache_dir)
        report["compose"] = compose(args.resolutions.split(","), args.runs)
        report["codec_sessions"] = live_sessions()
        check_codec_sessions(report["codec_sessions"], args.allow_cpu)
        report["encoders"] = encoders(args.resolutions.split(","), args.frames, args.source, args.cache_dir)
        report["ok"] = True
    except CheckFailed as exc:
        report["error"] = str(exc)
    finally:
        report["nvenc"] = nvenc()
        report["seconds"] = time.perf_counter() - started
        path = args.out / "gpu_check.json"
        path.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k not in ("environment", "codec_sessions")}, indent=1))
    if not report["ok"]:
        print(f"GPU CHECK FAILED: {report['error']}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
