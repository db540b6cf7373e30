"""The bundle's keyframe stream: the encoder that writes kept frames (x264 runs per CRF, or
ffv1) on a background thread, and the decoder that reads them back in order."""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import av
import av.error
import numpy as np

from framers.bundle import KEYFRAME_CODECS, KEYFRAMES, KEYFRAMES_H264
from framers.errors import BundleError
from framers.h264_sei import SeiDropper
from framers.rgb import to_rgb
from framers.threads import limit_codec_context
from framers.video_writer import output_pix_fmt


class KeyframeEncoder:
    """Writes kept frames, in order, into the bundle's keyframe file.

    x264 writes ``keyframes.h264`` (Annex B, without x264's SEI text: ``framers.h264_sei``).
    ``write(rgb, crf)`` with a CRF other than the current run's ends that run and starts a new x264
    run (own headers, IDR picture) in the same file; ``settings["runs"]`` records [frames, crf]
    per run, and after ``close`` ``settings["crf"]`` is the CRF of the most frames. ffv1 writes ``keyframes.mkv``.

    Encoding runs on a background thread fed through a short bounded queue: PyAV releases the
    GIL inside FFmpeg, so x264 works while the caller decodes the next frames (480p compress
    ~25 % faster on 2 cores, ``bench/throughput.py``). At most ``QUEUE_FRAMES`` frames wait, so
    memory stays bounded; an encoder error is raised by the next ``write`` or by ``close``.
    """

    QUEUE_FRAMES = 4

    def __init__(self, folder: Path, width: int, height: int, codec: str, crf: int | None) -> None:
        if codec not in KEYFRAME_CODECS:
            raise BundleError(f"unknown keyframe codec {codec!r} (choose from {sorted(KEYFRAME_CODECS)})")
        spec = KEYFRAME_CODECS[codec]
        folder = Path(folder)
        self._x264 = spec["codec"] == "libx264"
        pix_fmt = output_pix_fmt(width, height) if spec["pix_fmt"] == "auto" else spec["pix_fmt"]
        self.settings: dict[str, Any] = {
            "file": KEYFRAMES_H264 if self._x264 else KEYFRAMES,
            "name": codec,
            "codec": spec["codec"],
            "pix_fmt": pix_fmt,
            "crf": crf if crf is not None else spec["crf"],
            "preset": spec["preset"],
            "width": width,
            "height": height,
            "count": 0,
        }
        if self._x264:
            self.settings["runs"] = []
        self.path = folder / self.settings["file"]
        self._width, self._height = width, height
        self._container: Any = None
        self._file: BinaryIO | None = None
        self._encoder: Any = None
        self._sei = SeiDropper()
        self._run_crf: int | None = None
        self._run_start = 0  # kept frames written before the current x264 run
        #: x264's own coding error of each kept frame (RGB MSE, ``coding.x264_reported_mse``, in
        #: write order), for the adaptive mode's estimate after coding; x264 only
        self.coding_mse: dict[int, float] = {}
        self._plane_pixels: list[int] = []
        if self._x264:
            self._file = open(self.path, "wb")  # noqa: SIM115 (closed by close())
        else:
            self._container = av.open(str(self.path), mode="w", format="matroska")
            self._encoder = self._container.add_stream(spec["codec"], rate=25)
            self._encoder.width, self._encoder.height, self._encoder.pix_fmt = width, height, pix_fmt
            self._encoder.options = {"level": "3", "g": "1"}
        self._queue: queue.Queue[tuple[np.ndarray | av.VideoFrame, int | None] | None] = queue.Queue(
            maxsize=self.QUEUE_FRAMES)
        self._error: BaseException | None = None
        self._reported = False
        self._closed = False
        self._encoded = 0
        self._thread = threading.Thread(target=self._run, name="framers-keyframe-encoder", daemon=True)
        self._thread.start()

    def _flush_x264(self) -> None:
        if self._encoder is not None:
            assert self._file is not None
            for packet in self._sei.filter(self._measured(self._encoder.encode(None))) + self._sei.flush():
                self._file.write(bytes(packet))
            self._encoder = None

    def _measured(self, packets: list[av.Packet]) -> list[av.Packet]:
        """``packets``, their pictures' coding error noted in ``coding_mse`` (read before the SEI
        filter, which drops the side data)."""
        from framers.adaptive.coding import x264_reported_mse

        for packet in packets:
            mse = x264_reported_mse(packet, self._plane_pixels)
            if mse is not None:
                self.coding_mse[self._run_start + int(packet.pts or 0)] = mse
        return packets

    def _start_x264(self, crf: int) -> None:
        from framers.adaptive.coding import plane_pixels, x264_context

        self._flush_x264()
        self._encoder = x264_context(self._width, self._height, crf, str(self.settings["preset"]))
        self._encoder.flags |= av.codec.context.Flags.psnr  # its error statistics: ``coding_mse``
        if not self._plane_pixels:
            self._plane_pixels = plane_pixels(self._width, self._height, self._encoder.pix_fmt)
        self._sei = SeiDropper()
        self._run_crf = crf
        self._run_start += self._encoded
        self._encoded = 0

    def _encode(self, picture: np.ndarray | av.VideoFrame, crf: int | None) -> None:
        if self._x264:
            from framers.adaptive.coding import to_codec_yuv

            crf = int(self.settings["crf"]) if crf is None else crf
            if self._encoder is None or crf != self._run_crf:
                self._start_x264(crf)
            # the codec's colour path, as the probes and the floor see it
            frame = picture if isinstance(picture, av.VideoFrame) else to_codec_yuv(picture)
            frame.pts = self._encoded
            self._encoded += 1
            assert self._file is not None
            for packet in self._sei.filter(self._measured(self._encoder.encode(frame))):
                self._file.write(bytes(packet))
            return
        assert isinstance(picture, np.ndarray), "only x264 takes YUV pictures (takes_yuv)"
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        frame.pts = self._encoded
        self._encoded += 1
        for packet in self._encoder.encode(frame):
            self._container.mux(packet)

    def _finish(self) -> None:
        if self._x264:
            self._flush_x264()
        else:
            for packet in self._encoder.encode(None):
                self._container.mux(packet)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if self._error is None:
                try:
                    if item is None:
                        self._finish()
                    else:
                        self._encode(*item)
                except BaseException as exc:
                    self._error = exc
            if item is None:
                return

    def _raise_error(self) -> None:
        """Raise the encoder thread's first error (once; later calls say the encoder failed)."""
        error = self._error
        if error is None:
            return
        if self._reported:
            raise BundleError("keyframe encoding failed earlier; the encoder is unusable")
        self._reported = True
        if isinstance(error, av.error.FFmpegError):
            raise BundleError(f"keyframe encoding failed: {error}") from error
        raise error

    @property
    def takes_yuv(self) -> bool:
        """``write`` also takes the codec's YUV picture (x264: ``coding.codec_yuv``'s frame)."""
        return self._x264

    def write(self, picture: np.ndarray | av.VideoFrame, crf: int | None = None) -> None:
        """Queue one kept frame: RGB uint8 [H, W, 3], or (``takes_yuv``) the YUV picture x264
        codes (``coding.codec_yuv``, a frame of its own: it is coded on another thread); ``crf``
        (x264 only) overrides the default CRF for this frame, a change starting a new run.
        Raises BundleError when closed or after an encoding error, TypeError for a YUV
        picture an encoder other than x264 is given."""
        if self._closed:
            raise BundleError("keyframe encoder is closed")
        self._raise_error()
        if self._x264:
            runs = self.settings["runs"]
            value = int(self.settings["crf"]) if crf is None else int(crf)
            if runs and runs[-1][1] == value:
                runs[-1][0] += 1
            else:
                runs.append([1, value])
        if isinstance(picture, av.VideoFrame):
            if not self._x264:
                raise TypeError(f"the {self.settings['name']} keyframe encoder takes RGB frames only")
            self._queue.put((picture, crf))
        else:
            self._queue.put((np.ascontiguousarray(picture), crf))
        self.settings["count"] += 1

    def close(self) -> None:
        """Flush the encoder and close the file; raises what went wrong while encoding."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        if self._x264 and self.settings["runs"]:
            # the CRF that coded the most kept frames (the adaptive mode's CRF, not the codec
            # default); ``runs`` holds each run's own
            frames_at: dict[int, int] = {}
            for count, value in self.settings["runs"]:
                frames_at[value] = frames_at.get(value, 0) + count
            self.settings["crf"] = max(frames_at, key=lambda value: frames_at[value])
        failed = self._error is not None
        try:
            if failed and not self._reported:
                self._raise_error()
        finally:
            try:
                if self._file is not None:
                    self._file.close()
                if self._container is not None:
                    self._container.close()
            except av.error.FFmpegError:
                if not failed:
                    raise


def _decoded_pictures(path: Path, expected: int) -> Iterator[av.VideoFrame]:
    """The decoded pictures of a keyframe stream, in order; BundleError on an unreadable,
    corrupt or short stream (``expected``: the kept frames the manifest lists)."""
    count = 0
    try:
        container = av.open(str(path), format="h264" if Path(path).suffix == ".h264" else None)
    except av.error.FFmpegError as exc:
        raise BundleError(f"keyframe stream unreadable: {exc}") from exc
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        limit_codec_context(stream.codec_context)
        for frame in container.decode(stream):
            yield frame
            count += 1
    except av.error.FFmpegError as exc:
        raise BundleError(f"keyframe stream corrupt after {count} frames: {exc}") from exc
    finally:
        container.close()
    if count != expected:
        raise BundleError(f"keyframe stream holds {count} frames, manifest says {expected}")


def iter_keyframes(path: Path, expected: int) -> Iterator[np.ndarray]:
    """Decode the kept frames of a bundle in order (RGB [H, W, 3] uint8); raise BundleError on an
    unreadable, corrupt or short stream."""
    for frame in _decoded_pictures(path, expected):
        yield to_rgb(frame)


def iter_keyframes_selected(path: Path, kept: list[int],
                            wanted: set[int]) -> Generator[tuple[int, np.ndarray], None, None]:
    """(video index, RGB [H, W, 3] uint8) of the kept frames whose index is in ``wanted``, in
    stream order (``kept``: the video index of every kept frame, in stream order). The stream is
    decoded on a background thread (PyAV releases the GIL inside FFmpeg), so a caller reading
    another video meanwhile uses the second core; only wanted frames are converted to RGB.
    Raises BundleError on an unreadable, corrupt or short stream. Closing the generator early
    stops the thread."""
    results: queue.Queue[tuple[int, np.ndarray] | BaseException | None] = queue.Queue(maxsize=8)
    stop = threading.Event()

    def put(item: tuple[int, np.ndarray] | BaseException | None) -> None:
        while not stop.is_set():
            try:
                results.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def decode() -> None:
        try:
            for count, frame in enumerate(_decoded_pictures(path, len(kept))):  # read to its end: a count check
                if stop.is_set():
                    return
                if count < len(kept) and kept[count] in wanted:
                    put((kept[count], to_rgb(frame)))
            put(None)
        except BaseException as exc:  # handed to the reader, raised there
            put(exc)

    thread = threading.Thread(target=decode, name="framers-keyframe-decoder", daemon=True)
    thread.start()
    try:
        while True:
            item = results.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
