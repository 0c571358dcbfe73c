"""Print the service's OpenAPI document: `python -m pam_unified_mfa.service.openapi`.

`docs/openapi.json` is this output; tests/test_openapi.py checks that the running service still
serves exactly that, so regenerate it whenever an endpoint or model changes:

    python -m pam_unified_mfa.service.openapi > docs/openapi.json
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pam_unified_mfa.service.app import build_app


def document() -> dict[str, Any]:
    return build_app().openapi()


def main() -> int:
    sys.stdout.write(json.dumps(document(), indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
