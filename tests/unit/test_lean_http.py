"""The lean HTTP/1.1 client: framing, keep-alive, TLS, bounds and the error contract, against loopback servers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from streams.bridge.providers.base import ConnectFailed, HttpRequest, HttpResponse, TimedOut, make_transport
from streams.bridge.providers.lean_http import LeanHttpTransport, ProtocolError, _Parser
from streams.kafka import event_loop
from streams.kafka.event_loop import LoopKind

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


LOOP: LoopKind = "asyncio"


@pytest.fixture(autouse=True, params=["asyncio", "uvloop"])
def loop_kind(request: pytest.FixtureRequest) -> None:
    """Every test on both event loops: the workers run on uvloop (whose transports are not asyncio.Transport)."""
    global LOOP
    LOOP = request.param


def run(coro: Awaitable[Any]) -> Any:
    return event_loop.run(coro, LOOP)  # type: ignore[arg-type]


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {}
    for line in head[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return head[0], headers, body


class Server:
    """A loopback server answering each request with ``answer(request_no, request)`` bytes (None: hang)."""

    def __init__(
        self,
        answer: Callable[[int, tuple[str, dict[str, str], bytes]], list[bytes] | None],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.answer = answer
        self.tls = tls
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.tls else 'http'}://localhost:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                request = await read_request(reader)
                self.requests.append(request)
                parts = self.answer(len(self.requests), request)
                if parts is None:
                    await asyncio.sleep(30)
                    return
                for part in parts:  # separate writes, to exercise the client's incremental parsing
                    writer.write(part)
                    await writer.drain()
                    await asyncio.sleep(0)
                if parts and parts[-1] == b"<close>":
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


def ok(body: bytes = b'{"id":"po_1"}', extra: str = "") -> list[bytes]:
    return [
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode()
        + body
    ]


def post(url: str, body: bytes = b'{"amount":100}') -> HttpRequest:
    return HttpRequest(
        "POST", url + "/v1/payouts?x=1", (("Authorization", "Bearer sk"), ("Idempotency-Key", "k1")), body
    )


# --------------------------------------------------------------------------- the parser, at every split point


RESPONSES = {
    "length": (b"HTTP/1.1 201 Created\r\nContent-Length: 11\r\nX-A: b\r\n\r\nhello world", 201, b"hello world", True),
    "chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
        200,
        b"hello world",
        True,
    ),
    "close": (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 200, b"ok", False),
    "interim then final": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", 204, b"", True),
    "http/1.0": (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", 200, b"x", False),
}


@pytest.mark.parametrize("name", sorted(RESPONSES))
def test_parser_reads_the_same_response_however_the_bytes_are_split(name: str) -> None:
    raw, status, body, keep_alive = RESPONSES[name]
    for cut in range(1, len(raw)):
        parser = _Parser(1 << 20)
        parser.feed(raw[:cut])
        assert not parser.done, (name, cut)  # not one byte early
        parser.feed(raw[cut:])
        assert parser.done, (name, cut)
        assert (parser.status, bytes(parser.body), parser.keep_alive) == (status, body, keep_alive), (name, cut)


def test_parser_reads_a_body_that_ends_with_the_connection() -> None:
    parser = _Parser(1 << 20)
    parser.feed(b"HTTP/1.1 200 OK\r\n\r\npart one, ")
    parser.feed(b"part two")
    assert not parser.done
    parser.eof()
    assert parser.done and bytes(parser.body) == b"part one, part two" and not parser.keep_alive


@pytest.mark.parametrize(
    "raw",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",  # not HTTP
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",  # chunk without its CRLF
        b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n",  # over the body bound
    ],
)
def test_parser_refuses_what_is_not_a_readable_response(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        _Parser(1 << 20).feed(raw)


def test_parser_bounds_a_chunked_body_too() -> None:
    parser = _Parser(10)
    with pytest.raises(ProtocolError, match="bound"):
        parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n12345678\r\n")


def test_parser_says_a_response_cut_short_is_not_one() -> None:
    parser = _Parser(1 << 20)
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(ProtocolError, match="mid-response"):
        parser.eof()


# --------------------------------------------------------------------------- the transport over loopback


def test_sends_the_request_and_reuses_the_connection() -> None:
    async def main() -> None:
        async with Server(lambda n, _r: ok(f'{{"n":{n}}}'.encode())) as server:
            t = LeanHttpTransport()
            answers = [await t.send(post(server.url), 1000) for _ in range(3)]
            await t.aclose()
        assert [a.json()["n"] for a in answers] == [1, 2, 3]
        assert answers[0].status == 200 and answers[0].headers["content-type"] == "application/json"
        assert server.connections == 1 and t.connections_opened == 1  # keep-alive
        line, headers, body = server.requests[0]
        assert line == "POST /v1/payouts?x=1 HTTP/1.1"
        assert headers["host"] == server.url.split("//")[1]
        assert headers["authorization"] == "Bearer sk" and headers["idempotency-key"] == "k1"
        assert body == b'{"amount":100}' and headers["content-length"] == str(len(body))

    run(main())


async def two_posts(
    answer: Callable[[int, tuple[str, dict[str, str], bytes]], list[bytes] | None],
) -> tuple[Server, LeanHttpTransport, HttpResponse, HttpResponse]:
    """Two requests in turn on one transport (closed after), to a server answering with ``answer``."""
    async with Server(answer) as server:
        t = LeanHttpTransport()
        first = await t.send(post(server.url), 1000)
        second = await t.send(post(server.url), 1000)
        await t.aclose()
    return server, t, first, second


def test_chunked_answer_in_pieces_then_the_connection_is_reused() -> None:
    def answer(n: int, _r: object) -> list[bytes]:
        return (
            [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b'7\r\n{"a"', b":1}\r\n", b"0\r\n\r\n"]
            if (n == 1)
            else ok()
        )

    server, _t, first, second = run(two_posts(answer))
    assert first.json() == {"a": 1} and second.json() == {"id": "po_1"}
    assert server.connections == 1


def test_connection_close_and_body_to_the_end_are_read_and_not_reused() -> None:
    def answer(n: int, _r: object) -> list[bytes]:
        if n == 1:
            return [*ok(extra="Connection: close\r\n"), b"<close>"]
        return [b"HTTP/1.1 200 OK\r\n\r\n", b"until the end", b"<close>"]

    _server, t, first, second = run(two_posts(answer))
    assert first.json() == {"id": "po_1"}
    assert second.body == b"until the end<close>"  # the server's marker went out as body bytes too
    assert t.connections_opened == 2


def test_a_silent_server_times_out_and_its_connection_is_never_reused() -> None:
    async def main() -> None:
        async with Server(lambda n, _r: None if n == 1 else ok()) as server:
            t = LeanHttpTransport()
            started = asyncio.get_running_loop().time()
            with pytest.raises(TimedOut):
                await t.send(post(server.url), 200)
            waited = asyncio.get_running_loop().time() - started
            after = await t.send(post(server.url), 1000)
            await t.aclose()
        assert 0.19 <= waited < 1.0
        assert after.status == 200 and t.connections_opened == 2

    run(main())


async def answered_then_closed(t: LeanHttpTransport, url: str, connections_opened: int) -> None:
    """The next request is answered 200; then ``t`` closes, having opened ``connections_opened`` in all."""
    assert (await t.send(post(url), 1000)).status == 200
    await t.aclose()
    assert t.connections_opened == connections_opened


def test_a_dropped_connection_or_garbage_is_an_unknown_outcome() -> None:
    answers = {1: [b'HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{"id"', b"<close>"], 2: [b"garbage\r\n\r\n"]}

    async def main() -> None:
        async with Server(lambda n, _r: answers.get(n, ok())) as server:
            t = LeanHttpTransport()
            with pytest.raises(TimedOut, match="connection lost"):
                await t.send(post(server.url), 1000)
            with pytest.raises(TimedOut, match="unreadable"):
                await t.send(post(server.url), 1000)
            await answered_then_closed(t, server.url, connections_opened=3)

    run(main())


def test_an_idle_connection_the_server_closed_is_skipped() -> None:
    async def main() -> None:
        async with Server(lambda n, _r: [*ok(), b"<close>"] if n == 1 else ok()) as server:
            t = make_transport("lean")
            assert isinstance(t, LeanHttpTransport)
            await t.send(post(server.url), 1000)  # the server closes after answering (without saying so)
            await asyncio.sleep(0.05)
            await answered_then_closed(t, server.url, connections_opened=2)

    run(main())


def test_refused_and_unsupported_urls_are_not_sent() -> None:
    async def main() -> None:
        t = LeanHttpTransport()
        with pytest.raises(ConnectFailed):
            await t.send(post("http://127.0.0.1:9"), 1000)  # nothing listens
        with pytest.raises(ConnectFailed):
            await t.send(post("ftp://127.0.0.1:21"), 1000)

    run(main())


# --------------------------------------------------------------------------- TLS


def make_tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A throwaway CA and a localhost certificate it signed; returns the server context and the CA file."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def cert(subject: str, key: Any, issuer: str, issuer_key: Any, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        else:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = cert("nexus test CA", ca_key, "nexus test CA", ca_key, True)
    server_cert = cert("localhost", key, "nexus test CA", ca_key, False)
    pem = serialization.Encoding.PEM
    ca_file, chain, key_file = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    ca_file.write_bytes(ca_cert.public_bytes(pem))
    chain.write_bytes(server_cert.public_bytes(pem))
    key_file.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(chain, key_file)
    return context, ca_file


def test_https_with_a_trusted_certificate_and_refused_with_an_unknown_one(tmp_path: Path) -> None:
    server_tls, ca_file = make_tls(tmp_path)

    async def main() -> None:
        async with Server(lambda n, _r: ok(b'{"tls":true}'), tls=server_tls) as server:
            assert server.url.startswith("https://localhost:")
            trusting = LeanHttpTransport(ca_file=ca_file)
            answers = [await trusting.send(post(server.url), 2000) for _ in range(2)]
            await trusting.aclose()
            with pytest.raises(ConnectFailed, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
                await LeanHttpTransport().send(post(server.url), 2000)  # system trust only: not our CA
        assert [a.json() for a in answers] == [{"tls": True}] * 2
        assert trusting.connections_opened == 1
        assert len(server.requests) == 2  # the refused client never sent its request

    run(main())


def test_concurrent_calls_open_connections_and_at_most_max_connections_stay_idle() -> None:
    async def main() -> None:
        async with Server(lambda n, _r: ok()) as server:
            t = LeanHttpTransport(max_connections=2)
            first = await asyncio.gather(*(t.send(post(server.url), 1000) for _ in range(3)))
            assert t.connections_opened == 3  # one request at a time per connection
            assert sum(len(pool) for pool in t._idle.values()) == 2  # the third was closed, not pooled
            second = await asyncio.gather(*(t.send(post(server.url), 1000) for _ in range(2)))
            await t.aclose()
        assert [r.status for r in (*first, *second)] == [200] * 5
        assert t.connections_opened == 3  # the two kept were reused

    run(main())


def test_a_call_that_returns_after_aclose_does_not_leave_its_connection_open() -> None:
    async def main() -> None:
        release = asyncio.Event()
        client_closed = asyncio.Event()

        async def slow_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            await release.wait()
            writer.write(ok()[0])
            await writer.drain()
            with contextlib.suppress(TimeoutError):  # keeps its side open: only the client can close it
                if await asyncio.wait_for(reader.read(), 1.0) == b"":
                    client_closed.set()
            writer.close()

        server = await asyncio.start_server(slow_ok, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        t = LeanHttpTransport()
        call = asyncio.create_task(t.send(post(url), 2000))
        await asyncio.sleep(0.05)
        await t.aclose()  # shutting down while the call is out
        release.set()
        assert (await call).status == 200
        await asyncio.wait_for(client_closed.wait(), 0.5)  # closed, not kept in a pool nobody will close
        server.close()

    run(main())
