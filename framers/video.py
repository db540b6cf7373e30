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
from framers.fidelity import (
    DecodePlan,
    Deinterlacer,
    FrameConverter,
    alpha_decoder,
    apply_orientation,
    describe_streams,
    main_video_stream,
    plan_for,
)
from framers.geometry import CLIP_LEN
from framers.threads import limit_codec_context

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

    __slots__ = ("_convert", "_decoded", "_plan", "_rgb", "_rotation", "_size", "_stacked", "index", "pts",
                 "start")

    def __init__(self, index: int, start: int, frames: np.ndarray | Sequence[av.VideoFrame],
                 pts: tuple[int, ...], rotation: int = 0, plan: DecodePlan | None = None) -> None:
        self.index = index
        self.start = start
        self.pts = tuple(pts)
        self._rotation = rotation
        # a DecodePlan (source colours, display matrix with flips, HDR, alpha) replaces ``rotation``
        self._plan = plan
        self._convert: FrameConverter | None = plan.to_rgb if plan is not None else None
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
            quarter = ("transpose" in plan.ops) if plan is not None else (rotation // 90) % 2
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
            if self._convert is not None:
                rgb = self._convert(self._decoded[i])
            else:
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
        if not self._decoded or (self._plan is not None and self._plan.special):
            return global_view(self.frames, size)  # HDR / alpha: the view of what is shown
        if self._plan is not None:
            return np.stack([apply_orientation(_view_of_frame(f, size), self._plan.ops) for f in self._decoded])
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
    try:
        main_video_stream(container)
    except IndexError:
        container.close()
        raise InvalidVideoError(f"{path.name}: the file has no video stream") from None
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
        stream = main_video_stream(container)
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
        if "transpose" in plan_for(stream, first).ops:
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
        stream = main_video_stream(container)
        return sum(1 for packet in container.demux(stream) if packet.size)
    except av.error.FFmpegError:
        return 0
    finally:
        container.close()


class FrameReader:
    """Streams the frames of a video as RGB in display orientation, with monotonic pts.

    The main video stream is FFmpeg's best one (never cover art). ``time_base`` and ``fps`` are
    known after construction; ``plan`` (a :class:`framers.fidelity.DecodePlan`: source colours,
    display matrix, deinterlacing, HDR tone-map, alpha) after the first frame; ``end_pts`` (when
    the last frame stops being shown, in ``time_base``) after the last. Truncated or corrupt
    streams raise InvalidVideoError only when no frame at all could be decoded; a stream that
    breaks later ends there (what decoded is kept), and ``errors`` counts what was skipped.
    """

    def __init__(self, path: Path, threads: bool = True) -> None:
        self.path = Path(path)
        self._container = _open(self.path)
        self._stream = main_video_stream(self._container)
        if threads:
            self._stream.thread_type = "AUTO"
            limit_codec_context(self._stream.codec_context)
        self.time_base = _time_base(self._stream)
        self.fps = _stream_fps(self._stream)
        self.errors = 0
        self.plan: DecodePlan | None = None
        self.end_pts: int | None = None
        self.tail_irregular = False  # the last frame is shown longer/shorter than the gap before it
        self._alpha_decoder, self._alpha_declared = alpha_decoder(self._stream)
        self._deinterlacer: Deinterlacer | None = None
        # read now: a closed container's streams must not be touched
        self._stream_facts = {"video_stream": self._stream.index,
                              "other_streams": describe_streams(self._container, self._stream.index)}

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """Facts for the manifest's ``source`` dict (after reading): colour, geometry, fields,
        alpha, the main stream's index, the other streams, ``end_pts`` and ``warnings``."""
        plan = self.plan
        facts: dict[str, Any] = plan.manifest() if plan is not None else {}
        facts.update(self._stream_facts)
        facts["end_pts"] = self.end_pts
        facts["tail_irregular"] = self.tail_irregular
        facts["warnings"] = plan.all_warnings() if plan is not None else []
        ignored = [s for s in facts["other_streams"] if s["type"] == "video"]
        if ignored:
            facts["warnings"].append(
                f"video stream #{facts['video_stream']} used; other video streams ignored: "
                + ", ".join(f"#{s['index']} {s['codec']}" + (" (cover art)" if s.get("attached_pic") else "")
                            for s in ignored)
            )
        return facts

    def _packets_decoded(self) -> Iterator[av.VideoFrame]:
        decoder = self._alpha_decoder
        demux = self._container.demux(self._stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                break
            except av.error.FFmpegError:
                self.errors += 1
                break
            try:
                if decoder is None:
                    yield from packet.decode()
                elif packet.size:
                    yield from decoder.decode(packet)
            except av.error.FFmpegError:
                # One broken packet must not lose the rest of a real video.
                self.errors += 1
                continue
        if decoder is not None:
            try:
                yield from decoder.decode(None)
            except av.error.FFmpegError:
                self.errors += 1

    def _decoded(self) -> Iterator[av.VideoFrame]:
        for frame in self._packets_decoded():
            if self.plan is None:
                lost = self._alpha_declared and self._alpha_decoder is None
                self.plan = plan_for(self._stream, frame, alpha_lost=lost)
                if self.plan.deinterlace:
                    self._deinterlacer = Deinterlacer(frame, self.time_base, self.plan.deinterlace)
            if self._deinterlacer is not None:
                yield from self._deinterlacer.push(frame)
            else:
                yield frame
        if self._deinterlacer is not None:
            yield from self._deinterlacer.push(None)

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
            shown = _frame_duration(frame, self.time_base)
            gap = (pts - last_pts) if last_pts is not None else step
            if shown <= 0:
                shown = gap
            self.end_pts = int(pts) + int(shown)
            self.tail_irregular = abs(int(shown) - int(gap)) > max(1, int(gap) // 50)
            last_pts = pts
            if self.plan is not None and self.plan.alpha and not self.plan.alpha_seen:
                self.plan.note_alpha(frame)
            yield index, frame, int(pts)
            index += 1
        if index == 0:
            raise InvalidVideoError(f"{self.path.name}: no frame could be decoded")

    def frames(self) -> Iterator[Frame]:
        for index, frame, pts in self._timed():
            assert self.plan is not None
            yield Frame(index=index, rgb=self.plan.to_rgb(frame), pts=pts)

    def clips(self, clip_len: int = CLIP_LEN) -> Iterator[Clip]:
        """Clips of decoded pictures; RGB conversion happens only for frames a caller reads."""
        buffer: list[av.VideoFrame] = []
        pts: list[int] = []
        start = 0
        clip_index = 0
        for index, frame, stamp in self._timed():
            if buffer and (frame.width, frame.height) != (buffer[0].width, buffer[0].height):
                raise InvalidVideoError(
                    f"{self.path.name}: frame size changes mid-stream "
                    f"({buffer[0].width}x{buffer[0].height} -> {frame.width}x{frame.height}), "
                    "which is not supported"
                )
            if not buffer:
                start = index
            buffer.append(frame)
            pts.append(stamp)
            if len(buffer) == clip_len:
                yield Clip(clip_index, start, buffer, tuple(pts), plan=self.plan)
                clip_index += 1
                buffer, pts = [], []
        if buffer:
            yield Clip(clip_index, start, buffer, tuple(pts), plan=self.plan)


def _frame_duration(frame: av.VideoFrame, time_base: Fraction) -> int:
    """How long a decoded picture is shown, in ``time_base`` units (0 when unknown)."""
    try:
        duration = int(frame.duration or 0)
    except (AttributeError, TypeError, ValueError):
        return 0
    tb = frame.time_base
    if duration <= 0 or not tb or Fraction(tb) == time_base:
        return max(0, duration)
    return round(duration * Fraction(tb) / time_base)


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

    Audio packets (every audio stream of an ``.m4a`` file, as stored in bundles) are
    interleaved by time as video is written, so nothing is buffered for the whole video; their
    timestamps are kept, so an audio track that starts late still starts late.

    ``colour`` (``{"primaries", "transfer", "matrix", "range"}``, FFmpeg enum ids, as in a
    manifest's ``source.colour.output``) sets the RGB -> YUV matrix and range and the tags of the
    output; without it the output is BT.601 limited range, untagged (the old behaviour).
    ``sample_aspect_ratio`` is written to the stream (mp4 ``pasp`` and H.264 VUI). ``end_pts``
    (in ``time_base``) is when the last frame stops being shown: it sets the last frame's
    duration, so the output lasts as long as the source; ``b_frames=False`` (an irregular last
    frame: an end card, a VFR tail) makes that duration the one a decoder reports for it.
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
        colour: dict[str, int] | None = None,
        sample_aspect_ratio: Fraction | None = None,
        end_pts: int | None = None,
        b_frames: bool = True,
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
        options: dict[str, object] = {"crf": str(crf), "preset": preset, "movflags": "+faststart"}
        if not b_frames:
            # mp4 gives every sample but the last the gap to the next dts, and the decoder gives a
            # picture its sample's duration: without B-frames decode order is display order, so
            # the last frame shown keeps its own duration (a VFR tail, a GIF end card). B-frames
            # save ~40 % of the output's bytes, so they go only when the tail needs it.
            options["bf"] = "0"
        self._stream.options = options
        limit_codec_context(self._stream.codec_context)
        self._colour = dict(colour) if colour else None
        self._reformatter = VideoReformatter()  # one cached conversion context for every frame
        if self._colour:
            cc = self._stream.codec_context
            cc.color_primaries = int(self._colour["primaries"])
            cc.color_trc = int(self._colour["transfer"])
            cc.colorspace = int(self._colour["matrix"])
            cc.color_range = int(self._colour["range"])
        if sample_aspect_ratio:
            self._stream.sample_aspect_ratio = Fraction(sample_aspect_ratio)
            self._stream.codec_context.sample_aspect_ratio = Fraction(sample_aspect_ratio)
        self._time_base = time_base
        self._end_pts = end_pts
        self._held: tuple[np.ndarray, int] | None = None  # the newest frame waits for its duration
        self._durations: dict[int, int] = {}  # display duration of each pts, until its packet is muxed
        self._last_duration = 0
        self._audio_in: av.container.InputContainer | None = None
        self._audio_packets: Iterator[av.Packet] | None = None
        self._audio_streams: dict[int, Any] = {}
        self._pending_audio: av.Packet | None = None
        if audio_path is not None and Path(audio_path).is_file():
            self._audio_in = av.open(str(audio_path))
            for source in self._audio_in.streams.audio:
                self._audio_streams[source.index] = self._container.add_stream_from_template(source)
            if self._audio_streams:
                self._audio_packets = self._audio_in.demux(*self._audio_in.streams.audio)
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
            packet.stream = self._audio_streams[packet.stream.index]
            self._container.mux(packet)

    def _mux_video(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            if packet.pts is not None and packet.pts in self._durations:
                packet.duration = self._durations.pop(packet.pts)
            self._container.mux(packet)

    def _encode(self, rgb: np.ndarray, pts: int, duration: int) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        if self._colour:
            frame = self._reformatter.reformat(frame, format=self._stream.pix_fmt,
                                               dst_colorspace=int(self._colour["matrix"]),
                                               dst_color_range=int(self._colour["range"]))
            frame.color_primaries = int(self._colour["primaries"])
            frame.color_trc = int(self._colour["transfer"])
        frame.pts = pts
        frame.time_base = self._time_base
        self._durations[pts] = self._last_duration = max(1, duration)
        self._mux_video(self._stream.encode(frame))

    def write(self, rgb: np.ndarray, pts: int) -> None:
        """Add one RGB uint8 [height, width, 3] frame shown from ``pts`` (in ``time_base``)."""
        if rgb.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame {rgb.shape[1]}x{rgb.shape[0]} != writer {self.width}x{self.height}")
        self._mux_audio_until(float(pts * self._time_base))
        if self._held is not None:
            held, held_pts = self._held
            self._encode(held, held_pts, pts - held_pts)
        self._held = (np.array(rgb, copy=True), pts)
        self.frames_written += 1

    def close(self) -> None:
        if self._held is not None:
            held, held_pts = self._held
            if self._end_pts is not None and self._end_pts > held_pts:
                duration = self._end_pts - held_pts
            else:
                duration = self._last_duration
            self._held = None
            self._encode(held, held_pts, duration)
        self._mux_video(self._stream.encode(None))
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
    """Keep every decodable audio stream of ``source`` in an AAC ``.m4a`` at ``dest``.

    AAC is copied bit for bit; any other codec (PCM with an unset channel layout, Opus, FLAC,
    AC-3, MP3, ...) is transcoded to AAC with an explicit layout (mono, stereo; more channels are
    downmixed to stereo) and its start time kept, so audio that starts late stays late.
    Returns a description for the manifest: the first kept stream's fields (``codec``, ``copied``,
    ``source_codec``, ``sample_rate``, ``channels``) plus ``streams`` (one entry per kept stream,
    with ``source_index`` and ``start`` in seconds) and ``dropped`` (streams that could not be
    kept, with the reason); or None when no audio stream could be kept (``dest`` removed).
    """
    try:
        inp = av.open(str(source), metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError):
        return None
    kept: list[dict[str, object]] = []
    dropped: list[dict[str, object]] = []
    try:
        sources = list(inp.streams.audio)
        if not sources:
            return None
        usable = []
        for stream in sources:
            if _audio_decodes(source, stream.index):
                usable.append(stream)
            else:
                dropped.append({"source_index": stream.index, "codec": _codec_name(stream),
                                "reason": "no audio frame could be decoded"})
        if not usable:
            return {"dropped": dropped, "streams": []}
        out = av.open(str(dest), mode="w", format="mp4")
        try:
            writers = [_AudioStreamWriter(out, stream) for stream in usable]
            for packet in inp.demux(*usable):
                writers[usable.index(packet.stream)].feed(packet)  # type: ignore[arg-type]
            for writer in writers:
                writer.finish()
        finally:
            out.close()
        info = av.open(str(dest))
        try:
            written = list(info.streams.audio)
        finally:
            info.close()
        for writer, stream in zip(writers, written, strict=False):
            kept.append({
                "codec": "aac",
                "copied": writer.copied,
                "source_codec": writer.source_codec,
                "source_index": writer.source_index,
                "sample_rate": stream.codec_context.sample_rate,
                "channels": stream.codec_context.channels,
                "layout": writer.layout,
                "start": writer.start,
                "downmixed": writer.downmixed,
            })
    except av.error.FFmpegError as exc:
        dest.unlink(missing_ok=True)
        return {"dropped": [*dropped, *({"source_index": s.index, "codec": _codec_name(s), "reason": str(exc)}
                                         for s in inp.streams.audio)], "streams": []}
    finally:
        inp.close()
    if not kept:
        dest.unlink(missing_ok=True)
        return {"dropped": dropped, "streams": []}
    return {**{k: v for k, v in kept[0].items() if k not in ("source_index", "layout", "start", "downmixed")},
            "streams": kept, "dropped": dropped}


def source_facts(reader: FrameReader, audio: dict[str, Any] | None,
                 source_has_audio: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(facts for the manifest's ``source`` dict, the manifest's ``audio`` entry) after a read.

    ``audio`` is what :func:`extract_audio` returned. The manifest's audio entry is None unless
    at least one stream was kept; ``has_audio`` says what the bundle really holds, and
    ``warnings`` gathers every deliberate change (deinterlacing, tone-mapping, alpha, audio).
    """
    facts = reader.describe()
    kept = audio if audio and audio.get("streams") else None
    facts["has_audio"] = kept is not None
    facts["source_has_audio"] = source_has_audio
    if audio and audio.get("dropped"):
        facts["audio_dropped"] = audio["dropped"]
    facts["warnings"] = [*facts.get("warnings", []), *audio_warnings(audio, source_has_audio)]
    return facts, kept


def writer_options(source: dict[str, Any]) -> dict[str, Any]:
    """VideoWriter keyword arguments from a manifest's ``source`` dict (colour tags, sample aspect
    ratio, end of the last frame); bundles written before these facts existed give ``{}``."""
    options: dict[str, Any] = {}
    colour = (source.get("colour") or {}).get("output")
    if colour:
        options["colour"] = {k: int(colour[k]) for k in ("primaries", "transfer", "matrix", "range")}
    sar = source.get("sample_aspect_ratio")
    if sar:
        options["sample_aspect_ratio"] = Fraction(int(sar[0]), int(sar[1]))
    if source.get("end_pts") is not None:
        options["end_pts"] = int(source["end_pts"])
    if source.get("tail_irregular"):
        options["b_frames"] = False
    return options


def audio_warnings(audio: dict[str, Any] | None, source_has_audio: bool) -> list[str]:
    """Human-readable notes on what happened to a source's audio (for manifest, CLI and job)."""
    notes: list[str] = []
    audio = audio or {}
    for entry in audio.get("dropped") or []:
        notes.append(f"audio stream #{entry['source_index']} ({entry.get('codec')}) dropped: {entry['reason']}")
    if source_has_audio and not audio.get("streams") and not notes:
        notes.append("the source's audio could not be kept: the output has no audio")
    for entry in audio.get("streams") or []:
        if entry.get("downmixed"):
            notes.append(f"audio stream #{entry['source_index']} downmixed to stereo")
    return notes


def _codec_name(stream: Any) -> str | None:
    try:
        return stream.codec_context.name
    except (AttributeError, av.error.FFmpegError):
        return None


def _audio_decodes(source: Path, index: int) -> bool:
    """Whether at least one audio frame of stream ``index`` decodes (cheap: stops at the first)."""
    try:
        with av.open(str(source), metadata_errors="ignore") as probe_in:
            stream = probe_in.streams[index]
            for _ in probe_in.decode(stream):
                return True
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError, IndexError):
        return False
    return False


class _AudioStreamWriter:
    """One source audio stream into the bundle's m4a: AAC copied, anything else transcoded."""

    def __init__(self, out: Any, source: Any) -> None:
        self.out = out
        self.source = source
        ctx = source.codec_context
        self.source_codec = ctx.name
        self.source_index = source.index
        self.copied = ctx.name == "aac"
        tb = source.time_base
        self.start = float(source.start_time * tb) if source.start_time is not None and tb else 0.0
        self.layout: str | None = None
        self.downmixed = False
        if self.copied:
            self.stream = out.add_stream_from_template(source)
            self.layout = ctx.layout.name if ctx.layout else None
            return
        self.rate = ctx.sample_rate or 48000
        channels = ctx.channels or 2
        # PCM in AVI/MXF often has no channel layout ("2 channels"): the AAC encoder needs one.
        self.layout = "mono" if channels == 1 else "stereo"
        self.downmixed = channels > 2
        self.stream = out.add_stream("aac", rate=self.rate)
        self.stream.layout = self.layout
        self.stream.bit_rate = 128000
        self.stream.time_base = Fraction(1, self.rate)
        self.resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
        self.next_pts: int | None = None

    def feed(self, packet: av.Packet) -> None:
        """Copy or transcode one demuxed packet."""
        if self.copied:
            if packet.dts is None:
                return
            packet.stream = self.stream
            self.out.mux(packet)
            return
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            return  # a broken packet loses its samples, not the stream
        for frame in frames:
            if self.next_pts is None:  # the stream's start time survives (late audio stays late)
                start = frame.pts * frame.time_base if frame.pts is not None and frame.time_base else self.start
                self.next_pts = round(start * self.rate)
            self._encode(self.resampler.resample(frame))  # type: ignore[arg-type]

    def _encode(self, frames: list[av.AudioFrame]) -> None:
        for frame in frames:
            frame.pts = self.next_pts
            frame.time_base = Fraction(1, self.rate)
            self.next_pts = (self.next_pts or 0) + frame.samples
            for packet in self.stream.encode(frame):
                self.out.mux(packet)

    def finish(self) -> None:
        """Flush resampler and encoder."""
        if self.copied:
            return
        if self.next_pts is not None:
            self._encode(self.resampler.resample(None))
        for packet in self.stream.encode(None):
            self.out.mux(packet)


ProgressFn = Callable[[float], None]
