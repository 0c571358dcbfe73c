"""The secret sweep (tests/secret_sweep.py) catches what it is there for, and only that.

A small test session of its own runs in a subprocess with the sweep loaded, as the suite loads
it: one session plants a leak of each kind (a seed in a log record, a seed's hex in a file, a
code in a log record, a code in an audit row of a real store, a seed in the PostgreSQL log), the
other makes seeds and codes and keeps them where they belong. The planted seeds are made in the
subprocess, so the outer test run never learns them and its own sweep does not report the
files that hold them; one file hands them over, only so that the report can be shown not to
contain them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.secret_sweep import PG_LOG_ENV, SecretSweep, Seeds, codes_in, seeds_in

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 120

LEAKY = '''
import base64
import logging
import os
import sqlite3
from pathlib import Path

from pam_unified_mfa import totp
from pam_unified_mfa.core import MFA
from pam_unified_mfa.home import init_home

PARAMS = totp.TotpParams()
log = logging.getLogger("unified_mfa.core")


def planted(seed):
    with open(os.environ["PLANTED"], "a") as handle:
        handle.write(seed + "\\n")
    return seed


def test_seed_in_a_log_record():
    log.debug("enrolled with %s", planted(totp.new_secret(PARAMS)).lower())


def test_seed_as_hex_in_a_file(tmp_path):
    key = base64.b32decode(planted(totp.new_secret(PARAMS)))
    (tmp_path / "service.log").write_text("key " + key.hex().upper() + "\\n")


def test_code_in_a_log_record():
    code = totp.code_at(planted(totp.new_secret(PARAMS)), PARAMS, 1_800_000_000)
    log.info("checked code=%s.", code)


def test_code_in_an_audit_row(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    init_home(tmp_path / "home", "https://mfa.example.test", url)
    mfa = MFA.open(tmp_path / "home", store=url)
    mfa.add_user("alice")
    mfa.close()
    code = totp.code_at(planted(totp.new_secret(PARAMS)), PARAMS, 1_800_000_000)
    with sqlite3.connect(tmp_path / "store.db") as db:
        db.execute("UPDATE audit SET detail = ?", (f"typed={code}",))


def test_seed_in_the_postgresql_log():
    with open(os.environ["UNIFIED_MFA_TEST_PG_LOG"], "a") as handle:
        handle.write("ERROR: x DETAIL: " + planted(totp.new_secret(PARAMS)) + "\\n")
'''

CLEAN = '''
import json
import logging

from pam_unified_mfa import totp

PARAMS = totp.TotpParams()
log = logging.getLogger("unified_mfa.core")


def test_seeds_and_codes_kept_where_they_belong(tmp_path):
    seed = totp.new_secret(PARAMS)
    code = totp.code_at(seed, PARAMS, 1_800_000_000)
    log.info("code accepted for alice (factor f0123456789abcdef)")
    phone = tmp_path / "phone"
    phone.mkdir()
    (phone / "accounts.json").write_text(json.dumps({"accounts": [{"secret": seed}]}))
    (tmp_path / "numbers.log").write_text("pid 482913 took 0.%s s, port 54329\\n" % code)


def test_a_number_no_test_made_is_not_a_code():
    log.warning("listening on port 123456 with 1800000000.123456 as the time")
'''


@dataclass(frozen=True)
class Session:
    """A finished inner session: its exit status, its report, the seeds it planted."""

    status: int
    output: str
    planted: list[str]


def run_session(root: Path, source: str, pg_log: Path | None) -> Session:
    """`pytest` on one test file in a subprocess, with the sweep loaded by a conftest."""
    tests = root / "tests"
    tests.mkdir(parents=True)
    (tests / "pytest.ini").write_text("[pytest]\n")
    (tests / "conftest.py").write_text('pytest_plugins = ["tests.secret_sweep"]\n')
    (tests / "test_inner.py").write_text(source)
    planted = root / "planted.txt"
    planted.touch()
    env = {k: v for k, v in os.environ.items() if k != PG_LOG_ENV}
    env.update(PYTHONPATH=str(REPO), PLANTED=str(planted))
    if pg_log is not None:
        env[PG_LOG_ENV] = str(pg_log)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--basetemp", str(root / "basetemp"), str(tests / "test_inner.py")],
        cwd=tests, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    return Session(result.returncode, result.stdout + result.stderr,
                   planted.read_text().split())


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory) -> Session:
    root = tmp_path_factory.mktemp("leaky")
    pg_log = root / "postgres.log"
    pg_log.write_text("LOG: database system is ready to accept connections\n")
    return run_session(root, LEAKY, pg_log)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Session:
    return run_session(tmp_path_factory.mktemp("clean"), CLEAN, None)


def findings(session: Session) -> list[str]:
    return [line for line in session.output.splitlines() if line.startswith("SECRET FOUND:")]


# -- what fails the session -------------------------------------------------------------------


def test_s05_a_planted_leak_fails_a_session_whose_tests_all_passed(leaky: Session) -> None:
    assert "5 passed" in leaky.output
    assert leaky.status == pytest.ExitCode.TESTS_FAILED
    assert "secret(s) found after the run: the session fails" in leaky.output


def test_s05_a_seed_in_a_log_record_is_found_in_any_case(leaky: Session) -> None:
    place = "log record of unified_mfa.core during test_inner.py::test_seed_in_a_log_record"
    assert any("as base32" in line and line.endswith(place) for line in findings(leaky))


def test_s05_a_seeds_hex_in_a_file_is_found_with_the_file_and_its_test(leaky: Session) -> None:
    place = ("file test_seed_as_hex_in_a_file0/service.log "
             "(left by test_inner.py::test_seed_as_hex_in_a_file)")
    assert any("as hex" in line and line.endswith(place) for line in findings(leaky))


def test_s05_a_code_in_a_log_record_is_found(leaky: Session) -> None:
    place = "log record of unified_mfa.core during test_inner.py::test_code_in_a_log_record"
    assert f"SECRET FOUND: one-time code of 6 digits in {place}" in findings(leaky)


def test_s05_a_code_in_an_audit_row_of_a_store_is_found(leaky: Session) -> None:
    assert any("one-time code of 6 digits in audit row" in line
               and "test_code_in_an_audit_row0/store.db" in line for line in findings(leaky))


def test_s05_a_seed_in_the_postgresql_log_is_found(leaky: Session) -> None:
    assert any(line.endswith("postgres.log") and "TOTP seed" in line for line in findings(leaky))


def test_s05_the_report_never_shows_a_secret(leaky: Session) -> None:
    assert len(leaky.planted) == 5
    for seed in leaky.planted:
        assert seed.lower() not in leaky.output.lower()
        assert seed not in leaky.output


# -- what does not -----------------------------------------------------------------------------


def test_s05_seeds_and_codes_kept_where_they_belong_pass(clean: Session) -> None:
    assert clean.status == pytest.ExitCode.OK, clean.output
    assert findings(clean) == []
    assert "2 passed" in clean.output


def test_s05_the_sweep_runs_after_this_suite_too(pytestconfig: pytest.Config) -> None:
    assert isinstance(pytestconfig.pluginmanager.get_plugin("secret-sweep"), SecretSweep)


# -- the matching itself -----------------------------------------------------------------------


def test_a_code_is_a_number_standing_alone() -> None:
    codes = {b"123456", b"12345678"}
    assert codes_in(b"code=123456, then 12345678.", codes) == [
        "one-time code of 6 digits", "one-time code of 8 digits"]
    assert codes_in(b"0.123456 1234567 f123456 123456.5 a123456b", codes) == []


def test_a_seed_is_found_inside_a_longer_run_of_its_alphabet() -> None:
    seed = b"jbswy3dpehpk3pxpjbswy3dpehpk3pxp"
    seeds = Seeds.of({seed: "the seed"})
    assert seeds_in(b"secret=QQ" + seed.upper() + b"&issuer=x", seeds) == ["the seed"]
    assert seeds_in(seed[:-1], seeds) == []
