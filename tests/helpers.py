"""Small helpers the tests share: reading a secret from an enrollment URI, making codes."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pam_unified_mfa import totp
from pam_unified_mfa.core import MFA, Outcome
from pam_unified_mfa.core.context import RequestContext
from pam_unified_mfa.core.factors import EnrollResult
from pam_unified_mfa.enrollment_uri import parse_uri

PAM_MODULE_DIR = Path(__file__).resolve().parent.parent / "pam_unified_mfa" / "pam"


def secret_of(uri: str) -> str:
    enrollment = parse_uri(uri)
    assert enrollment.totp_secret is not None
    # The secret sweep looks for every seed the tests saw, a subprocess's too. Imported here so
    # that pytest loads the plugin itself first (tests/conftest.py).
    from tests.secret_sweep import record_seed

    record_seed(enrollment.totp_secret)
    return enrollment.totp_secret


def code_for(mfa: MFA, uri_or_secret: str, offset_steps: int = 0) -> str:
    """The code an authenticator shows at the core's current time (plus whole steps)."""
    secret = secret_of(uri_or_secret) if "://" in uri_or_secret else uri_or_secret
    params = mfa.settings.totp.params()
    return totp.code_at(secret, params, mfa.env.clock() + offset_steps * params.period)


def login(mfa: MFA, user: str, code: str, ctx: RequestContext | None = None) -> bool:
    """One adapter-style login with a code; True when accepted."""
    step = mfa.authenticate_code(user, code, ctx or RequestContext())
    return step.outcome is Outcome.ACCEPT


def enroll_confirmed(mfa: MFA, user: str, kind: str | None = None) -> EnrollResult:
    """Enroll and prove the first code, as a user scanning the QR would; returns the result."""
    result = mfa.enroll(user, kind)
    if "secret=" in result.uri:
        assert login(mfa, user, code_for(mfa, result.uri))
        # Move to the next step so the test's next code is not a replay of this one (S01).
        mfa.env.clock.advance(30)  # type: ignore[attr-defined]
    return result


def wrong_code(mfa: MFA, uri: str) -> str:
    """A well-formed code that matches no time step the core would accept right now."""
    reach = mfa.settings.totp.window + 1
    valid = {code_for(mfa, uri, k) for k in range(-reach, reach + 1)}
    number = 0
    while f"{number:06d}" in valid:
        number += 1
    return f"{number:06d}"


class Device:
    """A minimal Protect app: a key pair registered from an enrollment URI, signing answers."""

    def __init__(self, mfa: MFA, uri: str) -> None:
        self.key = Ed25519PrivateKey.generate()
        pem = self.key.public_key().public_bytes(Encoding.PEM,
                                                 PublicFormat.SubjectPublicKeyInfo).decode()
        enrollment = parse_uri(uri)
        assert enrollment.token is not None
        self.token = enrollment.token
        self.factor_id = mfa.register_device(enrollment.token, pem).factor_id
        self.mfa = mfa

    def sign(self, challenge: str, decision: str, key: Ed25519PrivateKey | None = None,
             **claims: object) -> str:
        body = {"sub": challenge, "decision": decision, "iat": int(self.mfa.env.clock()),
                **claims}
        return jwt.encode(body, key or self.key, algorithm="EdDSA",
                          headers={"kid": self.factor_id})

    def approve(self, number: str) -> str:
        challenge = self.mfa.pending_pushes(self.factor_id)[0].id
        return self.mfa.answer_push(self.sign(challenge, "approve", number=number))


def now_code(mfa: MFA, secret: str, offset_steps: int = 0) -> str:
    """The code of real time (plus whole steps), for tests beside a running daemon or service."""
    params = mfa.settings.totp.params()
    return totp.code_at(secret, params, time.time() + offset_steps * params.period)


def stop_process(process: subprocess.Popen[Any], timeout: float = 15) -> None:
    """SIGTERM, and SIGKILL if it does not exit in time: a test never leaves a process behind."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def require_tool(tool: str, package: str) -> str:
    """The tool's path; a clear failure (never a skip) when the machine lacks it."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed (Debian package {package}): run scripts/setup")
    return path


def build_pam_module(out: Path) -> Path:
    """pam_unified_mfa.so built by its Makefile into `out`, as the packaging script builds it."""
    make = require_tool("make", "build-essential")
    require_tool("cc", "build-essential")
    if not Path("/usr/include/security/pam_modules.h").exists():
        pytest.fail("PAM headers are missing (Debian package libpam0g-dev): run scripts/setup")
    build = subprocess.run([make, "-C", str(PAM_MODULE_DIR), f"OUT={out}"], capture_output=True,
                           text=True, check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    return out / "pam_unified_mfa.so"


@dataclass(frozen=True)
class LinuxUser:
    name: str
    password: str


@contextmanager
def throwaway_linux_user() -> Iterator[LinuxUser]:
    """A Linux user with a random name and password (for pam_unix), removed afterwards."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root: it adds a Linux user")
    user = LinuxUser(f"umfa{secrets.token_hex(4)}", secrets.token_urlsafe(12))
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", user.name], check=True)
    try:
        subprocess.run(["chpasswd"], input=f"{user.name}:{user.password}\n", text=True,
                       check=True)
        yield user
    finally:
        subprocess.run(["userdel", user.name], check=False)


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that nothing listens on right now (TCP, or UDP with SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
