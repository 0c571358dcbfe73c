"""The purge of expired rows (core/housekeeping.py), run by every long-lived process.

`serve`, `radius` and `pamd` on a local store each run it every ten minutes: a site with only
RADIUS nodes, or only PAM hosts, is kept tidy too, and several nodes purging the same store
only repeat deletions that find nothing.
"""

from __future__ import annotations

import asyncio
import logging

from pam_unified_mfa.core import MFA
from pam_unified_mfa.errors import StoreUnavailable

log = logging.getLogger("unified_mfa.service")

PURGE_EVERY = 600.0  # seconds


async def purge_forever(mfa: MFA, interval: float = PURGE_EVERY) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            removed = await asyncio.to_thread(mfa.purge_expired)
        except StoreUnavailable:
            log.warning("could not purge expired rows: the store is unavailable")
            continue
        if removed:
            log.info("purged expired rows: %s",
                     ", ".join(f"{table} {count}" for table, count in sorted(removed.items())))
