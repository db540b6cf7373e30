"""Video input with PyAV: probing and a streaming frame/clip reader (clips: ``framers.clip``;
the mp4 writer: ``framers.video_writer``; audio: ``framers.audio``).

Frames are RGB uint8 [H, W, 3] in display orientation (rotation metadata applied). Timestamps
are kept as integer pts in the stream's time base so variable frame rate survives a round trip.
Nothing here holds more than one clip of frames, so memory does not grow with video length.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np

from framers.audio import audio_warnings
from framers.bundle import holds_bundle
from framers.clip import Clip, Frame
from framers.errors import FrameTooLargeError, InvalidVideoError
from framers.fidelity import (
    COMB_CHECK_FRAMES,
    DecodePlan,
    Deinterlacer,
    alpha_decoder,
    describe_streams,
    main_video_stream,
    plan_for,
    woven_parity,
)
from framers.geometry import CLIP_LEN
from framers.threads import limit_codec_context

# Output timing resolution when a source has no usable time base.
DEFAULT_TIME_BASE = Fraction(1, 90000)
#: ``FrameReader._woven``'s answers by (path, size, mtime): the first reader of a source decides
_WOVEN: dict[tuple[str, int, int], str | None] = {}


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


#: FFmpeg's decoders that render text files as pictures (its ``tty`` demuxer opens any ``.txt``,
#: ``.asc``, ``.nfo`` or ``.diz`` file as a video of its characters): a text file, not a video
TEXT_ART_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})


def _open(path: Path) -> av.container.InputContainer:
    path = Path(path)
    if holds_bundle(path):
        raise InvalidVideoError(f"{path.name}: a FrameRS bundle, not a video file; rebuild it with reconstruct")
    if path.is_dir():
        raise InvalidVideoError(f"{path.name}: a folder, not a video file")
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
        stream = main_video_stream(container)
    except IndexError:
        container.close()
        raise InvalidVideoError(f"{path.name}: the file has no video stream") from None
    if stream.codec_context.name in TEXT_ART_CODECS:
        container.close()
        raise InvalidVideoError(f"{path.name}: a text file, not a video (FFmpeg would draw its characters as "
                                f"{stream.codec_context.name!r} text art)")
    return container


def _rotation_of(frame: av.VideoFrame) -> int:
    try:
        angle = float(frame.rotation)
    except (AttributeError, TypeError, ValueError):
        return 0
    if not math.isfinite(angle):
        return 0
    return round(angle / 90.0) * 90 % 360


#: FFmpeg's demuxers of bare elementary streams (``.h264``, ``.hevc``, ``.m2v``, ...): no container
#: timing, so their frames carry no timestamps and the stream's average rate is the demuxer's own
#: default (25 fps), not the rate the bitstream declares (H.264/HEVC VUI timing), which FFmpeg's
#: tools use: a fresh-user trial's 30 fps .h264 and .hevc came out at 25 fps, 20 % slow, unsaid
RAW_STREAM_FORMATS = frozenset({"h264", "hevc", "vvc", "mpegvideo", "m4v", "cavsvideo", "avs2", "avs3", "h261",
                                "h263", "vc1", "dirac", "obu"})


def is_raw_stream(stream: av.video.stream.VideoStream) -> bool:
    """Whether ``stream`` comes from a bare elementary stream (``RAW_STREAM_FORMATS``)."""
    container = getattr(stream, "container", None)
    name = container.format.name if container is not None and container.format is not None else ""
    return bool(set(name.split(",")) & RAW_STREAM_FORMATS)


def declared_rate(stream: av.video.stream.VideoStream) -> float | None:
    """The frame rate the bitstream itself declares (the decoder's, e.g. H.264 VUI timing), fps;
    None when it declares none (the stream's guessed rate is then the demuxer's default: the H.264
    conformance streams among val's clips)."""
    rate = stream.codec_context.framerate
    return float(rate) if rate and float(rate) > 0 and math.isfinite(float(rate)) else None


def _stream_fps(stream: av.video.stream.VideoStream) -> float:
    """Frames per second of ``stream``: the container's average rate; for a bare elementary
    stream the rate its bitstream declares (``declared_rate``), as FFmpeg's tools use."""
    if is_raw_stream(stream):
        declared = declared_rate(stream)
        if declared is not None:
            return declared
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
        elif container.duration and not is_raw_stream(stream):  # a bare stream's is a bitrate guess
            duration = container.duration / av.time_base
        if frames <= 0:
            frames = count_packets(path)
        if duration <= 0:
            duration = frames / fps
        elif stream.duration and fps > 0:
            # An MP4 edit list that trims the start (``ffmpeg -ss 0.5 -c copy``) keeps the samples
            # before the cut in the track: its sample count holds them, its duration does not (a
            # fresh-user trial's 45-frame video declared 60 and was said to be truncated).
            # One frame's difference is left: some muxers end the duration at the last frame's start.
            shown = max(1, math.ceil(duration * fps - 1e-6))
            frames = shown if shown < frames - 1 else frames
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
        # a bare elementary stream that declares no rate: the demuxer's default was assumed
        self.fps_assumed = is_raw_stream(self._stream) and declared_rate(self._stream) is None
        self.errors = 0
        self.retimed = 0  # frames whose timestamp did not increase (re-timed at the nominal rate)
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
        if self.fps_assumed:
            facts["warnings"].append(
                f"the stream has no timestamps and declares no frame rate (a bare elementary stream): "
                f"{self.fps:g} fps assumed")
        if self.retimed:
            facts["warnings"].append(
                f"{self.retimed} frames had a timestamp that did not increase: each is shown one nominal "
                f"frame duration ({self.fps:g} fps) after the previous one")
        ignored = [s for s in facts["other_streams"] if s["type"] == "video"]
        if ignored:
            facts["warnings"].append(
                f"video stream #{facts['video_stream']} used; other video streams ignored: "
                + ", ".join(f"#{s['index']} {s['codec']}" + (" (cover art)" if s.get("attached_pic") else "")
                            for s in ignored)
            )
        # captions are the uploader's content (a platform re-attaches them, but must know to);
        # data tracks (timecode, camera metadata: most phone and camera files) stay in the manifest
        dropped = [s for s in facts["other_streams"] if s["type"] == "subtitle"]
        if dropped:
            facts["warnings"].append(
                "subtitle streams not kept (the bundle holds video and audio only): "
                + ", ".join(f"#{s['index']} {s['type']}" + (f" {s['codec']}" if s.get("codec") else "")
                            for s in dropped))
        return facts

    def _packets_decoded(self) -> Iterator[av.VideoFrame]:
        decoder = self._alpha_decoder
        demux = self._container.demux(self._stream)
        # A packet the demuxer marks corrupt waits for the next one: the last packet of a file
        # cut off is partial, and with frame threading decoding it silently lost the frames the
        # decoder held for reordering (a fresh-user trial's truncated mp4: 34 of the 36 frames
        # FFmpeg shows). It is dropped there; anywhere else it is decoded (error concealment).
        pending: av.Packet | None = None
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                break
            except av.error.FFmpegError:
                self.errors += 1
                break
            if pending is not None:
                if packet.size:
                    yield from self._decode_packet(decoder, pending)
                else:
                    self.errors += 1
                pending = None
            if packet.is_corrupt and packet.size:
                pending = packet
                continue
            yield from self._decode_packet(decoder, packet)
        if pending is not None:
            self.errors += 1
        if decoder is not None:
            try:
                yield from decoder.decode(None)
            except av.error.FFmpegError:
                self.errors += 1

    def _decode_packet(self, decoder: Any, packet: av.Packet) -> Iterator[av.VideoFrame]:
        """Frames of one demuxed packet, by ``decoder`` (the alpha decoder; None: the stream's)."""
        try:
            if decoder is None:
                yield from packet.decode()
            elif packet.size:
                yield from decoder.decode(packet)
        except av.error.FFmpegError:
            # One broken packet must not lose the rest of a real video.
            self.errors += 1

    def _decoded(self) -> Iterator[av.VideoFrame]:
        source = self._packets_decoded()
        first = next(source, None)
        if first is None:
            return
        lost = self._alpha_declared and self._alpha_decoder is None
        self.plan = plan_for(self._stream, first, alpha_lost=lost)
        head = [first]
        if not self.plan.deinterlace:  # flagged progressive: look for woven fields all the same
            parity = self._woven(head, source)
            if parity:
                self.plan.deinterlace = parity
                self.plan.warnings.append(
                    f"interlaced source ({parity}): flagged progressive, but its first frames hold woven fields "
                    "(telecine or an interlaced capture); deinterlaced on input with bwdif, one frame per frame")
        if self.plan.deinterlace:
            self._deinterlacer = Deinterlacer(first, self.time_base, self.plan.deinterlace)
        for index, frame in enumerate(itertools.chain(head, source)):
            if self._deinterlacer is None and frame.interlaced_frame:
                self._deinterlacer = self._turned_interlaced(frame, index)
            if self._deinterlacer is not None:
                yield from self._deinterlacer.push(frame)
            else:
                yield frame
        if self._deinterlacer is not None:
            yield from self._deinterlacer.push(None)

    def _turned_interlaced(self, frame: av.VideoFrame, index: int) -> Deinterlacer:
        """The deinterlacer from the first frame flagged interlaced (``frame``, decoded ``index``)
        of a video that started progressive (a broadcast TS cutting from progressive to interlaced
        content; a fresh-user trial's came out with woven fields flagged progressive, unsaid): FFmpeg's
        ``bwdif`` for the frames flagged interlaced only, each with its own field order; said."""
        assert self.plan is not None  # made on the first frame
        self.plan.deinterlace = "auto"
        self.plan.warnings.append(
            f"interlaced from frame {index} on (the first frames are progressive): the frames flagged "
            "interlaced are deinterlaced on input with bwdif, one frame per frame")
        return Deinterlacer(frame, self.time_base, "auto", only_flagged=True)

    def _woven(self, head: list[av.VideoFrame], source: Iterator[av.VideoFrame]) -> str | None:
        """``fidelity.woven_parity`` of a video's first ``COMB_CHECK_FRAMES`` frames (``head``, the
        first decoded, is extended from ``source``), once per file and process: the codec reads a
        source several times, and later readers neither look ahead nor measure."""
        try:
            stat = self.path.stat()
            key: tuple[str, int, int] | None = (str(self.path.resolve()), stat.st_size, stat.st_mtime_ns)
        except OSError:
            key = None
        if key is not None and key in _WOVEN:
            return _WOVEN[key]
        head += itertools.islice(source, COMB_CHECK_FRAMES - len(head))
        parity = woven_parity(head, self.time_base)
        if key is not None:
            if len(_WOVEN) > 256:
                _WOVEN.clear()
            _WOVEN[key] = parity
        return parity

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
                # a repeated or backward timestamp (a broken muxer): shown one nominal frame
                # duration after the previous frame, and said (``describe``)
                pts = last_pts + step
                self.retimed += 1
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


def iter_frames_rgb(path: Path) -> Iterator[np.ndarray]:
    with FrameReader(path) as reader:
        for frame in reader.frames():
            yield frame.rgb


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
