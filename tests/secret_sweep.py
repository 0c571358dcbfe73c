"""The secret sweep: after a test run, no TOTP seed and no one-time code may be found in what
the run left behind (S05). A pytest plugin, loaded by tests/conftest.py.

While the session runs it records what the tests make:

- every TOTP seed: the ones the core generates in this process (`totp.new_secret`, which every
  enrollment and the R10 migration use), every seed a code is computed from (`totp.code_at`),
  and every seed read back from an enrollment URI (`tests.helpers.secret_of`, which also sees
  the seeds a subprocess made). A seed is searched as base32 (any case) and as the hex of its
  key bytes;
- every code computed in this process (`totp.code_at`: the helpers' `code_for`, `now_code`,
  `wrong_code`'s list of codes to avoid, the reference authenticator run in-process), with the
  test that computed it;
- every log record of the session, from a handler on the root logger. The project's
  `unified_mfa` loggers are opened down to DEBUG for the session, so that nothing they say is
  filtered out before it reaches a handler.

The two wrapped functions are only observed: each returns what it returns without the plugin.

At the end of the session it searches (docs/secret-sweep.md says the same):

- log records: for seeds, and for the codes of the test that was running;
- every file under pytest's basetemp (stores and their WAL, subprocess logs, settings, exports),
  as bytes: for seeds; a text file inside a test's `tmp_path` also for that test's codes;
- the audit rows (text columns) of every SQLite store there: for the codes of the test that
  left the store (its seeds are found in its bytes);
- the PostgreSQL server log (`UNIFIED_MFA_TEST_PG_LOG`, exported by scripts/test): for seeds.

A code is six or eight digits standing alone (not part of a longer number, a word, an id or a
decimal fraction). It is matched only against the codes the same test made, because a six-digit
number turns up by chance (a port, a process id, a counter): the few codes of one test against
that test's own records keeps a chance match negligible, while a code that the code under test
logs or stores is caught. Codes are never searched in binary files (random bytes are full of
digit runs). One kind of file holds seeds by design and is skipped: the reference
authenticator's `accounts.json`, which is the phone's own key storage, not the server's. The
logs of third-party peers that print what the user typed into them (`PEER_LOGS`) are searched
for seeds only.

Anything found fails the session (exit status 1 when it would have been 0) with a report that
names the place and the kind of secret, redacted to its length and a short fingerprint: the
report never shows a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pam_unified_mfa import totp
from pam_unified_mfa.authenticator.state import STATE_FILE

PG_LOG_ENV = "UNIFIED_MFA_TEST_PG_LOG"
PROJECT_LOGGER = "unified_mfa"
SQLITE_MAGIC = b"SQLite format 3\x00"
MIN_SEED_CHARS = 16  # base32 of an 80-bit key, the shortest a TOTP key may be (RFC 4226)

_BASE32_RUN = re.compile(rb"[a-z2-7]{16,}")
_HEX_RUN = re.compile(rb"[0-9a-f]{20,}")
_CODE = re.compile(rb"(?<![\w.])(\d{8}|\d{6})(?!\w|[.,]\d)")
_AUDIT_COLUMNS = ("actor", "action", "subject", "outcome", "adapter", "client", "detail")
PEER_LOGS = {
    "freeradius.log": "FreeRADIUS run with -X (tests/test_radius_peers.py) prints every attribute "
                      "the gateway receives, the User-Password with the code typed into it",
}
"""Logs of the tests' third-party peers that show what a user typed into them: searched for
seeds, not for codes (the code reached the peer from the user, not from Unified MFA)."""
_FORMATTER = logging.Formatter("%(message)s")


@dataclass(frozen=True)
class Finding:
    """One secret where it must not be: the place, and the secret redacted."""

    place: str
    what: str

    def __str__(self) -> str:
        return f"{self.what} in {self.place}"


@dataclass
class Register:
    """What the session made: the seeds (in every spelling searched) and each test's codes."""

    forms: dict[bytes, str] = field(default_factory=dict)
    """A seed's spelling, lower case -> its redacted description."""
    codes: dict[str, set[str]] = field(default_factory=dict)
    """Test id -> the codes it computed ("" outside any test)."""
    current: str = ""
    """The id of the test running now."""
    test_dirs: dict[Path, str] = field(default_factory=dict)
    """A test's `tmp_path` -> its id."""
    records: list[tuple[str, str, str]] = field(default_factory=list)
    """(test id, logger name, formatted text) of every log record."""

    def seed(self, base32: str) -> None:
        """Remember a seed (base32, any case, padded or not)."""
        canonical = base32.strip().upper().rstrip("=")
        if len(canonical) < MIN_SEED_CHARS:
            return
        try:
            key = base64.b32decode(canonical + "=" * (-len(canonical) % 8))
        except binascii.Error:
            return
        label = (f"TOTP seed of {len(key)} bytes (fingerprint "
                 f"{hashlib.sha256(key).hexdigest()[:8]})")
        self.forms.setdefault(canonical.lower().encode(), f"{label} as base32")
        self.forms.setdefault(key.hex().encode(), f"{label} as hex")

    def code(self, value: str) -> None:
        self.codes.setdefault(self.current, set()).add(value)

    def codes_of(self, test: str) -> set[bytes]:
        return {code.encode() for code in self.codes.get(test, ())}


