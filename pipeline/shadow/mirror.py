"""The local stand-in for Gateway API's RequestMirror: a loopback proxy process in front of two services.

Every request goes to the stable service and the user gets stable's answer untouched. A prediction
request (POST /v1/predict, /v2/models/NAME/infer) is also copied, for `--percent` of them, into a bounded
queue that `--senders` tasks drain to the candidate, off the response path: a slow or failing candidate
never slows or fails the user's answer, and a copy that finds the queue full is dropped (counted). Both
answers are kept by request id (the service echoes X-Request-ID; the mirror gives one to a request
without) and written to `--out` as JSON lines when the process is stopped (SIGTERM), after the copies
still queued had `--drain` seconds to be answered.

Caddy, the local traffic splitter, cannot mirror (caddyserver/caddy#4211), hence this process.

    python -m pipeline.shadow.mirror --stable URL --candidate URL --port N --out FILE
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from model_service.contract.monitoring import PREDICTION_ROUTES_REGEX

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

REQUEST_ID = "x-request-id"
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host",
     "content-length"}
)  # fmt: skip
"""Headers of one connection, not of the request (RFC 9110, 7.6.1): never forwarded."""
DECODED = HOP_BY_HOP | {"content-encoding"}
"""Headers of an upstream answer not passed on: httpx hands the body over decoded, so its encoding no longer applies."""
MIRRORED = re.compile(f"^({PREDICTION_ROUTES_REGEX})$")
UPSTREAM_TIMEOUT_S = 30.0
DEFAULT_DRAIN_S = 10.0
"""How long the copies still queued at shutdown may take; less than processes.STOP_TIMEOUT_S."""


@dataclass
class Answer:
    """One service's answer to one request, as the mirror saw it."""

    status: int | None
    """None: no answer (connection refused, timeout)."""
    ms: float
    body: str = ""
    request_id: str | None = None
    """The X-Request-ID the service echoed."""
    error: str = ""


@dataclass
class Exchange:
    """A user's request, stable's answer and what became of its copy."""

    request_id: str
    path: str
    request: str
    stable: Answer
    copy: str = "not mirrored"
    """not mirrored | queued | dropped (queue full) | answered | unanswered (still queued at shutdown)"""
    candidate: Answer | None = None


@dataclass
class Mirror:
    """The ASGI app: forwards to stable, copies to the candidate, keeps every exchange."""

    stable: str
    candidate: str
    percent: int = 100
    queue_size: int = 256
    senders: int = 8
    out: Path = Path("exchanges.jsonl")
    drain_s: float = DEFAULT_DRAIN_S
    exchanges: list[Exchange] = field(default_factory=list)
    _seen: int = 0
    _queue: asyncio.Queue[tuple[Exchange, list[tuple[bytes, bytes]], str, bytes]] | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                limits = httpx.Limits(max_connections=max(64, self.senders), max_keepalive_connections=64)
                for name, url in (("stable", self.stable), ("candidate", self.candidate)):
                    self._clients[name] = httpx.AsyncClient(
                        base_url=url, timeout=UPSTREAM_TIMEOUT_S, limits=limits
                    )
                self._queue = asyncio.Queue(self.queue_size)
                self._tasks = [asyncio.create_task(self._sender()) for _ in range(self.senders)]
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _shutdown(self) -> None:
        assert self._queue is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), self.drain_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for exchange in self.exchanges:
            if exchange.copy == "queued":
                exchange.copy = "unanswered"
        for client in self._clients.values():
            await client.aclose()
        self.write()

    def write(self) -> None:
        tmp = self.out.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            for exchange in self.exchanges:
                handle.write(json.dumps(asdict(exchange)) + "\n")
        tmp.replace(self.out)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _body(receive)
        headers = [(k, v) for k, v in scope["headers"] if k.decode("latin-1").lower() not in HOP_BY_HOP]
        request_id = next((v.decode("latin-1") for k, v in headers if k.lower() == b"x-request-id"), None)
        if request_id is None:
            request_id = uuid.uuid4().hex
            headers.append((b"x-request-id", request_id.encode()))
        path = scope["path"] + (f"?{scope['query_string'].decode()}" if scope["query_string"] else "")
        started = time.perf_counter()
        try:
            response = await self._clients["stable"].request(
                scope["method"], path, content=body, headers=headers
            )
        except httpx.HTTPError as exc:
            await _respond(send, 502, [(b"content-type", b"text/plain")], f"stable: {exc!r}".encode())
            return
        answer = _answer(response, started)
        await _respond(
            send,
            response.status_code,
            [(k.encode(), v.encode()) for k, v in response.headers.items() if k.lower() not in DECODED],
            response.content,
        )
        if scope["method"] != "POST" or not MIRRORED.match(scope["path"]):
            return
        exchange = Exchange(request_id, scope["path"], body.decode(errors="replace"), answer)
        self.exchanges.append(exchange)
        if not self._selected():
            return
        assert self._queue is not None
        try:
            self._queue.put_nowait((exchange, headers, path, body))
            exchange.copy = "queued"
        except asyncio.QueueFull:
            exchange.copy = "dropped"

    def _selected(self) -> bool:
        """`percent` of the prediction requests, spread evenly and the same for the same sequence."""
        seen, self._seen = self._seen, self._seen + 1
        return (seen + 1) * self.percent // 100 > seen * self.percent // 100

    async def _sender(self) -> None:
        assert self._queue is not None
        while True:
            exchange, headers, path, body = await self._queue.get()
            started = time.perf_counter()
            try:
                response = await self._clients["candidate"].post(path, content=body, headers=headers)
                exchange.candidate = _answer(response, started)
            except httpx.HTTPError as exc:
                exchange.candidate = Answer(None, _ms(started), error=repr(exc))
            exchange.copy = "answered"
            self._queue.task_done()


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _answer(response: httpx.Response, started: float) -> Answer:
    return Answer(response.status_code, _ms(started), response.text, response.headers.get(REQUEST_ID))


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.shadow.mirror", description=__doc__)
    parser.add_argument("--stable", required=True, help="the stable service's URL (users get its answers)")
    parser.add_argument("--candidate", required=True, help="the candidate service's URL (gets copies)")
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1 to listen on")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines file of the exchanges")
    parser.add_argument("--percent", type=int, default=100, help="share of prediction requests copied")
    parser.add_argument("--queue", type=int, default=256, help="copies waiting at most; more are dropped")
    parser.add_argument("--senders", type=int, default=8, help="copies in flight to the candidate at most")
    parser.add_argument(
        "--drain", type=float, default=DEFAULT_DRAIN_S, help="seconds for queued copies at stop"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.percent <= 100 or args.queue < 1 or args.senders < 1:
        parser.error("--percent is 1-100, --queue and --senders at least 1")
    mirror = Mirror(args.stable, args.candidate, args.percent, args.queue, args.senders, args.out, args.drain)
    uvicorn.run(
        mirror, host="127.0.0.1", port=args.port, lifespan="on", log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
