"""CLI verbs of the service, plugged into `framers` through the `framers.commands` entry point.

The codec's CLI calls `register(subparsers)`; nothing heavy is imported until a verb runs, so
`framers --help` stays fast and the codec never depends on the service.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run gateway + workers + Redis on this machine",
        description="Gateway, N workers and a private Redis (unless --redis-url/FRAMERS_REDIS_URL); "
        "local storage under --data-dir. Ctrl-C stops everything.",
    )
    p.add_argument("--host", help="bind address (default 127.0.0.1; loopback only without API keys)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--data-dir", help="storage, scratch and Redis data (default ./data)")
    p.add_argument("--redis-url", help="use this Redis instead of starting one")
    p.set_defaults(func=_serve)

    p = subparsers.add_parser("worker", help="run an RQ worker for the service's queues")
    from workers.cli_args import add_arguments  # argparse only

    add_arguments(p)
    p.set_defaults(func=_worker)

    p = subparsers.add_parser("remote-compress", help="upload a video to a FrameRS service")
    p.add_argument("file", help="video file")
    _remote_args(p)
    p.add_argument("--selector")
    p.add_argument("--keep", type=int)
    p.add_argument("--stride", type=int)
    p.add_argument("--reconstructor")
    p.add_argument("--keyframe-codec")
    p.add_argument("--crf", type=int)
    p.add_argument("--target-psnr", type=float, help="content-adaptive mode: mean PSNR (dB) to reach")
    p.add_argument("--target-kbps", type=float, help="content-adaptive mode: kept-frame bitrate (kbit/s)")
    p.add_argument("--refresh", type=float, help="refresh layer: share of the dropped frames' blocks corrected")
    p.add_argument("--refresh-kbps", type=float, help="refresh layer's byte budget (kbit/s over the video's duration)")
    p.add_argument("--candidate-map", action=argparse.BooleanOptionalAction, default=None,
                   help="candidate map: per ~16-px block of each dropped frame, the encoder's choice of framemae's "
                        "mix or a fixed weighting of its candidates (form field candidate_map)")
    p.add_argument("--idempotency-key", help="makes a retried upload safe: the same key returns the same video")
    p.add_argument("--callback-url", help="http(s) URL that receives the video's signed events")
    p.add_argument("--metadata", help="a JSON object (at most 4 KB) stored with the video and echoed back")
    p.add_argument("--keep-source", action="store_true",
                   help="keep the upload after compression (per-frame PSNR, side-by-side in /ui)")
    p.add_argument("--wait", action="store_true", help="wait until the compression is done")
    _progress_arg(p)
    p.set_defaults(func=_remote_compress)

    p = subparsers.add_parser("remote-status", help="show a video's job status")
    p.add_argument("id")
    _remote_args(p)
    p.set_defaults(func=_remote_status)

    p = subparsers.add_parser("remote-fetch", help="download a reconstructed video (or --bundle)")
    p.add_argument("id")
    p.add_argument("-o", "--output", required=True, help="output file (.mp4, or .frs with --bundle)")
    p.add_argument("--reconstructor")
    p.add_argument("--bundle", action="store_true", help="download the keyframe bundle instead")
    p.add_argument("--timeout", type=float, help="give up after this many seconds")
    _output_args(p)
    _remote_args(p)
    _progress_arg(p)
    p.set_defaults(func=_remote_fetch)

    p = subparsers.add_parser("remote-cancel", help="cancel a queued or running compression (or reconstruction)")
    p.add_argument("id")
    p.add_argument("--reconstructor", help="cancel this reconstruction instead of the compression")
    _output_args(p)
    _remote_args(p)
    p.set_defaults(func=_remote_cancel)


def _output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--codec", choices=("h264", "vp9", "av1"), help="output video codec (default h264)")
    p.add_argument("--container", choices=("mp4", "webm"), help="default: mp4 (webm for vp9)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--crf", type=int, help="output quality: lower = better, larger")
    group.add_argument("--quality", choices=("high", "medium", "low"), help="instead of --crf")


def _progress_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (it is shown on a terminal when a wait takes more than 2 s)")


def _output_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"codec": args.codec, "container": args.container, "crf": args.crf, "quality": args.quality}


def _remote_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=os.environ.get("FRAMERS_URL", DEFAULT_URL), help="service URL (FRAMERS_URL)")
    p.add_argument("--api-key", default=os.environ.get("FRAMERS_API_KEY"), help="API key (FRAMERS_API_KEY)")


def _serve(args: argparse.Namespace) -> int:
    from core.settings import Settings
    from service.serve import serve

    overrides: dict[str, Any] = {}
    for name in ("host", "port", "data_dir", "redis_url"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    settings = Settings(**overrides)
    given = args.redis_url is not None or "redis_url" in settings.model_fields_set
    return serve(settings, workers=max(1, args.workers), redis_url_given=given)


def _worker(args: argparse.Namespace) -> int:
    from workers.main import command

    return command(args)


def _client(args: argparse.Namespace) -> Any:
    from framers.client import FramersClient

    return FramersClient(args.url, api_key=args.api_key)


def _remote_compress(args: argparse.Namespace) -> int:
    from framers.client import FramersClientError

    options = {
        "selector": args.selector,
        "keep": args.keep,
        "stride": args.stride,
        "reconstructor": args.reconstructor,
        "keyframe_codec": args.keyframe_codec,
        "crf": args.crf,
        "target_psnr": args.target_psnr,
        "target_kbps": args.target_kbps,
        "refresh": args.refresh,
        "refresh_kbps": args.refresh_kbps,
        "candidate_map": args.candidate_map,
        "keep_source": True if args.keep_source else None,
    }
    try:
        metadata = json.loads(args.metadata) if args.metadata else None
    except ValueError as exc:
        print(f"error: --metadata is not JSON: {exc}", file=sys.stderr)
        return 2
    try:
        with _client(args) as client:
            job = client.compress(
                args.file,
                idempotency_key=args.idempotency_key,
                callback_url=args.callback_url,
                metadata=metadata,
                **options,
            )
            if args.wait:
                with WaitBar("compress", enabled=not args.no_progress) as bar:
                    job = client.wait(job["id"], on_progress=bar)
    except (FramersClientError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        # an option the service refused (422) is a usage error, as `framers compress` exits 2 for it
        return 2 if isinstance(exc, FramersClientError) and exc.status_code == 422 else 1
    print(json.dumps(job, indent=2))
    return 0


def _remote_status(args: argparse.Namespace) -> int:
    from framers.client import FramersClientError

    try:
        with _client(args) as client:
            job = client.status(args.id)
    except FramersClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(job, indent=2))
    return 0 if job.get("status") != "failed" else 3


def _remote_fetch(args: argparse.Namespace) -> int:
    from framers.client import FramersClientError

    try:
        with _client(args) as client:
            if args.bundle:
                with WaitBar("compress", enabled=not args.no_progress) as bar:
                    client.wait(args.id, timeout=args.timeout, on_progress=bar)
                path = client.download_bundle(args.id, args.output)
            else:
                with WaitBar("reconstruct", enabled=not args.no_progress) as bar:
                    path = client.reconstruct(args.id, args.output, reconstructor=args.reconstructor,
                                              timeout=args.timeout, on_progress=bar, **_output_options(args))
    except (FramersClientError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _remote_cancel(args: argparse.Namespace) -> int:
    from framers.client import FramersClientError

    try:
        with _client(args) as client:
            answer = client.cancel(args.id, reconstructor=args.reconstructor, **_output_options(args))
    except FramersClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2))
    return 0


class WaitBar:
    """Progress of a remote job on stderr: nothing for a short wait, a tqdm bar (with the
    service's ETA) once a wait passes `after_s` and stderr is a terminal. Called with job views."""

    def __init__(self, desc: str, *, enabled: bool = True, after_s: float = 2.0) -> None:
        self.desc, self.enabled, self.after_s = desc, enabled and sys.stderr.isatty(), after_s
        self.started = time.monotonic()
        self.bar: Any = None

    def __call__(self, view: dict[str, Any]) -> None:
        if not self.enabled or time.monotonic() - self.started < self.after_s:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=100, desc=self.desc, unit="%", leave=False, file=sys.stderr)
        self.bar.update(int(100 * float(view.get("progress") or 0)) - self.bar.n)
        eta = view.get("eta_s")
        self.bar.set_postfix_str(f"{view.get('status', '')}" + (f", ~{eta:.0f} s left" if eta is not None else ""))

    def __enter__(self) -> WaitBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
