"""Signed webhooks: callback URL checks (SSRF), event bodies, signatures, and one delivery.

Shared by the gateway (it refuses a bad `callback_url` at upload) and the workers (they build the
events and deliver them from the `webhooks` queue).

Safety (server-side request forgery): a callback URL must be http(s) and its host must resolve to
public addresses only — no private, loopback, link-local, multicast, reserved or unspecified
address (IPv4-mapped IPv6 included) — unless the host is listed in
`FRAMERS_CALLBACK_ALLOWED_HOSTS`. The host is resolved once per delivery, every address checked,
and the connection made to that checked address (no second lookup an attacker's DNS could
answer differently: no DNS rebinding); the `Host` header and the TLS server name (SNI, and the
certificate check) stay the URL's host name. Redirects are not followed.

Signature: `X-FrameRS-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

SIGNATURE_HEADER = "X-FrameRS-Signature"
EVENT_HEADER = "X-FrameRS-Event"
EVENT_ID_HEADER = "X-FrameRS-Event-Id"
EVENTS = ("compress.done", "compress.failed", "reconstruct.done", "reconstruct.failed")
MAX_URL_CHARS = 2048
USER_AGENT = "FrameRS-Webhooks/1"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CallbackRefused(ValueError):
    """The callback URL is not allowed (scheme, host, or an address that is not public)."""


def parse_allowed_hosts(raw: str | Iterable[str]) -> frozenset[str]:
    """"hooks.internal, 127.0.0.1" -> {"hooks.internal", "127.0.0.1"} (lower case, no brackets)."""
    items = raw.split(",") if isinstance(raw, str) else raw
    return frozenset(h.strip().lower().strip("[]") for h in items if h.strip())


def address_allowed(ip: IPAddress) -> bool:
    """Whether a callback may connect to `ip` without the host being listed: public unicast only."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_loopback)


def _numeric_address(host: str) -> IPAddress | None:
    """`host` as an address if it is one in any notation a resolver accepts ("127.1", "0x7f.0.0.1",
    "2130706433", "[::1]"), without any DNS lookup; None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    return ipaddress.ip_address(infos[0][4][0]) if infos else None


@dataclass(frozen=True)
class CallbackTarget:
    """A checked callback URL: where to connect (`address`, `port`) and what to call it (`host`)."""

    url: str
    scheme: str
    host: str
    port: int
    address: str


def check_callback_url(url: str, allowed_hosts: frozenset[str]) -> str:
    """The URL if it may be used as a callback as far as can be told without DNS (scheme, a host,
    no literal private/loopback/link-local/multicast address unless allowed); else CallbackRefused."""
    if len(url) > MAX_URL_CHARS:
        raise CallbackRefused(f"callback_url is longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise CallbackRefused(f"callback_url is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise CallbackRefused("callback_url must be an http:// or https:// URL")
    host = (parts.hostname or "").lower()
    if not host:
        raise CallbackRefused("callback_url has no host")
    if any(c.isspace() for c in url) or any(ord(c) < 32 for c in url):
        raise CallbackRefused("callback_url contains whitespace or control characters")
    if port == 0:
        raise CallbackRefused("callback_url has port 0")
    if host in allowed_hosts:
        return url
    numeric = _numeric_address(host)
    if numeric is not None and not address_allowed(numeric):
        raise CallbackRefused(
            f"callback_url points to a non-public address ({numeric}); "
            "only hosts listed in FRAMERS_CALLBACK_ALLOWED_HOSTS may be private"
        )
    if host == "localhost" or host.endswith(".localhost"):
        raise CallbackRefused("callback_url points to localhost")
    return url


def resolve_callback(url: str, allowed_hosts: frozenset[str]) -> CallbackTarget:
    """Check `url`, resolve its host once and check every address; the target to connect to."""
    check_callback_url(url, allowed_hosts)
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise ResolveError(f"cannot resolve {host}: {exc}") from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses:
        raise ResolveError(f"{host} has no address")
    if host not in allowed_hosts:
        bad = [str(a) for a in addresses if not address_allowed(a)]
        if bad:
            raise CallbackRefused(
                f"callback host {host} resolves to a non-public address ({bad[0]}); "
                "list it in FRAMERS_CALLBACK_ALLOWED_HOSTS to allow it"
            )
    return CallbackTarget(url=url, scheme=parts.scheme, host=host, port=port, address=str(addresses[0]))


class ResolveError(OSError):
    """The callback host does not resolve (now): worth retrying later."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value `t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, *, tolerance_s: float = 300.0, now: float | None = None) -> bool:
    """A receiver's check of `X-FrameRS-Signature`: a v1 signature matches and `t` is recent."""
    fields: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        fields.setdefault(name, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, v) for v in fields.get("v1", []))


@dataclass(frozen=True)
class DeliveryResult:
    """What one delivery attempt got: the status code, or why there was none."""

    status_code: int | None
    error: str | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def tls_context(extra_ca_file: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """Certificate checks for https callbacks: the public CAs (certifi's, as httpx uses), plus
    the CAs in `extra_ca_file` (FRAMERS_WEBHOOK_CA_BUNDLE: an internal CA) when given."""
    try:
        import certifi

        context = ssl.create_default_context(cafile=certifi.where())
    except ImportError:
        context = ssl.create_default_context()
    if extra_ca_file:
        context.load_verify_locations(cafile=os.fspath(extra_ca_file))
    return context


def post_event(
    target: CallbackTarget,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout_s: float,
    verify: ssl.SSLContext | None = None,
    transport: httpx.BaseTransport | None = None,
) -> DeliveryResult:
    """POST `body` to the resolved address of `target`, with the URL's Host header and TLS name
    (SNI and the certificate's host name check use the URL's host, not the address)."""
    started = time.monotonic()
    url = httpx.URL(target.url)
    default_port = 443 if target.scheme == "https" else 80
    host_header = target.host if ":" not in target.host else f"[{target.host}]"
    if target.port != default_port:
        host_header += f":{target.port}"
    connect_url = url.copy_with(host=target.address, port=target.port)
    extensions: dict[str, Any] = {"sni_hostname": target.host} if target.scheme == "https" else {}
    all_headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        **headers,
        "Host": host_header,
    }
    try:
        with httpx.Client(
            timeout=timeout_s,
            follow_redirects=False,
            transport=transport,
            trust_env=False,  # no proxy from the environment: we connect to the checked address
            verify=verify if verify is not None else tls_context(),
        ) as http:
            request = http.build_request("POST", connect_url, content=body, headers=all_headers, extensions=extensions)
            response = http.send(request)
            response.read()
    except httpx.HTTPError as exc:
        return DeliveryResult(None, f"{type(exc).__name__}: {exc}"[:300], time.monotonic() - started)
    return DeliveryResult(response.status_code, None, time.monotonic() - started)
