"""`unified-mfa radius`: the UDP server in front of the responder.

One asyncio datagram endpoint. Each datagram is checked in this order, and dropped without a
reply (counted, logged at most once a minute per reason) when a check fails: a known client
by source address; a packet that decodes; an Access-Request or Status-Server; a valid
Message-Authenticator when the request carries one, and its presence when the client requires
it (BlastRADIUS, CVE-2024-3596). Every reply carries a Message-Authenticator.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Awaitable
from importlib import resources
from pathlib import Path
from typing import cast

from pyrad import dictionary, packet

from pam_unified_mfa.core import MFA
from pam_unified_mfa.errors import ConfigError, UnifiedMFAError
from pam_unified_mfa.home import require_home
from pam_unified_mfa.loop_calls import Call, core_calls
from pam_unified_mfa.service.changes import follow_changes
from pam_unified_mfa.service.events import ServiceEvents
from pam_unified_mfa.service.housekeeping import purge_forever
from pam_unified_mfa.service.waiter import Waiter
from pam_unified_mfa.settings import load_settings, parse_duration, parse_host_port
from radius.clients import Client, ClientTable
from radius.first_factor import PasswordCheck, password_checks
from radius.reply_cache import Key, Reply, ReplyCache
from radius.responder import Responder
from radius.shared_replies import SharedReplies

log = logging.getLogger("unified_mfa.radius")

DROP_LOG_INTERVAL = 60.0
WORK_MARGIN = 10.0  # seconds a shared claim outlives the longest push wait
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux's; Python's socket lacks it


def load_dictionary() -> dictionary.Dictionary:
    with resources.as_file(resources.files("radius") / "dictionary") as path:
        return dictionary.Dictionary(str(path))


class RadiusServer(asyncio.DatagramProtocol):
    """Decodes and vets datagrams, hands requests to the responder through the reply cache."""

    def __init__(self, clients: ClientTable, responder: Responder, cache: ReplyCache,
                 attributes: dictionary.Dictionary, shared: SharedReplies | None = None) -> None:
        self.clients = clients
        self.responder = responder
        self.cache = cache
        self.shared = shared
        self.attributes = attributes
        self.dropped: Counter[str] = Counter()
        self._drop_logged: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def _drop(self, reason: str, address: str) -> None:
        self.dropped[reason] += 1
        now = time.monotonic()
        if now - self._drop_logged.get(reason, -DROP_LOG_INTERVAL) >= DROP_LOG_INTERVAL:
            self._drop_logged[reason] = now
            log.warning("radius: dropped a request from %s: %s (%d so far)", address, reason,
                        self.dropped[reason])

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        host, port = addr[0], addr[1]
        client = self.clients.find(host)
        if client is None:
            return self._drop("unknown client", host)
        try:
            request = packet.AuthPacket(secret=client.secret, dict=self.attributes, packet=data)
        except Exception:  # pyrad raises PacketError, and others on hostile input
            return self._drop("malformed packet", host)
        if request.code not in (packet.AccessRequest, packet.StatusServer):
            return self._drop(f"packet code {request.code} on the authentication port", host)
        if request.message_authenticator:
            try:
                valid = request.verify_message_authenticator()
            except Exception:
                valid = False
            if not valid:
                return self._drop("bad Message-Authenticator (wrong shared secret?)", host)
        elif client.require_message_authenticator or request.code == packet.StatusServer:
            return self._drop("no Message-Authenticator (required for this client)", host)
        key: Key = (client.name, host, port, request.id, bytes(request.authenticator))
        task = asyncio.get_running_loop().create_task(self._serve(key, client, request, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, key: Key, client: Client, request: packet.AuthPacket,
                     addr: tuple[str, int]) -> None:
        def work() -> Awaitable[Reply]:
            if self.shared is None or request.code != packet.AccessRequest:
                return self._work(client, request)
            return self.shared.reply(key, lambda: self._work(client, request))

        reply, _copy = await self.cache.reply(key, work)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    async def _work(self, client: Client, request: packet.AuthPacket) -> Reply:
        if request.code == packet.StatusServer:  # RFC 5997: "I am alive"
            reply = request.CreateReply()
            reply.code = packet.AccessAccept
        else:
            try:
                reply = await self.responder.respond(client, request)
            except Exception:
                log.exception("radius: the request from client %s failed", client.name)
                # No reply, also to its retransmissions (the cache keeps it): fail closed,
                # and the gateway fails over to another server.
                return None
        reply.add_message_authenticator()
        encoded: bytes = reply.ReplyPacket()
        return encoded


def bind(host: str, port: int, receive_buffer: int) -> socket.socket:
    """The UDP socket: SO_REUSEPORT, so that several processes can share the port (the kernel
    spreads requests by source), and a receive buffer large enough for bursts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with contextlib.suppress(OSError):  # root may go past net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, receive_buffer)
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on udp {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


async def serve(mfa: MFA, events: ServiceEvents, clients: ClientTable,
                checks: dict[str, PasswordCheck], sock: socket.socket, cache_ttl: float,
                stop: asyncio.Event) -> RadiusServer:
    """Answer requests on `sock` until `stop` is set."""
    loop = asyncio.get_running_loop()
    waiter = Waiter()
    events.attach(loop, lambda _account, _push: None, waiter.wake)
    sweeper = loop.create_task(follow_changes(
        waiter, mfa.store, lambda since: asyncio.to_thread(mfa.push_changes_since, since),
        mfa.env.clock))
    purger = loop.create_task(purge_forever(mfa))
    call = core_calls(mfa.store.is_sqlite)
    responder = Responder(mfa, waiter, checks, call)
    server = RadiusServer(clients, responder, ReplyCache(cache_ttl, time.monotonic),
                          load_dictionary(), shared_replies(mfa, waiter, call, cache_ttl))
    transport, _ = await loop.create_datagram_endpoint(lambda: server, sock=sock)
    try:
        await stop.wait()
    finally:
        transport.close()
        events.detach()
        await Waiter.stop(purger)
        await Waiter.stop(sweeper)
    return server


def shared_replies(mfa: MFA, waiter: Waiter, call: Call, ttl: float) -> SharedReplies | None:
    """The store-wide reply cache, when `[radius] shared_replies` asks for it (auto: on
    PostgreSQL, where other nodes may get the gateway's resends)."""
    wanted = mfa.settings.radius.shared_replies
    if wanted == "off" or (wanted == "auto" and mfa.store.is_sqlite):
        return None
    # A request is held at most for a push wait; its claim outlives that by a margin.
    work_limit = parse_duration(mfa.settings.push.timeout) + WORK_MARGIN
    return SharedReplies(mfa.store, waiter, call, time.time, ttl, work_limit)


def run(home: Path, store: str | None, listen: str | None) -> int:
    logging.getLogger("unified_mfa.radius").setLevel(logging.INFO)
    try:
        require_home(home)
        settings = load_settings(home)
        clients = ClientTable.from_settings(home, settings.radius)
        if not clients:
            raise ConfigError("no [[radius.clients]] in the settings: no gateway may ask")
        checks = password_checks(settings.radius, home, {c.first_factor for c in clients})
        host, port = parse_host_port(listen or settings.radius.listen)
        sock = bind(host, port, settings.radius.receive_buffer)
        events = ServiceEvents()
        mfa = MFA.open(home, store=store, events=events)
    except UnifiedMFAError as exc:
        print(f"unified-mfa: {exc}", file=sys.stderr)
        return 2

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        bound = sock.getsockname()
        print(f"unified-mfa: radius listening on udp {bound[0]}:{bound[1]} "
              f"({len(clients)} clients)", flush=True)
        server = await serve(mfa, events, clients, checks,
                             sock, parse_duration(settings.radius.reply_cache), stop)
        log.info("radius: stopped; dropped: %s", dict(server.dropped) or "none")

    gc.freeze()  # what start-up made lives as long as the process: out of every collection
    try:
        asyncio.run(main())
    finally:
        sock.close()
        mfa.close()
    return 0
