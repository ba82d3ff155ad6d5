"""The HTTP types every transport and adapter shares: request, response, the transport protocol, its errors."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol


def loads_exact(body: bytes | str) -> Any:
    """JSON with numbers that have a fraction read as Decimal (never float)."""
    return json.loads(body, parse_float=Decimal)


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        lname = name.lower()
        return next((v for k, v in self.headers if k.lower() == lname), None)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return loads_exact(self.body)

    def json_or_none(self) -> Any:
        """The body as JSON, or None when it is not JSON (a proxy's error page, an empty body)."""
        try:
            return self.json()
        except ValueError:
            return None


class TransportError(Exception):
    pass


class ConnectFailed(TransportError):
    """The request was definitely not sent (connection refused, no pooled connection in time)."""


class TimedOut(TransportError):
    """Sent (or maybe sent) but no complete answer in time: the outcome is unknown."""


class Transport(Protocol):
    async def send(self, request: HttpRequest, timeout_ms: int) -> HttpResponse: ...

    async def aclose(self) -> None: ...


__all__ = [
    "ConnectFailed",
    "HttpRequest",
    "HttpResponse",
    "TimedOut",
    "Transport",
    "TransportError",
    "loads_exact",
]
