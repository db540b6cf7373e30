"""The codec end to end on real and generated videos: compress -> bundle -> reconstruct."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from framers import bundle as fb
from framers import pipeline
from framers.cli import main as cli_main
from framers.errors import BundleError, InvalidVideoError, UnsupportedOptionError
from framers.pipeline import compress, iter_reconstructed, reconstruct
from framers.reconstructors.classical import HoldReconstructor, LinearReconstructor
from framers.registry import get_reconstructor
from framers.rgb import to_rgb
from framers.video import FrameReader, probe
from tests.videogen import write_variant, write_video

DATA = Path(__file__).parent / "data"


def decoded(path: Path) -> tuple[list[np.ndarray], list[float]]:
    frames, times = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            frames.append(to_rgb(frame))
            times.append(float(frame.pts * stream.time_base))
    return frames, times


def source_frames(path: Path) -> list[np.ndarray]:
    with FrameReader(path) as reader:
        return [f.rgb for f in reader.frames()]


def psnr_video(src: list[np.ndarray], rebuilt: list[np.ndarray]) -> float:
    values = []
    for a, b in zip(src, rebuilt, strict=True):
        mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
        values.append(60.0 if mse == 0 else min(60.0, 10 * np.log10(255**2 / mse)))
    return float(np.mean(values))


def rebuilt_frames(bundle: Path, reconstructor: str = "linear") -> list[np.ndarray]:
    with fb.open_bundle(bundle) as folder:
        manifest = fb.read_manifest(folder)
        return list(iter_reconstructed(folder, manifest, get_reconstructor(reconstructor)))


@pytest.fixture(scope="module")
def clip_with_audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("v") / "moving.mp4", frames=40, audio=True)


@pytest.mark.parametrize("single_file", [False, True])
def test_round_trip_keeps_count_size_timing_and_audio(clip_with_audio: Path, tmp_path: Path, single_file: bool) -> None:
    bundle = tmp_path / ("b.frs" if single_file else "b")
    result = compress(clip_with_audio, bundle)
    assert result.frames == 40 and result.kept_frames == 11  # every 4th frame, plus the last one (39)
    if single_file:
        # ZIP: ~100 bytes of headers per file, the manifest deflated (tests/test_bundle_container.py)
        with fb.open_bundle(bundle) as folder:
            files = [f for f in folder.iterdir() if f.is_file()]
            streams = sum(f.stat().st_size for f in files if f.name != fb.MANIFEST)
            manifest = (folder / fb.MANIFEST).stat().st_size
        assert streams < bundle.stat().st_size <= streams + manifest + 128 * len(files) + 22
    out = tmp_path / "out.mp4"
    rec = reconstruct(bundle, out, reconstructor="linear")
    assert rec.frames == 40
    frames, times = decoded(out)
    _, src_times = decoded(clip_with_audio)
    assert len(frames) == 40
    assert frames[0].shape == (64, 96, 3)
    assert np.allclose(times, src_times, atol=1e-3)
    with av.open(str(out)) as container:
        assert container.streams.audio, "audio lost"
        assert container.streams.audio[0].codec_context.name == "aac"


def test_lossless_keyframes_come_back_bit_exact(clip_with_audio: Path, tmp_path: Path) -> None:
    compress(clip_with_audio, tmp_path / "b", keyframe_codec="ffv1")
    src = source_frames(clip_with_audio)
    manifest = fb.read_manifest(tmp_path / "b")
    kept = manifest.kept_indices()
    rebuilt = rebuilt_frames(tmp_path / "b")
    for i in kept:
        assert np.array_equal(rebuilt[i], src[i])


def test_linear_beats_hold_and_oracle_never_worse_than_uniform(clip_with_audio: Path, tmp_path: Path) -> None:
    src = source_frames(clip_with_audio)
    compress(clip_with_audio, tmp_path / "u", selector="uniform", keyframe_codec="ffv1")
    linear = psnr_video(src, rebuilt_frames(tmp_path / "u", "linear"))
    hold = psnr_video(src, rebuilt_frames(tmp_path / "u", "hold"))
    assert linear > hold + 1.0
    for name in ("linear", "hold"):
        compress(clip_with_audio, tmp_path / name, selector="oracle", oracle_reconstructor=name, keyframe_codec="ffv1")

        def sse(frames: list[np.ndarray]) -> float:
            return sum(float(np.sum((a.astype(np.float64) - b) ** 2)) for a, b in zip(src, frames, strict=True))

        assert sse(rebuilt_frames(tmp_path / name, name)) <= sse(rebuilt_frames(tmp_path / "u", name)) + 1e-6


def test_stride_keeps_every_nth_frame(clip_with_audio: Path, tmp_path: Path) -> None:
    result = compress(clip_with_audio, tmp_path / "s", selector="stride", stride=4)
    # every 4th frame, and the video's last frame (never extrapolate by holding)
    assert fb.read_manifest(tmp_path / "s").kept_indices() == [*range(0, 40, 4), 39]
    assert result.kept_frames == 11


def test_real_clips_raw_h264_and_avi_with_mp3(tmp_path: Path) -> None:
    cases = [("openh264_test_qcif_cabac.264", 30, (144, 176)), ("mmaction2_test.avi", 164, (240, 320))]
    for name, frames, size in cases:
        src = DATA / name
        compress(src, tmp_path / f"{name}.frs")
        out = tmp_path / f"{name}.mp4"
        reconstruct(tmp_path / f"{name}.frs", out, reconstructor="linear")
        got, _ = decoded(out)
        assert len(got) == frames and got[0].shape[:2] == size
        with av.open(str(out)) as container:
            assert bool(container.streams.audio) == (name.endswith(".avi"))


def test_odd_size_variable_rate_and_gif(tmp_path: Path) -> None:
    odd = write_video(tmp_path / "odd.mp4", frames=20, width=97, height=63, pix_fmt="yuv444p")
    reconstruct(compress(odd, tmp_path / "odd").bundle_path, tmp_path / "odd_out.mp4", reconstructor="linear")
    frames, _ = decoded(tmp_path / "odd_out.mp4")
    assert len(frames) == 20 and frames[0].shape == (63, 97, 3)

    pts = [0, 40, 80, 200, 240, 250, 260, 400, 440, 480, 520, 560, 700, 740, 780, 820, 860, 900, 1100, 1140]
    vfr = write_video(tmp_path / "vfr.mkv", frames=20, pts=pts, container_format="matroska")
    _, src_times = decoded(vfr)
    reconstruct(compress(vfr, tmp_path / "vfr").bundle_path, tmp_path / "vfr_out.mp4", reconstructor="linear")
    _, times = decoded(tmp_path / "vfr_out.mp4")
    assert np.allclose(times, src_times, atol=2e-3)

    gif = write_video(tmp_path / "a.gif", frames=12, width=64, height=48, codec="gif", pix_fmt="rgb8", fps=10)
    reconstruct(compress(gif, tmp_path / "gif").bundle_path, tmp_path / "gif_out.mp4", reconstructor="linear")
    assert len(decoded(tmp_path / "gif_out.mp4")[0]) == 12


def test_rotation_metadata_is_honoured(tmp_path: Path) -> None:
    rotated = write_video(tmp_path / "rot.mp4", frames=16, width=96, height=64, rotation=90)
    info = probe(rotated)
    assert (info.width, info.height) == (64, 96)
    reconstruct(compress(rotated, tmp_path / "r").bundle_path, tmp_path / "r.mp4", reconstructor="linear")
    frames, _ = decoded(tmp_path / "r.mp4")
    assert frames[0].shape == (96, 64, 3)
    upright = source_frames(rotated)[0]
    assert upright.shape == (96, 64, 3)


def test_bad_inputs_raise_clear_errors(tmp_path: Path, clip_with_audio: Path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 50)
    # FFmpeg's tty demuxer opens a .txt as a video of its characters (a fresh-user trial: exit 0)
    (tmp_path / "notes.txt").write_text("this is not a video\n" * 50)
    data = clip_with_audio.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    audio_only = tmp_path / "audio.m4a"
    with av.open(str(audio_only), "w") as out:
        stream = out.add_stream("aac", rate=44100)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 44100, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    for name, needle in [
        ("empty.mp4", "empty"),
        ("text.mp4", "not a readable video"),
        ("notes.txt", "a text file, not a video"),
        ("cut.mp4", "cut.mp4"),
        ("audio.m4a", "no video stream"),
    ]:
        with pytest.raises(InvalidVideoError, match=needle):
            compress(tmp_path / name, tmp_path / f"{name}.b")
        assert not (tmp_path / f"{name}.b").exists()
    assert cli_main(["compress", str(tmp_path / "text.mp4"), "-o", str(tmp_path / "x"), "-q"]) == 2
    assert cli_main(["compress", str(tmp_path / "notes.txt"), "-o", str(tmp_path / "y"), "-q"]) == 2


def test_cli_refuses_a_video_name_for_a_bundle_and_warns_on_a_foreign_output_suffix(
        clip_with_audio: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`compress -o x.mp4` would have made a bundle folder named x.mp4; `reconstruct -o y.txt`
    writes an MP4 under a name that says otherwise, and says so."""
    assert cli_main(["compress", str(clip_with_audio), "-o", str(tmp_path / "x.mp4"), "-q"]) == 2
    assert "x.frs" in capsys.readouterr().err and not (tmp_path / "x.mp4").exists()
    assert cli_main(["compress", str(clip_with_audio), "-o", str(tmp_path / "b.frs"), "--stride", "4", "-q"]) == 0
    assert cli_main(["reconstruct", str(tmp_path / "b.frs"), "-o", str(tmp_path / "y.txt"),
                     "--reconstructor", "linear", "-q"]) == 0
    assert "warning: writing MP4 to" in capsys.readouterr().out
    with av.open(str(tmp_path / "y.txt")) as c:
        assert "mp4" in c.format.name and c.streams.video[0].frames in (0, 40)


