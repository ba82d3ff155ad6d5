"""A lean HTTP/1.1 client on asyncio protocols, for the payout adapters' one-request-one-answer calls.

Why our own: per payout call it costs a fraction of aiohttp's CPU (docs/performance.md has the figures), and the
bridge worker is one Python thread. What it speaks is what the providers' payout APIs need and no more:

* ``http://`` and ``https://`` (TLS through :mod:`ssl`, certificates verified against the system store or
  ``ca_file``; SNI and host name checked);
* keep-alive connections pooled per (scheme, host, port), at most ``max_connections`` idle ones kept;
  one request at a time per connection (no pipelining);
* response bodies framed by ``Content-Length``, ``Transfer-Encoding: chunked`` or the end of the
  connection; bodies over ``max_body_bytes`` are refused; no redirects, no compression (we do not ask).

Error contract (the same as the other transports, :mod:`streams.bridge.providers.http`): :class:`ConnectFailed`
when the request was certainly not sent (connection refused, TLS handshake refused); :class:`TimedOut` when
it was (or may have been) sent and no whole answer came within ``timeout_ms``, the connection dropped, or
the answer was not HTTP. A connection that timed out or answered garbage is closed, never reused.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

from streams.bridge.providers.http import ConnectFailed, HttpRequest, HttpResponse, TimedOut

MAX_BODY_BYTES = 1 << 20  # payout APIs answer in a few KiB; anything near this is not an answer to us
MAX_HEAD_BYTES = 64 << 10


class ProtocolError(Exception):
    """The peer's bytes are not an HTTP/1.1 response we can read."""


