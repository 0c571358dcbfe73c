"""Placeholder until the daemon lands: refuses to start with a clear message."""

from __future__ import annotations

from pathlib import Path

from pam_unified_mfa.errors import ConfigError


def run(home: Path, store: str | None, socket_path: Path) -> int:
    raise ConfigError("pamd is not available in this build")
