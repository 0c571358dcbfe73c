"""Shared fixtures: a frozen clock, a fresh home and store per test, SQLite and PostgreSQL.

Every test that takes `mfa` runs twice: on SQLite and on PostgreSQL. `scripts/test` starts a
throwaway PostgreSQL and exports UNIFIED_MFA_TEST_PG_URL; without it the PostgreSQL half fails
loudly rather than being skipped, unless UNIFIED_MFA_TEST_SQLITE_ONLY=1 is set on purpose.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest
from sqlalchemy import create_engine, text

from pam_unified_mfa.core import MFA, RequestContext
from pam_unified_mfa.home import init_home
from pam_unified_mfa.settings import SETTINGS_FILE
from pam_unified_mfa.store.database import normalise_url
from tests.helpers import now_code, secret_of

# The secret sweep (S05): records every seed and code the session makes and, at its end, fails
# the run if one is found in a log record, a store or a file the tests left (tests/secret_sweep.py).
pytest_plugins = ["tests.secret_sweep"]

START = 1_800_000_000.0  # 2027-01-15, a fixed instant in the middle of a TOTP step


class FakeClock:
    """A clock tests move by hand, so time-based rules are tested without sleeping."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _reset_postgres(url: str) -> None:
    engine = create_engine(normalise_url(url))
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def fresh_postgres() -> str:
    """The test PostgreSQL, emptied; fails (never skips) when the suite runs without it."""
    url = os.environ.get("UNIFIED_MFA_TEST_PG_URL")
    if not url:
        if os.environ.get("UNIFIED_MFA_TEST_SQLITE_ONLY") == "1":
            pytest.skip("UNIFIED_MFA_TEST_SQLITE_ONLY=1: PostgreSQL half not run")
        pytest.fail("UNIFIED_MFA_TEST_PG_URL is not set: run the suite with ./scripts/test")
    _reset_postgres(url)
    return url


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return fresh_postgres()


@pytest.fixture
def settings_extra() -> str:
    """Override in a test module to append TOML to the generated settings file."""
    return ""


@pytest.fixture
def home(tmp_path: Path, store_url: str, settings_extra: str) -> Path:
    path = tmp_path / "home"
    init_home(path, "https://mfa.example.test", store_url)
    if settings_extra:
        with (path / SETTINGS_FILE).open("a", encoding="utf-8") as handle:
            handle.write("\n" + settings_extra + "\n")
    return path


@pytest.fixture
def mfa(home: Path, store_url: str, clock: FakeClock) -> Iterator[MFA]:
    core = MFA.open(home, store=store_url, clock=clock)
    yield core
    core.close()


class _Named(Protocol):
    name: str


@pytest.fixture
def secret(core: MFA, linux_user: _Named) -> str:
    """The module's Linux user in the core with a confirmed TOTP. The confirming code is this
    step's, so the tests' codes are the next step's (within the window)."""
    core.add_user(linux_user.name)
    value = secret_of(core.enroll(linux_user.name, "totp").uri)
    assert core.authenticate_code(linux_user.name, now_code(core, value),
                                  RequestContext()).granted
    return value


@pytest.fixture
def core(home: Path, store_url: str) -> Iterator[MFA]:
    """The core on real time, as a running daemon or service sees it: for tests that set users
    up or approve pushes beside a real process."""
    mfa = MFA.open(home, store=store_url)
    yield mfa
    mfa.close()
