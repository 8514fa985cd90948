"""Keeping other web pages from driving tenure: it has no login, so the browser is the boundary.

* **Host** (DNS rebinding): a request whose ``Host`` is not an allowed host gets 400. A page on
  ``evil.example`` that re-points its name at 127.0.0.1 still sends ``Host: evil.example``.
* **Origin** (cross-site requests): a state-changing request (POST, PUT, PATCH, DELETE) whose
  ``Origin`` is not this server's own origin (its host *and port*, as in ``Host``) or an allowed
  one gets 403, so a page served on another port of the same machine is refused; without an
  ``Origin``, a browser's ``Sec-Fetch-Site`` must say ``same-origin`` (or ``none``: typed by the
  user), not ``same-site``, which covers other ports. Tools like curl send neither and pass.

Allowed hosts default to 127.0.0.1, localhost and ::1 (plus the address ``serve`` binds);
``TENURE_ALLOWED_HOSTS`` and ``TENURE_ALLOWED_ORIGINS`` (comma-separated) add more, ``*`` allows any.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

DEFAULT_HOSTS = ("127.0.0.1", "localhost", "::1")
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def from_env(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def _hostname(host_header: str) -> str | None:
    """``example.com:8000`` → ``example.com``; ``[::1]:8000`` → ``::1``; None if malformed."""
    try:
        parsed = urlsplit("//" + host_header)
        return parsed.hostname
    except ValueError:
        return None


class Guard:
    def __init__(self, app: ASGIApp, hosts: Iterable[str], origins: Iterable[str] = ()) -> None:
        self.app = app
        self.hosts = {h.lower().strip("[]") for h in hosts}
        self.origins = {o.lower().rstrip("/") for o in origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        name = _hostname(host) if host else None
        if name is None or ("*" not in self.hosts and name.lower() not in self.hosts):
            await _refuse(scope, send, 400, f"the Host header {host[:100]!r} is not one this tenure serves; "
                                            "add it to TENURE_ALLOWED_HOSTS to allow it")
            return
        if scope["method"] in UNSAFE_METHODS and not self._same_site(headers, host):
            await _refuse(scope, send, 403, "cross-site requests may not start, cancel or retry runs; "
                                            "add the origin to TENURE_ALLOWED_ORIGINS to allow it")
            return
        await self.app(scope, receive, send)

    def _same_site(self, headers: dict[str, str], host: str) -> bool:
        origin = headers.get("origin")
        if origin is None:
            # "same-site" would let in a page on another port of this host (a site ignores ports)
            return headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")
        origin = origin.lower().rstrip("/")
        if "*" in self.origins or origin in self.origins:
            return True
        parsed = urlsplit(origin)
        # host and port, as the browser wrote both (a page on another port is another origin); the
        # scheme is not compared, since behind a TLS proxy this server sees http for https pages
        return parsed.scheme in ("http", "https") and parsed.netloc == host.lower()


async def _refuse(scope: Scope, send: Send, status: int, message: str) -> None:
    path = scope.get("path", "")
    if path.startswith("/api") or path in ("/healthz", "/openapi.json"):
        body, kind = json.dumps({"error": message}).encode(), b"application/json"
    else:
        body, kind = f"{status}: {message}\n".encode(), b"text/plain; charset=utf-8"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
