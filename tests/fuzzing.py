"""What the property tests (tests/test_fuzz_*.py, tests/test_schemathesis.py) share: their budget,
the lock-out they lift, the log they watch.

In CI every property test runs a fixed number of examples from a seed derived from the test
itself, so a run is repeatable and its time is bounded. `UNIFIED_MFA_FUZZ_EXAMPLES=N` turns a
run into a longer campaign: N examples per test, from a fresh random seed each run (a failure
prints a `@reproduce_failure` line that replays it; `pytest --hypothesis-seed=S` repeats a run).
See docs/security-testing.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar, cast

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from pam_unified_mfa.settings import SETTINGS_FILE

EXAMPLES_VARIABLE = "UNIFIED_MFA_FUZZ_EXAMPLES"
DEFAULT_LIMIT = "max_failures = 5"
T = TypeVar("T")


def campaign_examples() -> int | None:
    """The examples per test asked for by the environment, or None for CI's fixed budget."""
    value = os.environ.get(EXAMPLES_VARIABLE, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{EXAMPLES_VARIABLE} must be a positive whole number, not {value!r}")
    return int(value)


def fuzz_settings(examples: int) -> settings:
    """Hypothesis settings for one property test: `examples` in CI, the campaign's otherwise.

    No deadline (a slow example on a busy machine is not a failure; the budget is the count),
    no example database (nothing written into the work tree), and the function-scoped fixtures
    (a running daemon or responder, its store) deliberately shared by every example.
    """
    wanted = campaign_examples()
    return settings(
        max_examples=wanted or examples,
        derandomize=wanted is None,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                               HealthCheck.data_too_large],
    )


def without_lockout(home: Path) -> Path:
    """Raise the home's failure limit (S02) out of reach of any fuzz run.

    A fuzzer types wrong codes by the hundred: a lock would hide what the dialogue does with
    the rest of them, and would refuse the valid login that ends each fuzz test.
    """
    path = home / SETTINGS_FILE
    text = path.read_text(encoding="utf-8")
    assert DEFAULT_LIMIT in text
    path.write_text(text.replace(DEFAULT_LIMIT, "max_failures = 1000000000"), encoding="utf-8")
    return home


def mostly(usual: T, otherwise: st.SearchStrategy[T] | None = None) -> st.SearchStrategy[T]:
    """`usual` seven times in eight, else a draw from `otherwise` (by default: `not usual`).

    Hypothesis favours the simplest choice of a `one_of`; this says which one is the common
    case, so that most examples get past the first checks into the dialogue.
    """
    rare = otherwise if otherwise is not None else st.just(cast(T, not usual))
    return st.sampled_from([True] * 7 + [False]).flatmap(
        lambda common: st.just(usual) if common else rare)


class ServerLog(logging.Handler):
    """What a server logs from INFO up. ERROR is its own failure (an exception it caught at the
    top), which no input, however hostile, may cause."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        if record.levelno >= logging.ERROR:
            self.errors.append(self.format(record))


@contextmanager
def server_log(logger_name: str) -> Iterator[ServerLog]:
    logger = logging.getLogger(logger_name)
    handler, level = ServerLog(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
