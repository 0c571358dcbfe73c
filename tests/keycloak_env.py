"""A real Keycloak and a headless Chromium for the Keycloak acceptance tests.

The Keycloak version is the one the authenticator compiles against: `keycloak.version` in
keycloak_bridge/authenticator/pom.xml, its only pin. The distribution comes from Maven
Central through Maven (`org.keycloak:keycloak-quarkus-dist:VERSION:zip`) and is unpacked once
into a cache (`/var/cache/unified-mfa-test`, or `~/.cache/unified-mfa-test` when that is not
writable, or `UNIFIED_MFA_TEST_CACHE`). Each run copies it, drops the provider JAR built by
`packaging/keycloak/build-jar` into providers/ and runs `kc.sh start-dev` on a free loopback
port. Keycloak re-builds itself (Quarkus augmentation, ~30 s) when its providers change, so
the augmented copy is kept in the cache under the JAR's hash and reused while the JAR is
unchanged.

`KeycloakAdmin` is a small client of the Admin REST API: realms, clients, users, groups,
flows with our step, brute-force status and events. `chromium()` (from tests/browser.py)
launches Debian's chromium through Playwright (its own browser download is not used).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import free_port, require_tool

REPO = Path(__file__).resolve().parent.parent
POM = REPO / "keycloak_bridge" / "authenticator" / "pom.xml"
BUILD_JAR = REPO / "packaging" / "keycloak" / "build-jar"

ADMIN_USER = "admin"
ADMIN_PASSWORD = secrets.token_urlsafe(16)
START_TIMEOUT = 300.0



# -- the distribution ---------------------------------------------------------------------


def keycloak_version() -> str:
    """The pinned Keycloak version (`keycloak.version` in the authenticator's pom.xml)."""
    found = re.search(r"<keycloak\.version>\s*([^<\s]+)\s*</keycloak\.version>",
                      POM.read_text(encoding="utf-8"))
    assert found, f"no keycloak.version in {POM}"
    return found.group(1)


def cache_dir() -> Path:
    """Where the unpacked Keycloak is kept between runs."""
    configured = os.environ.get("UNIFIED_MFA_TEST_CACHE")
    candidates = [Path(configured)] if configured else [
        Path("/var/cache/unified-mfa-test"), Path.home() / ".cache" / "unified-mfa-test"]
    for candidate in candidates:
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK):
            return candidate
    pytest.fail(f"no writable cache directory among {candidates}")


def _fetch_zip(version: str, into: Path) -> Path:
    """The distribution zip through Maven (from ~/.m2 when it is there already)."""
    mvn = require_tool("mvn", "maven")
    artifact = f"org.keycloak:keycloak-quarkus-dist:{version}:zip"
    result = subprocess.run(
        [mvn, "-B", "-q", "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy",
         f"-Dartifact={artifact}", f"-DoutputDirectory={into}"],
        cwd=into, capture_output=True, text=True, timeout=1200, check=False)
    zip_path = into / f"keycloak-quarkus-dist-{version}.zip"
    assert result.returncode == 0 and zip_path.exists(), \
        f"mvn could not fetch {artifact}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return zip_path


def keycloak_distribution(version: str) -> Path:
    """The unpacked, untouched distribution in the cache (fetched and unpacked once)."""
    root = cache_dir()
    home = root / f"keycloak-{version}"
    if (home / "bin" / "kc.sh").exists():
        return home
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        zip_path = _fetch_zip(version, Path(scratch))
        unpacked = Path(scratch) / "unpacked"
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(unpacked)
        [top] = list(unpacked.iterdir())
        for script in (top / "bin").glob("*.sh"):
            script.chmod(0o755)  # zipfile does not keep modes
        with contextlib.suppress(OSError):  # another run unpacked it meanwhile
            top.rename(home)
    return home