def test_corrupt_bundle_and_bad_options_are_refused(clip_with_audio: Path, tmp_path: Path) -> None:
    compress(clip_with_audio, tmp_path / "b")
    keyframes = tmp_path / "b" / fb.KEYFRAMES_H264
    blob = bytearray(keyframes.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    keyframes.write_bytes(bytes(blob))
    with pytest.raises(BundleError, match="checksum"):
        reconstruct(tmp_path / "b", tmp_path / "o.mp4")
    (tmp_path / "junk.frs").write_bytes(b"garbage" * 100)
    with pytest.raises(BundleError):
        reconstruct(tmp_path / "junk.frs", tmp_path / "o.mp4")
    with pytest.raises(UnsupportedOptionError):
        compress(clip_with_audio, tmp_path / "k", selector="uniform", keep=9)
    with pytest.raises(UnsupportedOptionError, match="target_psnr"):
        compress(clip_with_audio, tmp_path / "k", target_psnr=5)
    with pytest.raises(UnsupportedOptionError, match="exactly one"):
        compress(clip_with_audio, tmp_path / "k", target_psnr=35, target_kbps=100)
    with pytest.raises(UnsupportedOptionError):
        compress(clip_with_audio, tmp_path / "k", selector="nope")
    manifest = json.loads((tmp_path / "b" / fb.MANIFEST).read_text())
    manifest["version"] = 99
    (tmp_path / "b" / fb.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="version"):
        fb.read_manifest(tmp_path / "b")


def test_window_reconstructors_keep_kept_frames() -> None:
    from framers.reconstructors.base import KeptFrame

    a = np.zeros((4, 4, 3), np.uint8)
    b = np.full((4, 4, 3), 200, np.uint8)
    kept = [KeptFrame(2, a), KeptFrame(6, b)]
    lin = LinearReconstructor().reconstruct_window(kept, 0, 8)
    assert np.array_equal(lin[2], a) and np.array_equal(lin[6], b)
    assert lin[4, 0, 0, 0] == 100 and lin[0, 0, 0, 0] == 0 and lin[7, 0, 0, 0] == 200
    hold = HoldReconstructor().reconstruct_window(kept, 0, 8)
    assert hold[5, 0, 0, 0] == 0 and hold[7, 0, 0, 0] == 200


MEMORY_PROBE = """
import resource, sys
from framers.pipeline import compress
compress(sys.argv[1], sys.argv[2])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_memory_does_not_grow_with_video_length(tmp_path: Path) -> None:
    """Peak RSS compressing a video 8x longer grows by less than 20 % (streaming)."""
    short = write_video(tmp_path / "short.mp4", frames=48, width=320, height=240)
    long = write_video(tmp_path / "long.mp4", frames=384, width=320, height=240)
    peaks = []
    for video in (short, long):
        out = subprocess.run(
            [sys.executable, "-c", MEMORY_PROBE, str(video), str(tmp_path / (video.stem + ".frs"))],
            capture_output=True,
            text=True,
            check=True,
        )
        peaks.append(int(out.stdout.strip().splitlines()[-1]))
    assert peaks[1] < peaks[0] * 1.2, peaks


def test_kept_frames_are_stored_as_arithmetic_runs() -> None:
    kept = [*range(0, 400, 4), 399, 400, 401, 402, 410]
    runs = fb.encode_runs(kept)
    assert runs[0] == [0, 4, 100] and fb.decode_runs(runs) == kept
    assert fb.encode_runs([]) == [] and fb.decode_runs([[5, 1, 1]]) == [5]
    assert fb.per_clip([0, 17, 31], 40, 16) == [[0], [1, 15], []]
    with pytest.raises(BundleError):
        fb.decode_runs([[0, 0, 3]])
    with pytest.raises(BundleError):
        fb.per_clip([40], 40, 16)


def test_a_cut_matroska_file_is_said_to_end_early(tmp_path: Path) -> None:
    """Matroska writes its duration in the header and no frame count: a file cut at 60 % decodes
    without an error, 1.2 s of a declared 2 s, and was read as a complete shorter video. Audio
    that outlasts the video (a legitimate file) is not a cut."""
    whole = write_variant(tmp_path / "whole.mkv", container_format="matroska", frames=50, width=96, height=64,
                          audio=[dict(codec="aac", rate=48000, beep_at=1.0)])
    data = whole.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    result = compress(cut, tmp_path / "cut.frs", selector="stride", stride=4)
    notes = [w for w in result.warnings if "truncated" in w]
    assert notes and "declares 2.0" in notes[0], result.warnings
    assert not [w for w in compress(whole, tmp_path / "whole.frs", selector="stride", stride=4).warnings
                if "truncated" in w]
    assert pipeline.ends_early_warnings(3.0, (0.0, 2.0), (0.0, 3.0)) == []  # audio outlasts the video
    assert pipeline.ends_early_warnings(3.0, (0.0, 2.0), None)


def test_a_file_cut_after_its_index_is_said_to_be_truncated(tmp_path: Path) -> None:
    """A faststart mp4 (index first) whose data ends early decodes without an error, just fewer
    frames than its header declares: the CLI result and the manifest must say so."""
    path = tmp_path / "faststart.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(60):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    whole = compress(path, tmp_path / "whole", selector="stride", stride=4)
    assert not any("truncated" in w for w in whole.warnings)
    result = compress(cut, tmp_path / "cut", selector="stride", stride=4)
    assert 0 < result.frames < 50
    # every frame FFmpeg decodes (one thread per slice: no frame threading, which lost the frames
    # held for reordering behind the partial last packet: 2 fewer in a fresh-user trial)
    with av.open(str(cut)) as container:
        container.streams.video[0].thread_type = "SLICE"
        decodable = 0
        for packet in container.demux(video=0):
            with contextlib.suppress(av.error.FFmpegError):
                decodable += len(packet.decode())
    assert result.frames == decodable
    notes = [w for w in result.warnings if "truncated" in w]
    assert notes and "declares 60 frames" in notes[0]
    assert notes[0] in fb.read_manifest(tmp_path / "cut").source["warnings"]


def test_an_edit_list_that_trims_the_start_is_not_truncation(tmp_path: Path) -> None:
    """``ffmpeg -ss 0.5 -c copy`` keeps the packets before the cut in an mp4 behind an edit list:
    the track's sample count (60) holds them, its duration (1.5 s) does not. 45 frames play, and
    nothing was cut off (a fresh-user trial's file was said to be truncated)."""
    source = write_variant(tmp_path / "whole.mp4", frames=60, fps=30, width=64, height=48)
    trimmed = tmp_path / "trimmed.mp4"
    with av.open(str(source)) as inp, av.open(str(trimmed), "w", format="mp4") as out:
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream)
        shift = round(0.5 / stream.time_base)
        for packet in inp.demux(stream):
            if packet.dts is None:
                continue
            packet.pts, packet.dts, packet.stream = packet.pts - shift, packet.dts - shift, copy
            out.mux(packet)
    with av.open(str(trimmed)) as check:
        assert check.streams.video[0].frames == 60  # what the header declares
    assert probe(trimmed).frames == 45
    result = compress(trimmed, tmp_path / "trimmed.frs", selector="stride", stride=4)
    assert result.frames == 45 and not [w for w in result.warnings if "truncated" in w], result.warnings


def test_repeated_timestamps_are_retimed_at_the_nominal_rate_and_said(tmp_path: Path) -> None:
    """A broken muxer wrote every packet at pts 0: frames are spread one nominal frame duration
    apart (not 1 tick), and the reader says how many it re-timed."""
    path = tmp_path / "zero.mkv"
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("mjpeg", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        for i in range(20):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 10, np.uint8), format="rgb24")
            for packet in [*stream.encode(frame), *(stream.encode(None) if i == 19 else [])]:
                packet.pts = packet.dts = 0
                out.mux(packet)
    with FrameReader(path) as reader:
        stamps = [f.pts for f in reader.frames()]
        warnings = reader.describe()["warnings"]
    assert stamps == [i * 33 for i in range(20)]  # 1/1000 s time base, 30 fps
    assert any("19 frames had a timestamp that did not increase" in w for w in warnings)


