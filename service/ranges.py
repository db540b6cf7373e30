"""HTTP Range (RFC 9110) for downloads streamed from object storage."""

from __future__ import annotations

import re
from collections.abc import Iterator

from starlette.responses import Response, StreamingResponse

from core.storage import Storage

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(Exception):
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
        length = int(last_s)
        if length == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - length), size - 1
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if last_s and last < first:
        return None  # syntactically invalid: ignore the header
    if first >= size:
        raise RangeNotSatisfiable(size)
    return first, min(last, size - 1)


def object_response(
    storage: Storage,
    key: str,
    *,
    media_type: str,
    filename: str,
    range_header: str | None,
    if_range: str | None = None,
) -> Response:
    size = storage.size(key)
    headers = {"Accept-Ranges": "bytes", "Content-Disposition": f'attachment; filename="{filename}"'}
    # We keep no validators (ETag), so an If-Range can never be confirmed: send the whole object.
    span = None if if_range else parse_range(range_header, size)
    if span is None:
        headers["Content-Length"] = str(size)
        body: Iterator[bytes] = storage.iter_range(key) if size else iter(())
        return StreamingResponse(body, status_code=200, media_type=media_type, headers=headers)
    first, last = span
    headers["Content-Length"] = str(last - first + 1)
    headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    return StreamingResponse(
        storage.iter_range(key, first, last), status_code=206, media_type=media_type, headers=headers
    )
