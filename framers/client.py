"""HTTP client of the FrameRS service (`framers remote-*` verbs use it; so can any program).

    with FramersClient("http://127.0.0.1:8000", api_key="...") as client:
        job = client.compress("clip.mp4", keep_source=True)
        client.wait(job["id"], on_progress=lambda j: print(j["progress"], j.get("eta_s")))
        client.reconstruct(job["id"], "clip.webm", codec="vp9", quality="medium")
        client.quality(job["id"], codec="vp9", quality="medium")["psnr"]   # per-frame PSNR
        client.cancel(other_id)                                           # a queued/running compression

Uploads and downloads are streamed (never the whole file in memory); downloads are written to a
temporary file and renamed, so an interrupted download never leaves a truncated output behind.
This module only speaks HTTP: it does not import the service.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

TERMINAL = ("done", "failed", "canceled")
ProgressCallback = Callable[[dict[str, Any]], None]


class FramersClientError(Exception):
    """The service answered with an error (or not at all).

    For an answer in the service's error shape (RFC 9457 problem details), `code` is its
    machine-readable code (`not_found`, `repeated_field`, ...), `detail` its message and `problem`
    the whole body (field errors in `problem["errors"]`, `request_id` on a 500)."""

    def __init__(
        self,
        message: str,
        status_code: int | None = None,
        *,
        code: str | None = None,
        detail: str | None = None,
        problem: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.detail = detail
        self.problem = problem


class JobFailed(FramersClientError):
    """The job reached status `failed`; the message is the service's reason."""


class JobCanceled(FramersClientError):
    """The job was canceled (POST /jobs/{id}/cancel) before it finished."""


class WaitTimeout(FramersClientError):
    """The job did not finish within the given time."""


def _output_params(
    reconstructor: str | None, codec: str | None, container: str | None, crf: int | None, quality: str | None
) -> dict[str, str]:
    pairs = (("reconstructor", reconstructor), ("codec", codec), ("container", container), ("crf", crf),
             ("quality", quality))
    return {k: str(v) for k, v in pairs if v is not None}


