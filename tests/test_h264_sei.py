"""x264's SEI text is dropped from every H.264 stream a bundle holds and from the benchmark's x264
anchor, and dropping it changes no decoded picture."""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from framers.h264_sei import SeiDropper
from framers.keyframes import KeyframeEncoder, iter_keyframes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import rd_measure


def _pictures(n: int = 6) -> list[np.ndarray]:
    """Smooth moving pictures (RGB uint8 [48, 64, 3]): a gradient and a bright square."""
    y, x = np.mgrid[0:48, 0:64]
    base = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)
    pictures = []
    for i in range(n):
        picture = base.copy()
        picture[10:26, 4 + 4 * i:20 + 4 * i] = 230
        pictures.append(picture)
    return pictures


def _decode_annexb(data: bytes, path: Path) -> list[np.ndarray]:
    path.write_bytes(data)
    with av.open(str(path), format="h264") as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_dropper_removes_the_sei_and_no_picture_changes(tmp_path: Path) -> None:
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 64, 48, "yuv420p"
    encoder.time_base = Fraction(1, 25)
    encoder.options = {"crf": "30", "preset": "medium"}
    packets = []
    for i, rgb in enumerate(_pictures()):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        packets.extend(encoder.encode(frame))
    packets.extend(encoder.encode(None))
    raw = b"".join(bytes(p) for p in packets)
    stamps = [p.pts for p in packets]  # before filtering: the filter takes the packets' contents
    dropper = SeiDropper()
    kept_packets = dropper.filter(packets) + dropper.flush()
    kept = b"".join(bytes(p) for p in kept_packets)
    assert b"x264 - core" in raw and b"x264" not in kept
    assert len(raw) - len(kept) > 300  # the options text
    assert [p.pts for p in kept_packets] == stamps
    before = _decode_annexb(raw, tmp_path / "raw.h264")
    after = _decode_annexb(kept, tmp_path / "kept.h264")
    assert len(before) == len(after) == 6
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_keyframe_stream_holds_no_sei_in_any_run(tmp_path: Path) -> None:
    """Two CRF runs: each starts its own x264 stream, and neither carries x264's text."""
    pictures = _pictures()
    writer = KeyframeEncoder(tmp_path, 64, 48, "x264", 24)
    for i, rgb in enumerate(pictures):
        writer.write(rgb, 24 if i < 3 else 34)
    writer.close()
    data = (tmp_path / "keyframes.h264").read_bytes()
    assert writer.settings["runs"] == [[3, 24], [3, 34]]
    assert b"x264" not in data
    decoded = list(iter_keyframes(tmp_path / "keyframes.h264", 6))
    assert len(decoded) == 6
    assert float(np.mean(np.abs(decoded[0].astype(int) - pictures[0]))) < 20


def test_anchor_is_counted_and_stored_without_sei(tmp_path: Path) -> None:
    """The x264 anchor of bench/rd.py (Matroska, length-prefixed NAL units) drops the SEI too, and
    the packets counted are the packets stored."""
    source = tmp_path / "source.mkv"
    with av.open(str(source), "w") as out:
        stream = out.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv444p"
        for i, rgb in enumerate(_pictures()):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    dest = tmp_path / "anchor.mkv"
    n_bytes, extradata = rd_measure.encode_anchor(source, dest, 30, 25.0)
    assert b"x264 - core" not in dest.read_bytes()
    with av.open(str(dest)) as container:
        video = container.streams.video[0]
        stored = [p.size for p in container.demux(video) if p.size]
    assert sum(stored) == n_bytes and extradata > 0
    with av.open(str(dest)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 6


def test_evaluate_h264_reference_drops_the_sei(tmp_path: Path) -> None:
    """``framers evaluate``'s H.264 reference (ABR, whole source) is stored without x264's SEI
    text too, and still decodes to every frame."""
    from framers.h264_reference import encode_h264

    dest = tmp_path / "reference.mkv"
    size = encode_h264(lambda: iter(_pictures()), dest, 64, 48, 25.0, 200_000)
    data = dest.read_bytes()
    assert size == len(data) and b"x264 - core" not in data and b"x264" not in data
    with av.open(str(dest)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 6


def test_bundle_streams_use_a_fixed_thread_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """x264 runs on ``X264_THREADS`` whatever the process's thread budget (its bytes depend on the
    count). Three runs give streams of about the same size; not always the same bytes (x264 is not
    byte-reproducible run to run, BENCHMARKS.md section 0: this clip gave two streams of three once)."""
    from framers.adaptive import coding
    from framers.video import FrameReader

    monkeypatch.delenv("FRAMERS_CODEC_THREADS", raising=False)
    frames = []
    with FrameReader(Path(__file__).parent / "data" / "mmaction2_test.avi") as reader:
        for frame in reader.frames():
            frames.append(frame.rgb)
            if len(frames) == 20:
                break
    h, w = frames[0].shape[:2]
    streams = set()
    for run in range(3):
        folder = tmp_path / f"run{run}"
        folder.mkdir()
        writer = KeyframeEncoder(folder, w, h, "x264", 24)
        for i, rgb in enumerate(frames):
            writer.write(rgb, 24 if i < 10 else 30)
        writer.close()
        streams.add((folder / "keyframes.h264").read_bytes())
    sizes = [len(stream) for stream in streams]
    assert max(sizes) <= 1.01 * min(sizes), sizes
    assert coding.x264_context(w, h, 24, "medium").thread_count == coding.X264_THREADS == 2
    monkeypatch.setenv("FRAMERS_CODEC_THREADS", "1")
    assert coding.x264_context(w, h, 24, "medium").thread_count == 2
    monkeypatch.setenv("FRAMERS_CODEC_THREADS", "8")
    assert coding.x264_context(w, h, 24, "medium").thread_count == 2
