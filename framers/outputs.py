"""Output encodings of a reconstruction: H.264 (mp4), VP9 (WebM), AV1 (mp4 or WebM).

`encoder_settings` gives the PyAV encoder, its options and the pixel format for a codec and CRF;
`available_codecs` tells which of them this PyAV build can encode (`av.codecs_available`).
WebM holds only Opus or Vorbis audio, so audio kept as AAC in a bundle is transcoded to Opus
there (`OpusTranscoder`); mp4 keeps AAC bit for bit.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import av

from framers import nvenc
from framers.audio import AAC_LAYOUT_BY_CHANNELS
from framers.errors import UnsupportedOptionError

#: codec name -> PyAV encoder
ENCODERS = {"h264": "libx264", "vp9": "libvpx-vp9", "av1": "libsvtav1"}
FORMATS = {"mp4": "mp4", "webm": "webm"}
#: codec name -> the containers it may go in (WebM holds VP8/VP9/AV1 only; the service's
#: ``core.outputs.ALLOWED`` states the same pairs for its requests)
CONTAINERS_OF = {"h264": ("mp4",), "vp9": ("webm",), "av1": ("mp4", "webm")}


def check_container(codec: str, container: str) -> None:
    """Raises UnsupportedOptionError when ``codec`` cannot go in ``container`` (H.264 in WebM:
    FFmpeg's muxer refused it only once the output was being written, as a traceback)."""
    if container not in CONTAINERS_OF.get(codec, ()):
        fits = " or ".join(c for c, where in CONTAINERS_OF.items() if container in where)
        raise UnsupportedOptionError(f"{container} holds {fits or 'no known codec'}, not {codec}: choose another "
                                     f"--codec or container")


def output_warnings(codec: str, width: int, height: int) -> list[str]:
    """What an output in ``codec`` loses that the default H.264 keeps: an odd frame size goes to
    4:4:4 in H.264 and VP9 (``video_writer.output_pix_fmt``), but SVT-AV1 codes 4:2:0 only."""
    if codec == "av1" and (width % 2 or height % 2):
        return [f"AV1 is coded 4:2:0 only (SVT-AV1): this {width}x{height} video's colour detail, which "
                "h264 and vp9 outputs keep in 4:4:4 at odd sizes, is subsampled"]
    return []


# SVT-AV1 prints its whole configuration to stderr for every stream; errors only.
os.environ.setdefault("SVT_LOG", "1")


def available_codecs() -> list[str]:
    """The output codecs this PyAV build can encode (h264, vp9, av1)."""
    return [name for name, encoder in ENCODERS.items() if encoder in av.codecs_available]


def encoder_settings(codec: str, crf: int, preset: str = "veryfast",
                     odd_size: bool = False) -> tuple[str, dict[str, str]]:
    """(PyAV encoder name, encoder options) for `codec` at constant quality `crf`; H.264 goes to
    h264_nvenc where the worker has it (framers.nvenc, FRAMERS_VIDEO_ENCODER; `odd_size` frames
    stay on libx264).

    Raises UnsupportedOptionError for an unknown codec or one this PyAV build cannot encode."""
    encoder = ENCODERS.get(codec)
    if encoder is None:
        raise UnsupportedOptionError(f"unknown output codec {codec!r}; choose one of {', '.join(ENCODERS)}")
    if encoder not in av.codecs_available:
        raise UnsupportedOptionError(f"this build cannot encode {codec} ({encoder} is missing)")
    if codec == "h264":
        if nvenc.h264_encoder(odd_size) == nvenc.NVENC:
            return nvenc.NVENC, nvenc.nvenc_options(crf)
        return encoder, {"crf": str(crf), "preset": preset}
    if codec == "vp9":
        # constant quality (b=0), fast: good + cpu-used 5 is ~10x faster than the default
        return encoder, {"crf": str(crf), "b": "0", "deadline": "good", "cpu-used": "5", "row-mt": "1"}
    return encoder, {"crf": str(crf), "preset": "10"}


#: Opus layouts by channel count: libopus codes 3-8 channels in Vorbis order (``mapping_family``
#: 1) for these layouts only (2.1, 4.0 and the "(side)" ones are refused), so the resampler maps a
#: bundle's AAC surround onto them
OPUS_LAYOUT_BY_CHANNELS = {**AAC_LAYOUT_BY_CHANNELS, 7: "6.1", 8: "7.1"}
#: Opus rate (bit/s): mono, stereo, and per channel of surround
OPUS_MONO_RATE, OPUS_STEREO_RATE, OPUS_SURROUND_RATE_PER_CHANNEL = 64_000, 96_000, 48_000


class OpusTranscoder:
    """Decodes packets of one audio stream (AAC from a bundle) and encodes them as Opus in `out`
    with as many channels (``OPUS_LAYOUT_BY_CHANNELS``: surround stays surround); 48 kHz; PyAV
    resamples and re-chunks frames."""

    def __init__(self, source: Any, out: Any) -> None:
        channels = min(max(source.codec_context.channels or 2, 1), 8)
        layout = OPUS_LAYOUT_BY_CHANNELS[channels]
        self.stream = out.add_stream("libopus", rate=48000, layout=layout)
        self.stream.bit_rate = (OPUS_MONO_RATE if channels == 1 else OPUS_STEREO_RATE if channels == 2
                                else OPUS_SURROUND_RATE_PER_CHANNEL * channels)
        if channels > 2:
            self.stream.options = {"mapping_family": "1"}
        self._resampler = av.AudioResampler(format="flt", layout=layout, rate=48000)

    def packets(self, packet: Any | None) -> Iterator[Any]:
        """Opus packets for one source packet (None at the end flushes the encoder)."""
        frames = [] if packet is None else packet.decode()
        for frame in frames:
            for converted in self._resampler.resample(frame):
                yield from self.stream.encode(converted)
        if packet is None:
            for converted in self._resampler.resample(None):
                yield from self.stream.encode(converted)
            yield from self.stream.encode(None)
