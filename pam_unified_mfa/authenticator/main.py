"""`unified-mfa-authenticator`: the reference Protect app as a command line.

Exit codes: 0 done, 1 rejected (a push approved with the wrong number), 2 anything else, with
one line on stderr and never a traceback or a secret.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from pam_unified_mfa.authenticator import commands
from pam_unified_mfa.authenticator.commands import EXIT_ERROR, PROG
from pam_unified_mfa.cli.guard import run_command


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line on stderr too, like every other failure (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _seconds(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > 86400:
        raise argparse.ArgumentTypeError("must be a whole number of seconds (0-86400)")
    return int(text)


def _number(text: str) -> str:
    # Kept as typed: the service compares the digits as text.
    if not (text.isascii() and text.isdigit()) or len(text) > 4:
        raise argparse.ArgumentTypeError("must be the number shown on the login screen")
    return text


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--home", type=Path, default=argparse.SUPPRESS,
                        help="state directory (default: $UNIFIED_MFA_AUTHENTICATOR_HOME or "
                             "~/.local/share/unified-mfa-authenticator)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output")
    parser = _Parser(prog=PROG, parents=[common],
                     description="The reference Protect authenticator: enroll, codes, pushes")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], int],
            help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, parents=[common], help=help_text)
        p.set_defaults(handler=handler)
        return p

    p = add("enroll", commands.cmd_enroll, "scan an enrollment: a URI or a QR code image")
    p.add_argument("uri", nargs="?", metavar="URI")
    p.add_argument("--qr", type=Path, metavar="IMAGE", help="read the QR code from an image")
    add("list", commands.cmd_list, "accounts with their push and TOTP details")
    p = add("code", commands.cmd_code, "the current TOTP code")
    p.add_argument("account", nargs="?", metavar="ACCOUNT", help="issuer:user or user")
    p = add("pending", commands.cmd_pending, "pending push requests")
    p.add_argument("--wait", type=_seconds, default=0, metavar="SECONDS",
                   help="wait up to SECONDS for a request to arrive")
    for name, handler, text in (("approve", commands.cmd_approve, "approve a push request"),
                                ("deny", commands.cmd_deny, "deny a push request")):
        p = add(name, handler, text)
        p.add_argument("id", metavar="ID")
        p.add_argument("--account", metavar="ACCOUNT",
                       help="the account the request is for (needed only if ambiguous)")
        if name == "approve":
            p.add_argument("--number", type=_number, required=True, metavar="N",
                           help="the number shown on the login screen")
        else:
            p.add_argument("--not-me", action="store_true",
                           help="report that you did not try to log in")
    p = add("delete", commands.cmd_delete, "delete an account from this device")
    p.add_argument("account", metavar="ACCOUNT")
    p.add_argument("--yes", action="store_true", help="confirm without asking")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args: Any = build_parser().parse_args(argv)
    for name, default in (("home", None), ("json", False)):
        if not hasattr(args, name):
            setattr(args, name, default)
    return run_command(PROG, args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
