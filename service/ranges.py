"""HTTP Range (RFC 9110) for downloads streamed from object storage."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from core.storage import Storage

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
# Positions are parsed length-bounded: a number of more significant digits than this is larger than
# any object, and is treated as "beyond the end" without converting it (Python refuses to convert
# strings of more than 4300 digits, and converting long ones costs quadratic time).
MAX_POSITION_DIGITS = 18
BEYOND_ANY_OBJECT = 10**MAX_POSITION_DIGITS


class RangeNotSatisfiable(Exception):
    """A well-formed single range that starts at or beyond the end of the object (416)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"range not satisfiable (size {size})")
        self.size = size


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) inclusive for a single satisfiable range; None means "send everything".

    Malformed or multi-range headers are ignored (RFC 9110 allows a server to ignore Range);
    a well-formed single range that misses the object raises RangeNotSatisfiable.
    """
    if not header:
        return None
    match = _RANGE_RE.match(header.strip().replace(" ", ""))
    if not match:
        return None
    first_s, last_s = match.groups()
    if not first_s and not last_s:
        return None
    if not first_s:  # suffix range: the last N bytes
        length = _position(last_s)
        if length == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - length), size - 1
    first = _position(first_s)
    last = _position(last_s) if last_s else size - 1
    if last_s and last < first:
        return None  # syntactically invalid: ignore the header
    if first >= size:
        raise RangeNotSatisfiable(size)
    return first, min(last, size - 1)


def _position(digits: str) -> int:
    """A byte position or length from the header's digits; BEYOND_ANY_OBJECT for very long numbers."""
    significant = digits.lstrip("0")
    if len(significant) > MAX_POSITION_DIGITS:
        return BEYOND_ANY_OBJECT
    return int(significant or "0")


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that closes its source when the response ends, however it ends.

    When a client goes away mid-download Starlette cancels the stream and drops the iterator; the
    file (or S3 stream) it holds would stay open until garbage collection, so a deleted video's disk
    space would not be freed. Here the source is closed at once (its `close()`), in every case.
    """

    def __init__(self, content: Iterator[bytes], **kwargs: object) -> None:
        self._source = content
        super().__init__(content, **kwargs)  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # No thread is reading it any more: a cancelled threadpool call waits for its thread.
            close = getattr(self._source, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()


def object_response(
    storage: Storage,
    key: str,
    *,
    media_type: str,
    filename: str,
    range_header: str | None,
    if_range: str | None = None,
    head: bool = False,
) -> Response:
    """The object (200) or the requested part of it (206), streamed; with `head`, the same status
    and headers without opening the object. Raises ObjectNotFound, RangeNotSatisfiable."""
    size = storage.size(key)
    headers = {"Accept-Ranges": "bytes", "Content-Disposition": f'attachment; filename="{filename}"'}
    # We keep no validators (ETag), so an If-Range can never be confirmed: send the whole object.
    span = None if if_range else parse_range(range_header, size)
    if span is None:
        status_code, first, last = 200, 0, None
        headers["Content-Length"] = str(size)
    else:
        status_code, (first, last) = 206, span
        headers["Content-Length"] = str(last - first + 1)
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    if head or size == 0:
        return Response(status_code=status_code, media_type=media_type, headers=headers)
    return ClosingStreamingResponse(
        storage.iter_range(key, first, last), status_code=status_code, media_type=media_type, headers=headers
    )
