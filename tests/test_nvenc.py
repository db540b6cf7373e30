"""The H.264 output encoder choice (framers.nvenc, FRAMERS_VIDEO_ENCODER; issue 17). On machines
without an NVIDIA driver ``auto`` must fall back to libx264 and say why, an explicit h264_nvenc
must fail clearly, and the probe must run once per process."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from framers import nvenc
from framers.errors import UnsupportedOptionError
from framers.outputs import encoder_settings
from framers.video_writer import VideoWriter

NO_NVENC = not nvenc._probe()[0]


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(nvenc.ENCODER_ENV, raising=False)
    nvenc.reset()
    yield
    nvenc.reset()


@pytest.mark.skipif(not NO_NVENC, reason="this machine has a working h264_nvenc")
def test_auto_falls_back_to_libx264_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="framers.nvenc"):  # the ordinary case: debug level
        assert nvenc.h264_encoder() == "libx264"
        assert encoder_settings("h264", 20) == ("libx264", {"crf": "20", "preset": "veryfast"})
    assert all(r.levelno == logging.DEBUG for r in caplog.records if "output encoder" in r.getMessage())
    assert "H.264 output encoder: libx264 (FRAMERS_VIDEO_ENCODER=auto, falling back: h264_nvenc" in caplog.text
    assert caplog.text.count("H.264 output encoder") == 1  # logged once


@pytest.mark.skipif(not NO_NVENC, reason="this machine has a working h264_nvenc")
def test_explicit_nvenc_without_one_raises(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(nvenc.ENCODER_ENV, "h264_nvenc")
    with pytest.raises(UnsupportedOptionError, match=r"FRAMERS_VIDEO_ENCODER=h264_nvenc, but h264_nvenc (cannot be "
                                                     r"opened here|is not in this FFmpeg build)"):
        nvenc.h264_encoder()
    with pytest.raises(UnsupportedOptionError, match="h264_nvenc"):  # where a reconstruction meets it
        VideoWriter(tmp_path / "o.mp4", 64, 48, Fraction(1, 25), 25.0)


def test_probe_runs_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(nvenc, "_probe", lambda: calls.append(1) or (False, "probe says no"))
    for _ in range(3):
        assert nvenc.h264_encoder() == "libx264"
    assert calls == [1]
    monkeypatch.setenv(nvenc.ENCODER_ENV, "libx264")  # an explicit libx264 needs no probe at all
    nvenc.reset()
    assert nvenc.h264_encoder() == "libx264" and calls == [1]


def test_working_nvenc_gets_the_crf_mapping(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(nvenc, "_probe", lambda: (True, "fake"))
    with caplog.at_level(logging.INFO, logger="framers.nvenc"):
        assert encoder_settings("h264", 23) == ("h264_nvenc", {"rc": "vbr", "cq": "23", "b": "0", "preset": "p5"})
    assert "H.264 output encoder: h264_nvenc" in caplog.text
    assert encoder_settings("h264", 23, odd_size=True)[0] == "libx264"  # 4:4:4 stays on x264
    assert encoder_settings("vp9", 30)[0] == "libvpx-vp9"  # other codecs are not touched
    monkeypatch.setenv(nvenc.ENCODER_ENV, "libx264")
    assert encoder_settings("h264", 23)[0] == "libx264"


def test_bad_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(nvenc.ENCODER_ENV, "nvenc")
    with pytest.raises(UnsupportedOptionError, match="FRAMERS_VIDEO_ENCODER must be one of"):
        nvenc.h264_encoder()


def test_writer_still_writes_with_auto(tmp_path: Path) -> None:
    with VideoWriter(tmp_path / "o.mp4", 64, 48, Fraction(1, 25), 25.0) as writer:
        for i in range(3):
            writer.write(np.full((48, 64, 3), 40 * i, np.uint8), i)
    assert (tmp_path / "o.mp4").stat().st_size > 0
