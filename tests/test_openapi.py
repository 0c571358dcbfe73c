"""`docs/openapi.json` is the contract: the running service serves exactly that document.

When an endpoint or model changes on purpose, regenerate it with
`python -m pam_unified_mfa.service.openapi > docs/openapi.json` (docs/api.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from pam_unified_mfa.core import MFA
from pam_unified_mfa.home import init_home
from pam_unified_mfa.service.app import create_app
from pam_unified_mfa.service.events import ServiceEvents
from tests.test_service import TIMEOUT, serving

CONTRACT = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


def test_the_running_service_serves_the_documented_openapi_contract(tmp_path: Path) -> None:
    home = tmp_path / "home"
    init_home(home, "https://mfa.example.test", f"sqlite:///{tmp_path / 'store.db'}")
    events = ServiceEvents()
    mfa = MFA.open(home, events=events)
    try:
        with serving(create_app(mfa, events)) as url:
            served = httpx.get(f"{url}/openapi.json", timeout=TIMEOUT).json()
    finally:
        mfa.close()
    assert served == json.loads(CONTRACT.read_text(encoding="utf-8"))
