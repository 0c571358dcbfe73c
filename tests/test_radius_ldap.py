"""The `ldap` first factor against a real OpenLDAP `slapd`, and through `unified-mfa radius`.

The module starts a throwaway slapd of its own (its own config, database and port; never the
system's) with a test CA's certificate for StartTLS and LDAPS, and a rule that refuses any
operation without TLS, so every passing bind here proves the TLS set-up. The directory holds
users with names that need escaping in a DN (`o+brien`) and in a filter (`a(b)*c\\d`), and
groupOfNames groups whose names the store gives an enforcement. The gateway is FreeRADIUS's
`radclient`, as in tests/test_radius.py.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import secrets
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ldap3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from ldap3.utils.dn import escape_rdn
from ldap3.utils.hashed import hashed

from pam_unified_mfa.core import MFA, RequestContext
from pam_unified_mfa.errors import ConfigError
from pam_unified_mfa.settings import LdapSettings
from radius.first_factor import REFUSED, FirstFactor, group_filter, ldap_check
from tests.helpers import free_port, now_code, require_tool, secret_of, stop_process
from tests.test_radius import SECRET, Answer, Responder, radclient, running_radius

BASE = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{BASE}"
PEOPLE = f"ou=people,{BASE}"
GROUPS = f"ou=groups,{BASE}"
USER_DN = f"uid={{user}},{PEOPLE}"
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")
CA_NAME = "Unified MFA test CA"
DOWN_URL = "ldap://127.0.0.1:1"  # nothing listens on tcp port 1
FILTER_USER = "a(b)*c\\d"  # the characters RFC 4515 escapes in a filter value (but NUL)

# name -> the groupOfNames groups it is a member of
USERS: dict[str, tuple[str, ...]] = {
    "alice": (),
    "o+brien": (),
    "carol": ("vpn-exempt",),
    "dave": ("vpn-strict",),
    FILTER_USER: ("vpn-exempt",),
}
POSIX_GROUP = "vpn-posix"  # posixGroup with memberUid: alice


@dataclass(frozen=True)
class Slapd:
    url: str
    ldaps_url: str
    other_name_url: str
    ca_file: Path
    wrong_ca_file: Path
    passwords: dict[str, str]
    log: Path


# -- the throwaway directory -----------------------------------------------------------------


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA. Two calls give two CAs with the same name: the wrong CA differs
    from the right one by its key only, as a rogue or stale CA file would."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _write_tls(directory: Path) -> tuple[Path, Path, Path, Path]:
    """The CA, the server's certificate and key (for 127.0.0.1 and localhost), a wrong CA."""
    ca_key, ca_cert = _ca()
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server.key",
             directory / "wrong-ca.pem")
    paths[0].write_bytes(_pem(ca_cert))
    paths[1].write_bytes(_pem(cert))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    paths[3].write_bytes(_pem(_ca()[1]))
    return paths


def _write_config(directory: Path, root_password: str,
                  tls: tuple[Path, Path, Path, Path]) -> Path:
    """slapd.conf: the schemas, TLS, one mdb database; TLS required for every operation; a
    user may read the directory (so the group search runs as the user), nobody passwords."""
    (directory / "db").mkdir()
    includes = "\n".join(f"include /etc/ldap/schema/{name}.schema" for name in SCHEMAS)
    config = directory / "slapd.conf"
    config.write_text(f"""{includes}
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {directory / "slapd.pid"}
TLSCACertificateFile {tls[0]}
TLSCertificateFile {tls[1]}
TLSCertificateKeyFile {tls[2]}
security tls=1

database mdb
suffix "{BASE}"
rootdn "{ROOT_DN}"
rootpw {hashed(ldap3.HASHED_SALTED_SHA, root_password)}
directory {directory / "db"}
index objectClass eq
index uid,memberUid eq
index member eq
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
""")
    return config


