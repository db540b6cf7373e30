"""A source's audio in the bundle: every decodable stream kept in one AAC ``.m4a`` (AAC copied,
anything else transcoded with an explicit layout, start times kept), and notes on what changed."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error


def extract_audio(source: Path, dest: Path) -> dict[str, object] | None:
    """Keep every decodable audio stream of ``source`` in an AAC ``.m4a`` at ``dest``.

    AAC is copied bit for bit; any other codec (PCM with an unset channel layout, Opus, FLAC,
    AC-3, MP3, ...) is transcoded to AAC with an explicit layout (its own where AAC has it, surround
    up to 5.1 kept; more channels downmixed to 5.1, ``aac_layout``) and its start time kept, so
    audio that starts late stays late.
    Returns a description for the manifest: the first kept stream's fields (``codec``, ``copied``,
    ``source_codec``, ``sample_rate``, ``channels``) plus ``streams`` (one entry per kept stream,
    with ``source_index`` and ``start`` in seconds), ``dropped`` (streams that could not be
    kept, with the reason) and, for audio that starts before 0, ``timeline_offset`` (seconds every
    timestamp of the ``.m4a`` is ahead of the source's, see ``timeline_offset``); or None when no audio
    stream could be kept (``dest`` removed).
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
        offset = timeline_offset(usable)
        out = av.open(str(dest), mode="w", format="mp4")
        try:
            writers = [_AudioStreamWriter(out, stream, _stream_bit_rate(source, stream.index), offset)
                       for stream in usable]
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
            "streams": kept, "dropped": dropped, **({"timeline_offset": offset} if offset else {})}


def timeline_offset(streams: list[Any]) -> float:
    """Seconds (≥ 0) the bundle's ``.m4a`` moves the audio ``streams`` (PyAV streams) forward: how
    far the earliest of their start times lies before 0, else 0. An MP4 cannot present a time
    before 0: its muxer hides what lies there behind an edit list and a reader drops all but about
    a second of it (an MPEG-TS whose 33-bit clock wraps 1.2 s in reads from −1.2 s: a fresh-user
    trial's output lost its first 0.23 s of audio). The reader of the ``.m4a`` subtracts it again
    (``framers.video_writer.VideoWriter``'s ``audio_offset``)."""
    starts = [float(s.start_time * s.time_base) for s in streams if s.start_time is not None and s.time_base]
    return max(0.0, -min(starts)) if starts else 0.0


def audio_offset(audio: dict[str, Any] | None) -> float:
    """The ``timeline_offset`` of a manifest's ``audio`` entry (0 for bundles written before it)."""
    return float((audio or {}).get("timeline_offset", 0.0))


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
            notes.append(f"audio stream #{entry['source_index']} downmixed to {entry.get('layout') or 'stereo'}")
    return notes


def _is_lossy(codec: str) -> bool:
    """Whether FFmpeg's decoder ``codec`` is a lossy one (Opus, MP3, AC-3; not PCM, FLAC)."""
    try:
        return bool(av.codec.Codec(codec, "r").lossy)
    except (av.error.FFmpegError, ValueError):
        return False


def _codec_name(stream: Any) -> str | None:
    try:
        return stream.codec_context.name
    except (AttributeError, av.error.FFmpegError):
        return None


#: AAC rate (bit/s) per output channel for a lossless source, or a lossy one of unknown rate
AAC_RATE_PER_CHANNEL = 64_000
#: the least AAC rate per output channel whatever the source (AAC-LC degrades fast below it)
AAC_MIN_RATE_PER_CHANNEL = 24_000
#: AAC-LC against a lossy source's own rate: Opus or Vorbis keep their quality in fewer bits, so
#: a transcode at the same rate would add its own loss (FFmpeg's AAC encoder; a rule of thumb,
#: not measured here)
LOSSY_RATE_FACTOR = 1.25


#: a transcode's AAC layout by the source's channel count (FFmpeg's AAC encoder codes each as it is;
#: sources of more channels, untried here, are downmixed to 5.1 and said)
AAC_LAYOUT_BY_CHANNELS = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "5.1"}
#: source layouts a transcode keeps by name (the rest: ``AAC_LAYOUT_BY_CHANNELS`` by count). Not
#: the "(side)" ones (AC-3's usual 5.1): AAC codes them, but MP4 then labels the track "6 channels",
#: which players cannot map, so they go to 5.0 / 5.1 (side and back surrounds are both AAC's
#: surround pair)
AAC_NAMED_LAYOUTS = ("mono", "stereo", "2.1", "3.0", "quad", "4.0", "5.0", "5.1")


def aac_layout(layout: str | None, channels: int) -> tuple[str, bool]:
    """(AAC channel layout, downmixed) for transcoding a stream of ``layout`` (FFmpeg's name; PCM
    in AVI/MXF often has none, "6 channels") and ``channels``: the source's own layout where AAC
    codes it (``AAC_NAMED_LAYOUTS``), else the usual one of its channel count, else 5.1 for more
    than 6 channels (downmixed: True). Surround is kept, not folded to stereo."""
    if layout in AAC_NAMED_LAYOUTS:
        return str(layout), False
    count = max(1, channels)
    if count in AAC_LAYOUT_BY_CHANNELS:
        return AAC_LAYOUT_BY_CHANNELS[count], False
    return "5.1", True