class FramersClient:
    """A FrameRS service over HTTP. Every method raises FramersClientError (with `status_code`,
    `code`, `detail`) for an error answer or no answer; see each method for the codes it expects."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport)

    # --- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __enter__(self) -> FramersClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- API -----------------------------------------------------------------------------
    def compress(
        self,
        path: str | os.PathLike[str],
        *,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        metadata: dict[str, Any] | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Upload a video; returns {"id", "status": "queued", "links"}.

        Options (form fields): selector, keep, stride, reconstructor, keyframe_codec, crf,
        target_psnr, target_kbps, refresh, refresh_kbps, candidate_map, keep_source (True keeps the
        upload after compression, for `download_source` and per-frame PSNR in `quality`). `idempotency_key` (sent as the
        `Idempotency-Key` header) makes a retried call safe: the same key with the same file and
        options returns the first call's video id (nothing is stored twice); with another file or
        options the service answers 409 (FramersClientError, code `idempotency_key_reused`).
        `callback_url` receives signed events (compress.done/failed/canceled,
        reconstruct.done/failed/canceled); `metadata` (a JSON object of at most 4 KB) is stored
        with the video and echoed in its job view and events.
        Raises FramersClientError (e.g. 415 not a video, 422 bad options, 503 unavailable).
        """
        path = Path(path)
        data = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in options.items() if v is not None}
        if callback_url is not None:
            data["callback_url"] = callback_url
        if metadata is not None:
            data["metadata"] = json.dumps(metadata, separators=(",", ":"))
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
        with path.open("rb") as f:
            response = self._http.post(
                "/compress", files={"file": (path.name, f, "video/mp4")}, data=data, headers=headers
            )
        return self._json(response, expected=(202,))

    def list_videos(
        self, *, limit: int | None = None, cursor: str | None = None, status: str | None = None
    ) -> dict[str, Any]:
        """One page of this tenant's videos, newest first (`GET /videos`):
        {"videos": [{"id", "status", "progress", "created_at", "sizes", "metadata", "links", ...}],
        "next_cursor": str | None}. Pass `next_cursor` back as `cursor` for the next page; `status`
        filters (queued, running, done, failed). Raises FramersClientError (422 bad cursor)."""
        params = {k: str(v) for k, v in (("limit", limit), ("cursor", cursor), ("status", status)) if v is not None}
        return self._json(self._http.get("/videos", params=params))

    def iter_videos(self, *, status: str | None = None, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every video of this tenant, newest first, following the listing's cursors."""
        cursor: str | None = None
        while True:
            page = self.list_videos(limit=page_size, cursor=cursor, status=status)
            yield from page["videos"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def status(self, video_id: str) -> dict[str, Any]:
        """The job view of a video (`GET /jobs/{id}`). Raises FramersClientError."""
        return self._json(self._http.get(f"/jobs/{video_id}"))

    def wait(
        self,
        video_id: str,
        *,
        timeout: float | None = None,
        poll_s: float = 1.0,
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """Poll until the compression is done; returns the job view (`status`, `progress`,
        `eta_s`, `sizes`, ...). `on_progress(job)` is called after each poll. Raises JobFailed
        (status failed; the message is the service's reason), JobCanceled, WaitTimeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.status(video_id)
            if on_progress is not None:
                on_progress(job)
            if job["status"] == "done":
                return job
            if job["status"] == "failed":
                raise JobFailed(f"job {video_id} failed: {job.get('error')}")
            if job["status"] == "canceled":
                raise JobCanceled(f"job {video_id} was canceled")
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"job {video_id} still {job['status']} after {timeout} s")
            time.sleep(poll_s)

    def reconstruct(
        self,
        video_id: str,
        out_path: str | os.PathLike[str],
        *,
        reconstructor: str | None = None,
        wait: bool = True,
        timeout: float | None = None,
        poll_s: float | None = None,
        codec: str | None = None,
        container: str | None = None,
        crf: int | None = None,
        quality: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Path | None:
        """Download the reconstructed video to out_path (starting the reconstruction if needed).

        Output options: `codec` (h264, vp9, av1), `container` (mp4, webm; default: mp4, webm for
        vp9), `crf` (lower = better and larger) or `quality` (high, medium, low); each combination
        is made once by the service and kept. While it is being made the service answers 202 with
        `{"status", "progress", "eta_s", ...}`: passed to `on_progress`, and the client waits
        `Retry-After` seconds (or `poll_s`). With wait=False, returns None when the video is not
        ready yet (one request only). Raises FramersClientError: 409 `compression_failed` /
        `compression_canceled`, 422 `invalid_option` / `reconstruction_failed`; WaitTimeout.
        """
        params = _output_params(reconstructor, codec, container, crf, quality) or None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._http.stream("GET", f"/reconstruct/{video_id}", params=params) as response:
                if response.status_code == 200:
                    return _save(response, Path(out_path))
                if response.status_code != 202:
                    response.read()
                    self._raise(response)
                response.read()
                retry_after = _retry_after(response, poll_s)
                if on_progress is not None:
                    on_progress(response.json())
            if not wait:
                return None
            if deadline is not None and time.monotonic() + retry_after > deadline:
                raise WaitTimeout(f"reconstruction of {video_id} not ready after {timeout} s")
            time.sleep(retry_after)

    def cancel(
        self,
        video_id: str,
        *,
        reconstructor: str | None = None,
        codec: str | None = None,
        container: str | None = None,
        crf: int | None = None,
        quality: str | None = None,
    ) -> dict[str, Any]:
        """Cancel the compression of a video, or (with `reconstructor` or output options) one
        reconstruction. Returns `{"id", "job": "compress"|"reconstruct", "reconstruction",
        "status": "canceled"|"canceling", "links"}`: "canceling" means the running job stops at its
        next frame (poll `status` until it says canceled). Raises FramersClientError: 404 (no such
        video or reconstruction), 409 `not_cancelable` (already done or failed)."""
        params = _output_params(reconstructor, codec, container, crf, quality) or None
        return self._json(self._http.post(f"/jobs/{video_id}/cancel", params=params), expected=(200, 202))

    def quality(
        self,
        video_id: str,
        *,
        reconstructor: str | None = None,
        codec: str | None = None,
        container: str | None = None,
        crf: int | None = None,
        quality: str | None = None,
    ) -> dict[str, Any]:
        """Per-frame facts of a made reconstruction: `{"frames", "times": [s], "kept": [frame
        indices in the bundle], "psnr": [dB per frame] | None (source not kept), "psnr_mean",
        "sizes": {"source_bytes", "bundle_bytes", "output_bytes"}}`. Raises FramersClientError:
        409 `not_ready` (not made yet: `reconstruct` makes it)."""
        params = _output_params(reconstructor, codec, container, crf, quality) or None
        return self._json(self._http.get(f"/quality/{video_id}", params=params))

    def download_source(self, video_id: str, out_path: str | os.PathLike[str]) -> Path:
        """Download the uploaded source (kept with keep_source=True). Raises FramersClientError:
        410 `source_deleted`."""
        with self._http.stream("GET", f"/sources/{video_id}") as response:
            if response.status_code != 200:
                response.read()
                self._raise(response)
            return _save(response, Path(out_path))

    def download_bundle(self, video_id: str, out_path: str | os.PathLike[str]) -> Path:
        """Download the keyframe bundle (.frs) to out_path. Raises FramersClientError (409 while not ready)."""
        with self._http.stream("GET", f"/bundles/{video_id}") as response:
            if response.status_code != 200:
                response.read()
                self._raise(response)
            return _save(response, Path(out_path))

    def delete(self, video_id: str) -> None:
        """Delete a video and everything made from it."""
        response = self._http.delete(f"/videos/{video_id}")
        if response.status_code != 204:
            self._raise(response)

    def models(self) -> dict[str, Any]:
        """Selectors, reconstructors, model versions and defaults of the service."""
        return self._json(self._http.get("/models"))

    # --- helpers -------------------------------------------------------------------------
    def _json(self, response: httpx.Response, expected: tuple[int, ...] = (200,)) -> dict[str, Any]:
        if response.status_code not in expected:
            self._raise(response)
        body: dict[str, Any] = response.json()
        return body

    @staticmethod
    def _raise(response: httpx.Response) -> None:
        raise error_from_response(response)


def error_from_response(response: httpx.Response) -> FramersClientError:
    """The error for a non-success answer: "HTTP 404 not_found: no video ..." from problem details;
    from any other body (a proxy's HTML page, an older service's JSON), its status and some text."""
    problem: dict[str, Any] | None = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        problem = body
        raw = body.get("detail", response.text)
        detail = raw if isinstance(raw, str) else _describe(raw)
    else:
        detail = response.text
    detail = detail.strip()[:2000] or response.reason_phrase
    code = problem.get("code") if problem and isinstance(problem.get("code"), str) else None
    label = f"HTTP {response.status_code} {code}" if code else f"HTTP {response.status_code}"
    request_id = problem.get("request_id") if problem else None
    suffix = f" (request id {request_id})" if request_id and str(request_id) not in detail else ""
    return FramersClientError(
        f"{label}: {detail}{suffix}", response.status_code, code=code, detail=detail, problem=problem
    )


def _describe(raw: object) -> str:
    """A FastAPI-style list of validation errors as one sentence."""
    if isinstance(raw, list):
        parts = []
        for item in raw[:5]:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", ()))
                parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", item)))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(raw)


def _retry_after(response: httpx.Response, poll_s: float | None) -> float:
    if poll_s is not None:
        return poll_s
    try:
        return max(0.2, float(response.headers.get("Retry-After", "2")))
    except ValueError:
        return 2.0


def _save(response: httpx.Response, out_path: Path) -> Path:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    part = out_path.with_name(f".{out_path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with part.open("wb") as f:
            for chunk in response.iter_bytes(1024 * 1024):
                f.write(chunk)
        os.replace(part, out_path)
    finally:
        part.unlink(missing_ok=True)
    return out_path
