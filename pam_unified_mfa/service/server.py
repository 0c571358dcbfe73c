"""`unified-mfa serve`: load the settings, open the core, listen, run uvicorn.

Without TLS the service listens only on a loopback address unless `[service] allow_plain_http`
is true: push approvals and codes must not cross a network in clear by accident.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import logging
import socket
import ssl
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn

from pam_unified_mfa.core import MFA
from pam_unified_mfa.errors import UnifiedMFAError
from pam_unified_mfa.service.app import create_app
from pam_unified_mfa.service.events import ServiceEvents
from pam_unified_mfa.settings import Settings, default_home, load_settings, parse_host_port

# Request lines and statuses only: uvicorn never logs bodies, and neither does anything here.
LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain",
                   "stream": "ext://sys.stderr"},
    },
    "loggers": {
        "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "unified_mfa": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}


class ListenError(UnifiedMFAError):
    """The listen address is malformed, or plain HTTP would leave the machine."""


def listen_address(settings: Settings, listen: str | None) -> tuple[str, int]:
    """`--listen`, else `[service] listen`, else the host and port of `public_url`."""
    text = listen or settings.service.listen
    if not text:
        parts = urlsplit(settings.public_url)
        default = 443 if parts.scheme == "https" else 80
        return parts.hostname or "", parts.port or default
    return parse_host_port(text)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_transport(settings: Settings, host: str) -> None:
    if settings.service.tls_cert or is_loopback(host) or settings.service.allow_plain_http:
        return
    raise ListenError(f"refusing plain HTTP on {host or 'all addresses'}: configure "
                      "[service] tls_cert and tls_key, listen on a loopback address, or set "
                      "[service] allow_plain_http = true")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    # asyncio sets TCP_NODELAY on accepted connections only when the listening socket's proto
    # is IPPROTO_TCP; create_server leaves it 0. Without it, every request on a reused
    # keep-alive connection waited about 40 ms (Nagle against the client's delayed ACK).
    return socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, fileno=sock.detach())


def _tls_path(home: Path, value: str) -> str | None:
    """A relative `tls_cert` or `tls_key` is inside the home."""
    return str(home / value) if value else None


def check_tls(cert: str | None, key: str | None) -> None:
    """Load the pair once now, so a bad file is one line at start, not a trace from uvicorn."""
    if cert is None or key is None:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise ListenError(f"cannot use [service] tls_cert/tls_key: {reason}") from None


def run(mfa_home: Path | None, store: str | None, listen: str | None) -> int:
    """Serve until interrupted; 2 with one line on stderr when it cannot start."""
    home = mfa_home or default_home()
    try:
        settings = load_settings(home)
        host, port = listen_address(settings, listen)
        check_transport(settings, host)
        cert = _tls_path(home, settings.service.tls_cert)
        key = _tls_path(home, settings.service.tls_key)
        check_tls(cert, key)
        events = ServiceEvents()
        mfa = MFA.open(home, store=store, events=events)
    except UnifiedMFAError as exc:
        print(f"unified-mfa: {exc}", file=sys.stderr)
        return 2
    try:
        sock = _bind(host, port)
    except ListenError as exc:
        mfa.close()
        print(f"unified-mfa: {exc}", file=sys.stderr)
        return 2
    tls = cert is not None
    config = uvicorn.Config(
        create_app(mfa, events), loop="uvloop", http="httptools", lifespan="on",
        log_config=LOG_CONFIG, ssl_certfile=cert, ssl_keyfile=key, server_header=False,
        timeout_graceful_shutdown=5,
    )
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(f"unified-mfa: listening on {'https' if tls else 'http'}://{shown}:{bound_port}; "
          f"devices enroll at {settings.public_url}", flush=True)
    gc.freeze()  # what start-up made lives as long as the process: out of every collection
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        mfa.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pam_unified_mfa.service.server",
                                     description="Run the Unified MFA HTTP service")
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--store", default=None)
    parser.add_argument("--listen", default=None, metavar="HOST:PORT")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    return run(args.home, args.store, args.listen)


if __name__ == "__main__":
    raise SystemExit(main())
