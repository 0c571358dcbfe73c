"""The load generator for validations with one request each: wrk (Debian's `wrk` package)
with bench/wrk_validate.lua.

Why wrk: the generator shares the machine's 2 CPUs with the servers it measures, and every
millisecond of CPU it spends is one the servers cannot. lean_http's client on uvloop took
0.14 to 0.17 ms per validation, a sixth of what our two serve processes had left; wrk, written in
C, takes a fraction of that, so a server's rate says more about the server. Each request still
carries its own user and code: the bodies are made before the warm-up (not timed), one file per
wrk thread, and each is sent once.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from push_pending import BenchFailure

SCRIPT = Path(__file__).resolve().parent / "wrk_validate.lua"
TIMEOUT = "30s"  # wrk's own default, 2 s, would count a slow privacyIDEA reply as an error


@dataclass(frozen=True)
class Spelling:
    """How one server's validation is sent and how its acceptance reads."""

    path: str
    content_type: str
    accepted: str  # a Lua pattern found in the body of an accepted validation's reply
    body: Callable[[str, str], str]  # (user, code) -> the request body


@dataclass
class Outcome:
    """What one wrk run reports."""

    seconds: float
    accepted: int
    failures: Counter[str]
    ran_out: bool
    p50_ms: float
    p99_ms: float
    cpu: float  # wrk's own user + system seconds


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise BenchFailure("wrk is not installed: apt-get install wrk (scripts/setup does)")
    return found


def deal(bodies: Sequence[str], threads: int, warmup: float, seconds: float,
         folder: Path) -> tuple[list[str], list[str]]:
    """The body files of the warm-up and of the measured run, one per wrk thread each: the
    bodies shared between the two runs in proportion to their lengths, then dealt out in turn
    to the threads."""
    if round(warmup) < 1 or round(seconds) < 1:
        raise BenchFailure("wrk runs whole seconds: --warmup and --seconds must be 1 or more")
    share = len(bodies) * round(warmup) // (round(warmup) + round(seconds))
    runs = []
    for tag, part in (("warm-up", bodies[:share]), ("window", bodies[share:])):
        files = []
        for n in range(threads):
            path = folder / f"{tag}-{n}.txt"
            path.write_text("".join(f"{body}\n" for body in part[n::threads]))
            files.append(str(path))
        runs.append(files)
    return runs[0], runs[1]


def run(spelling: Spelling, bases: Sequence[str], auth: str | None, concurrency: int,
         seconds: float, files: Sequence[str]) -> Outcome:
    """One wrk run of `seconds`; one thread per base URL, `concurrency` connections in all."""
    threads = len(bases)
    env = {**os.environ,
           "WRK_ADDRS": ",".join(base.removeprefix("http://") for base in bases),
           "WRK_PATH": spelling.path, "WRK_CONTENT_TYPE": spelling.content_type,
           "WRK_AUTH": auth or "", "WRK_ACCEPTED": spelling.accepted}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [wrk_path(), "--threads", str(threads), "--connections", str(max(concurrency, threads)),
         "--duration", f"{round(seconds)}s", "--timeout", TIMEOUT, "--script", str(SCRIPT),
         bases[0], "--", *files],
        env=env, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines()
                 if line.startswith(("RESULT ", "LAST_REFUSAL ")))
    if done.returncode != 0 or "RESULT" not in lines:
        raise BenchFailure(f"wrk failed: {(done.stderr or done.stdout).strip()[-800:]}")
    figures = {key: int(value) for key, value in
               (pair.split("=") for pair in lines["RESULT"].split())}
    failures: Counter[str] = Counter()
    last = lines.get("LAST_REFUSAL", "").strip() or "?"
    if figures["not_ok"]:
        failures[f"not 200 (last: {last})"] += figures["not_ok"]
    if figures["refused"]:
        failures[f"refused (last: {last})"] += figures["refused"]
    if figures["socket_errors"]:
        failures["socket errors"] += figures["socket_errors"]
    return Outcome(seconds=figures["duration_us"] / 1e6, accepted=figures["accepted"],
                   failures=failures, ran_out=bool(figures["ran_out"]),
                   p50_ms=figures["p50_us"] / 1000, p99_ms=figures["p99_us"] / 1000,
                   cpu=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