def test_a_fixed_pattern_over_seconds_is_said(tmp_path: Path) -> None:
    """Every 4th frame of a 1 fps slideshow keeps frames 4 s apart: the frames rebuilt between
    them blend pictures seconds apart (13.7 dB in a fresh-user trial, unsaid). Said; not at 25 fps,
    and not in the adaptive mode (it keeps what the quality needs)."""
    slow = write_variant(tmp_path / "slow.mp4", fps=1, frames=5, width=64, height=48)
    notes = [w for w in compress(slow, tmp_path / "slow.frs", selector="stride", stride=4).warnings if "apart" in w]
    assert len(notes) == 1 and "4.0 s apart" in notes[0]
    fast = write_variant(tmp_path / "fast.mp4", fps=25, frames=20, width=64, height=48)
    assert not [w for w in compress(fast, tmp_path / "fast.frs", selector="stride", stride=8).warnings if "apart" in w]
    assert pipeline.gap_warnings([0, 4], [0, 1, 2, 3, 4], Fraction(1), adaptive=True) == []
    assert pipeline.gap_warnings([0, 1, 2], [0, 5, 6], Fraction(1), adaptive=False) == []  # nothing rebuilt between


def test_options_that_cannot_take_effect_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A fresh-user trial's: x264 clamped --crf 64 to 51 (the manifest said 64), keep was ignored
    with selector stride, the oracle selector with mci failed only after decoding. Refused at
    once, naming the flag (the service answers 422 from the same rules)."""
    from framers import defaults
    from framers.reconstructors.base import WindowReconstructor

    video = write_variant(tmp_path / "v.mp4", frames=8, width=64, height=48)
    for extra, needle in ((["--stride", "4", "--crf", "64"], "--crf: x264's CRF is 0 to 51"),
                          (["--keyframe-codec", "ffv1", "--crf", "20"], "--crf: ffv1"),
                          (["--selector", "stride", "--keep", "3"], "--keep: keep counts two-frame slots"),
                          (["--selector", "oracle", "--reconstructor", "mci"], "--reconstructor: the oracle")):
        assert cli_main(["compress", str(video), "-o", str(tmp_path / "b.frs"), "-q", *extra]) == 2, extra
        assert needle in capsys.readouterr().err, extra
    with pytest.raises(UnsupportedOptionError, match="x264's CRF is 0 to 51"):
        compress(video, tmp_path / "c.frs", selector="stride", keyframe_crf=52)
    clip_wise = {name for name in ("framemae", "linear", "hold", "mci")
                 if isinstance(get_reconstructor(name), WindowReconstructor)}
    assert clip_wise == set(defaults.CLIP_WISE_RECONSTRUCTORS)


@pytest.mark.parametrize(("codec", "fmt", "ext"), [("libx264", "h264", "h264"), ("mpeg2video", "mpeg2video", "m2v")])
def test_a_bare_elementary_stream_keeps_its_declared_rate(codec: str, fmt: str, ext: str, tmp_path: Path) -> None:
    """A bare .h264 has no timestamps: FFmpeg's demuxer says 25 fps (its default) while the
    bitstream declares 30 (VUI timing), which FFmpeg's tools use; a fresh-user trial's 3 s clip
    came out 3.6 s long, 20 % slow, unsaid. A bare .m2v's duration is a bitrate guess, not a
    declaration (it was said to be truncated)."""
    pictures = write_variant(tmp_path / "src.mkv", frames=45, fps=30, width=64, height=48)
    raw = tmp_path / f"raw.{ext}"
    with av.open(str(pictures)) as inp, av.open(str(raw), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i, frame in enumerate(inp.decode(video=0)):  # the bare stream keeps no timestamps
            frame.pts, frame.time_base = i, Fraction(1, 30)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    assert probe(raw).fps == 30.0
    result = compress(raw, tmp_path / "raw.frs", selector="stride", stride=4)
    assert result.fps == 30.0 and result.duration == pytest.approx(1.5, abs=0.04), (result.fps, result.duration)
    assert not [w for w in result.warnings if "truncated" in w or "assumed" in w], result.warnings


def test_an_output_path_never_destroys_what_is_not_a_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A fresh-user trial's: `-o` to a folder of notes deleted them; `-o` the source itself replaced
    the video; an unwritable place gave a traceback. Refused, saying why; an existing bundle is
    replaced as before."""
    video = write_variant(tmp_path / "v.mp4", frames=8, width=64, height=48)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    document = tmp_path / "doc.txt"
    document.write_text("keep me too")
    copy = tmp_path / "copy.frs"
    copy.write_bytes(video.read_bytes())
    for dest, source, needle in ((notes, video, "a folder holding other files"),
                                 (document, video, "a file that is not a bundle"),
                                 (copy, copy, "the output is the source itself"),
                                 (tmp_path / "b.zip", video, "did you mean")):
        assert cli_main(["compress", str(source), "-o", str(dest), "--stride", "4", "-q"]) == 2, dest
        assert needle in capsys.readouterr().err, dest
    assert (notes / "todo.txt").read_text() == "keep me" and document.read_text() == "keep me too"
    assert copy.read_bytes() == video.read_bytes()
    for dest in (tmp_path / "again.frs", tmp_path / "again"):  # a bundle, in either form, is replaced
        for _ in range(2):
            assert cli_main(["compress", str(video), "-o", str(dest), "--stride", "4", "-q"]) == 0
    assert cli_main(["compress", str(video), "-o", "/proc/framers-test.frs", "--stride", "4", "-q"]) == 1
    assert "framers: error:" in capsys.readouterr().err