def _wait_for(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"slapd exited ({process.returncode}): {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"slapd did not listen on 127.0.0.1:{port}: {log.read_text()}")


def _seed(url: str, ca_file: Path, root_password: str) -> dict[str, str]:
    """people, groups and their passwords ({SSHA}), added as the root DN over StartTLS."""
    tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(ca_file))
    connection = ldap3.Connection(ldap3.Server(url, tls=tls, get_info=ldap3.NONE),
                                  user=ROOT_DN, password=root_password, raise_exceptions=True)
    connection.start_tls()
    connection.bind()
    passwords = {name: secrets.token_urlsafe(12) for name in USERS}
    entries: list[tuple[str, list[str], dict[str, object]]] = [
        (BASE, ["dcObject", "organization"], {"dc": "example", "o": "Example"}),
        (PEOPLE, ["organizationalUnit"], {"ou": "people"}),
        (GROUPS, ["organizationalUnit"], {"ou": "groups"}),
    ]
    members: dict[str, list[str]] = {}
    for name, groups in USERS.items():
        dn = USER_DN.replace("{user}", escape_rdn(name))
        entries.append((dn, ["inetOrgPerson"], {
            "uid": name, "cn": name, "sn": name,
            "userPassword": hashed(ldap3.HASHED_SALTED_SHA, passwords[name])}))
        for group in groups:
            members.setdefault(group, []).append(dn)
    for group, dns in members.items():
        entries.append((f"cn={group},{GROUPS}", ["groupOfNames"], {"cn": group, "member": dns}))
    entries.append((f"cn={POSIX_GROUP},{GROUPS}", ["posixGroup"],
                    {"cn": POSIX_GROUP, "gidNumber": "5000", "memberUid": "alice"}))
    for dn, classes, attributes in entries:
        connection.add(dn, classes, attributes)
    connection.unbind()
    return passwords


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """A slapd of the module's own on free ports of 127.0.0.1 (ldap:// and ldaps://), seeded;
    stopped and removed at the end."""
    binary = shutil.which("slapd") or shutil.which("slapd", path="/usr/sbin")
    if binary is None:
        pytest.fail("slapd is not installed (Debian package slapd): run scripts/setup")
    require_tool("ldapsearch", "ldap-utils")
    directory = tmp_path_factory.mktemp("slapd")
    root_password = secrets.token_urlsafe(12)
    tls = _write_tls(directory)
    config = _write_config(directory, root_password, tls)
    port, ldaps_port = free_port(), free_port()
    url, ldaps_url = f"ldap://127.0.0.1:{port}", f"ldaps://127.0.0.1:{ldaps_port}"
    other_url = f"ldap://127.0.0.2:{port}"  # an address the certificate does not name
    log = directory / "slapd.log"
    with log.open("wb") as log_file:
        # -d 0: in the foreground, so the fixture owns the process and can stop it.
        process = subprocess.Popen([binary, "-d", "0", "-f", str(config),
                                    "-h", f"{url}/ {ldaps_url}/ {other_url}/"],
                                   stdout=log_file, stderr=subprocess.STDOUT)
        try:
            _wait_for(port, process, log)
            _wait_for(ldaps_port, process, log)
            passwords = _seed(url, tls[0], root_password)
            yield Slapd(url, ldaps_url, other_url, tls[0], tls[3], passwords, log)
        finally:
            stop_process(process)


def ldap_settings(slapd: Slapd, **changes: Any) -> LdapSettings:
    """The settings that reach this module's slapd over StartTLS, with `changes`."""
    settings = LdapSettings(url=slapd.url, ca_file=str(slapd.ca_file), user_dn=USER_DN,
                            group_base=GROUPS, timeout="3s")
    return replace(settings, **changes)


# -- the check itself, against slapd ---------------------------------------------------------


