"""The Python client and the `remote-*` verbs for issue 16, against a real service on loopback:
cancel, output options, per-frame quality, the kept source; the progress bar stays quiet off a
terminal; a damaged .frs is one clear error line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import pytest

from framers.client import FramersClient, FramersClientError, JobCanceled
from tests.test_service_cli import run_verb

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def stack(service_stacks: Callable[..., Any]) -> Any:
    return service_stacks(workers=1)


def test_client_output_options_quality_source(stack: Any, clip: Path, tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    with FramersClient(stack.url) as client:
        video_id = client.compress(clip, keep_source=True, selector="stride", stride=4)["id"]
        job = client.wait(video_id, poll_s=0.1, on_progress=seen.append)
        assert job["status"] == "done" and seen[-1]["status"] == "done"
        out = client.reconstruct(video_id, tmp_path / "v.webm", codec="vp9", quality="low", poll_s=0.1,
                                 on_progress=seen.append)
        assert out is not None
        with av.open(str(out)) as container:
            assert container.format.name.startswith("matroska") or "webm" in container.format.name
            assert container.streams.video[0].codec_context.name in ("vp9", "libvpx-vp9")
        facts = client.quality(video_id, codec="vp9", quality="low")
        assert facts["frames"] == 40 and len(facts["psnr"]) == 40 and facts["kept"][:3] == [0, 4, 8]
        assert client.download_source(video_id, tmp_path / "src.mp4").read_bytes() == clip.read_bytes()
        with pytest.raises(FramersClientError) as refused:
            client.reconstruct(video_id, tmp_path / "x.mp4", codec="h264", container="webm")
        assert refused.value.status_code == 422 and refused.value.code == "invalid_option"
        with pytest.raises(FramersClientError) as done:
            client.cancel(video_id)
        assert done.value.status_code == 409 and done.value.code == "not_cancelable"


def test_client_cancel_and_wait(service_stacks: Callable[..., Any], clip: Path) -> None:
    idle = service_stacks(workers=0)  # nothing takes the job: it waits in the queue
    with FramersClient(idle.url) as client:
        video_id = client.compress(clip)["id"]
        answer = client.cancel(video_id)
        assert answer == {"id": video_id, "job": "compress", "reconstruction": None, "status": "canceled",
                          "links": {"status": f"/jobs/{video_id}"}}
        with pytest.raises(JobCanceled):
            client.wait(video_id, poll_s=0.1)


def test_remote_verbs(stack: Any, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_verb("remote-compress", str(clip), "--url", stack.url, "--wait", "--keep-source") == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # quiet: no progress output off a terminal
    import json

    job = json.loads(captured.out)
    out = tmp_path / "r.mp4"
    assert run_verb("remote-fetch", job["id"], "-o", str(out), "--url", stack.url, "--codec", "av1", "--crf", "45") == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out) and captured.err == ""
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name in ("av1", "libdav1d")
    assert run_verb("remote-cancel", job["id"], "--url", stack.url) == 1  # already done
    assert "HTTP 409 not_cancelable" in capsys.readouterr().err


def test_wait_bar_shows_only_on_long_waits_at_a_terminal(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from service.commands import WaitBar

    with WaitBar("compress", after_s=0.0) as bar:  # not a terminal under pytest
        bar({"status": "running", "progress": 0.5, "eta_s": 3})
    assert bar.bar is None and capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with WaitBar("compress", after_s=0.0) as bar:
        bar({"status": "running", "progress": 0.5, "eta_s": 3})
        assert bar.bar is not None and bar.bar.n == 50
    with WaitBar("compress", after_s=3600) as bar:  # a short wait: nothing shown
        bar({"status": "running", "progress": 0.5})
    assert bar.bar is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00garbage" * 100, "not a FrameRS bundle (.frs file or bundle folder expected)"),
        (b"ustar", "the bundle file is truncated or damaged"),
    ],
)
def test_damaged_bundle_is_one_clear_line(tmp_path: Path, content: bytes, message: str) -> None:
    bad = tmp_path / "bad.frs"
    bad.write_bytes(content)
    result = subprocess.run(
        [sys.executable, "-m", "framers.cli", "reconstruct", str(bad), "-o", str(tmp_path / "x.mp4")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"framers: error: bad.frs: {message}"]
    assert result.stdout == ""