def test_a_rebuilt_video_never_replaces_a_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A fresh-user trial's `reconstruct r.frs -o r.frs` replaced the bundle with the video (exit 0)
    and `-o` into the bundle folder overwrote its manifest; `-o` the folder failed after the whole
    rebuild. Refused first, saying why; a damaged manifest is a BundleError, not a traceback."""
    video = write_variant(tmp_path / "v.mp4", frames=8, width=64, height=48)
    packed, folder = tmp_path / "r.frs", tmp_path / "rd"
    for bundle in (packed, folder):
        assert cli_main(["compress", str(video), "-o", str(bundle), "--stride", "4", "-q"]) == 0
    before = packed.read_bytes()
    for bundle, dest, needle in ((packed, packed, "the bundle being read"),
                                 (folder, folder / "manifest.json", "the bundle being read"),
                                 (folder, folder, "a folder"),
                                 (folder, packed, "a bundle (it would be replaced")):
        assert cli_main(["reconstruct", str(bundle), "-o", str(dest), "-q"]) == 2, dest
        assert needle in capsys.readouterr().err, dest
    assert packed.read_bytes() == before and fb.holds_bundle(folder)
    (folder / "manifest.json").write_bytes(b"\x00\x9f\xff binary, not JSON")
    assert cli_main(["reconstruct", str(folder), "-o", str(tmp_path / "o.mp4"), "-q"]) == 2
    assert "manifest is not valid JSON" in capsys.readouterr().err


def test_a_bare_stream_without_a_declared_rate_says_what_was_assumed(tmp_path: Path) -> None:
    """An H.264 conformance stream without VUI timing: FFmpeg's 25 fps is a guess, and said."""
    result = compress(DATA / "openh264_test_qcif_cabac.264", tmp_path / "q.frs", selector="stride", stride=4)
    assert result.fps == 25.0 and any("25 fps assumed" in w for w in result.warnings), result.warnings