def test_the_check_returns_the_users_group_names(slapd: Slapd, tmp_path: Path) -> None:
    check = ldap_check(ldap_settings(slapd), tmp_path)
    assert check("carol", slapd.passwords["carol"]) == FirstFactor(True, ("vpn-exempt",))


def test_a_user_in_no_group_passes_with_no_groups(slapd: Slapd, tmp_path: Path) -> None:
    check = ldap_check(ldap_settings(slapd), tmp_path)
    assert check("alice", slapd.passwords["alice"]) == FirstFactor(True, ())


def test_the_group_filter_escapes_filter_characters_in_the_user_dn(
        slapd: Slapd, tmp_path: Path) -> None:
    # Unescaped, `(`, `)`, `*` and `\` would break the filter (or widen it): no groups.
    check = ldap_check(ldap_settings(slapd), tmp_path)
    found = check(FILTER_USER, slapd.passwords[FILTER_USER])
    assert found == FirstFactor(True, ("vpn-exempt",))


def test_a_group_filter_may_match_the_user_name(slapd: Slapd, tmp_path: Path) -> None:
    settings = ldap_settings(slapd, group_filter="(&(objectClass=posixGroup)(memberUid={user}))")
    check = ldap_check(settings, tmp_path)
    assert check("alice", slapd.passwords["alice"]) == FirstFactor(True, (POSIX_GROUP,))


