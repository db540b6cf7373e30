"""Bad and unusual inputs through the HTTP API: each is accepted and comes back right (the job is
done and the reconstructed video has the right frame count and size), or is refused with a 4xx /
fails its job with a clear reason. The corpus is generated here; nothing large is committed.

RELIABILITY.md lists the same cases with their documented outcome.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tests._reliability import (
    multipart_head,
    open_raw_upload,
    read_response,
    stored_ids,
    upload,
    wait_job,
    wait_video,
)
from tests.videogen import write_video

# --------------------------------------------------------------------------------------------
# the corpus


def _cut_in_half(source: Path, dest: Path) -> Path:
    data = source.read_bytes()
    dest.write_bytes(data[: len(data) // 2])
    return dest


def _faststart(source: Path, dest: Path) -> Path:
    """Remux with the index (moov) in front, as streaming-friendly encoders write it."""
    with av.open(str(source)) as inp, av.open(str(dest), "w", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return dest


def make_empty(d: Path) -> Path:
    (p := d / "empty.mp4").write_bytes(b"")
    return p


def make_text(d: Path) -> Path:
    (p := d / "notes.mp4").write_text("this is a shopping list, not a video\n" * 40)
    return p


def make_mp4_cut_in_half(d: Path) -> Path:
    # A plain mp4 has its index (moov) at the end: the first half has no index at all.
    return _cut_in_half(write_video(d / "whole.mp4", frames=40), d / "half.mp4")


def make_faststart_mp4_cut_in_half(d: Path) -> Path:
    full = _faststart(write_video(d / "whole.mp4", frames=40), d / "faststart.mp4")
    return _cut_in_half(full, d / "half_faststart.mp4")


def make_mkv_cut_in_half(d: Path) -> Path:
    return _cut_in_half(write_video(d / "whole.mkv", frames=40, container_format="matroska"), d / "half.mkv")


def make_corrupted_middle(d: Path) -> Path:
    data = bytearray(write_video(d / "whole.mp4", frames=40).read_bytes())
    rng = random.Random(7)
    middle = len(data) // 2
    for i in range(middle, middle + 2000):
        data[i] = rng.randrange(256)
    (p := d / "corrupted.mp4").write_bytes(bytes(data))
    return p


def make_audio_only(d: Path) -> Path:
    p = d / "voice.m4a"
    with av.open(str(p), "w") as out:
        stream = out.add_stream("aac", rate=44100)
        stream.layout = "mono"
        for start in range(0, 44100, 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return p


def make_y4m_header(width: int, height: int) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        p = d / f"declared_{width}x{height}.y4m"
        p.write_bytes(f"YUV4MPEG2 W{width} H{height} F25:1 Ip A1:1 C420jpeg\nFRAME\n".encode() + b"\x80" * 1000)
        return p

    return make


def make_frame_size_change(d: Path) -> Path:
    """Two MPEG-TS streams back to back (TS concatenates): 96x64, then 64x48 mid-stream."""
    a = write_video(d / "a.ts", frames=20, width=96, height=64, container_format="mpegts")
    b = write_video(d / "b.ts", frames=20, width=64, height=48, container_format="mpegts")
    (p := d / "size_change.ts").write_bytes(a.read_bytes() + b.read_bytes())
    return p


def make_still_image(d: Path) -> Path:
    import cv2

    from tests.videogen import moving_frame

    cv2.imwrite(str(p := d / "photo.png"), moving_frame(0, 40, 30)[..., ::-1])
    return p


def make_oversized(d: Path) -> Path:
    (p := d / "big.mp4").write_bytes(b"\0" * (4 * 1024 * 1024 + 1))  # conftest's max_upload_bytes + 1
    return p


VFR_PTS = [i * 40 + (i % 3) * 13 for i in range(30)]  # ms: 53, 53, 14, ... between frames


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Path], Path]
    outcome: str  # "done" | "failed" | an HTTP status ("415")
    reason: str = ""  # substring of the error / detail
    size: tuple[int, int] | None = None  # (width, height) of the reconstruction
    frames: int | None = None  # exact frame count; None: 1..max_frames (damaged input)
    max_frames: int = 40
    field: str = "file"


CASES = [
    Case("zero-bytes", make_empty, "422", "the uploaded file is empty"),
    Case("text-file-named-mp4", make_text, "415", "notes.mp4 is not a video this service can read"),
    Case("mp4-cut-at-half", make_mp4_cut_in_half, "415", "half.mp4 is not a video this service can read"),
    Case("faststart-mp4-cut-at-half", make_faststart_mp4_cut_in_half, "done", size=(96, 64), max_frames=39),
    Case("mkv-cut-at-half", make_mkv_cut_in_half, "done", size=(96, 64), max_frames=39),
    Case("random-bytes-in-the-middle", make_corrupted_middle, "done", size=(96, 64)),
    Case("audio-only", make_audio_only, "415", "no video stream"),
    Case("single-frame", lambda d: write_video(d / "one.mp4", frames=1), "done", size=(96, 64), frames=1),
    Case(
        "1x1",
        lambda d: write_video(d / "1x1.mp4", frames=20, width=1, height=1, pix_fmt="yuv444p"),
        "done",
        size=(1, 1),
        frames=20,
    ),
    Case("2x2", lambda d: write_video(d / "2x2.mp4", frames=20, width=2, height=2), "done", size=(2, 2), frames=20),
    Case(
        "1921x1081",
        lambda d: write_video(d / "odd.mp4", frames=3, width=1921, height=1081, pix_fmt="yuv444p"),
        "done",
        size=(1921, 1081),
        frames=3,
    ),
    Case("y4m-header-30000x30000", make_y4m_header(30000, 30000), "415", "is not a video this service can read"),
    Case(
        "y4m-header-8000x8000",
        make_y4m_header(8000, 8000),
        "422",
        "resolution 8000x8000 exceeds the limit of 3840x2160",
    ),
    Case(
        "10-hour-duration-header",
        lambda d: write_video(d / "long.mp4", frames=3, pts=[0, 40, 36_000_000]),
        "422",
        "duration 36000.0 s exceeds the limit",
    ),
    Case(
        "variable-frame-rate",
        lambda d: write_video(d / "vfr.mp4", frames=30, pts=VFR_PTS),
        "done",
        size=(96, 64),
        frames=30,
    ),
    Case(
        "rotated-phone-video",
        lambda d: write_video(d / "phone.mp4", frames=20, width=96, height=64, rotation=90),
        "done",
        size=(64, 96),
        frames=20,
    ),
    Case(
        "10-bit-yuv420p10le",
        lambda d: write_video(d / "10bit.mp4", frames=20, pix_fmt="yuv420p10le"),
        "done",
        size=(96, 64),
        frames=20,
    ),
    Case(
        "4:4:4-yuv444p",
        lambda d: write_video(d / "444.mp4", frames=20, pix_fmt="yuv444p"),
        "done",
        size=(96, 64),
        frames=20,
    ),
    Case(
        "grayscale-ffv1",
        lambda d: write_video(d / "gray.mkv", frames=20, codec="ffv1", pix_fmt="gray"),
        "done",
        size=(96, 64),
        frames=20,
    ),
    Case(
        "raw-y4m",
        lambda d: write_video(
            d / "raw.y4m", frames=5, width=32, height=32, codec="rawvideo", container_format="yuv4mpegpipe"
        ),
        "done",
        size=(32, 32),
        frames=5,
    ),
    Case("still-image-png", make_still_image, "done", size=(40, 30), frames=1),
    Case("frame-size-changes-mid-stream", make_frame_size_change, "failed", "frame size changes mid-stream"),
    Case("over-the-size-limit", make_oversized, "413", "exceeds the limit of 4194304 bytes"),
    Case(
        "wrong-form-field",
        lambda d: write_video(d / "clip.mp4", frames=20),
        "422",
        "must be sent as a file in the multipart field 'file'; got field(s): video",
        field="video",
    ),
]


# --------------------------------------------------------------------------------------------
# the service under test: one worker; everything is uploaded at once, then checked case by case


@pytest.fixture(scope="module")
def stack(service_stacks: Callable[..., Any]) -> Any:
    return service_stacks(workers=1, upload_idle_timeout_s=1.0)


@pytest.fixture(scope="module")
def submitted(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every case uploaded (the worker starts on the accepted ones while the tests check)."""
    answers: dict[str, Any] = {}
    with stack.client() as client:
        for case in CASES:
            folder = tmp_path_factory.mktemp(case.id.replace(":", ""))
            path = case.make(folder)
            answers[case.id] = (path, upload(client, path, field=case.field))
    return answers


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_input(case: Case, stack: Any, submitted: dict[str, Any], wait_for: Callable[..., Any], tmp_path: Path) -> None:
    from framers.video import probe

    _, response = submitted[case.id]
    if case.outcome.isdigit():
        assert response.status_code == int(case.outcome), response.text
        detail = response.json()["detail"]
        assert case.reason in detail, detail
        assert str(stack.settings.data_dir) not in detail and ".part" not in detail  # no server paths
        if "is not a video" in case.reason:  # the file's name once, not again in the reason after it
            name = case.reason.split(" is not a video")[0]
            assert f"read: {name}:" not in detail, detail
        return
    assert response.status_code == 202, response.text
    video_id = response.json()["id"]
    with stack.client() as client:
        state = wait_job(client, video_id, wait_for, timeout=90)
        if case.outcome == "failed":
            assert state["status"] == "failed", state
            assert case.reason in state["error"], state["error"]
            assert state["attempts"] == 1  # bad input is not retried
            return
        assert state["status"] == "done", f"{state}\n{stack.worker_logs()}"
        response = wait_video(client, video_id, wait_for, timeout=90)
    out = tmp_path / "out.mp4"
    out.write_bytes(response.content)
    info = probe(out)
    assert (info.width, info.height) == case.size
    if case.frames is not None:
        assert state["frames"] == case.frames
    else:  # damaged input: what could be decoded, never more than there was
        assert 1 <= state["frames"] <= case.max_frames, state
    from framers.video import count_packets

    assert count_packets(out) == state["frames"]
    if case.id == "variable-frame-rate":
        with av.open(str(out)) as container:
            stream = container.streams.video[0]
            seconds = sorted(float(p.pts * p.time_base) for p in container.demux(stream) if p.pts is not None)
        assert [round(s * 1000) for s in seconds] == VFR_PTS  # the source's timing, not a fixed rate


