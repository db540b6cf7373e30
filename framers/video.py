"""Video I/O with PyAV: probing, a streaming frame/clip reader and an H.264 mp4 writer.

Frames are RGB uint8 [H, W, 3] in display orientation (rotation metadata applied). Timestamps
are kept as integer pts in the stream's time base so variable frame rate survives a round trip.
Nothing here holds more than one clip of frames, so memory does not grow with video length.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from framers.errors import FrameTooLargeError, InvalidVideoError

CLIP_LEN = 16
SLOT_LEN = 2
# Output timing resolution when a source has no usable time base.
DEFAULT_TIME_BASE = Fraction(1, 90000)


@dataclass(frozen=True)
class VideoInfo:
    """What a probe learns about a video without decoding all of it."""

    width: int  # display orientation (after rotation)
    height: int
    frames: int  # from the container header, else counted from packets
    fps: float
    duration: float  # seconds
    codec: str
    pix_fmt: str
    has_audio: bool
    rotation: int  # degrees counter-clockwise applied to decoded frames
    time_base: Fraction


@dataclass(frozen=True)
class Frame:
    index: int
    rgb: np.ndarray  # [H, W, 3] uint8, display orientation
    pts: int  # in the reader's time base


class Clip:
    """Up to CLIP_LEN consecutive frames; the last clip of a video may be shorter.

    A clip read from a video holds its *decoded* frames and converts a frame to RGB only when
    asked (``frame(i)``, ``frames``): the ``uniform``, ``stride`` and ``framers`` selectors never
    convert the three quarters of the frames they drop, and ``view`` makes the learned selector's
    small global view straight from the decoded picture (``framers.video.global_view``).
    A clip made from an RGB array (tests, tools) behaves the same.
    """

    __slots__ = ("_decoded", "_rgb", "_rotation", "_size", "_stacked", "index", "pts", "start")

    def __init__(self, index: int, start: int, frames: np.ndarray | Sequence[av.VideoFrame],
                 pts: tuple[int, ...], rotation: int = 0) -> None:
        self.index = index
        self.start = start
        self.pts = tuple(pts)
        self._rotation = rotation
        self._rgb: list[np.ndarray | None]
        self._stacked: np.ndarray | None = None
        if isinstance(frames, np.ndarray):
            self._decoded: tuple[av.VideoFrame, ...] = ()
            self._stacked = frames
            self._rgb = list(frames)
            self._size = (int(frames.shape[1]), int(frames.shape[2]))
        else:
            self._decoded = tuple(frames)
            self._rgb = [None] * len(self._decoded)
            first = self._decoded[0]
            quarter = (rotation // 90) % 2
            self._size = (first.width, first.height) if quarter else (first.height, first.width)
        if len(self._rgb) != len(self.pts):
            raise ValueError(f"clip has {len(self._rgb)} frames but {len(self.pts)} timestamps")

    def __len__(self) -> int:
        return len(self._rgb)

    @property
    def stop(self) -> int:
        return self.start + len(self)

    @property
    def height(self) -> int:
        return self._size[0]

    @property
    def width(self) -> int:
        return self._size[1]

    @property
    def nbytes(self) -> int:
        """Bytes of the clip as RGB (what ``frames`` would hold)."""
        return len(self) * self.height * self.width * 3

    def frame(self, i: int) -> np.ndarray:
        """Frame i as RGB uint8 [H, W, 3] in display orientation (converted once, then kept)."""
        rgb = self._rgb[i]
        if rgb is None:
            rgb = _rotate(self._decoded[i].to_ndarray(format="rgb24"), self._rotation)
            self._rgb[i] = rgb
        return rgb

    @property
    def frames(self) -> np.ndarray:
        """All frames as RGB [n, H, W, 3] uint8 (converts the ones not converted yet)."""
        if self._stacked is None:
            self._stacked = np.stack([self.frame(i) for i in range(len(self))])
            self._rgb = list(self._stacked)  # one copy of the pixels, not two
        return self._stacked

    def pictures(self) -> tuple[av.VideoFrame, ...]:
        """The clip's decoded pictures (stored orientation, decoder's pixel format); a clip made
        from an RGB array gets RGB pictures of its frames."""
        if self._decoded:
            return self._decoded
        return tuple(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24") for f in self.frames)

    def view(self, size: int) -> np.ndarray:
        """[n, size, size, 3] uint8: every whole frame area-resized to a square (``global_view``)."""
        if not self._decoded:
            return global_view(self.frames, size)
        return np.stack([
            _rotate(_view_of_frame(f, size), self._rotation) for f in self._decoded
        ])


#: the global view is made in two steps: FFmpeg's area scaler to VIEW_STEP × the view side (also
#: the YUV → RGB conversion when the source is a decoded picture), then an exact box filter
#: (cv2.INTER_AREA at an integer ratio) down to the view. One step with either scaler is worse:
#: FFmpeg's area filter aliases at ratios ≥ 8, and cv2's INTER_AREA at non-integer ratios costs
#: 10× more than this whole path (2.6 vs 0.25 ms per 480p frame).
VIEW_STEP = 2
_view_scaler = threading.local()


def _scaler() -> VideoReformatter:
    scaler = getattr(_view_scaler, "value", None)
    if scaler is None:  # one per thread: a reformatter caches its FFmpeg context, not thread-safe
        scaler = _view_scaler.value = VideoReformatter()
    return scaler


def _view_of_frame(frame: av.VideoFrame, size: int) -> np.ndarray:
    big = _scaler().reformat(frame, width=size * VIEW_STEP, height=size * VIEW_STEP, format="rgb24",
                             interpolation="AREA").to_ndarray()
    return cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)


def global_view(frames: np.ndarray, size: int) -> np.ndarray:
    """[n, H, W, 3] RGB uint8 → [n, size, size, 3] uint8: each whole frame area-resized to a
    square, as ``Clip.view`` does from decoded pictures (within about one gray level)."""
    return np.stack([
        _view_of_frame(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24"), size)
        for f in frames
    ])


def _open(path: Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.is_file():
        raise InvalidVideoError(f"{path.name}: no such file")
    if path.stat().st_size == 0:
        raise InvalidVideoError(f"{path.name}: the file is empty")
    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        if isinstance(exc, av.error.FFmpegError) and exc.errno == 16:  # EBUSY: FFmpeg's "image too big"
            reason = "the header declares an impossible frame size"
        raise InvalidVideoError(f"{path.name}: not a readable video ({reason})") from exc
    if not container.streams.video:
        container.close()
        raise InvalidVideoError(f"{path.name}: the file has no video stream")
    return container


def _rotate(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display rotation (degrees counter-clockwise, multiples of 90) to an image."""
    quarter_turns = (rotation // 90) % 4
    if quarter_turns == 0:
        return rgb
    return np.ascontiguousarray(np.rot90(rgb, k=quarter_turns))


def _rotation_of(frame: av.VideoFrame) -> int:
    try:
        angle = float(frame.rotation)
    except (AttributeError, TypeError, ValueError):
        return 0
    if not math.isfinite(angle):
        return 0
    return round(angle / 90.0) * 90 % 360


def _stream_fps(stream: av.video.stream.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and float(rate) > 0 and math.isfinite(float(rate)):
            return float(rate)
    return 25.0


def _time_base(stream: av.video.stream.VideoStream) -> Fraction:
    tb = stream.time_base
    return Fraction(tb.numerator, tb.denominator) if tb else DEFAULT_TIME_BASE


def probe(path: Path, max_pixels: int | None = None) -> VideoInfo:
    """Open a video, decode its first frame and read its header; raise InvalidVideoError if unusable.

    ``max_pixels`` refuses a video whose header declares a larger frame *before* anything is
    decoded (a hostile header must not make us allocate gigabytes).
    """
    container = _open(path)
    try:
        stream = container.streams.video[0]
        declared_w, declared_h = stream.codec_context.width or 0, stream.codec_context.height or 0
        if max_pixels is not None and declared_w * declared_h > max_pixels:
            raise FrameTooLargeError(
                f"{Path(path).name}: frame size {declared_w}x{declared_h} exceeds the limit of {max_pixels} pixels",
                declared_w,
                declared_h,
            )
        first = None
        try:
            for frame in container.decode(stream):
                first = frame
                break
        except av.error.FFmpegError as exc:
            raise InvalidVideoError(f"{Path(path).name}: the video stream cannot be decoded ({exc})") from exc
        if first is None:
            raise InvalidVideoError(f"{Path(path).name}: the video stream holds no decodable frame")
        rotation = _rotation_of(first)
        width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width
        fps = _stream_fps(stream)
        frames = int(stream.frames or 0)
        duration = 0.0
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        if frames <= 0:
            frames = count_packets(path)
        if duration <= 0:
            duration = frames / fps
        return VideoInfo(
            width=width,
            height=height,
            frames=frames,
            fps=fps,
            duration=duration,
            codec=stream.codec_context.name,
            pix_fmt=str(first.format.name),
            has_audio=bool(container.streams.audio),
            rotation=rotation,
            time_base=_time_base(stream),
        )
    finally:
        container.close()


def count_packets(path: Path) -> int:
    """Count the video packets of a file by demuxing only (no decoding)."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size)
    except av.error.FFmpegError:
        return 0
    finally:
        container.close()


class FrameReader:
    """Streams the frames of a video as RGB in display orientation, with monotonic pts.

    ``time_base`` and ``fps`` are known after construction. Truncated or corrupt streams raise
    InvalidVideoError only when no frame at all could be decoded; a stream that breaks later
    ends there (what decoded is kept), and ``errors`` counts what was skipped.
    """

    def __init__(self, path: Path, threads: bool = True) -> None:
        self.path = Path(path)
        self._container = _open(self.path)
        self._stream = self._container.streams.video[0]
        if threads:
            self._stream.thread_type = "AUTO"
        self.time_base = _time_base(self._stream)
        self.fps = _stream_fps(self._stream)
        self.errors = 0

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _decoded(self) -> Iterator[av.VideoFrame]:
        demux = self._container.demux(self._stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                return
            except av.error.FFmpegError:
                self.errors += 1
                return
            try:
                yield from packet.decode()
            except av.error.FFmpegError:
                # One broken packet must not lose the rest of a real video.
                self.errors += 1
                continue

    def _timed(self) -> Iterator[tuple[int, av.VideoFrame, int]]:
        """(index, decoded picture, pts) of every frame, pts made strictly increasing."""
        step = max(1, round(1 / (self.fps * self.time_base))) if self.time_base else 1
        last_pts: int | None = None
        index = 0
        for frame in self._decoded():
            pts = frame.pts
            if pts is None:
                pts = (last_pts + step) if last_pts is not None else 0
            if last_pts is not None and pts <= last_pts:
                pts = last_pts + 1  # keep timestamps strictly increasing for the muxer
            last_pts = pts
            yield index, frame, int(pts)
            index += 1
        if index == 0:
            raise InvalidVideoError(f"{self.path.name}: no frame could be decoded")

    def frames(self) -> Iterator[Frame]:
        for index, frame, pts in self._timed():
            yield Frame(index=index, rgb=_rotate(frame.to_ndarray(format="rgb24"), _rotation_of(frame)), pts=pts)

    def clips(self, clip_len: int = CLIP_LEN) -> Iterator[Clip]:
        """Clips of decoded pictures; RGB conversion happens only for frames a caller reads."""
        buffer: list[av.VideoFrame] = []
        pts: list[int] = []
        start = 0
        clip_index = 0
        rotation = 0
        for index, frame, stamp in self._timed():
            if buffer and (frame.width, frame.height) != (buffer[0].width, buffer[0].height):
                raise InvalidVideoError(
                    f"{self.path.name}: frame size changes mid-stream "
                    f"({buffer[0].width}x{buffer[0].height} -> {frame.width}x{frame.height}), "
                    "which is not supported"
                )
            if not buffer:
                start, rotation = index, _rotation_of(frame)
            buffer.append(frame)
            pts.append(stamp)
            if len(buffer) == clip_len:
                yield Clip(clip_index, start, buffer, tuple(pts), rotation)
                clip_index += 1
                buffer, pts = [], []
        if buffer:
            yield Clip(clip_index, start, buffer, tuple(pts), rotation)


def iter_clips(path: Path, clip_len: int = CLIP_LEN) -> Iterator[Clip]:
    """Open a video and stream its clips; closes the file when the iterator ends."""
    with FrameReader(path) as reader:
        yield from reader.clips(clip_len)


def iter_frames_rgb(path: Path) -> Iterator[np.ndarray]:
    with FrameReader(path) as reader:
        for frame in reader.frames():
            yield frame.rgb


def output_pix_fmt(width: int, height: int) -> str:
    """yuv420p where the size allows it (plays everywhere); 4:2:0 cannot represent an odd
    width or height, so such videos are written in yuv444p to keep their exact size."""
    return "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"


class VideoWriter:
    """Writes RGB frames as H.264 in an mp4 with given timestamps, and muxes audio alongside.

    Audio packets (from an AAC ``.m4a`` file, as stored in bundles) are interleaved by time
    as video is written, so nothing is buffered for the whole video.
    """

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        time_base: Fraction,
        fps: float,
        audio_path: Path | None = None,
        crf: int = 18,
        preset: str = "veryfast",
    ) -> None:
        self.path = Path(path)
        self.width, self.height = width, height
        self._container = av.open(str(self.path), mode="w", format="mp4")
        rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width = width
        self._stream.height = height
        self._stream.pix_fmt = output_pix_fmt(width, height)
        self._stream.time_base = time_base
        self._stream.codec_context.time_base = time_base
        self._stream.options = {"crf": str(crf), "preset": preset, "movflags": "+faststart"}
        self._time_base = time_base
        self._audio_in: av.container.InputContainer | None = None
        self._audio_packets: Iterator[av.Packet] | None = None
        self._audio_stream = None
        self._pending_audio: av.Packet | None = None
        if audio_path is not None and Path(audio_path).is_file():
            self._audio_in = av.open(str(audio_path))
            source = self._audio_in.streams.audio[0]
            self._audio_stream = self._container.add_stream_from_template(source)
            self._audio_packets = self._audio_in.demux(source)
        self.frames_written = 0

    def _mux_audio_until(self, seconds: float | None) -> None:
        if self._audio_packets is None:
            return
        while True:
            packet = self._pending_audio or next(self._audio_packets, None)
            self._pending_audio = None
            if packet is None:
                self._audio_packets = None
                return
            if packet.dts is None:  # flush packet of the demuxer
                continue
            if (
                seconds is not None
                and packet.pts is not None
                and packet.time_base is not None
                and float(packet.pts * packet.time_base) > seconds
            ):
                self._pending_audio = packet
                return
            packet.stream = self._audio_stream
            self._container.mux(packet)

    def write(self, rgb: np.ndarray, pts: int) -> None:
        if rgb.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame {rgb.shape[1]}x{rgb.shape[0]} != writer {self.width}x{self.height}")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = pts
        frame.time_base = self._time_base
        self._mux_audio_until(float(pts * self._time_base))
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._mux_audio_until(None)
        self._container.close()
        if self._audio_in is not None:
            self._audio_in.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            try:
                self._container.close()
            finally:
                if self._audio_in is not None:
                    self._audio_in.close()


def extract_audio(source: Path, dest: Path) -> dict[str, object] | None:
    """Copy the first audio stream of ``source`` into an AAC ``.m4a`` at ``dest``.

    AAC is copied bit for bit; any other codec is transcoded to AAC (mp4 players all take it).
    Returns a description for the manifest, or None when the source has no (readable) audio.
    """
    try:
        inp = av.open(str(source), metadata_errors="ignore")
    except av.error.FFmpegError:
        return None
    try:
        if not inp.streams.audio:
            return None
        source_stream = inp.streams.audio[0]
        copied = source_stream.codec_context.name == "aac"
        out = av.open(str(dest), mode="w", format="mp4")
        try:
            if copied:
                out_stream = out.add_stream_from_template(source_stream)
                for packet in inp.demux(source_stream):
                    if packet.dts is None:
                        continue
                    packet.stream = out_stream
                    out.mux(packet)
            else:
                _transcode_audio(inp, source_stream, out)
        finally:
            out.close()
        info = av.open(str(dest))
        try:
            if not info.streams.audio:
                dest.unlink(missing_ok=True)
                return None
            stream = info.streams.audio[0]
            return {
                "codec": "aac",
                "copied": copied,
                "source_codec": source_stream.codec_context.name,
                "sample_rate": stream.codec_context.sample_rate,
                "channels": stream.codec_context.channels,
            }
        finally:
            info.close()
    except av.error.FFmpegError:
        dest.unlink(missing_ok=True)
        return None  # unreadable audio must not make the video unusable
    finally:
        inp.close()


def _transcode_audio(inp: av.container.InputContainer, source_stream: Any, out: Any) -> None:
    rate = source_stream.codec_context.sample_rate or 48000
    out_stream = out.add_stream("aac", rate=rate)
    layout = source_stream.codec_context.layout.name if source_stream.codec_context.layout else "stereo"
    if source_stream.codec_context.channels and source_stream.codec_context.channels > 2:
        layout = "stereo"
    out_stream.layout = layout
    out_stream.bit_rate = 128000
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
    for frame in inp.decode(source_stream):
        frame.pts = None
        for resampled in resampler.resample(frame):
            for packet in out_stream.encode(resampled):
                out.mux(packet)
    for resampled in resampler.resample(None):
        for packet in out_stream.encode(resampled):
            out.mux(packet)
    for packet in out_stream.encode(None):
        out.mux(packet)


ProgressFn = Callable[[float], None]