REGISTER = Register()


def record_seed(base32: str) -> None:
    """For helpers that read a seed the session did not generate itself (a subprocess's)."""
    REGISTER.seed(base32)


# -- searching ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seeds:
    """The seeds' spellings, and their lengths per alphabet, ready to be looked for."""

    forms: dict[bytes, str]
    lengths: tuple[tuple[re.Pattern[bytes], tuple[int, ...]], ...]

    @classmethod
    def of(cls, forms: dict[bytes, str]) -> Seeds:
        return cls(forms, tuple(
            (pattern, tuple(sorted({len(f) for f in forms if pattern.fullmatch(f)})))
            for pattern in (_BASE32_RUN, _HEX_RUN)))


def seeds_in(data: bytes, seeds: Seeds) -> list[str]:
    """The descriptions of the seeds whose spelling occurs in `data` (any case): each run of
    one alphabet's characters is cut into every window of a seed's length."""
    found: dict[str, None] = {}
    lowered = data.lower()
    for pattern, lengths in seeds.lengths:
        if not lengths:
            continue
        for match in pattern.finditer(lowered):
            run = match.group(0)
            for length in lengths:
                for start in range(len(run) - length + 1):
                    if (description := seeds.forms.get(run[start:start + length])) is not None:
                        found[description] = None
    return list(found)


def codes_in(data: bytes, codes: set[bytes]) -> list[str]:
    """A redacted description of each of `codes` standing alone in `data`."""
    if not codes:
        return []
    hits = {match.group(1) for match in _CODE.finditer(data)} & codes
    return [f"one-time code of {len(code)} digits" for code in sorted(hits)]


# -- the places searched -----------------------------------------------------------------------


def _test_of(path: Path, dirs: dict[Path, str]) -> str | None:
    for parent in (path, *path.parents):
        if parent in dirs:
            return dirs[parent]
    return None


def _is_text(data: bytes) -> bool:
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _audit_rows(path: Path) -> list[tuple[int, bytes]]:
    """(id, text columns) of each audit row of a SQLite store; none when it is not a store."""
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return []
    try:
        rows = connection.execute(
            f"SELECT id, {', '.join(_AUDIT_COLUMNS)} FROM audit").fetchall()  # noqa: S608
    except sqlite3.Error:
        return []
    finally:
        connection.close()
    return [(row[0], "\n".join(str(v) for v in row[1:]).encode()) for row in rows]


def sweep_file(path: Path, register: Register, seeds: Seeds, root: Path) -> list[Finding]:
    """Seeds anywhere in the file's bytes; codes of the owning test in a text file or in the
    audit rows of a SQLite store."""
    data = path.read_bytes()
    shown = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    test = _test_of(path, register.test_dirs)
    owner = f" (left by {test})" if test else ""
    findings = [Finding(f"file {shown}{owner}", what) for what in seeds_in(data, seeds)]
    if test is None:
        return findings
    codes = register.codes_of(test)
    if data.startswith(SQLITE_MAGIC):
        for row_id, text in _audit_rows(path):
            findings += [Finding(f"audit row {row_id} of {shown}{owner}", what)
                         for what in codes_in(text, codes)]
    elif path.name not in PEER_LOGS and _is_text(data):
        findings += [Finding(f"file {shown}{owner}", what) for what in codes_in(data, codes)]
    return findings


def _files(root: Path) -> Iterator[Path]:
    for directory, _dirs, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            if name == STATE_FILE or path.is_symlink() or not path.is_file():
                continue
            yield path


