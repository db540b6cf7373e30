"""Where the CLI writes and what it refuses up front (a fresh-user trial found tracebacks: a .webm
output with the default codec, an output in a missing folder after the whole compression ran)."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from framers.cli import main as cli_main
from tests.videogen import write_video


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli_outputs")
    source = write_video(folder / "src.mp4", frames=24)
    out = folder / "not" / "yet" / "there" / "b.frs"  # compress makes the output's folders first
    assert cli_main(["compress", str(source), "-o", str(out), "--stride", "4", "-q"]) == 0
    assert out.is_file()
    return out


def test_a_webm_output_without_codec_is_vp9_and_h264_in_webm_is_refused(
        bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "missing" / "r.webm"
    assert cli_main(["reconstruct", str(bundle), "-o", str(out), "-q"]) == 0
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "vp9"
        assert sum(1 for _ in container.decode(video=0)) == 24
    capsys.readouterr()
    assert cli_main(["reconstruct", str(bundle), "-o", str(tmp_path / "x.webm"), "--codec", "h264", "-q"]) == 2
    assert "webm holds vp9 or av1, not h264" in capsys.readouterr().err
    assert not (tmp_path / "x.webm").exists()


def test_a_folder_given_as_input_is_named_as_such(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["compress", str(tmp_path), "-o", str(tmp_path / "b.frs"), "-q"]) == 2
    assert "a folder, not a video file" in capsys.readouterr().err


def test_a_bundle_given_as_input_is_refused_not_read_as_a_video(
        bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """FFmpeg reads the H.264 stream inside a .frs ZIP: compressing a bundle made a bundle of it,
    its audio lost without a word (a fresh-user trial). Whatever its name, it is refused."""
    renamed = tmp_path / "looks_like.mp4"
    renamed.write_bytes(bundle.read_bytes())
    for given in (bundle, renamed):
        assert cli_main(["compress", str(given), "-o", str(tmp_path / "again.frs"), "-q"]) == 2
        assert "a FrameRS bundle, not a video file; rebuild it with reconstruct" in capsys.readouterr().err
    assert not (tmp_path / "again.frs").exists()
