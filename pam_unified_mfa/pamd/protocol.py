"""The PAM socket protocol, version 1 (docs/pam-protocol.md): lines, verbs, their limits.

Both directions use the same codec: `encode` refuses to build a line the other end would have
to reject, `decode` rejects every line the document calls a protocol error. The daemon's tests
build the module's lines with this same encoder, and replay bytes the C module wrote.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

VERSION = "1"
MAX_LINE = 1024
"""Bytes in one line, the final `\\n` included."""

# module -> daemon
HELLO = "HELLO"
USER = "USER"
SERVICE = "SERVICE"
RHOST = "RHOST"
TTY = "TTY"
FAILMODE = "FAILMODE"
AUTOPUSH = "AUTOPUSH"
BEGIN = "BEGIN"
ANSWER = "ANSWER"
# daemon -> module
INFO = "INFO"
ERROR = "ERROR"
PROMPT = "PROMPT"
PROMPT_ECHO = "PROMPT_ECHO"
ACCEPT = "ACCEPT"
REJECT = "REJECT"
UNAVAILABLE = "UNAVAILABLE"

HEADERS = (USER, SERVICE, RHOST, TTY, FAILMODE, AUTOPUSH)
"""What the module may send between `HELLO` and `BEGIN`, each at most once."""
FAIL_MODES = ("secure", "safe")

_VERB = re.compile(r"[A-Z][A-Z_]*")
_ELLIPSIS = "..."


class ProtocolError(Exception):
    """A line the protocol forbids; the receiver closes the connection."""


@dataclass(frozen=True)
class Line:
    verb: str
    argument: str = ""


def encode(verb: str, argument: str | None = None) -> bytes:
    """One line: `VERB` or `VERB SP ARGUMENT`, checked against the limits."""
    if not _VERB.fullmatch(verb):
        raise ProtocolError(f"invalid verb {verb!r}")
    text = verb if argument is None else f"{verb} {argument}"
    if any(ch in text for ch in "\n\r\0"):
        raise ProtocolError(f"{verb}: an argument must not hold a line break or NUL")
    try:
        data = text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:  # a lone surrogate, e.g. from a JSON escape: not UTF-8
        raise ProtocolError(f"{verb}: an argument must be valid Unicode") from None
    if len(data) > MAX_LINE:
        raise ProtocolError(f"{verb}: line longer than {MAX_LINE} bytes")
    return data


def decode(data: bytes) -> Line:
    """Parse one received line, `\\n` included."""
    if len(data) > MAX_LINE:
        raise ProtocolError(f"line longer than {MAX_LINE} bytes")
    if not data.endswith(b"\n"):
        raise ProtocolError("line not terminated by a line feed")
    body = data[:-1]
    if b"\0" in body or b"\r" in body or b"\n" in body:
        raise ProtocolError("line holds a NUL, a carriage return or a line feed")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("line is not UTF-8") from None
    verb, _, argument = text.partition(" ")
    if not _VERB.fullmatch(verb):
        raise ProtocolError("line does not start with an upper-case verb")
    return Line(verb, argument)


def text_lines(verb: str, text: str) -> list[bytes]:
    """Multi-line text as one line per text line, each cut to fit the limit."""
    room = MAX_LINE - len(verb) - 2  # the space and the line feed
    lines = []
    text = text.encode("utf-8", errors="replace").decode("utf-8")  # "?" for a lone surrogate
    for part in text.replace("\r", "").replace("\0", "").split("\n"):
        raw = part.encode("utf-8")
        if len(raw) > room:
            cut = room - len(_ELLIPSIS)
            part = raw[:cut].decode("utf-8", errors="ignore") + _ELLIPSIS
        lines.append(encode(verb, part))
    return lines


async def read_line(reader: asyncio.StreamReader) -> Line | None:
    """The next line from a stream; None when the peer closed it between lines."""
    try:
        data = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError("connection closed in the middle of a line") from None
        return None
    except asyncio.LimitOverrunError:
        raise ProtocolError(f"line longer than {MAX_LINE} bytes") from None
    return decode(data)
