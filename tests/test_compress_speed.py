"""bench/compress_speed.py: the input generator's frame order and a one-repeat smoke run."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import av
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def speed() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_compress_speed", ROOT / "bench" / "compress_speed.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_compress_speed"] = module
    spec.loader.exec_module(module)
    return module


def test_ping_pong_has_no_jump(speed: ModuleType) -> None:
    frames = list(range(5))
    assert list(speed._ping_pong(frames, 12)) == [0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3]
    assert list(speed._ping_pong([7], 3)) == [7, 7, 7]
    with pytest.raises(ValueError):
        list(speed._ping_pong([], 1))


def test_smoke_run(speed: ModuleType, make_clip: Callable[..., Path], tmp_path: Path) -> None:
    source = make_clip(width=64, height=48, frames=6)
    out = tmp_path / "speed.json"
    argv = ["--source", str(source), "--resolutions", "480p", "--frames", "8", "--repeats", "1",
            "--json", str(out), "--md", str(tmp_path / "speed.md"), "--cache-dir", str(tmp_path / "cache"), "--quiet",
            "--analysis", "1.1.0"]
    assert speed.main(argv) == 0
    report = json.loads(out.read_text())
    result = report["results"]["480p"]
    # the generated input: 8 frames (6 forward, then back) at 854x480
    with av.open(result["video"]) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (854, 480)
        assert sum(1 for _ in container.decode(stream)) == 8
    rows = result["methods"]
    for name in ("decode", "x264_medium", "fixed"):
        assert rows[name]["frames"] == 8 and rows[name]["fps"] > 0, rows
    assert result["ratios"]["fixed_over_x264_medium"] == pytest.approx(
        rows["fixed"]["wall_s"] / rows["x264_medium"]["wall_s"], rel=1e-2)
    assert ("adaptive" in rows) == speed.adaptive_available()
    if "adaptive" in rows:  # what its time includes
        assert rows["adaptive"]["codings"] and set(rows["adaptive"]["codings"]) <= {
            "once", "twice (short)", "twice (over)", "twice (short, the first kept)", "twice (over, the first kept)"}
        assert all(n >= 0 for n in rows["adaptive"]["sampled_frames"])
    assert rows["analysis 1.1.0"]["frames"] == 8 and "analysis 1.1.0_over_x264_medium" in result["ratios"]
    assert "| 480p | x264_medium |" in (tmp_path / "speed.md").read_text()
