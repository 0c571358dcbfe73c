"""Creating and opening the server's home directory (settings, key file, SQLite store)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from pam_unified_mfa.crypto import Keyring
from pam_unified_mfa.errors import ConfigError
from pam_unified_mfa.settings import (
    DEFAULT_PUBLIC_URL,
    KEY_FILE,
    SETTINGS_FILE,
    SETTINGS_TEMPLATE,
    Settings,
    load_settings,
    store_url,
)
from pam_unified_mfa.store import Store

_PUBLIC_URL_LINE = re.compile(r'^public_url\s*=.*$', re.MULTILINE)


@dataclass(frozen=True)
class InitResult:
    home: Path
    created_key: bool
    created_settings: bool
    store: str
    public_url: str


def init_home(home: Path, public_url: str | None = None, store: str | None = None) -> InitResult:
    """Idempotent: creates what is missing, migrates the store, never replaces a key."""
    # Validate before anything is written.
    Settings(public_url=public_url or DEFAULT_PUBLIC_URL, store=store or "")
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    settings_path = home / SETTINGS_FILE
    created_settings = not settings_path.exists()
    if created_settings:
        # A store named at first init is remembered, so later commands need no --store.
        text = SETTINGS_TEMPLATE.format(public_url=public_url or DEFAULT_PUBLIC_URL,
                                        store=store or "")
        fd = os.open(settings_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
    elif public_url is not None:
        text = settings_path.read_text(encoding="utf-8")
        if not _PUBLIC_URL_LINE.search(text):
            text = f'public_url = "{public_url}"\n' + text
        else:
            text = _PUBLIC_URL_LINE.sub(f'public_url = "{public_url}"', text, count=1)
        settings_path.write_text(text, encoding="utf-8")
    settings = load_settings(home)
    _, created_key = Keyring.load_or_create(home / KEY_FILE)
    url = store_url(home, settings, store)
    database = Store(url)
    try:
        database.migrate()
    finally:
        database.dispose()
    if not url.startswith("sqlite:") and "@" in url:
        url = re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)
    return InitResult(home, created_key, created_settings, url, settings.public_url)


def require_home(home: Path) -> None:
    if not (home / KEY_FILE).exists():
        raise ConfigError(f"{home} is not initialised: run `unified-mfa init` first")
