"""One error shape for every answer >= 400: RFC 9457 problem details (`application/problem+json`).

    {"type": "urn:framers:problem:repeated_field", "title": "Unprocessable Content", "status": 422,
     "detail": "form field 'crf' is given 2 times; send each option once", "code": "repeated_field",
     "errors": [{"field": "crf", "location": "body.crf", "message": "given 2 times"}]}

`code` is machine-readable and stable (the last part of `type`); `detail` is always a string of
bounded size; field errors, when there are any, are in the `errors` extension member; an
unexpected 500 carries a `request_id` (also in the `X-Request-ID` header and in the log line with
the traceback) and nothing about the internals.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.head import is_head

log = logging.getLogger("service")

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:framers:problem:"
MAX_DETAIL_CHARS = 1000
MAX_FIELD_ERRORS = 10
MAX_NAME_CHARS = 64

# The code of an error raised without one: by status.
DEFAULT_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "content_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "unprocessable_content",
    500: "internal_error",
    503: "unavailable",
}

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class Problem(StarletteHTTPException):
    """An HTTP error with a machine-readable `code` and optional field errors (`errors`)."""

    def __init__(
        self,
        status_code: int,
        detail: str,
        code: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        errors: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__(status_code, detail, headers=dict(headers) if headers else None)
        self.code = code or default_code(status_code)
        self.errors = list(errors) if errors else None


def default_code(status_code: int) -> str:
    """The code of an error that names none: `not_found` for 404, `client_error`/`server_error` else."""
    return DEFAULT_CODES.get(status_code, "server_error" if status_code >= 500 else "client_error")


def bounded(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """`text` cut to at most `limit` characters (saying how much was cut)."""
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    note = f"… ({cut} more characters)"
    return text[: max(0, limit - len(note))] + note


def cut_name(name: str) -> str:
    """A client-supplied name cut to MAX_NAME_CHARS for a message."""
    return name if len(name) <= MAX_NAME_CHARS else name[: MAX_NAME_CHARS - 1] + "…"


def shown_name(name: str) -> str:
    """A client-supplied name quoted for a message, cut to MAX_NAME_CHARS."""
    return repr(cut_name(name))


def name_few(names: Iterable[str], limit: int = 5) -> str:
    """a, b, c, d, e and 17 more — a few names (each cut) and the count of the rest."""
    items = list(names)
    head = ", ".join(cut_name(n) for n in items[:limit])
    rest = len(items) - limit
    return f"{head} and {rest} more" if rest > 0 else head


def problem_response(
    status_code: int,
    detail: str,
    code: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """An `application/problem+json` answer."""
    code = code or default_code(status_code)
    try:
        title = HTTPStatus(status_code).phrase
    except ValueError:
        title = "Error"
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + code,
        "title": title,
        "status": status_code,
        "detail": bounded(str(detail)),
        "code": code,
    }
    if errors:
        body["errors"] = [dict(e) for e in errors[:MAX_FIELD_ERRORS]]
    body.update(extra or {})
    return JSONResponse(
        body, status_code=status_code, headers=dict(headers) if headers else None, media_type=PROBLEM_MEDIA_TYPE
    )


def validation_errors(raw: Sequence[Any]) -> list[dict[str, str]]:
    """FastAPI/pydantic errors as bounded field errors, each once (a path parameter that several
    dependencies declare is validated, and reported, by each); the offending input is never echoed."""
    errors: list[dict[str, str]] = []
    for err in raw:
        loc = [str(p) for p in err.get("loc", ())]
        entry = {
            "location": bounded(".".join(loc), 200),
            "field": bounded(loc[-1] if loc else "", MAX_NAME_CHARS),
            "message": bounded(str(err.get("msg", "invalid")), 200),
            "type": bounded(str(err.get("type", "")), 64),
        }
        if entry not in errors:
            errors.append(entry)
        if len(errors) == MAX_FIELD_ERRORS:
            break
    return errors


def request_id(request: Request) -> str:
    """The client's `X-Request-ID` when it is a short token, else a new random id."""
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID_RE.match(given) else uuid.uuid4().hex


def install(app: FastAPI) -> None:
    """Answer every error of `app` as problem details: HTTP errors (the service's, routing's 404 and
    405, auth), request validation errors, and unexpected exceptions (500 with a request id)."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            allowed = headers.get("Allow", "")
            if "GET" in allowed.split(", ") and "HEAD" not in allowed:
                allowed = headers["Allow"] = f"{allowed}, HEAD"  # HEAD is served for every GET (service.head)
            if detail == HTTPStatus(405).phrase:
                method = "HEAD" if is_head(request) else request.method
                detail = f"method {method} is not allowed here" + (f"; allowed: {allowed}" if allowed else "")
        elif exc.status_code == 404 and detail == HTTPStatus(404).phrase:
            detail = f"no such resource: {request.url.path}"
        return problem_response(
            exc.status_code,
            detail,
            getattr(exc, "code", None),
            headers=headers,
            errors=getattr(exc, "errors", None),
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(exc.errors())
        summary = "; ".join(f"{e['location']}: {e['message']}" for e in errors[:3])
        more = len(errors) - 3
        detail = f"invalid request: {summary}" + (f" (and {more} more)" if more > 0 else "")
        return problem_response(422, detail, "validation_error", errors=errors)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = request_id(request)
        log.error("unexpected error [request %s] on %s %s", rid, request.method, request.url.path, exc_info=exc)
        return problem_response(
            500,
            f"internal error; quote request id {rid} when reporting it",
            "internal_error",
            headers={"X-Request-ID": rid},
            extra={"request_id": rid},
        )