@dataclass(slots=True)
class _Parser:
    """Incremental response parser: feed bytes, ``done`` once a whole response is in."""

    max_body_bytes: int
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    done: bool = False
    keep_alive: bool = True
    _buf: bytearray = field(default_factory=bytearray)
    _state: str = "head"  # head -> length | chunk_size | chunk_data | chunk_trailer | to_close -> done
    _remaining: int = 0

    def feed(self, data: bytes) -> None:
        self._buf += data
        while not self.done and self._step():
            pass

    def eof(self) -> None:
        """The peer closed the connection: that ends a body framed by the connection's end, nothing else."""
        if self._state == "to_close":
            self.done = True
            self.keep_alive = False
        elif not self.done:
            raise ProtocolError(f"connection closed mid-response ({self._state})")

    def _step(self) -> bool:
        buf = self._buf
        if self._state == "head":
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise ProtocolError("response head too large")
                return False
            self._head(bytes(buf[:end]).decode("latin-1"))
            del buf[: end + 4]
            return True
        if self._state == "length":
            take = min(self._remaining, len(buf))
            self._append(buf[:take])
            del buf[:take]
            self._remaining -= take
            if self._remaining == 0:
                self.done = True
            return False
        if self._state == "to_close":
            self._append(buf)
            buf.clear()
            return False
        if self._state == "chunk_size":
            end = buf.find(b"\r\n")
            if end < 0:
                return False
            size_text = bytes(buf[:end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {size_text[:20]!r}") from None
            del buf[: end + 2]
            if size == 0:
                self._state = "chunk_trailer"
            else:
                self._state, self._remaining = "chunk_data", size
            return True
        if self._state == "chunk_data":
            if len(buf) < self._remaining + 2:
                return False
            if buf[self._remaining : self._remaining + 2] != b"\r\n":
                raise ProtocolError("chunk not followed by CRLF")
            self._append(buf[: self._remaining])
            del buf[: self._remaining + 2]
            self._state = "chunk_size"
            return True
        # chunk_trailer: optional trailer fields, then an empty line
        end = buf.find(b"\r\n")
        if end < 0:
            return False
        del buf[: end + 2]
        if end == 0:
            self.done = True
        return True

    def _head(self, head: str) -> None:
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        status = int(parts[1])
        if 100 <= status < 200:  # an interim answer (we never ask for one): skip it, the real one follows
            return
        self.status = status
        headers = self.headers
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError(f"bad header line {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        self.keep_alive = (parts[0] == "HTTP/1.1" and connection != "close") or connection == "keep-alive"
        if status in (204, 304):
            self.done = True
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._state = "chunk_size"
        elif "content-length" in headers:
            length_text = headers["content-length"]
            if not length_text.isdigit():
                raise ProtocolError(f"bad Content-Length {length_text[:20]!r}")
            self._remaining = int(length_text)
            if self._remaining > self.max_body_bytes:
                raise ProtocolError(f"body of {self._remaining} bytes is over the {self.max_body_bytes}-byte bound")
            self._state = "length"
            self.done = self._remaining == 0
        else:
            self._state = "to_close"
            self.keep_alive = False

    def _append(self, data: bytes | bytearray) -> None:
        if len(self.body) + len(data) > self.max_body_bytes:
            raise ProtocolError(f"body over the {self.max_body_bytes}-byte bound")
        self.body += data


class _Connection(asyncio.Protocol):
    """One keep-alive connection; ``answer`` resolves with the response of the request just written."""

    def __init__(self, max_body_bytes: int) -> None:
        self.max_body_bytes = max_body_bytes
        self.transport: asyncio.Transport | None = None
        self.parser: _Parser | None = None
        self.answer: asyncio.Future[HttpResponse] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, but not necessarily an asyncio.Transport subclass (uvloop's is not).
        self.transport = cast(asyncio.Transport, transport)

    def send(self, data: bytes) -> asyncio.Future[HttpResponse]:
        assert self.transport is not None and self.answer is None, "one request at a time per connection"
        self.parser = _Parser(self.max_body_bytes)
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.answer

    def data_received(self, data: bytes) -> None:
        parser, answer = self.parser, self.answer
        if parser is None or answer is None or answer.done():
            self.close()  # bytes nobody asked for: this connection's framing cannot be trusted any more
            return
        try:
            parser.feed(data)
        except ProtocolError as exc:
            self.close()
            answer.set_exception(TimedOut(f"unreadable answer: {exc}"))
            return
        if parser.done:
            self._finish(parser, answer)

    def eof_received(self) -> bool | None:
        self._ended(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)

    def _ended(self, exc: Exception | None) -> None:
        parser, answer = self.parser, self.answer
        self.closed = True
        if parser is None or answer is None or answer.done():
            return
        try:
            parser.eof()
        except ProtocolError as err:
            answer.set_exception(TimedOut(f"connection lost: {exc or err}"))
            return
        self._finish(parser, answer)

    def _finish(self, parser: _Parser, answer: asyncio.Future[HttpResponse]) -> None:
        self.parser = self.answer = None
        if not parser.keep_alive:
            self.close()
        answer.set_result(HttpResponse(parser.status, parser.headers, bytes(parser.body)))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class LeanHttpTransport:
    """:class:`streams.bridge.providers.base.Transport` on :class:`_Connection` pools (see the module doc)."""

    def __init__(
        self, max_connections: int = 512, *, ca_file: Path | None = None, max_body_bytes: int = MAX_BODY_BYTES
    ) -> None:
        assert max_connections >= 1
        self.max_connections = max_connections  # idle connections kept per target; the runner bounds the rest
        self.max_body_bytes = max_body_bytes
        self.ca_file = ca_file
        self._ssl: ssl.SSLContext | None = None
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._targets: dict[str, tuple[str, str, int, str]] = {}  # scheme://host:port -> parts and Host
        self.connections_opened = 0
        self._closed = False

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        return self._ssl

    def _target(self, url: str) -> tuple[tuple[str, str, int], str, str]:
        """((scheme, host, port), Host header, path) of a URL; each scheme://host:port is parsed once."""
        scheme_end = url.find("://")
        slash = url.find("/", scheme_end + 3) if scheme_end >= 0 else -1
        prefix, path = (url, "/") if slash < 0 else (url[:slash], url[slash:])
        hit = self._targets.get(prefix)
        if hit is None:
            parts = urlsplit(prefix)
            scheme = parts.scheme.lower()
            if scheme not in ("http", "https") or not parts.hostname:
                raise ConnectFailed(f"not an http(s) URL: {url}")
            try:
                port = parts.port or (443 if scheme == "https" else 80)
            except ValueError as exc:
                raise ConnectFailed(f"bad port in {url}: {exc}") from None
            hit = self._targets[prefix] = (scheme, parts.hostname, port, parts.netloc)
        scheme, host, port, authority = hit
        return (scheme, host, port), authority, path

    async def send(self, request: HttpRequest, timeout_ms: int) -> HttpResponse:
        key, authority, path = self._target(request.url)
        head = [f"{request.method} {path} HTTP/1.1", f"Host: {authority}", f"Content-Length: {len(request.body)}"]
        head.extend(f"{k}: {v}" for k, v in request.headers)
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + request.body
        pool = self._idle.setdefault(key, [])
        conn: _Connection | None = None
        while pool:
            candidate = pool.pop()
            if not candidate.closed:
                conn = candidate
                break
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                if conn is None:
                    conn = await self._open(key)
                response = await conn.send(data)
        except TimeoutError as exc:
            if conn is not None:
                conn.close()  # an answer may still arrive on it: never reuse this connection
            raise TimedOut("no whole answer in time") from exc
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        if not conn.closed and not self._closed and len(pool) < self.max_connections:
            pool.append(conn)
        else:  # answered with "close", pool full, or this transport closed while the call was out
            conn.close()
        return response

    async def _open(self, key: tuple[str, str, int]) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        tls = self._tls() if scheme == "https" else None
        try:
            _, conn = await loop.create_connection(
                lambda: _Connection(self.max_body_bytes), host, port, ssl=tls, server_hostname=host if tls else None
            )
        except (OSError, ssl.SSLError) as exc:  # refused, unreachable, certificate refused: nothing was sent
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from exc
        self.connections_opened += 1
        return conn

    async def aclose(self) -> None:
        self._closed = True
        for pool in self._idle.values():
            for conn in pool:
                conn.close()
        self._idle.clear()
