"""Dropping SEI messages from x264's H.264 packets.

x264 writes one SEI NAL unit (type 6, "user data unregistered") into the first access unit of every
stream it codes: its version and the whole option string as plain text, ~0.7 kB that no decoder
needs. At the low rates where frame dropping pays, that is a large share of a stream (a 64-frame
480p clip at 28 dB: 5.3 kB of kept frames, 0.7 kB of it x264's text), and the adaptive mode starts
one x264 run per CRF, each with its own. Every H.264 stream this project writes for a bundle, and
the x264 anchor its benchmarks compare with, goes through ``SeiDropper``: FFmpeg's
``filter_units`` bitstream filter (``DROP_SEI``), which removes whole NAL units and leaves the
coded pictures untouched (decoded frames are identical, ``tests/test_h264_sei.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import av

#: FFmpeg bitstream filter: remove NAL units of type 6 (SEI)
DROP_SEI = "filter_units=remove_types=6"


class SeiDropper:
    """Passes H.264 packets through ``DROP_SEI``, in order; one instance per coded stream.

    ``stream``: the output stream the packets belong to, when they are length-prefixed (AVCC, as
    an encoder with a global header writes them for Matroska or MP4): the filter then reads the
    NAL length size from the stream's extradata, so it is created on the first packet, once the
    encoder has written that extradata. Without ``stream`` the packets are Annex B (start codes).
    """

    def __init__(self, stream: Any = None) -> None:
        self._stream = stream
        self._filter: Any = None

    def _context(self) -> Any:
        if self._filter is None:
            from av.bitstream import BitStreamFilterContext

            self._filter = (BitStreamFilterContext(DROP_SEI, self._stream) if self._stream is not None
                            else BitStreamFilterContext(DROP_SEI, "h264"))
        return self._filter

    def filter(self, packets: Iterable[av.Packet]) -> list[av.Packet]:
        """The packets without their SEI NAL units (the same number of packets, same timestamps;
        ``filter_units`` holds nothing back)."""
        out: list[av.Packet] = []
        for packet in packets:
            out.extend(self._context().filter(packet))
        return out

    def flush(self) -> list[av.Packet]:
        """End of the stream: whatever the filter still holds (nothing, for ``filter_units``)."""
        if self._filter is None:
            return []
        return list(self._filter.filter(None))
