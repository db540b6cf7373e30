"""A webhook receiver on loopback for bench/service_load.py --callbacks: checks every signature
(core.webhooks.verify) and records the events by video id."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from core.webhooks import SIGNATURE_HEADER, verify


class HookReceiver:
    """POST /hook -> 200; `events[video id]` = the event names received, deduplicated by event id."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.lock = threading.Lock()
        self.events: dict[str, list[str]] = defaultdict(list)
        self.event_ids: set[str] = set()
        self.deliveries = 0
        self.duplicates = 0
        self.bad_signatures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.record(self.headers.get(SIGNATURE_HEADER, ""), body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def record(self, signature: str, body: bytes) -> None:
        ok = verify(self.secret, signature, body)
        event = json.loads(body)
        with self.lock:
            self.deliveries += 1
            if not ok:
                self.bad_signatures += 1
                return
            if event["event_id"] in self.event_ids:
                self.duplicates += 1
                return
            self.event_ids.add(event["event_id"])
            self.events[event["id"]].append(event["event"])

    def summary(self, ids: list[str], event: str = "compress.done") -> dict[str, Any]:
        """How many of `ids` got `event` (each once), deliveries, duplicates, bad signatures."""
        with self.lock:
            got = sum(1 for vid in ids if event in self.events.get(vid, []))
            return {"expected": len(ids), "received": got, "lost": len(ids) - got, "deliveries": self.deliveries,
                    "duplicates": self.duplicates, "bad_signatures": self.bad_signatures}

    def close(self) -> None:
        self.server.shutdown()
