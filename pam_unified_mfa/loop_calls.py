"""How an adapter's event loop makes the core's blocking calls: on the loop, or in a thread.

The core is synchronous (SQLAlchemy). On PostgreSQL a call runs in a worker thread, so a slow
database holds up no other request. On the embedded SQLite store it runs on the loop itself:
its calls take well under a millisecond, writers take turns anyway (one SQLite writer at a
time), and a thread's two hand-offs per call cost a third or more of a login's CPU (measured for
`pamd`, the RADIUS responder and the service's auth API, docs/performance.md). The price,
accepted for the embedded default: while another process holds SQLite's write lock, the loop
waits with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import ParamSpec, Protocol, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class Call(Protocol):
    """`asyncio.to_thread` or `inline`: how one blocking call is awaited."""

    def __call__(self, function: Callable[P, T], /, *args: P.args,
                 **kwargs: P.kwargs) -> Awaitable[T]: ...


async def inline(function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking call on the event loop itself (see the module's docstring for when)."""
    return function(*args, **kwargs)


in_thread: Call = asyncio.to_thread


def core_calls(is_sqlite: bool) -> Call:
    """The way to call the core on this store."""
    return inline if is_sqlite else in_thread
