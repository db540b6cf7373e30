"""HEAD on every GET route (RFC 9110 §9.3.2): the GET's status and headers, no body.

FastAPI's routes answer only the methods they declare (Starlette's own routes add HEAD to GET, FastAPI's
do not), so a HEAD request is routed as a GET here, marked in the scope (`is_head`) so that a route
that would stream a file can skip opening it, and the body is dropped on the way out. The GET's
`Content-Length` is kept, so `curl -I`, load balancers and download managers see the real size.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEAD_SCOPE_KEY = "framers.head"


def is_head(request: Request) -> bool:
    """True when this (GET-routed) request is really a HEAD: build the headers, skip the body."""
    return bool(request.scope.get(HEAD_SCOPE_KEY))


class HeadAsGetMiddleware:
    """Routes HEAD as GET and sends the GET's status and headers without its body (pure ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "HEAD":
            await self.app(scope, receive, send)
            return
        ended = False

        async def send_headers_only(message: Message) -> None:
            nonlocal ended
            if message["type"] != "http.response.body":
                # Routed; the server must see HEAD again before it frames the answer (uvicorn's
                # httptools protocol reads the method from this scope to expect no body).
                scope["method"] = "HEAD"
                await send(message)
            elif not ended:
                ended = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            # The rest of a body that some route still produces is dropped.

        # In place, so that middleware outside this one sees the route that was matched.
        scope["method"] = "GET"
        scope[HEAD_SCOPE_KEY] = True
        await self.app(scope, receive, send_headers_only)