def sweep(register: Register, basetemp: Path | None,
          pg_log: Path | None) -> tuple[list[Finding], int]:
    """Every place the session could have leaked a secret to, searched; and how many files."""
    findings: list[Finding] = []
    files = 0
    seeds = Seeds.of(register.forms)
    for test, name, text in register.records:
        data = text.encode("utf-8", "replace")
        place = f"log record of {name}" + (f" during {test}" if test else "")
        findings += [Finding(place, what) for what in seeds_in(data, seeds)]
        findings += [Finding(place, what) for what in codes_in(data, register.codes_of(test))]
    if basetemp is not None and basetemp.is_dir():
        for path in _files(basetemp):
            findings += sweep_file(path, register, seeds, basetemp)
            files += 1
    if pg_log is not None and pg_log.is_file():
        findings += [Finding(f"PostgreSQL log {pg_log}", what)
                     for what in seeds_in(pg_log.read_bytes(), seeds)]
        files += 1
    return findings, files


# -- recording ---------------------------------------------------------------------------------


class _Capture(logging.Handler):
    """Keeps the text of every log record, with the test it was emitted in."""

    def __init__(self, register: Register) -> None:
        super().__init__(logging.NOTSET)
        self.register = register

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = _FORMATTER.format(record)
        except Exception:  # a record that cannot be formatted is kept raw
            text = f"{record.msg!r} {record.args!r}"
        self.register.records.append((self.register.current, record.name, text))


def _observing_new_secret(original: Callable[[totp.TotpParams], str]) -> Callable[
        [totp.TotpParams], str]:
    def new_secret(params: totp.TotpParams) -> str:
        secret = original(params)
        REGISTER.seed(secret)
        return secret
    return new_secret


def _observing_code_at(original: Callable[[str, totp.TotpParams, float], str]) -> Callable[
        [str, totp.TotpParams, float], str]:
    def code_at(secret: str, params: totp.TotpParams, timestamp: float) -> str:
        code = original(secret, params, timestamp)
        REGISTER.seed(secret)
        REGISTER.code(code)
        return code
    return code_at


class SecretSweep:
    """The plugin: recording hooks during the session, the sweep at its end."""

    def __init__(self, register: Register) -> None:
        self.register = register
        self.capture = _Capture(register)
        self.findings: list[Finding] = []
        self.summary = ""
        self._saved: dict[str, Any] = {}

    def start(self) -> None:
        self._saved = {"new_secret": totp.new_secret, "code_at": totp.code_at,
                       "level": logging.getLogger(PROJECT_LOGGER).level}
        totp.new_secret = _observing_new_secret(totp.new_secret)  # type: ignore[assignment]
        totp.code_at = _observing_code_at(totp.code_at)  # type: ignore[assignment]
        logging.getLogger(PROJECT_LOGGER).setLevel(logging.DEBUG)
        logging.getLogger().addHandler(self.capture)

    def stop(self) -> None:
        logging.getLogger().removeHandler(self.capture)
        if self._saved:
            totp.new_secret = self._saved["new_secret"]
            totp.code_at = self._saved["code_at"]
            logging.getLogger(PROJECT_LOGGER).setLevel(self._saved["level"])

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Iterator[None]:
        self.register.current = item.nodeid
        try:
            return (yield)
        finally:
            self.register.current = ""

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> None:
        tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
        if isinstance(tmp_path, Path):
            self.register.test_dirs[tmp_path] = item.nodeid

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        factory = getattr(session.config, "_tmp_path_factory", None)
        basetemp = factory.getbasetemp() if factory is not None else None
        pg_log = os.environ.get(PG_LOG_ENV)
        started = time.monotonic()
        self.findings, files = sweep(self.register, basetemp, Path(pg_log) if pg_log else None)
        register = self.register
        self.summary = (
            f"secret sweep (S05): {len(register.forms) // 2} seeds and "
            f"{sum(len(c) for c in register.codes.values())} codes looked for in "
            f"{len(register.records)} log records and {files} files "
            f"({time.monotonic() - started:.1f} s)")
        if self.findings and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.findings:
            if self.summary:
                terminalreporter.write_line(self.summary + ": nothing found")
            return
        terminalreporter.section("secret sweep (S05)", red=True, bold=True)
        terminalreporter.line(self.summary)
        for finding in self.findings:
            terminalreporter.line(f"SECRET FOUND: {finding}", red=True)
        terminalreporter.line(f"{len(self.findings)} secret(s) found after the run: the "
                              "session fails", red=True, bold=True)


def pytest_configure(config: pytest.Config) -> None:
    plugin = SecretSweep(REGISTER)
    plugin.start()
    config.pluginmanager.register(plugin, "secret-sweep")


def pytest_unconfigure(config: pytest.Config) -> None:
    plugin = config.pluginmanager.get_plugin("secret-sweep")
    if isinstance(plugin, SecretSweep):
        plugin.stop()
