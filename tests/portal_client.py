"""A browser stand-in for the portal tests: the service in-process (Starlette's TestClient),
cookies kept like a browser keeps them, and the forms' CSRF tokens read from each page.

The base URL is https, as the tests' public URL is: the session cookie is `Secure` there and
would not come back over plain http.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from pam_unified_mfa.authenticator.qr import decode
from pam_unified_mfa.core import MFA
from pam_unified_mfa.enrollment_uri import PNG_DATA_URI
from pam_unified_mfa.service.app import create_app
from pam_unified_mfa.service.events import ServiceEvents

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Browser:
    """One browser profile on one portal (`/portal` or `/admin`)."""

    def __init__(self, client: TestClient, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.page: httpx.Response | None = None

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        self.page = self.client.get(self.prefix + path, **kwargs)
        return self.page

    def csrf(self) -> str:
        """The token of the page shown last (every form of a page carries the same one)."""
        assert self.page is not None
        found = _CSRF.search(self.page.text)
        assert found, self.page.text[:2000]
        return found.group(1)

    def post(self, path: str, data: dict[str, str] | None = None, *, csrf: bool = True,
             **kwargs: Any) -> httpx.Response:
        form = dict(data or {})
        if csrf:
            form["csrf"] = self.csrf()
        self.page = self.client.post(self.prefix + path, data=form, **kwargs)
        return self.page

    def password(self, name: str, password: str = PASSWORD) -> httpx.Response:
        """The sign-in form: ends on the MFA page, the first page after sign-in, or the form
        again with an error."""
        self.get("/login")
        return self.post("/login", {"name": name, "password": password, "next": ""})

    def answer(self, code: str) -> httpx.Response:
        return self.post("/login/mfa", {"code": code, "action": "code"})

    def sign_in(self, name: str, code: str, password: str = PASSWORD) -> httpx.Response:
        page = self.password(name, password)
        assert 'id="mfa"' in page.text, page.text[:2000]
        return self.answer(code)

    @property
    def text(self) -> str:
        assert self.page is not None
        return self.page.text

    def cookie(self, name: str) -> str | None:
        value: str | None = self.client.cookies.get(name)
        return value


@contextmanager
def portal_client(mfa: MFA) -> Iterator[TestClient]:
    """The whole service (both portals and the APIs) around this core, lifespan included."""
    app = create_app(mfa, ServiceEvents())
    with TestClient(app, base_url="https://testserver", follow_redirects=True) as client:
        yield client


def attr(page: str, element_id: str, name: str) -> str | None:
    """An attribute of the element with this id (the pages keep each on one tag)."""
    found = re.search(rf'<[^>]*\bid="{re.escape(element_id)}"[^>]*>', page)
    if not found:
        return None
    value = re.search(rf'\b{re.escape(name)}="([^"]*)"', found.group(0))
    return value.group(1) if value else None


def qr_uri(page: str, element_id: str, tmp_path: Path) -> str:
    """The URI in the page's inline QR image, read the way the Protect app reads a photo."""
    src = attr(page, element_id, "src")
    assert src and src.startswith(PNG_DATA_URI), src
    image = tmp_path / f"{element_id}.png"
    image.write_bytes(base64.b64decode(src.removeprefix(PNG_DATA_URI)))
    return decode(image)


def entries(page: str) -> list[tuple[str, str]]:
    """(kind, state) of each entry the Security page lists, in order."""
    return re.findall(r'class="entry" data-kind="([a-z_]+)" data-state="([a-z]+)"', page)
