"""What every request goes through before its route: who is calling, the rate limit, the body bound, the metrics.

One ASGI middleware, in this order: the bearer token is verified once (the principal, or why it is refused, is
left in the request's state for the routes); the caller's token bucket is charged (a verified client by its id, any
other caller by its address), 429 + Retry-After when empty; a body is read whole up to ``body_bytes_max`` (413
OVERSIZED beyond, whether announced by Content-Length or not) and handed to the route; each answer is counted per
route template and status, with its latency.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from streams.api.auth import TokenIssuer, bearer_token
from streams.api.problems import ApiProblem, problem_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class TokenBuckets:
    """One token bucket per caller: ``rate_per_s`` tokens a second, at most ``burst``; the idlest forgotten beyond
    ``callers_max`` (a forgotten caller starts again with a full bucket)."""

    def __init__(self, rate_per_s: float, burst: int, callers_max: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self.callers_max = callers_max
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # caller -> (tokens, at)

    def take(self, caller: str, now: float) -> float:
        """0 when a request may go now (one token taken); else the seconds until one is there."""
        tokens, at = self._buckets.pop(caller, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate_per_s)
        wait_s = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait_s = (1.0 - tokens) / self.rate_per_s
        self._buckets[caller] = (tokens, now)
        while len(self._buckets) > self.callers_max:
            self._buckets.popitem(last=False)
        return wait_s


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nexus_api_requests", "HTTP requests answered", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "nexus_api_request_seconds",
            "time from the request's arrival to its answer",
            ["method", "route"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.produced = Counter(
            "nexus_api_produced", "records produced and acknowledged", ["topic"], registry=self.registry
        )
        self.bridge_answers = Counter(
            "nexus_api_bridge_answers",
            "POST /bridge answers: settled in time (200) or still open (202)",
            ["status"],
            registry=self.registry,
        )
        self.replayed = Counter("nexus_api_idempotent_replays", "responses replayed", registry=self.registry)


class Gate:
    """The middleware (see the module doc)."""

    def __init__(
        self,
        app: App,
        *,
        tokens: TokenIssuer,
        buckets: TokenBuckets,
        body_bytes_max: int,
        metrics: ApiMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.buckets = buckets
        self.body_bytes_max = body_bytes_max
        self.metrics = metrics
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_seen = [500]

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen[0] = int(message["status"])
            await send(message)

        try:
            refusal = self._admit(scope)
            if refusal is None and scope["method"] in BODY_METHODS:
                body = await self._read_body(scope, receive)
                if isinstance(body, ApiProblem):
                    refusal = body
                else:
                    receive = _replay(body)
            if refusal is not None:
                await _answer(send_counted, refusal, scope["path"])
            else:
                await self.app(scope, receive, send_counted)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status_seen[0])).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)

    def _admit(self, scope: Scope) -> ApiProblem | None:
        """Verify the token (left in the state), then charge the caller's bucket."""
        state = scope.setdefault("state", {})
        authorization = _header(scope, b"authorization")
        caller = f"addr:{(scope.get('client') or ('?', 0))[0]}"
        if authorization is not None:
            try:
                principal = self.tokens.verify(bearer_token(authorization))
                state["principal"] = principal
                caller = f"client:{principal.client_id}"
            except ApiProblem as problem:
                state["auth_problem"] = problem
        wait_s = self.buckets.take(caller, self.clock())
        if wait_s > 0:
            retry_after = str(max(1, math.ceil(wait_s)))
            return ApiProblem(
                429,
                "RATE_LIMITED",
                f"rate limit of {self.buckets.rate_per_s:g} requests/s (bursts of {self.buckets.burst:g}) exceeded; "
                f"retry in {retry_after} s",
                headers={"Retry-After": retry_after},
            )
        return None

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | ApiProblem:
        limit = self.body_bytes_max
        announced = _header(scope, b"content-length")
        if announced is not None and announced.isdigit() and int(announced) > limit:
            return _too_large(limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return _too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _too_large(limit: int) -> ApiProblem:
    return ApiProblem(413, "OVERSIZED", f"the request body is larger than the {limit}-byte limit")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _answer(send: Send, problem: ApiProblem, path: str) -> None:
    body = problem_body(problem, path)
    headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in problem.headers.items()]
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