def aac_bit_rate(source_rate: float | None, lossy: bool, channels: int) -> int:
    """AAC bitrate (bit/s) for transcoding a stream of ``source_rate`` bit/s (None: unknown) to
    ``channels`` channels: a lossy source's rate × ``LOSSY_RATE_FACTOR`` within
    [``AAC_MIN_RATE_PER_CHANNEL``, ``AAC_RATE_PER_CHANNEL``] per channel, so a 24 kbit/s Opus
    track does not come out at 128 kbit/s (4× the audio it replaced); a lossless source (PCM,
    FLAC) ``AAC_RATE_PER_CHANNEL`` per channel."""
    top = AAC_RATE_PER_CHANNEL * channels
    if not lossy or not source_rate or source_rate <= 0:
        return top
    return int(min(top, max(AAC_MIN_RATE_PER_CHANNEL * channels, round(source_rate * LOSSY_RATE_FACTOR))))


#: seconds of a stream's packets ``_stream_bit_rate`` reads when the container declares no rate:
#: enough for a mean, without a second read of a long upload
RATE_SAMPLE_SECONDS = 30.0


def _stream_bit_rate(source: Path, index: int) -> float | None:
    """Mean bitrate (bit/s) of stream ``index``: its declared rate, else its packets' bytes over
    their time span in the first ``RATE_SAMPLE_SECONDS`` (Matroska and Ogg declare none for
    Opus); None when neither is known."""
    try:
        with av.open(str(source), metadata_errors="ignore") as probe_in:
            stream = probe_in.streams[index]
            declared = stream.codec_context.bit_rate or getattr(stream, "bit_rate", None)
            if declared:
                return float(declared)
            size, first, last = 0, None, None
            for packet in probe_in.demux(stream):
                if packet.pts is None or packet.time_base is None:
                    continue
                size += packet.size
                t0 = float(packet.pts * packet.time_base)
                t1 = t0 + float((packet.duration or 0) * packet.time_base)
                first = t0 if first is None else min(first, t0)
                last = t1 if last is None else max(last, t1)
                if last - first >= RATE_SAMPLE_SECONDS:
                    break
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError, IndexError):
        return None
    if first is None or last is None or last <= first:
        return None
    return size * 8 / (last - first)


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


#: stream tags an audio track keeps through the bundle and into every output (a platform picks
#: tracks by language; a fresh-user trial's second track came out ``und`` instead of ``eng``)
KEPT_TAGS = ("language", "title")


def stream_tags(stream: Any) -> dict[str, str]:
    """The ``KEPT_TAGS`` of a PyAV stream's metadata (keys matched case-insensitively, as
    Matroska writes ``LANGUAGE``; MP4 gives a track's title back as ``name``); an undetermined
    language (``und``) is not a tag worth keeping."""
    found = {str(k).lower(): str(v) for k, v in dict(stream.metadata or {}).items()}
    found.setdefault("title", found.get("name", ""))
    return {k: found[k] for k in KEPT_TAGS if found.get(k) and found[k].lower() != "und"}


def copy_stream_tags(source: Any, dest: Any) -> None:
    """Set ``stream_tags(source)`` on the output stream ``dest`` (before the container's header)."""
    for key, value in stream_tags(source).items():
        dest.metadata[key] = value


class _AudioStreamWriter:
    """One source audio stream into the bundle's m4a: AAC copied, anything else transcoded."""

    def __init__(self, out: Any, source: Any, source_rate: float | None = None, offset: float = 0.0) -> None:
        self.out = out
        self.offset = offset  # seconds added to every timestamp (``timeline_offset``)
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
            copy_stream_tags(source, self.stream)
            self.layout = ctx.layout.name if ctx.layout else None
            return
        self.rate = ctx.sample_rate or 48000
        channels = ctx.channels or 2
        # PCM in AVI/MXF often has no channel layout ("2 channels"): the AAC encoder needs one.
        self.layout, self.downmixed = aac_layout(ctx.layout.name if ctx.layout else None, channels)
        self.stream = out.add_stream("aac", rate=self.rate)
        copy_stream_tags(source, self.stream)
        self.stream.layout = self.layout
        self.stream.bit_rate = aac_bit_rate(source_rate, _is_lossy(ctx.name), av.AudioLayout(self.layout).nb_channels)
        self.stream.time_base = Fraction(1, self.rate)
        self.resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
        self.next_pts: int | None = None

    def feed(self, packet: av.Packet) -> None:
        """Copy or transcode one demuxed packet."""
        if self.copied:
            if packet.dts is None:
                return
            if self.offset and packet.time_base is not None:
                ticks = round(self.offset / packet.time_base)
                packet.pts = None if packet.pts is None else packet.pts + ticks
                packet.dts += ticks
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
                self.next_pts = round((start + self.offset) * self.rate)
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
