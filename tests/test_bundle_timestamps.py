"""Bundle timestamps: the smallest form that reproduces them, and a real Matroska round trip."""

from __future__ import annotations

import json
import zipfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from framers import bundle as fb
from framers.errors import BundleError
from framers.pipeline import compress, reconstruct


def test_constant_rate_rounded_rate_and_variable_rate_forms() -> None:
    ms = Fraction(1, 1000)
    assert fb.encode_timestamps([0, 40, 80], fb.frame_step_of(25.0, ms)) == {"start": 0, "step": 40, "count": 3}
    # 30 fps in 1/1000 s: 0, 33, 67, 100, ... (av_rescale_q rounds to the nearest)
    thirty = [round(i * 1000 / 30) for i in range(300)]
    entry = fb.encode_timestamps(thirty, fb.frame_step_of(30.0, ms))
    assert entry == {"start": 0, "step": [100, 3], "count": 300}
    assert fb.decode_timestamps(entry) == thirty
    # 29.97 fps (30000/1001) in mp4's 1/15360 s, from a non-zero start; halves round up
    ntsc = [1234 + (2 * i * 15360 * 1001 + 30000) // 60000 for i in range(500)]
    entry = fb.encode_timestamps(ntsc, fb.frame_step_of(29.97, Fraction(1, 15360)))
    assert isinstance(entry["step"], list) and fb.decode_timestamps(entry) == ntsc
    # a variable frame rate keeps the list
    vfr = [0, 33, 67, 200, 233]
    assert fb.encode_timestamps(vfr, fb.frame_step_of(30.0, ms)) == {"pts": vfr}
    with pytest.raises(BundleError):
        fb.decode_timestamps({"start": 0, "step": [0, 3], "count": 2})


def write_mkv(path: Path, frames: int, fps: int) -> Path:
    """A small moving picture in Matroska (time base 1/1000 s)."""
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("libx264", rate=fps, options={"crf": "18"})
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(frames):
            x = np.arange(96)[None, :, None]
            rgb = np.broadcast_to(((x * 4 + i * 9) % 256).astype(np.uint8), (64, 96, 3))
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def test_matroska_30fps_bundle_stores_a_rounded_rate_and_plays_back_the_same_timing(tmp_path: Path) -> None:
    source = write_mkv(tmp_path / "src.mkv", 40, 30)
    bundle = tmp_path / "b.frs"
    compress(source, bundle, target_psnr=34.0)
    with zipfile.ZipFile(bundle) as archive:
        manifest = json.loads(archive.read(fb.MANIFEST))
    assert manifest["version"] == 3 and manifest["timing"]["timestamps"]["step"] == [100, 3]
    out = tmp_path / "out.mp4"
    reconstruct(bundle, out, reconstructor="linear")
    with av.open(str(source)) as a, av.open(str(out)) as b:
        src = [float(f.pts * f.time_base) for f in a.decode(video=0)]
        got = [float(f.pts * f.time_base) for f in b.decode(video=0)]
    assert len(got) == len(src) == 40
    assert max(abs(x - y) for x, y in zip(src, got, strict=True)) < 0.002


def test_manifest_leaves_out_empty_values_and_still_reads_manifests_that_have_them(tmp_path: Path) -> None:
    """Null, empty and (in ``source``) false entries are left out of the manifest; reading it back
    gives the same bundle, and a manifest written with them (before) reads the same."""
    source = write_mkv(tmp_path / "src.mkv", 20, 25)
    compress(source, tmp_path / "b", target_psnr=34.0)
    text = (tmp_path / "b" / fb.MANIFEST).read_text()
    assert "null" not in text and "[]" not in text and "{}" not in text
    doc = json.loads(text)
    assert "has_audio" not in doc["source"] and "audio" not in doc and "scenes" not in doc
    manifest = fb.read_manifest(tmp_path / "b")
    assert manifest.audio is None and manifest.cuts == [] and manifest.source.get("alpha") is None
    # the same manifest as written before: every empty value spelled out
    doc["audio"], doc["scenes"] = None, {"cuts": []}
    doc["source"].update(has_audio=False, alpha=None, warnings=[], other_streams=[])
    doc["selection"]["target_kbps"] = None
    old = fb.Manifest.from_json(doc)
    assert old.to_json() == manifest.to_json() and old.kept_indices() == manifest.kept_indices()
    assert fb.without_empty({"a": {"b": None, "c": [0], "d": False}}) == {"a": {"c": [0], "d": False}}
    out = tmp_path / "out.mp4"
    reconstruct(tmp_path / "b", out, reconstructor="linear")
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 20
