"""The load generator's HTTP/1.1 client: an asyncio protocol with httptools' response parser.

Why not httpx, which the other benches use: in bench/peer_privacyidea.py the generator runs on
the same 2 CPUs as the servers it measures, and httpx spent 1.4 to 4.5 ms of CPU per
validation there, more than our server. This client spends a tenth of that, so the CPU the generator
takes away from the servers no longer decides their rates. It does only what a generator
needs: POST a body, read the status and the body; a connection is kept for the next request
when the server keeps it alive (uvicorn) and opened anew when it does not (gunicorn's sync
workers close it).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httptools


class LeanHTTPError(Exception):
    """The connection failed, was closed before a whole reply, or the reply did not parse."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _Connection(asyncio.Protocol):
    """One connection, one request at a time; the parser is fed as bytes arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []
        self.reply: asyncio.Future[Reply] | None = None
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.open = True

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(LeanHTTPError(f"bad reply: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self._fail(LeanHTTPError("connection closed before the reply"))

    # httptools' callbacks
    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if not self.parser.should_keep_alive():
            self.open = False  # the server closes it: not reused
            if self.transport is not None:
                self.transport.close()
        reply, self.reply = self.reply, None
        if reply is not None and not reply.done():
            reply.set_result(Reply(self.parser.get_status_code(), b"".join(self.body)))
        self.body = []

    def _fail(self, error: LeanHTTPError) -> None:
        self.open = False
        reply, self.reply = self.reply, None
        if reply is not None and not reply.done():
            reply.set_exception(error)
        if self.transport is not None:
            self.transport.close()

    def send(self, request: bytes) -> asyncio.Future[Reply]:
        assert self.transport is not None
        self.reply = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.reply


class LeanClient:
    """Requests to one server: each takes an idle kept-alive connection or opens one."""

    def __init__(self, base: str, headers: dict[str, str] | None = None,
                 timeout: float = 30.0) -> None:
        parts = urlsplit(base)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"only http://host:port is supported: {base}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.timeout = timeout
        fixed = {"Host": parts.netloc, **(headers or {})}
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in fixed.items())
        self._idle: list[_Connection] = []

    async def post(self, path: str, body: bytes, content_type: str) -> Reply:
        request = (f"POST {path} HTTP/1.1\r\n{self._fixed}Content-Type: {content_type}\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        connection = await self._connection()
        try:
            async with asyncio.timeout(self.timeout):
                reply = await connection.send(request)
        except TimeoutError:
            connection._fail(LeanHTTPError("timed out"))
            raise LeanHTTPError(f"no reply within {self.timeout:g} s") from None
        if connection.open:
            self._idle.append(connection)
        return reply

    async def post_json(self, path: str, document: Any) -> Reply:
        return await self.post(path, json.dumps(document).encode(), "application/json")

    async def _connection(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if connection.open:
                return connection
        try:
            transport, connection = await asyncio.get_running_loop().create_connection(
                _Connection, self.host, self.port)
        except OSError as exc:
            raise LeanHTTPError(f"cannot connect: {exc.strerror or exc}") from None
        # uvloop may call connection_made only on the loop's next turn
        connection.transport, connection.open = transport, not transport.is_closing()
        return connection

    def close(self) -> None:
        for connection in self._idle:
            if connection.transport is not None:
                connection.transport.close()
        self._idle.clear()


class Spread:
    """Requests to several servers in turn, as a gateway configured with a list of nodes."""

    def __init__(self, clients: Sequence[LeanClient]) -> None:
        if not clients:
            raise ValueError("no server to spread requests over")
        self._turns = itertools.cycle(clients)
        self._clients = list(clients)

    async def post(self, path: str, body: bytes, content_type: str) -> Reply:
        return await next(self._turns).post(path, body, content_type)

    async def post_json(self, path: str, document: Any) -> Reply:
        return await next(self._turns).post_json(path, document)

    def close(self) -> None:
        for client in self._clients:
            client.close()


Client = LeanClient | Spread
