"""The H.264 mp4 writer of reconstructed videos: RGB frames with the source's timestamps,
colour tags, aspect ratio and audio (muxed by time as video is written)."""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
import av.video.stream
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from framers import defaults
from framers.audio import copy_stream_tags
from framers.h264_sei import SeiDropper
from framers.rgb import to_yuv
from framers.threads import limit_codec_context


def mux_rgb(out: Any, stream: Any, rgb: np.ndarray | None, pts: int = 0, sei: SeiDropper | None = None) -> int:
    """Encode one RGB uint8 [H, W, 3] frame at ``pts`` (None: flush the encoder) on ``stream`` and
    mux the packets into the output container ``out``; returns the bytes of those packets. A YUV
    stream's pictures are converted by ``framers.rgb.to_yuv`` (BT.601 limited range, untagged).
    ``sei``: the stream's ``SeiDropper`` (H.264 from x264: its SEI text is left out, as a bundle's
    streams leave it out), created once per stream."""
    frame = None
    if rgb is not None:
        pix_fmt = str(stream.codec_context.pix_fmt or "")
        # a YUV stream gets the codec's colour path (``to_yuv``: chroma averaged, the inverse of
        # the reader's repetition), as the bundle's keyframes do; RGB streams (FFV1) as they are
        frame = (to_yuv(rgb, pix_fmt) if pix_fmt.startswith("yuv")
                 else av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24"))
        frame.pts = pts
    packets = stream.encode(frame)
    if sei is not None:
        packets = sei.filter(packets) + (sei.flush() if rgb is None else [])
    total = 0
    for packet in packets:
        packet.stream = stream
        total += packet.size
        out.mux(packet)
    return total


def output_pix_fmt(width: int, height: int) -> str:
    """yuv420p where the size allows it (plays everywhere); 4:2:0 cannot represent an odd
    width or height, so such videos are written in yuv444p to keep their exact size."""
    return "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"


class VideoWriter:
    """Writes RGB frames as H.264 in an mp4 with given timestamps, and muxes audio alongside.

    ``codec`` (``h264``, ``vp9``, ``av1``) and ``container`` (``mp4``, ``webm``) choose another
    output (framers.outputs); WebM gets the audio as Opus.

    Audio packets (every audio stream of an ``.m4a`` file, as stored in bundles) are
    interleaved by time as video is written, so nothing is buffered for the whole video; their
    timestamps are kept, so an audio track that starts late still starts late. The output's
    timeline starts at its earliest stream: when the first frame and every audio stream start
    after 0 (an MPEG-TS capture at 600 s, a TS remux at 1.4 s), or the first frame before 0 (a
    wrapped clock), all are moved by the earliest start (in whole ticks of ``time_base``), as
    FFmpeg does by default, keeping the streams' offsets to each other; a player would otherwise
    show a blank lead-in that long, or drop what lies before 0 (``_start_shift``).
    ``audio_offset`` (s): how far the ``.m4a``'s timestamps are ahead of the video's (a bundle's
    ``audio.timeline_offset``: audio that started before 0 is stored moved forward).

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
        crf: int = defaults.OUTPUT_CRF,
        preset: str = "veryfast",
        colour: dict[str, int] | None = None,
        sample_aspect_ratio: Fraction | None = None,
        end_pts: int | None = None,
        b_frames: bool = True,
        codec: str = "h264",
        container: str = "mp4",
        audio_offset: float = 0.0,
    ) -> None:
        from framers.outputs import FORMATS, OpusTranscoder, check_container, encoder_settings

        check_container(codec, container)
        self.path = Path(path)
        self.width, self.height = width, height
        # Matroska takes a display size only from the stream's own aspect ratio, which PyAV cannot
        # set (the codec's is ignored): non-square pixels would play squeezed, so a WebM output of
        # an anamorphic source is resampled to square pixels at its display size instead.
        self._display: tuple[int, int] | None = None  # (width, height) frames are resampled to
        if container == "webm" and sample_aspect_ratio and Fraction(sample_aspect_ratio) != 1:
            self._display = (max(2, 2 * round(width * Fraction(sample_aspect_ratio) / 2)), height)
            width, sample_aspect_ratio = self._display[0], None
        encoder, encoder_options = encoder_settings(codec, crf, preset, odd_size=width % 2 == 1 or height % 2 == 1)
        self._container = av.open(str(self.path), mode="w", format=FORMATS[container])
        rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
        self._stream = cast(av.video.stream.VideoStream, self._container.add_stream(encoder, rate=rate))
        self._stream.width = width
        self._stream.height = height
        # odd sizes in 4:4:4 where the codec has it (H.264 High 4:4:4, VP9 profile 1); SVT-AV1 codes
        # 4:2:0 only (``output_warnings``)
        self._stream.pix_fmt = output_pix_fmt(width, height) if codec in ("h264", "vp9") else "yuv420p"
        self._stream.time_base = time_base
        self._stream.codec_context.time_base = time_base
        options: dict[str, object] = dict(encoder_options)
        if container == "mp4":
            options["movflags"] = "+faststart"
        if not b_frames and codec == "h264":
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
        self._transcoders: dict[int, OpusTranscoder] = {}
        self._pending_audio: av.Packet | None = None
        self._audio_start: float | None = None  # seconds: the earliest start of an audio stream
        self._shift: int | None = None  # ticks of time_base every timestamp is moved back by
        self._audio_offset = audio_offset  # seconds the .m4a's timestamps are ahead of the video's
        if audio_path is not None and Path(audio_path).is_file():
            self._audio_in = av.open(str(audio_path))
            for source in self._audio_in.streams.audio:
                if container == "webm":
                    self._transcoders[source.index] = OpusTranscoder(source, self._container)
                    self._audio_streams[source.index] = self._transcoders[source.index].stream
                else:
                    self._audio_streams[source.index] = self._container.add_stream_from_template(source)
                copy_stream_tags(source, self._audio_streams[source.index])
            if self._audio_streams:
                self._audio_packets = self._audio_in.demux(*self._audio_in.streams.audio)
                starts = [float(a.start_time * a.time_base) for a in self._audio_in.streams.audio
                          if a.start_time is not None and a.time_base]
                self._audio_start = (min(starts) if starts else 0.0) - audio_offset
        self.frames_written = 0

    def _start_shift(self, first_pts: int) -> int:
        """Ticks every timestamp is moved back by (forward when negative): the earliest start of
        the first frame (``first_pts``) and the audio streams, floored to a tick, when that is
        after 0 or the first frame is before 0 (an MPEG-TS whose clock wrapped: a player drops
        what lies before 0, 1.2 s of a fresh-user trial's clip). Audio alone before 0 (an AAC
        encoder's priming samples, ~21 ms) is left as it is: 0."""
        video = float(first_pts * self._time_base)
        earliest = video if self._audio_start is None else min(video, self._audio_start)
        return math.floor(earliest / self._time_base) if earliest > 0 or video < 0 else 0

    def _shift_audio(self, packet: av.Packet) -> None:
        """Move a demuxed audio packet back by the output's shift (in its own time base)."""
        if not (self._shift or self._audio_offset) or packet.time_base is None:
            return
        ticks = round(((self._shift or 0) * self._time_base + Fraction(self._audio_offset)) / packet.time_base)
        if packet.pts is not None:
            packet.pts -= ticks
        if packet.dts is not None:
            packet.dts -= ticks

    def _mux_audio_until(self, seconds: float | None) -> None:
        if self._audio_packets is None:
            return
        while True:
            packet, self._pending_audio = self._pending_audio, None
            if packet is None:
                packet = next(self._audio_packets, None)
                if packet is not None:
                    self._shift_audio(packet)
            if packet is None:
                self._audio_packets = None
                for transcoder in self._transcoders.values():
                    for encoded in transcoder.packets(None):
                        self._container.mux(encoded)
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
            if packet.stream.index in self._transcoders:
                for encoded in self._transcoders[packet.stream.index].packets(packet):
                    self._container.mux(encoded)
                continue
            packet.stream = self._audio_streams[packet.stream.index]
            self._container.mux(packet)

    def _mux_video(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            if packet.pts is not None and packet.pts in self._durations:
                packet.duration = self._durations.pop(packet.pts)
            self._container.mux(packet)

    def _encode(self, rgb: np.ndarray, pts: int, duration: int) -> None:
        tags = {}
        if self._colour:
            tags = {"dst_colorspace": int(self._colour["matrix"]), "dst_color_range": int(self._colour["range"])}
        frame = to_yuv(rgb, str(self._stream.pix_fmt), self._reformatter, **tags)
        if self._colour:
            frame.color_primaries = int(self._colour["primaries"])
            frame.color_trc = int(self._colour["transfer"])
        frame.pts = pts
        frame.time_base = self._time_base
        self._durations[pts] = self._last_duration = max(1, duration)
        self._mux_video(self._stream.encode(frame))

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the encoded video: the frames' size, or the display size of an
        anamorphic WebM (see __init__)."""
        return self._display or (self.width, self.height)

    def write(self, rgb: np.ndarray, pts: int, copy: bool = True) -> None:
        """Add one RGB uint8 [height, width, 3] frame shown from ``pts`` (in ``time_base``).

        The frame is encoded when the next one arrives (its duration is the gap); it is copied
        unless ``copy=False`` says the caller will not modify it (6 MB per 1080p frame)."""
        if rgb.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame {rgb.shape[1]}x{rgb.shape[0]} != writer {self.width}x{self.height}")
        if self._shift is None:
            self._shift = self._start_shift(pts)
        pts -= self._shift
        self._mux_audio_until(float(pts * self._time_base))
        if self._display is not None:
            rgb = cv2.resize(rgb, self._display, interpolation=cv2.INTER_CUBIC)
        if self._held is not None:
            held, held_pts = self._held
            self._encode(held, held_pts, pts - held_pts)
        self._held = (np.array(rgb, copy=True) if copy else rgb, pts)
        self.frames_written += 1

    def close(self) -> None:
        if self._held is not None:
            held, held_pts = self._held
            end_pts = None if self._end_pts is None else self._end_pts - (self._shift or 0)
            duration = end_pts - held_pts if end_pts is not None and end_pts > held_pts else self._last_duration
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


class BackgroundWrites:
    """Feeds a VideoWriter from a thread of its own, so that the RGB → YUV conversion and x264
    (both release the GIL) run while the caller builds the next frames: with two cores, encoding
    and reconstruction overlap instead of taking turns.

    ``write`` queues a frame (up to ``depth`` frames wait; the caller blocks beyond that, which
    bounds memory); frames must not be modified after they are queued (reconstructors yield
    fresh arrays). ``finish`` waits for the queue to drain and re-raises the first error of the
    writer thread; ``abort`` (on the caller's own error) stops it without writing the rest.
    Frames reach the writer in order, so the output is the same as writing them directly."""

    def __init__(self, writer: VideoWriter, depth: int = 4) -> None:
        self._writer = writer
        self._queue: queue.Queue[tuple[np.ndarray, int] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="framers-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None and not self._stop:
                try:
                    self._writer.write(*item, copy=False)  # queued frames are not modified
                except BaseException as exc:  # handed to the caller by write/finish
                    self._error = exc

    def write(self, rgb: np.ndarray, pts: int) -> None:
        if self._error is not None:
            self.finish()
        self._queue.put((rgb, pts))

    def finish(self) -> None:
        """Wait until every queued frame is written; raise the writer thread's error, if any."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def abort(self) -> None:
        """Stop the writer thread, dropping queued frames (the output is discarded anyway)."""
        self._stop = True
        if self._thread.is_alive():
            while True:  # make room for the stop marker without blocking on a full queue
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self._queue.put(None)
            self._thread.join()


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
