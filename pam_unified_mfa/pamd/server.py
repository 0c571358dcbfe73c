"""`unified-mfa pamd --socket PATH`: the Unix socket server behind the PAM module.

One asyncio server, one `Session` per connection. Core calls on PostgreSQL or to a central
service run in worker threads (the store is synchronous SQLAlchemy), so a slow database or
network holds up no other login; on the embedded SQLite store they run on the loop (see
`loop_calls`). A pending push is polled, never waited on in a thread. Only root and the
daemon's own uid may talk to it (SO_PEERCRED); its socket is 0600 in a 0700 directory, or comes
from systemd socket activation. One log line per connection says what was decided, never what
was typed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import stat
import struct
from pathlib import Path

from pam_unified_mfa.core import MFA
from pam_unified_mfa.errors import ConfigError
from pam_unified_mfa.home import require_home
from pam_unified_mfa.loop_calls import Call, core_calls, in_thread
from pam_unified_mfa.pamd import protocol as p
from pam_unified_mfa.pamd.remote import RemoteDialogues
from pam_unified_mfa.pamd.session import POLL_INTERVAL, Abandoned, Dialogues, Session
from pam_unified_mfa.service.changes import follow_changes
from pam_unified_mfa.service.housekeeping import purge_forever
from pam_unified_mfa.service.waiter import Waiter
from pam_unified_mfa.settings import Settings, load_settings, parse_duration
from pam_unified_mfa.store.changes import listen_dsn

log = logging.getLogger("unified_mfa.pamd")

SD_LISTEN_FDS_START = 3
BACKLOG = 64
_UCRED = struct.Struct("3i")  # pid, uid, gid


def peer_uid(sock: socket.socket) -> int:
    _pid, uid, _gid = _UCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return int(uid)


def trusted(uid: int) -> bool:
    """Root (sshd and other PAM applications) and the daemon's own uid (tests, development)."""
    return uid in (0, os.geteuid())


def activated_socket() -> socket.socket | None:
    """The listening socket systemd passed (LISTEN_FDS=1 for this process), else None."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = os.environ.get("LISTEN_FDS")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    if count != "1":
        raise ConfigError("socket activation must pass exactly one socket (LISTEN_FDS=1)")
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise ConfigError("the activated socket is not a Unix stream socket")
    sock.setblocking(False)
    return sock


def _remove_stale(path: Path) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"{path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)
            return
    raise ConfigError(f"another daemon is listening on {path}")


def bind_socket(path: Path) -> socket.socket:
    """Create the socket: its directory 0700 if missing, the socket 0600, a stale one removed."""
    directory = path.parent
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
        os.chmod(directory, 0o700)
    info = directory.stat()
    if info.st_uid not in (0, os.geteuid()) or info.st_mode & 0o022:
        log.warning("pamd: %s is writable by others or not owned by root; the PAM module will "
                    "refuse to connect", directory)
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


async def handle(mfa: Dialogues, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 deadline: float, poll_interval: float = POLL_INTERVAL,
                 call: Call = in_thread, waiter: Waiter | None = None) -> None:
    """One connection: check the peer, run the dialogue within the deadline, log the decision."""
    uid = peer_uid(writer.get_extra_info("socket"))
    if not trusted(uid):
        log.warning("pamd: refused a connection from uid %d", uid)
        writer.close()
        return
    session = Session(mfa, reader, writer, poll_interval, call, waiter)
    try:
        decision = await _decide(session, deadline)
        request = session.request
        if request is None:
            log.info("pamd: uid=%d %s", uid, decision)
        else:
            log.info("pamd: user=%s service=%s rhost=%s uid=%d %s", request.user,
                     request.ctx.service or "-", request.ctx.client, uid, decision)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _decide(session: Session, deadline: float) -> str:
    """Run the dialogue; what was decided, or why the connection ends without a verdict."""
    try:
        async with asyncio.timeout(deadline):
            return await session.run()
    except p.ProtocolError as exc:
        return f"closed: protocol error: {exc}"
    except (Abandoned, ConnectionError):  # a reset: it hung up with our lines still unread
        return "abandoned: the module closed the connection"
    except TimeoutError:
        return f"abandoned: no verdict within {deadline:g}s"
    except Exception:
        log.exception("pamd: the dialogue failed")
        return "closed: internal error"


async def serve(mfa: Dialogues, listener: socket.socket, stop: asyncio.Event, deadline: float,
                poll_interval: float = POLL_INTERVAL, call: Call = in_thread,
                waiter: Waiter | None = None) -> None:
    """Accept connections on `listener` until `stop` is set."""
    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handle(mfa, reader, writer, deadline, poll_interval, call, waiter)
        except asyncio.CancelledError:  # the daemon is stopping: the module applies its fail mode
            log.info("pamd: a dialogue was cut short by the daemon stopping")

    server = await asyncio.start_unix_server(connected, sock=listener, limit=p.MAX_LINE)
    async with server:
        await stop.wait()


def session_deadline(settings: Settings) -> float:
    """Longest a connection may last: the dialogue's lifetime plus a whole push wait."""
    return parse_duration(settings.dialogue.ttl) + parse_duration(settings.push.timeout)


async def _main(mfa: Dialogues, settings: Settings, listener: socket.socket,
                where: str, call: Call, local: MFA | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # A local store on PostgreSQL announces push decisions (LISTEN/NOTIFY): a waiting login
    # is checked when its decision commits on any node. Otherwise it is checked on a timer.
    waiter: Waiter | None = None
    tasks: list[asyncio.Task[None]] = []
    if local is not None:
        tasks.append(loop.create_task(purge_forever(local)))
        if listen_dsn(local.store) is not None:
            waiter = Waiter()
            tasks.append(loop.create_task(follow_changes(
                waiter, local.store,
                lambda since: asyncio.to_thread(local.push_changes_since, since),
                local.env.clock)))
    log.info("pamd: listening on %s", where)
    try:
        await serve(mfa, listener, stop, session_deadline(settings), call=call, waiter=waiter)
    finally:
        for task in tasks:
            await Waiter.stop(task)
    log.info("pamd: stopped")


def run(home: Path, store: str | None, socket_path: Path) -> int:
    logging.getLogger("unified_mfa.pamd").setLevel(logging.INFO)
    settings = load_settings(home)
    # `[pamd] server` set: a central service runs the dialogue, no local store or key is used.
    mfa: Dialogues
    local: MFA | None = None
    if settings.pamd.server:
        mfa = RemoteDialogues.from_settings(home, settings)
        log.info("pamd: remote mode, MFA service %s", settings.pamd.server)
    else:
        require_home(home)
        mfa = local = MFA.open(home, store=store)
    try:
        listener = activated_socket()
        created: os.stat_result | None = None
        if listener is None:
            listener = bind_socket(socket_path)
            created = socket_path.lstat()
        try:
            where = "the activated socket" if created is None else str(socket_path)
            call = core_calls(local is not None and local.store.is_sqlite)
            gc.freeze()  # what start-up made lives as long as the process: out of every collection
            asyncio.run(_main(mfa, settings, listener, where, call, local))
        finally:
            listener.close()
            if created is not None:
                with contextlib.suppress(FileNotFoundError):
                    if socket_path.lstat().st_ino == created.st_ino:
                        socket_path.unlink()
    finally:
        if local is not None:
            local.close()
    return 0