def build_provider_jar(out: Path) -> Path:
    """The authenticator JAR, built by the packaging script as an admin would build it."""
    require_tool("mvn", "maven")
    require_tool("java", "openjdk-17-jdk-headless")
    result = subprocess.run([str(BUILD_JAR), "--output", str(out)], capture_output=True,
                            text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    jar = Path(result.stdout.strip().splitlines()[-1])
    assert jar.is_file() and jar.parent == out, result.stdout
    return jar


# Keycloak re-builds itself when a provider's modification time differs from the one it
# recorded: the installed JAR always gets this one, so an unchanged JAR is an unchanged provider.
PROVIDER_MTIME = 1_767_225_600  # 2026-01-01T00:00:00Z, as the JAR's entries (pom.xml)


def _augmented_cache(version: str, jar: Path) -> Path:
    digest = hashlib.sha256(jar.read_bytes()).hexdigest()[:16]
    return cache_dir() / f"keycloak-{version}-with-{digest}"


def _install(version: str, jar: Path, target: Path) -> bool:
    """A Keycloak at `target` with our provider; True when it comes already augmented."""
    built = _augmented_cache(version, jar)
    reused = (built / "bin" / "kc.sh").exists()
    shutil.copytree(built if reused else keycloak_distribution(version), target, symlinks=True)
    installed = target / "providers" / jar.name
    shutil.copyfile(jar, installed)
    os.utime(installed, (PROVIDER_MTIME, PROVIDER_MTIME))
    return reused


def _keep_augmented(version: str, jar: Path, home: Path) -> None:
    """After a clean stop, keep the augmented install (without its data) for the next run."""
    built = _augmented_cache(version, jar)
    if built.exists():
        return
    for stale in cache_dir().glob(f"keycloak-{version}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = built.with_name(built.name + f".tmp{os.getpid()}")
    shutil.copytree(home, staging, symlinks=True, ignore=shutil.ignore_patterns("data"))
    try:
        staging.rename(built)
    except OSError:  # another run kept the same one meanwhile
        shutil.rmtree(staging, ignore_errors=True)


# -- the server ---------------------------------------------------------------------------


@dataclass
class Keycloak:
    """A running Keycloak and its admin client."""

    url: str
    home: Path
    vault: Path
    log: Path
    process: subprocess.Popen[bytes]
    started_in: float
    admin: KeycloakAdmin = field(init=False)

    def __post_init__(self) -> None:
        self.admin = KeycloakAdmin(self.url, ADMIN_USER, ADMIN_PASSWORD)

    def put_secret(self, realm: str, name: str, value: str) -> str:
        """A secret in Keycloak's file vault; returns the reference a setting holds."""
        path = self.vault / f"{realm.replace('_', '__')}_{name.replace('_', '__')}"
        path.write_text(value, encoding="utf-8")
        path.chmod(0o600)
        return "${vault." + name + "}"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"Keycloak exited ({process.returncode}):\n"
                        f"{log.read_text(errors='replace')[-4000:]}")
        try:
            if requests.get(f"{url}/realms/master", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        # Waiting for a real process to start listening, not for a time-based rule.
        time.sleep(1)
    pytest.fail(f"Keycloak did not start in {START_TIMEOUT:.0f} s:\n"
                f"{log.read_text(errors='replace')[-4000:]}")


def _stop(process: subprocess.Popen[bytes]) -> bool:
    """SIGTERM to the process group we started (kc.sh and its java); SIGKILL if it hangs.
    True when it stopped on SIGTERM."""
    if process.poll() is not None:
        return True
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(60)
        return True
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
        return False


@contextmanager
def running_keycloak(workdir: Path, jar: Path) -> Iterator[Keycloak]:
    """`kc.sh start-dev` on 127.0.0.1 with our provider installed and a file vault; stopped at
    the end."""
    require_tool("java", "openjdk-17-jdk-headless")
    version = keycloak_version()
    home = workdir / "keycloak"
    reused = _install(version, jar, home)
    port, management = free_port(), free_port()
    log = workdir / "keycloak.log"
    vault = workdir / "vault"
    vault.mkdir(mode=0o700)
    env = {**os.environ, "KC_BOOTSTRAP_ADMIN_USERNAME": ADMIN_USER,
           "KC_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD}
    started = time.monotonic()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(home / "bin" / "kc.sh"), "start-dev", "--http-host=127.0.0.1",
             f"--http-port={port}", f"--http-management-port={management}",
             "--vault=file", f"--vault-dir={vault}"],
            cwd=home, env=env, stdout=sink, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    clean = False
    try:
        _wait_until_up(url, process, log)
        yield Keycloak(url, home, vault, log, process, time.monotonic() - started)
    finally:
        clean = _stop(process)
    if clean and not reused:
        _keep_augmented(version, jar, home)


# -- the Admin REST API -------------------------------------------------------------------


class KeycloakAdmin:
    """Just enough of the Admin REST API for the tests, as the master realm's admin."""

    def __init__(self, url: str, user: str, password: str) -> None:
        self.url = url
        self.user = user
        self.password = password
        self._token: str | None = None
        self._expires = 0.0

    def _bearer(self) -> str:
        if self._token is None or time.monotonic() > self._expires:
            reply = requests.post(
                f"{self.url}/realms/master/protocol/openid-connect/token", timeout=30,
                data={"grant_type": "password", "client_id": "admin-cli",
                      "username": self.user, "password": self.password})
            reply.raise_for_status()
            body = reply.json()
            self._token = str(body["access_token"])
            self._expires = time.monotonic() + float(body["expires_in"]) - 10
        return self._token

    def call(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        reply = requests.request(method, f"{self.url}/admin/realms{path}", timeout=60,
                                 headers={"Authorization": f"Bearer {self._bearer()}"}, **kwargs)
        assert reply.status_code == expect, (method, path, reply.status_code, reply.text)
        return reply.json() if reply.content and "json" in reply.headers.get(
            "content-type", "") else reply

    def create_realm(self, realm: str, **settings: Any) -> None:
        self.call("POST", "", expect=201, json={"realm": realm, "enabled": True, **settings})

    def create_client(self, realm: str, client_id: str, redirect_uri: str) -> None:
        self.call("POST", f"/{realm}/clients", expect=201, json={
            "clientId": client_id, "enabled": True, "publicClient": True,
            "standardFlowEnabled": True, "directAccessGrantsEnabled": True,
            "redirectUris": [redirect_uri], "webOrigins": ["+"]})

    def create_user(self, realm: str, username: str, password: str,
                    groups: list[str] | None = None) -> str:
        reply = self.call("POST", f"/{realm}/users", expect=201, json={
            "username": username, "enabled": True, "email": f"{username}@example.test",
            "emailVerified": True, "firstName": username.title(), "lastName": "Tester",
            "credentials": [{"type": "password", "value": password, "temporary": False}],
            "groups": groups or []})
        return str(reply.headers["Location"]).rstrip("/").rsplit("/", 1)[-1]

    def create_group(self, realm: str, name: str) -> None:
        self.call("POST", f"/{realm}/groups", expect=201, json={"name": name})

    def executions(self, realm: str, flow: str) -> list[dict[str, Any]]:
        quoted = urllib.parse.quote(flow, safe="")
        result: list[dict[str, Any]] = self.call(
            "GET", f"/{realm}/authentication/flows/{quoted}/executions")
        return result

    def copy_flow(self, realm: str, source: str, name: str) -> None:
        quoted = urllib.parse.quote(source, safe="")
        self.call("POST", f"/{realm}/authentication/flows/{quoted}/copy", expect=201,
                  json={"newName": name})

    def set_requirement(self, realm: str, flow: str, execution: dict[str, Any],
                        requirement: str) -> None:
        quoted = urllib.parse.quote(flow, safe="")
        self.call("PUT", f"/{realm}/authentication/flows/{quoted}/executions", expect=204,
                  json={**execution, "requirement": requirement})

    def add_step(self, realm: str, top_flow: str, subflow: str, provider: str,
                 alias: str | None = None, config: dict[str, str] | None = None) -> None:
        """Append `provider` to `subflow` of `top_flow` as REQUIRED, configured with `config`
        under `alias` when given (a built-in step such as Keycloak's OTP needs none)."""
        quoted = urllib.parse.quote(subflow, safe="")
        self.call("POST", f"/{realm}/authentication/flows/{quoted}/executions/execution",
                  expect=201, json={"provider": provider})
        [step] = [e for e in self.executions(realm, top_flow) if e.get("providerId") == provider]
        self.set_requirement(realm, top_flow, step, "REQUIRED")
        if config is not None:
            self.call("POST", f"/{realm}/authentication/executions/{step['id']}/config",
                      expect=201, json={"alias": alias or provider, "config": config})

    def disable_conditional_subflows(self, realm: str, flow: str) -> None:
        """Turn off the built-in conditional OTP/2FA subflows of a copied flow."""
        for execution in self.executions(realm, flow):
            if execution.get("requirement") == "CONDITIONAL":
                self.set_requirement(realm, flow, execution, "DISABLED")

    def update_realm(self, realm: str, **settings: Any) -> None:
        self.call("PUT", f"/{realm}", expect=204, json=settings)

    def update_client(self, realm: str, client_id: str, **settings: Any) -> None:
        [client] = self.call("GET", f"/{realm}/clients", params={"clientId": client_id})
        self.call("PUT", f"/{realm}/clients/{client['id']}", expect=204,
                  json={**client, **settings})

    def flow_id(self, realm: str, alias: str) -> str:
        flows = self.call("GET", f"/{realm}/authentication/flows")
        [flow] = [f for f in flows if f["alias"] == alias]
        return str(flow["id"])

    def brute_force(self, realm: str, user_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call(
            "GET", f"/{realm}/attack-detection/brute-force/users/{user_id}")
        return result

    def events(self, realm: str, user_id: str, kind: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call(
            "GET", f"/{realm}/events", params={"user": user_id, "type": kind})
        return result


# -- the relying party and the browser -----------------------------------------------------


class _Callback(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!DOCTYPE html><title>signed in</title><p id='app'>signed in</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def relying_party() -> Iterator[str]:
    """A stand-in application at 127.0.0.1: Keycloak redirects the browser to its /callback
    with the authorization code. Yields the redirect URI."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Callback)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/callback"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
