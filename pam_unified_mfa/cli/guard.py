"""The one way both command-line programs turn an outcome into an exit code and one line.

Exit 2 with `PROG: reason` for anything refused or wrong; never a traceback (it could carry a
key or a path a script should not see) unless UNIFIED_MFA_DEBUG=1 asks for it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from pam_unified_mfa.errors import UnifiedMFAError

EXIT_ERROR = 2


def run_command(prog: str, handler: Callable[[argparse.Namespace], int],
                args: argparse.Namespace) -> int:
    try:
        return handler(args)
    except UnifiedMFAError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        # E.g. an unwritable --home or --output: the path says which, and holds no secret.
        where = f": {exc.filename}" if exc.filename else ""
        print(f"{prog}: {exc.strerror or type(exc).__name__}{where}", file=sys.stderr)
    except Exception as exc:
        # A bug must not look like a rejected login (exit 1) nor spill a traceback.
        if os.environ.get("UNIFIED_MFA_DEBUG") == "1":
            raise
        print(f"{prog}: internal error ({type(exc).__name__}); "
              "rerun with UNIFIED_MFA_DEBUG=1 for details", file=sys.stderr)
    return EXIT_ERROR
