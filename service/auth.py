"""API keys → tenants. A key arrives as `X-API-Key: <key>` or `Authorization: Bearer <key>`."""

from __future__ import annotations

import hmac
import ipaddress

from starlette.datastructures import Headers

from core.settings import ANONYMOUS_TENANT


class AuthError(Exception):
    """No key, or a key no tenant owns."""


class RemoteAnonymousDenied(AuthError):
    """No API keys are configured and the request does not come from this machine."""


def extract_key(headers: Headers) -> str | None:
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def resolve_tenant(tenants_by_key: dict[str, str], headers: Headers, client_host: str | None) -> str:
    """The tenant of this request, or AuthError.

    With no keys configured the service is single-user: every request is the anonymous tenant,
    but only from loopback (`framers serve` also binds to loopback then; this guards a gateway
    started some other way, e.g. directly with uvicorn on 0.0.0.0).
    """
    if not tenants_by_key:
        if not is_loopback(client_host):
            raise RemoteAnonymousDenied(
                "this server has no API keys configured (FRAMERS_API_KEYS) and only accepts requests from this machine"
            )
        return ANONYMOUS_TENANT
    presented = extract_key(headers)
    if not presented:
        raise AuthError("missing API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'")
    tenant = None
    # Compare against every key (no early exit) so timing does not reveal a key prefix.
    for key, owner in tenants_by_key.items():
        if hmac.compare_digest(key.encode(), presented.encode()):
            tenant = owner
    if tenant is None:
        raise AuthError("invalid API key")
    return tenant