# --------------------------------------------------------------------------------------------
# an upload that stalls


def test_stalled_upload_times_out_without_blocking_others(stack: Any, clip: Path) -> None:
    """A client sends part of the body and goes quiet: other requests are served meanwhile, the
    stalled one gets 408 after the idle timeout, and its partial file never becomes a video."""
    uploads = stack.settings.scratch_dir / "uploads"
    before = stored_ids(stack.settings)
    boundary = "stall-boundary"
    sock = open_raw_upload(stack.url, 200_000, multipart_head(boundary) + b"\0" * 1000, boundary)
    try:
        started = time.monotonic()
        with stack.client() as client:
            assert client.get("/healthz").status_code == 200
            other = upload(client, clip)  # a whole upload goes through while the other one hangs
            assert other.status_code == 202, other.text
            during = time.monotonic() - started
        answer = read_response(sock, timeout=15)
    finally:
        sock.close()
    assert during < 5, f"other requests waited {during:.1f} s behind the stalled upload"
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"the upload stalled" in answer
    assert list(uploads.glob("*.part")) == []  # the partial upload is gone
    assert stored_ids(stack.settings) - before == {other.json()["id"]}  # only the complete upload is stored


def test_client_disconnect_mid_upload_leaves_nothing(stack: Any, wait_for: Callable[..., Any]) -> None:
    uploads = stack.settings.scratch_dir / "uploads"
    before = stored_ids(stack.settings)
    boundary = "gone-boundary"
    sock = open_raw_upload(stack.url, 200_000, multipart_head(boundary) + b"\0" * 50_000, boundary)
    wait_for(lambda: list(uploads.glob("*.part")), timeout=10, what="the upload to start")
    sock.close()
    wait_for(lambda: not list(uploads.glob("*.part")), timeout=10, what="the partial upload to be removed")
    assert stored_ids(stack.settings) == before
    with stack.client() as client:
        assert client.get("/healthz").status_code == 200
