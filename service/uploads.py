"""Streaming multipart upload: the `file` part goes straight to a local file, chunk by chunk.

Starlette's form parsing would spool the whole upload before the endpoint runs and cannot stop
an oversized one early. Here the request body is parsed as it arrives: file data is written to
disk as it comes (memory use is one network chunk), the byte count is checked on every chunk so
an oversized upload is cut off at the limit, and small text parts are collected as options.

The form around the video is bounded too, and a violation stops reading at once: at most MAX_PARTS
parts (every part counts, repeated names included), MAX_FIELD_BYTES per text field, MAX_FORM_BYTES
of everything that is not file data (part headers, boundaries, fields), python-multipart's own
limits on part headers and boundaries; a text field given twice is refused (RepeatedField, naming
it). Messages name at most a few parts and count the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from service.problems import name_few, shown_name

MAX_PARTS = 32  # parts of any kind, the video included
MAX_FIELDS = MAX_PARTS  # (former name)
MAX_FIELD_BYTES = 4096
MAX_FORM_BYTES = 64 * 1024
MAX_PART_HEADERS = 8  # per part; python-multipart's own limits, named here
MAX_PART_HEADER_BYTES = 4096 + 128


class UploadError(Exception):
    """The request is not a usable upload; `status` and `code` are its HTTP answer."""

    status = 400
    code = "malformed_upload"
    field: str | None = None


class NotMultipart(UploadError):
    """Content-Type is not multipart/form-data."""

    status, code = 415, "not_multipart"


class UploadTooLarge(UploadError):
    """The file is larger than the configured limit."""

    status, code = 413, "upload_too_large"


class MissingFile(UploadError):
    """No `file` part in the form."""

    status, code = 422, "missing_file"


class MalformedUpload(UploadError):
    """The multipart body is broken, or has more/larger parts than allowed."""


class TooManyParts(MalformedUpload):
    """More than MAX_PARTS parts."""

    code = "too_many_parts"


class FieldTooLarge(MalformedUpload):
    """A text field longer than MAX_FIELD_BYTES."""

    code = "field_too_large"


class FormTooLarge(MalformedUpload):
    """More than MAX_FORM_BYTES of form (everything but file data)."""

    code = "form_too_large"


class RepeatedField(UploadError):
    """A text field (an option) given more than once."""

    status, code = 422, "repeated_field"

    def __init__(self, name: str) -> None:
        super().__init__(f"form field {shown_name(name)} is given more than once; send each option once")
        self.field = name


class UploadStalled(UploadError):
    """The client stopped sending the body (no data for the idle timeout)."""

    status, code = 408, "upload_stalled"


@dataclass
class Upload:
    path: Path
    size: int = 0
    filename: str = ""
    content_type: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    sha256: str = ""  # hex SHA-256 of the file part (for idempotency keys)


class _Parser:
    def __init__(self, dest: Path, max_bytes: int, file_field: str, charset: str) -> None:
        self.upload = Upload(path=dest)
        self.max_bytes = max_bytes
        self.file_field = file_field
        self.charset = charset
        self.file: BinaryIO | None = None
        self.pending: list[bytes] = []
        self.other_files: list[str] = []
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._is_file = False
        self._is_target = False
        self._field_data = bytearray()
        self._seen_file = False
        self.parts = 0
        self.file_bytes = 0  # data of every file part (the video and any other, dropped)
        self.digest = hashlib.sha256()

    # --- python-multipart callbacks (synchronous) -------------------------------------
    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise TooManyParts(f"too many form fields: more than {MAX_PARTS} parts")
        self._headers, self._name, self._is_file, self._is_target = {}, "", False, False
        self._field_data = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_name.strip().lower()] = self._header_value.strip()
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        if b"name" not in params:
            raise MalformedUpload("a multipart part has no name")
        self._name = params[b"name"].decode(self.charset, errors="replace")
        if self._name in self.upload.fields:
            raise RepeatedField(self._name)
        # The video part counts even without a filename (some clients omit it).
        self._is_file = b"filename" in params or self._name == self.file_field
        if self._is_file and self._name == self.file_field:
            if self._seen_file:
                raise MalformedUpload(f"send one video per request (several '{self.file_field}' parts)")
            self._seen_file = self._is_target = True
            raw_name = params.get(b"filename", b"").decode(self.charset, errors="replace")
            self.upload.filename = os.path.basename(raw_name.replace("\\", "/"))[-255:]
            self.upload.content_type = self._headers.get(b"content-type", b"").decode("latin-1")
        elif self._is_file:
            self.other_files.append(self._name)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.file_bytes += end - start
            if self.file_bytes > self.max_bytes:
                raise UploadTooLarge(f"the upload exceeds the limit of {self.max_bytes} bytes")
        if self._is_target:
            self.upload.size += end - start
            chunk = data[start:end]
            self.digest.update(chunk)
            self.pending.append(chunk)
        elif not self._is_file:
            self._field_data += data[start:end]
            if len(self._field_data) > MAX_FIELD_BYTES:
                raise FieldTooLarge(f"form field {shown_name(self._name)} is longer than {MAX_FIELD_BYTES} bytes")
        # Other file parts are read and dropped; the error names them once parsing is done.

    def on_part_end(self) -> None:
        if not self._is_file:
            self.upload.fields[self._name] = self._field_data.decode(self.charset, errors="replace")

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }


async def _idle_timeout(body: AsyncIterator[bytes], timeout_s: float | None) -> AsyncIterator[bytes]:
    """The body's chunks; UploadStalled when the next one takes longer than `timeout_s`, so a client
    that sends part of a body and then goes quiet cannot hold a request (and its temp file) forever."""
    chunks = aiter(body)
    while True:
        try:
            chunk = await asyncio.wait_for(anext(chunks), timeout_s)
        except StopAsyncIteration:
            return
        except TimeoutError as exc:
            raise UploadStalled(f"the upload stalled: no data received for {timeout_s:g} s") from exc
        yield chunk


async def receive_upload(
    headers: Headers,
    body: AsyncIterator[bytes],
    dest: Path,
    *,
    max_bytes: int,
    file_field: str = "file",
    idle_timeout_s: float | None = None,
) -> Upload:
    """Parse a multipart body, writing part `file_field` to `dest`. Raises an UploadError."""
    content_type, params = parse_options_header(headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        raise NotMultipart(
            f"send the video as multipart/form-data with the file in the '{file_field}' field "
            f"(got Content-Type {headers.get('content-type') or 'none'})"
        )
    if b"boundary" not in params:
        raise MalformedUpload("multipart/form-data without a boundary")
    charset = params.get(b"charset", b"utf-8").decode("latin-1")
    parser_state = _Parser(dest, max_bytes, file_field, charset if charset.lower() == "utf-8" else "latin-1")
    received = 0
    try:
        # Inside the try: the constructor refuses some boundaries (python-multipart's length limit).
        parser = MultipartParser(
            params[b"boundary"],
            parser_state.callbacks(),  # type: ignore[arg-type]
            max_header_count=MAX_PART_HEADERS,
            max_header_size=MAX_PART_HEADER_BYTES,
        )
        with open(dest, "wb") as f:
            async for chunk in _idle_timeout(body, idle_timeout_s):
                received += len(chunk)
                parser.write(chunk)
                if received - parser_state.file_bytes > MAX_FORM_BYTES:
                    raise FormTooLarge(f"the form around the video is larger than {MAX_FORM_BYTES} bytes")
                if parser_state.pending:
                    data, parser_state.pending = b"".join(parser_state.pending), []
                    await run_in_threadpool(f.write, data)  # keep disk waits off the event loop
            parser.finalize()
            await run_in_threadpool(_flush, f)
    except (FormParserError, ValueError) as exc:  # (UploadError is not a ValueError)
        dest.unlink(missing_ok=True)
        raise MalformedUpload(f"malformed multipart body: {str(exc)[:200]}") from exc
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    upload = parser_state.upload
    upload.sha256 = parser_state.digest.hexdigest()
    if not parser_state._seen_file:
        dest.unlink(missing_ok=True)
        got = parser_state.other_files + list(upload.fields)
        detail = f"; got field(s): {name_few(sorted(set(got)))}" if got else ""
        raise MissingFile(f"the video must be sent as a file in the multipart field '{file_field}'{detail}")
    if parser_state.other_files:
        dest.unlink(missing_ok=True)
        raise MalformedUpload(
            f"unexpected file field(s) {name_few(parser_state.other_files)}; send one video in '{file_field}'"
        )
    return upload


def _flush(f: BinaryIO) -> None:
    f.flush()
    with contextlib.suppress(OSError):
        os.fsync(f.fileno())
