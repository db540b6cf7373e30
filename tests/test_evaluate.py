"""``framers evaluate`` on one small generated clip: report fields, method ordering, error rows, outputs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from framers import evaluate as ev
from framers import h264_reference
from framers.errors import UnsupportedOptionError
from tests.videogen import write_video

METHODS = "uniform+hold,uniform+linear,stride+mci,oracle+mci"
FIELDS = {
    "frames",
    "kept_frames",
    "kept_ratio",
    "bundle_bytes",
    "video_bytes",
    "audio_bytes",
    "source_bytes",
    "size_ratio",
    "bpp",
    "bpp_with_audio",
    "psnr",
    "psnr_mean_mse",
    "ssim",
    "ms_ssim",
    "compress_seconds",
    "compress_fps",
    "reconstruct_seconds",
    "reconstruct_fps",
    "per_frame_psnr",
    "kept_indices",
    "h264",
}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("eval")
    (folder / "videos").mkdir()
    write_video(folder / "videos" / "moving.mp4", frames=40, audio=True)
    (folder / "videos" / "notes.txt").write_text("not a video: skipped by the folder scan")
    code = ev.main(
        [
            str(folder / "videos"),
            "--methods",
            METHODS,
            "--json",
            str(folder / "out" / "r.json"),
            "--markdown",
            str(folder / "out" / "r.md"),
            "--plots",
            str(folder / "plots"),
            "--quiet",
        ]
    )
    assert code == 0
    data: dict[str, Any] = json.loads((folder / "out" / "r.json").read_text())
    data["_folder"] = str(folder)
    return data


def test_report_has_the_fields_and_linear_beats_hold(report: dict[str, Any]) -> None:
    (video,) = report["videos"]
    assert video["video"] == "moving.mp4" and video["frames"] == 40
    methods = video["methods"]
    for name in ("uniform+hold", "uniform+linear", "stride+mci"):
        entry = methods[name]
        assert set(entry) >= FIELDS, FIELDS - set(entry)
        # 2 of 8 slots / every 4th frame, plus the first and last frames the codec always keeps
        kept = {"uniform+hold": 12, "uniform+linear": 12, "stride+mci": 11}[name]
        assert entry["frames"] == 40 and entry["kept_frames"] == kept and entry["kept_ratio"] == kept / 40
        assert len(entry["per_frame_psnr"]) == 40
        assert 0 < entry["bpp"] < entry["bpp_with_audio"]  # the clip has audio: counted apart
        assert entry["audio_bytes"] > 0
        assert 0 < entry["ssim"] <= 1 and 0 < entry["ms_ssim"] <= 1
        h264 = entry["h264"]
        assert abs(h264["rate_ratio"] - 1) <= 0.10 or h264["encodes"] > 4  # matched within 10 %
        assert h264["rate_ratio"] == pytest.approx(h264["bytes"] / entry["video_bytes"], abs=1e-4)
        assert h264["psnr"] > 20
    assert methods["uniform+linear"]["psnr"] > methods["uniform+hold"]["psnr"]
    assert methods["uniform+linear"]["psnr_mean_mse"] > methods["uniform+hold"]["psnr_mean_mse"]
    # one bundle for the two uniform methods
    assert methods["uniform+hold"]["bundle_bytes"] == methods["uniform+linear"]["bundle_bytes"]
    assert methods["stride+mci"]["kept_indices"] == [*range(0, 40, 4), 39]


def test_a_failing_method_is_an_error_row_not_a_crash(report: dict[str, Any]) -> None:
    entry = report["videos"][0]["methods"]["oracle+mci"]
    assert "clip-wise" in entry["error"]
    summary = report["summary"]
    assert summary["oracle+mci"]["videos"] == 0 and summary["oracle+mci"]["errors"] == 1
    assert summary["uniform+linear"]["videos"] == 1
    assert summary["uniform+linear"]["psnr"] == pytest.approx(report["videos"][0]["methods"]["uniform+linear"]["psnr"])
    assert summary["uniform+linear"]["h264"]["psnr"] is not None


def test_markdown_and_plots_are_written(report: dict[str, Any]) -> None:
    folder = Path(report["_folder"])
    text = (folder / "out" / "r.md").read_text()
    assert "| uniform+linear |" in text and "## Errors" in text and "oracle+mci" in text
    assert (folder / "plots" / "r_rd.png").stat().st_size > 1000
    assert (folder / "plots" / "r_frames_moving.png").stat().st_size > 1000


def test_resume_keeps_finished_videos_and_refuses_other_settings(report: dict[str, Any]) -> None:
    folder = Path(report["_folder"])
    out = folder / "out" / "r.json"
    args = [str(folder / "videos"), "--methods", METHODS, "--json", str(out), "--quiet", "--resume"]
    assert ev.main(args) == 0  # nothing left to do: the video is carried over, not measured again
    again = json.loads(out.read_text())
    assert again["videos"][0]["methods"]["uniform+linear"] == report["videos"][0]["methods"]["uniform+linear"]
    assert ev.main([*args, "--max-frames", "8"]) == 2


def test_max_frames_cuts_the_source_and_no_h264(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", frames=40)
    options = ev.Options(
        methods=ev.parse_methods("stride+linear"), max_frames=24, h264_reference=False, structural=False, progress=False
    )
    (tmp_path / "work").mkdir()
    record = ev.evaluate_video(video, options, tmp_path / "work")
    entry = record["methods"]["stride+linear"]
    assert record["trimmed"] and record["frames"] == 24 and entry["frames"] == 24
    assert entry["ssim"] is None and "h264" not in entry
    assert entry["psnr"] > 20


def test_method_parsing_and_cli_arguments() -> None:
    methods = ev.parse_methods("uniform+linear, oracle+linear,uniform+linear")
    assert [m.name for m in methods] == ["uniform+linear", "oracle+linear"]
    assert methods[0].bundle_key == ("uniform", "") and methods[1].bundle_key == ("oracle", "linear")
    for bad in ("uniform", "nope+linear", "uniform+nope", ""):
        with pytest.raises(UnsupportedOptionError):
            ev.parse_methods(bad)
    parser = argparse.ArgumentParser()
    ev.add_evaluate_arguments(parser)
    args = parser.parse_args(["a.mp4", "--json", "o.json", "--no-h264-reference", "--max-frames", "300"])
    assert args.h264_reference is False and args.max_frames == 300 and args.keyframe_codec == "x264"
    assert ev.main(["/nonexistent/video.mp4", "--json", "o.json"]) == 2


def test_rate_search_helpers() -> None:
    assert h264_reference.within(1050, 1000) and not h264_reference.within(1200, 1000)
    assert h264_reference.next_bitrate(1000.0, achieved_bytes=2000, target_bytes=1000) == 500.0
