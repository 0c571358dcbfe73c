"""Settings are strict: defaults are safe, unknown keys and wrong types are refused, so a typo
can never quietly weaken the configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from pam_unified_mfa.errors import ConfigError
from pam_unified_mfa.settings import SETTINGS_FILE, Settings, load_settings, parse_duration


def write(tmp_path: Path, body: str) -> Path:
    (tmp_path / SETTINGS_FILE).write_text(body, encoding="utf-8")
    return tmp_path


def test_missing_settings_file_means_all_defaults(tmp_path: Path) -> None:
    assert load_settings(tmp_path) == Settings()


def test_default_fail_mode_is_secure() -> None:
    assert Settings().fail_mode == "secure"


def test_unknown_top_level_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="failmode"):
        load_settings(write(tmp_path, 'failmode = "safe"\n'))


def test_unknown_key_in_a_section_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"totp\.digit"):
        load_settings(write(tmp_path, "[totp]\ndigit = 8\n"))


def test_boolean_is_not_accepted_for_a_number(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="digits"):
        load_settings(write(tmp_path, "[totp]\ndigits = true\n"))


def test_text_is_not_accepted_for_a_number(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_failures"):
        load_settings(write(tmp_path, '[throttle]\nmax_failures = "5"\n'))


def test_unparsable_file_is_an_error_not_defaults(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not parse"):
        load_settings(write(tmp_path, "fail_mode = \n"))


def test_s07_fail_mode_accepts_only_secure_or_safe(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fail_mode"):
        load_settings(write(tmp_path, 'fail_mode = "open"\n'))


def test_totp_parameters_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="totp"):
        load_settings(write(tmp_path, '[totp]\nalgorithm = "MD5"\n'))


def test_valid_settings_are_read(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, '[totp]\ndigits = 8\nalgorithm = "SHA256"\n'
                                             '[throttle]\nlockout = "2m"\n'))
    assert (settings.totp.digits, settings.totp.algorithm) == (8, "SHA256")
    assert settings.seconds(settings.throttle.lockout) == 120


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("1h", 3600),
                                               ("2d", 172800), ("500ms", 0.5)])
def test_durations_have_one_unit(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5", "1h30m", "-5m", "five minutes", ""])
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


def test_malformed_duration_in_file_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="duration"):
        load_settings(write(tmp_path, '[throttle]\nlockout = "forever"\n'))


def test_ldap_groups_are_off_unless_a_group_base_is_set() -> None:
    ldap = Settings().radius.ldap
    assert ldap.group_base == ""
    assert ldap.group_filter == "(&(objectClass=groupOfNames)(member={dn}))"


def test_ldap_group_settings_are_read(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, '[radius.ldap]\ngroup_base = "ou=groups,dc=ex"\n'
                                             'group_filter = "(memberUid={user})"\n'))
    assert settings.radius.ldap.group_base == "ou=groups,dc=ex"
    assert settings.radius.ldap.group_filter == "(memberUid={user})"


def test_an_ldap_group_filter_that_names_no_user_is_refused(tmp_path: Path) -> None:
    # Such a filter would give every user every group it finds.
    with pytest.raises(ConfigError, match="group_filter"):
        load_settings(write(tmp_path, '[radius.ldap]\ngroup_base = "ou=groups,dc=ex"\n'
                                      'group_filter = "(objectClass=groupOfNames)"\n'))