def test_a_failed_group_search_refuses_the_login(
        slapd: Slapd, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Without the groups a stricter group's enforcement would be lost: fail closed.
    check = ldap_check(ldap_settings(slapd, group_base=f"ou=nowhere,{BASE}"), tmp_path)
    with caplog.at_level(logging.ERROR, "unified_mfa.radius"):
        assert check("carol", slapd.passwords["carol"]) == REFUSED
    assert "LDAP group search under ou=nowhere" in caplog.text


def test_ldaps_with_the_right_ca_binds(slapd: Slapd, tmp_path: Path) -> None:
    check = ldap_check(ldap_settings(slapd, url=slapd.ldaps_url), tmp_path)
    assert check("alice", slapd.passwords["alice"]).ok


def test_ldaps_with_a_wrong_ca_is_refused(slapd: Slapd, tmp_path: Path) -> None:
    settings = ldap_settings(slapd, url=slapd.ldaps_url, ca_file=str(slapd.wrong_ca_file))
    assert ldap_check(settings, tmp_path)("alice", slapd.passwords["alice"]) == REFUSED


def test_a_certificate_for_another_name_is_refused(
        slapd: Slapd, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    check = ldap_check(ldap_settings(slapd, url=slapd.other_name_url), tmp_path)
    with caplog.at_level(logging.ERROR, "unified_mfa.radius"):
        assert check("alice", slapd.passwords["alice"]) == REFUSED
    assert "StartTLS" in caplog.text


def test_the_test_directory_refuses_binds_without_tls(
        slapd: Slapd, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # So every bind that passes in this module went over TLS.
    check = ldap_check(ldap_settings(slapd, start_tls=False), tmp_path)
    with caplog.at_level(logging.ERROR, "unified_mfa.radius"):
        assert check("alice", slapd.passwords["alice"]) == REFUSED
    assert "confidentialityRequired" in caplog.text


def test_a_url_may_end_with_a_slash(slapd: Slapd, tmp_path: Path) -> None:
    check = ldap_check(ldap_settings(slapd, url=slapd.url + "/"), tmp_path)
    assert check("alice", slapd.passwords["alice"]).ok


def test_a_relative_ca_file_is_read_from_the_home(slapd: Slapd, tmp_path: Path) -> None:
    shutil.copy(slapd.ca_file, tmp_path / "ldap-ca.pem")
    check = ldap_check(ldap_settings(slapd, ca_file="ldap-ca.pem"), tmp_path)
    assert check("alice", slapd.passwords["alice"]).ok


def test_the_group_filter_is_filled_in_once_with_escaped_values() -> None:
    # A `{dn}` inside the user name stays text: one pass, no second substitution.
    query = group_filter("(|(member={dn})(memberUid={user}))", "{dn})(cn=*", "uid=a\\+b")
    assert query == "(|(member=uid=a\\5c+b)(memberUid={dn}\\29\\28cn=\\2a))"


def test_a_group_filter_that_does_not_parse_is_refused_at_start(tmp_path: Path) -> None:
    settings = LdapSettings(url="ldap://127.0.0.1/", user_dn=USER_DN, group_base=GROUPS,
                            group_filter="(&(member={dn})")
    with pytest.raises(ConfigError, match="group_filter does not parse"):
        ldap_check(settings, tmp_path)


# -- through unified-mfa radius --------------------------------------------------------------


@pytest.fixture
def ldap_override() -> dict[str, str]:
    """`[radius.ldap]` keys a test changes (parametrize it); by default none."""
    return {}


@pytest.fixture
def settings_extra(slapd: Slapd, ldap_override: dict[str, str]) -> str:
    """One challenge-mode gateway; ca_file relative to the home, where `responder` copies it."""
    ldap = {"url": slapd.url, "ca_file": "ldap-ca.pem", "user_dn": USER_DN,
            "group_base": GROUPS, "timeout": "3s", **ldap_override}
    lines = "\n".join(f'{key} = "{value}"' for key, value in ldap.items())
    return f"""
[radius]
first_factor = "ldap"

[radius.ldap]
{lines}

[[radius.clients]]
name = "vpn"
address = "127.0.0.1"
secret = "{SECRET}"
"""


@pytest.fixture
def responder(home: Path, store_url: str, slapd: Slapd, tmp_path: Path) -> Iterator[Responder]:
    shutil.copy(slapd.ca_file, home / "ldap-ca.pem")
    shutil.copy(slapd.wrong_ca_file, home / "wrong-ca.pem")
    with running_radius(home, store_url, tmp_path / "radius.log") as running:
        yield running


def enrolled(core: MFA, name: str) -> str:
    """`name` in the store with a confirmed TOTP; the confirming code is this step's, so the
    test's code is the next step's (within the window)."""
    core.add_user(name)
    secret = secret_of(core.enroll(name, "totp").uri)
    assert core.authenticate_code(name, now_code(core, secret), RequestContext()).granted
    return secret


def ask(responder: Responder, user: str, password: str, state: str | None = None) -> Answer:
    attributes = {"User-Name": user, "User-Password": password}
    if state is not None:
        attributes["State"] = state
    return radclient(responder.port, attributes)


def log_of(responder: Responder) -> str:
    time.sleep(0.2)  # the responder writes its line after the reply
    return responder.log.read_text()


def test_challenge_login_over_starttls_with_the_ldap_password_and_a_totp_code_is_accepted(
        responder: Responder, slapd: Slapd, core: MFA) -> None:
    secret = enrolled(core, "alice")
    first = ask(responder, "alice", slapd.passwords["alice"])
    assert first.code == "Access-Challenge"
    second = ask(responder, "alice", now_code(core, secret, 1), first.attributes["State"])
    assert second.code == "Access-Accept"


def test_a_wrong_ldap_password_is_rejected_without_a_challenge(
        responder: Responder, slapd: Slapd, core: MFA) -> None:
    enrolled(core, "alice")
    answer = ask(responder, "alice", "not-the-password")
    assert answer.code == "Access-Reject"
    assert "State" not in answer.attributes


def test_s06_an_unknown_user_is_rejected_like_a_wrong_password(
        responder: Responder, slapd: Slapd, core: MFA) -> None:
    enrolled(core, "alice")
    wrong = ask(responder, "alice", "not-the-password")
    unknown = ask(responder, "nobody", "not-the-password")
    assert unknown.code == wrong.code == "Access-Reject"
    assert unknown.attributes.keys() == wrong.attributes.keys()
    assert unknown.attributes.get("Reply-Message") == wrong.attributes.get("Reply-Message")


def test_a_user_whose_dn_needs_escaping_logs_in(
        responder: Responder, slapd: Slapd, core: MFA) -> None:
    secret = enrolled(core, "o+brien")
    first = ask(responder, "o+brien", slapd.passwords["o+brien"])
    assert first.code == "Access-Challenge"
    second = ask(responder, "o+brien", now_code(core, secret, 1), first.attributes["State"])
    assert second.code == "Access-Accept"


def test_user_names_with_ldap_filter_or_dn_characters_never_bind_as_someone_else(
        responder: Responder, slapd: Slapd, core: MFA) -> None:
    # With alice's password: a name that reached alice's entry would bind, and be challenged.
    enrolled(core, "alice")
    for name in ("*", "a*", "x)(uid=*", "alice)(uid=*", "alice,ou=people", f"alice,{PEOPLE}",
                 "alice+cn=alice", "uid=alice"):
        answer = ask(responder, name, slapd.passwords["alice"])
        assert answer.code == "Access-Reject", name
        assert "State" not in answer.attributes, name


@pytest.mark.parametrize("spelling", ["ALICE", " alice"])
def test_another_spelling_of_a_name_is_not_that_user_in_the_store(
        responder: Responder, slapd: Slapd, core: MFA, spelling: str) -> None:
    # The directory matches uid without case and spaces and binds alice's entry; the store
    # matches exactly, so this login is an unknown user's: the decoy, refusing alice's code.
    secret = enrolled(core, "alice")
    first = ask(responder, spelling, slapd.passwords["alice"])
    assert first.code == "Access-Challenge"
    second = ask(responder, spelling, now_code(core, secret, 1), first.attributes["State"])
    assert second.code == "Access-Challenge"
    assert "Invalid passcode" in second.attributes["Reply-Message"]


def test_a_member_of_an_exempt_ldap_group_is_accepted_after_the_password_alone(
        responder: Responder, slapd: Slapd, core: MFA) -> None:
    core.add_user("carol")  # no factor: only the group's exemption lets her in
    core.set_enforcement("vpn-exempt", "exempt", group=True)
    assert ask(responder, "carol", slapd.passwords["carol"]).code == "Access-Accept"


def test_a_member_of_a_required_ldap_group_without_factors_is_rejected(
        responder: Responder, slapd: Slapd, core: MFA) -> None:
    core.add_admin("boss")
    core.set_default_enforcement("boss", "exempt")  # without the group, dave would be let in
    core.add_user("dave")
    core.set_enforcement("vpn-strict", "required", group=True)
    answer = ask(responder, "dave", slapd.passwords["dave"])
    assert answer.code == "Access-Reject"
    assert "enroll" in answer.attributes["Reply-Message"]


@pytest.mark.parametrize("ldap_override", [{"ca_file": "wrong-ca.pem"}])
def test_starttls_with_a_wrong_ca_is_rejected_and_logged(
        responder: Responder, slapd: Slapd, core: MFA) -> None:
    core.add_user("carol")
    core.set_enforcement("vpn-exempt", "exempt", group=True)  # the password alone would do
    assert ask(responder, "carol", slapd.passwords["carol"]).code == "Access-Reject"
    assert f"LDAP StartTLS with {slapd.url} failed" in log_of(responder)


@pytest.mark.parametrize("ldap_override", [{"url": DOWN_URL}])
def test_an_unreachable_directory_is_rejected_and_logged_and_the_responder_goes_on(
        responder: Responder, slapd: Slapd, core: MFA) -> None:
    core.add_user("carol")
    core.set_enforcement("vpn-exempt", "exempt", group=True)
    for _ in range(2):
        assert ask(responder, "carol", slapd.passwords["carol"]).code == "Access-Reject"
    assert f"LDAP server {DOWN_URL} unavailable" in log_of(responder)

