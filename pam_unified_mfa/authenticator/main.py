"""`unified-mfa-authenticator` entry point (the push commands arrive with the push service)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    print("unified-mfa-authenticator: not available in this build", file=sys.stderr)
    return 2
