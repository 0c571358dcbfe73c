"""`unified-mfa`: the admin and service command line.

Every command exits 0 on success and otherwise prints one line on stderr: 1 for a rejected
authentication, 2 for anything refused or wrong. `--json` prints machine-readable output.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from pam_unified_mfa.cli.guard import run_command
from pam_unified_mfa.core import MFA, Outcome, Step, UserView
from pam_unified_mfa.core.accounts import ENFORCEMENTS
from pam_unified_mfa.core.context import CLI
from pam_unified_mfa.core.factors import ENROLL_KINDS, EnrollResult
from pam_unified_mfa.core.policy import Preview
from pam_unified_mfa.enrollment_uri import FORMATS, render
from pam_unified_mfa.errors import UnifiedMFAError
from pam_unified_mfa.home import init_home, require_home
from pam_unified_mfa.settings import default_home, parse_duration
from pam_unified_mfa.store import backup

EXIT_REJECTED = 1
EXIT_ERROR = 2
PUSH_POLL_SECONDS = 0.25


class CommandError(UnifiedMFAError):
    """A usage problem found after parsing (e.g. a binary QR format sent to a terminal)."""


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line on stderr too, like every other failure (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    elif text:
        print(text)


def _open(args: argparse.Namespace) -> MFA:
    home: Path = args.home or default_home()
    require_home(home)
    return MFA.open(home, store=args.store)


def _confirm_on_terminal(question: str, answer: str) -> bool:
    if not sys.stdin.isatty():
        raise CommandError("confirmation needed: rerun with --yes (no terminal to ask on)")
    reply = input(f"{question} Type '{answer}' to confirm: ")
    return reply.strip() == answer


def _read_password(args: argparse.Namespace) -> str:
    """From stdin with --stdin (one line, for scripts), else typed twice on the terminal."""
    if args.stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise CommandError("no terminal to ask on: pipe the password with --stdin")
    first = getpass.getpass("New portal password: ")
    if getpass.getpass("Again: ") != first:
        raise CommandError("the two passwords differ: nothing changed")
    return first


# -- rendering -------------------------------------------------------------------------------


def _user_text(view: UserView) -> str:
    lines = [
        f"user: {view.name}" + (" (admin account)" if view.kind == "admin" else ""),
        f"enforcement: {view.enforcement}",
        f"groups: {', '.join(view.groups) or '-'}",
        f"locked: {'yes' if view.locked else 'no'}",
        f"must enroll at next login: {'yes' if view.must_enroll else 'no'}",
        f"unified Protect enrollment: {'yes' if view.on_unified else 'no'}",
    ]
    if view.suggest_unified:
        lines.append("hint: the organisation is unified; scan a unified QR (enroll --kind unified)")
    lines.append("factors:" if view.factors else "factors: none")
    for f in view.factors:
        extra = f" expires {_when(f.expires_at)}" if f.expires_at else ""
        extra += " used" if f.used else ""
        lines.append(f"  {f.id}  {f.kind:<16} {f.state:<8}"
                     f"{' unified' if f.unified else ''}{extra}")
    return "\n".join(lines)


def _user_data(view: UserView) -> dict[str, Any]:
    return dataclasses.asdict(view)


def _write_enrollment(args: argparse.Namespace, result: EnrollResult) -> None:
    fmt: str = args.format
    payload = render(result.uri, fmt)
    if args.output:
        try:
            Path(args.output).write_bytes(payload)
        except OSError as exc:
            raise CommandError(f"cannot write {args.output}: {exc.strerror}") from None
    data = {"user": result.account, "kind": result.kind, "uri": result.uri,
            "factors": list(result.factor_ids), "expires_at": result.expires_at,
            "output": args.output}
    if args.json:
        _emit(args, data, "")
        return
    if args.output:
        print(f"enrollment for {result.account} ({result.kind}) written to {args.output}; "
              f"valid until {_when(result.expires_at)}")
        return
    if fmt in ("png", "svg"):
        if sys.stdout.isatty():
            raise CommandError(f"--format {fmt} is binary: add --output FILE")
        sys.stdout.buffer.write(payload)
        return
    sys.stdout.write(payload.decode())
    if fmt == "terminal":
        print(result.uri)


def _preview_text(preview: Preview) -> str:
    lines = [f"{preview.action}{' ' + preview.argument if preview.argument else ''}: "
             "this will change"]
    lines += [f"  {key}: {value}" for key, value in preview.changes.items()]
    lines.append("  users: " + ", ".join(f"{k}={v}" for k, v in preview.counts.items()))
    lines += [f"warning: {w}" for w in preview.warnings]
    return "\n".join(lines)


# -- commands --------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    result = init_home(args.home or default_home(), args.public_url, args.store)
    _emit(args, dataclasses.asdict(result),
          f"home: {result.home}\nkey: {'created' if result.created_key else 'kept'}\n"
          f"store: {result.store}\npublic url: {result.public_url}")
    return 0


def cmd_user(args: argparse.Namespace) -> int:
    mfa = _open(args)
    try:
        if args.user_cmd == "add":
            view = mfa.add_user(args.name, tuple(args.group or ()))
            _emit(args, _user_data(view), f"user {view.name} added")
        elif args.user_cmd == "list":
            views = mfa.list_users()
            _emit(args, [_user_data(v) for v in views], "\n".join(
                f"{v.name:<24} {v.enforcement:<16} "
                f"{','.join(sorted({f.kind for f in v.factors if f.state == 'active'})) or '-'}"
                for v in views))
        elif args.user_cmd == "show":
            view = mfa.show_user(args.name)
            _emit(args, _user_data(view), _user_text(view))
        elif args.user_cmd == "enforce":
            value = None if args.enforcement == "inherit" else args.enforcement
            mfa.set_enforcement(args.name, value)
            _emit(args, {"user": args.name, "enforcement": args.enforcement},
                  f"{args.name}: enforcement {args.enforcement}")
        elif args.user_cmd == "join":
            mfa.join_group(args.name, args.group)
            _emit(args, {"user": args.name, "group": args.group},
                  f"{args.name} joined {args.group}")
        elif args.user_cmd == "password":
            mfa.set_password("user", args.name, _read_password(args))
            _emit(args, {"user": args.name, "password": "set"},
                  f"{args.name}: portal password set")
    finally:
        mfa.close()
    return 0


def cmd_group(args: argparse.Namespace) -> int:
    mfa = _open(args)
    try:
        value = None if args.enforcement == "inherit" else args.enforcement
        mfa.set_enforcement(args.name, value, group=True)
        _emit(args, {"group": args.name, "enforcement": args.enforcement},
              f"group {args.name}: enforcement {args.enforcement}")
    finally:
        mfa.close()
    return 0


def cmd_admin(args: argparse.Namespace) -> int:
    mfa = _open(args)
    try:
        if args.admin_cmd == "add":
            view = mfa.add_admin(args.name, tuple(args.role or ()), args.linked_user)
            _emit(args, dataclasses.asdict(view),
                  f"admin {view.name} added (roles: {', '.join(view.roles)}"
                  + (f"; linked to user {view.linked_user})" if view.linked_user else
                     "; TOTP only)"))
        elif args.admin_cmd == "list":
            views = mfa.list_admins()
            _emit(args, [dataclasses.asdict(v) for v in views], "\n".join(
                f"{v.name:<24} {','.join(v.roles):<16} {v.linked_user or '-'}" for v in views))
        elif args.admin_cmd == "show":
            account = mfa.show_admin_account(args.name)
            _emit(args, _user_data(account), _user_text(account))
        elif args.admin_cmd == "enroll":
            _write_enrollment(args, mfa.enroll(args.name, args.kind, admin=True))
        elif args.admin_cmd == "reset":
            _reset(args, mfa, args.name, admin=True)
        elif args.admin_cmd == "password":
            mfa.set_password("admin", args.name, _read_password(args))
            _emit(args, {"admin": args.name, "password": "set"},
                  f"admin {args.name}: portal password set")
        elif args.admin_cmd == "token":
            ttl = parse_duration(args.ttl) if args.ttl else None
            token = mfa.issue_admin_token(args.name, ttl)
            _emit(args, {"admin": args.name, "token": token},
                  f"{token}\n(admin API token for {args.name}; shown only now)")
    finally:
        mfa.close()
    return 0


def _two_step(args: argparse.Namespace, mfa: MFA, action: str, argument: str = "") -> int:
    preview = mfa.preview(args.as_admin, action, argument)
    if not args.yes:
        if not args.json:
            print(_preview_text(preview))
        if not _confirm_on_terminal("Apply this change?", action.replace("_", "-")):
            print("nothing changed", file=sys.stderr)
            return EXIT_ERROR
    result = mfa.confirm(args.as_admin, preview.confirmation)
    view = mfa.policy()
    data = {"preview": preview.as_dict(), "applied": result, "policy": dataclasses.asdict(view)}
    text = (_preview_text(preview) + "\n" if args.yes else "") + (
        f"applied: mode={view.mode} totp_source={view.totp_source}"
        + "".join(f" {k}={v}" for k, v in result.items()))
    _emit(args, data, text)
    return 0


def cmd_policy(args: argparse.Namespace) -> int:
    mfa = _open(args)
    try:
        sub = args.policy_cmd
        if sub == "show":
            view = mfa.policy()
            _emit(args, dataclasses.asdict(view),
                  f"mode: {view.mode}\ntotp_source: {view.totp_source}\n"
                  f"methods: {', '.join(view.methods)}\n"
                  f"default enforcement: {view.default_enforcement}")
            return 0
        if sub in ("merge", "separate"):
            return _two_step(args, mfa, sub)
        if sub == "totp-source":
            return _two_step(args, mfa, "totp_source", args.source)
        if sub == "preview":
            preview = mfa.preview(args.as_admin, args.action.replace("-", "_"),
                                  args.argument or "")
            _emit(args, preview.as_dict(),
                  _preview_text(preview) + f"\nconfirm with: unified-mfa policy confirm "
                  f"{preview.confirmation} --as {args.as_admin}")
            return 0
        if sub == "confirm":
            result = mfa.confirm(args.as_admin, args.confirmation)
            _emit(args, {"applied": result}, "applied")
            return 0
        if sub == "method":
            view = mfa.set_method(args.as_admin, args.method, args.state == "on")
            _emit(args, dataclasses.asdict(view), f"methods: {', '.join(view.methods)}")
            return 0
        if sub == "enforcement":
            view = mfa.set_default_enforcement(args.as_admin, args.enforcement)
            _emit(args, dataclasses.asdict(view),
                  f"default enforcement: {view.default_enforcement}")
            return 0
    finally:
        mfa.close()
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    mfa = _open(args)
    try:
        _write_enrollment(args, mfa.enroll(args.user, args.kind))
    finally:
        mfa.close()
    return 0


def _reset(args: argparse.Namespace, mfa: MFA, name: str, admin: bool = False) -> None:
    if (args.as_admin is None) == (args.code is None):
        raise CommandError("reset needs exactly one of --as ADMIN or --code PROTECT_TOTP")
    if args.as_admin:
        retired = mfa.reset_by_admin(name, args.as_admin, args.factor, admin=admin)
        _emit(args, {"user": name, "retired": retired, "must_enroll": True},
              f"{name}: {len(retired)} factor(s) reset; they enroll again at their next login")
    else:
        _write_enrollment(args, mfa.reset_by_user(name, args.code, args.factor, admin=admin))


def cmd_reset(args: argparse.Namespace) -> int:
    mfa = _open(args)
    try:
        _reset(args, mfa, args.user)
    finally:
        mfa.close()
    return 0


def cmd_factor(args: argparse.Namespace) -> int:
    mfa = _open(args)
    try:
        if not args.yes and not _confirm_on_terminal(
            f"Delete factor {args.factor_id} of {args.user}?", "delete"
        ):
            print("nothing changed", file=sys.stderr)
            return EXIT_ERROR
        deleted = mfa.delete_factor(args.user, args.factor_id)
        _emit(args, {"user": args.user, "deleted": deleted},
              f"deleted {', '.join(deleted)} of {args.user}")
    finally:
        mfa.close()
    return 0


def cmd_bypass(args: argparse.Namespace) -> int:
    mfa = _open(args)
    try:
        ttl = parse_duration(args.ttl) if args.ttl else None
        codes = mfa.issue_bypass(args.user, args.as_admin, args.count, ttl)
        _emit(args, {"user": args.user, "codes": codes},
              "\n".join(codes) + f"\n({len(codes)} single-use code(s); shown only now)")
    finally:
        mfa.close()
    return 0


def _auth_result(args: argparse.Namespace, step: Step, message: str) -> int:
    accepted = step.granted
    if args.json:
        print(json.dumps({"user": args.user, "outcome": step.outcome.value,
                          "accepted": accepted, "message": message}, sort_keys=True))
    elif accepted:
        print("accepted")
    if accepted:
        return 0
    print(f"unified-mfa: rejected: {message}", file=sys.stderr)
    return EXIT_ERROR if step.outcome is Outcome.UNAVAILABLE else EXIT_REJECTED


def _push(mfa: MFA, args: argparse.Namespace) -> tuple[Step, str]:
    """Send a push, show the number at once, then follow the dialogue to its decision."""
    step = mfa.begin(args.user, CLI)
    if step.finished or step.token is None:
        return step, step.message
    step = mfa.answer(step.token, "push", CLI)
    if step.outcome is not Outcome.PUSH_PENDING or step.token is None:
        return step, step.message if step.finished else "push not available: " + step.message
    if args.json:
        print(json.dumps({"number": step.push_number, "deadline": step.deadline}), flush=True)
    else:
        print(step.push_number, flush=True)
        print(f"choose {step.push_number} on your device", file=sys.stderr, flush=True)
    token = step.token
    while True:
        time.sleep(PUSH_POLL_SECONDS)
        decided = mfa.poll(token, CLI)
        if decided.outcome is not Outcome.PUSH_PENDING:
            return decided, decided.message


def cmd_auth(args: argparse.Namespace) -> int:
    if (args.code is None) == (not args.push):
        raise CommandError("auth needs exactly one of --code CODE or --push")
    mfa = _open(args)
    try:
        if args.push:
            step, message = _push(mfa, args)
        else:
            step = mfa.authenticate_code(args.user, args.code, CLI)
            # One code, one answer: a dialogue that would ask again counts as a rejection.
            message = step.message if step.finished else "code not accepted"
    finally:
        mfa.close()
    return _auth_result(args, step, message)


def cmd_serve(args: argparse.Namespace) -> int:
    from pam_unified_mfa.service.server import run

    home: Path = args.home or default_home()
    require_home(home)
    return run(home, args.store, args.listen)


def cmd_pamd(args: argparse.Namespace) -> int:
    from pam_unified_mfa.pamd.server import run

    home: Path = args.home or default_home()  # run() needs an initialised home unless remote
    return run(home, args.store, Path(args.socket))


def cmd_radius(args: argparse.Namespace) -> int:
    from radius.server import run

    return run(args.home or default_home(), args.store, args.listen)


def cmd_client(args: argparse.Namespace) -> int:
    key = Path(args.public_key).read_text(encoding="utf-8") if args.public_key else None
    mfa = _open(args)
    try:
        secret = mfa.add_client(args.name, key)
    finally:
        mfa.close()
    _emit(args, {"client": args.name, "secret": secret},
          f"client {args.name} added" + (f"\nsecret (shown only now): {secret}" if secret
                                          else " (authenticates with signed assertions)"))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    if args.n < 0:
        raise CommandError("audit tail -n must be 0 or more")
    mfa = _open(args)
    try:
        entries = mfa.audit_tail(args.n)
    finally:
        mfa.close()
    _emit(args, [dataclasses.asdict(e) for e in entries], "\n".join(
        f"{_when(e.at)} {e.action:<18} {e.outcome:<10} actor={e.actor} subject={e.subject} "
        f"adapter={e.adapter} client={e.client or '-'}"
        + (f" {json.dumps(e.detail, sort_keys=True)}" if e.detail else "")
        for e in entries))
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    mfa = _open(args)
    try:
        kid, count = mfa.rotate_key()
    finally:
        mfa.close()
    _emit(args, {"key_id": kid, "reencrypted": count},
          f"new key {kid} active; {count} secret(s) re-encrypted")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.output is None:
        if sys.stdout.isatty():
            raise CommandError("export writes the whole store: add --output FILE or redirect "
                               "stdout to a file")
        if args.json:
            raise CommandError("--json needs --output FILE (without it the export is stdout)")
    mfa = _open(args)
    try:
        if args.output is None:
            summary = backup.export_store(mfa.store, mfa.env.keyring, sys.stdout.buffer)
        else:
            summary = backup.export_to_file(mfa.store, mfa.env.keyring, Path(args.output))
        mfa.record_backup("export", summary.rows, summary.key_id)
    finally:
        mfa.close()
    if args.output is None:
        return 0
    _emit(args, {**summary.as_dict(), "output": args.output},
          f"exported {summary.rows} rows (schema {summary.schema}, key {summary.key_id}) "
          f"to {args.output}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    mfa = _open(args)
    try:
        summary = backup.import_file(mfa.store, mfa.env.keyring, Path(args.file))
        mfa.record_backup("import", summary.rows, summary.key_id)
    finally:
        mfa.close()
    _emit(args, {**summary.as_dict(), "input": args.file},
          f"imported {summary.rows} rows (schema {summary.schema}, exported "
          f"{summary.created_at}) from {args.file}")
    return 0


# -- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", type=Path, default=argparse.SUPPRESS,
                        help="server home (default: $UNIFIED_MFA_HOME or the system default)")
    common.add_argument("--store", default=argparse.SUPPRESS,
                        help="store URL (sqlite:///… or postgresql://…)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output")

    parser = _Parser(prog="unified-mfa", parents=[common],
                     description="Unified MFA: admin and service commands")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], int], help_text: str,
            into: Any = commands) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = into.add_parser(name, parents=[common], help=help_text)
        sub.set_defaults(handler=handler)
        return sub

    def enrollment_output(p: argparse.ArgumentParser) -> None:
        p.add_argument("--format", choices=FORMATS, default="uri")
        p.add_argument("--output", metavar="FILE")

    def reset_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--as", dest="as_admin", metavar="ADMIN")
        p.add_argument("--code", metavar="PROTECT_TOTP")
        p.add_argument("--factor", metavar="FACTOR_ID", help="separated mode: reset only this one")
        enrollment_output(p)

    p = add("init", cmd_init, "create the home, key and store (idempotent)")
    p.add_argument("--public-url", metavar="URL")

    user = add("user", cmd_user, "users")
    users = user.add_subparsers(dest="user_cmd", required=True)
    p = add("add", cmd_user, "add a user", users)
    p.add_argument("name")
    p.add_argument("--group", action="append", metavar="GROUP")
    add("list", cmd_user, "list users", users)
    p = add("show", cmd_user, "a user's factors and state (never secrets)", users)
    p.add_argument("name")
    p = add("enforce", cmd_user, "set a user's MFA enforcement", users)
    p.add_argument("name")
    p.add_argument("enforcement", choices=(*ENFORCEMENTS, "inherit"))
    p = add("join", cmd_user, "add a user to a group", users)
    p.add_argument("name")
    p.add_argument("group")
    p = add("password", cmd_user, "set the user's local portal password ([portal] "
            "first_factor = local)", users)
    p.add_argument("name")
    p.add_argument("--stdin", action="store_true", help="read it from one line of stdin")

    group = add("group", cmd_group, "groups")
    groups = group.add_subparsers(dest="group_cmd", required=True)
    p = add("enforce", cmd_group, "set a group's MFA enforcement", groups)
    p.add_argument("name")
    p.add_argument("enforcement", choices=(*ENFORCEMENTS, "inherit"))

    admin = add("admin", cmd_admin, "admin accounts")
    admins = admin.add_subparsers(dest="admin_cmd", required=True)
    p = add("add", cmd_admin, "add an admin", admins)
    p.add_argument("name")
    p.add_argument("--role", action="append", choices=("billing",))
    p.add_argument("--linked-user", metavar="USER")
    add("list", cmd_admin, "list admins", admins)
    p = add("show", cmd_admin, "an admin's own MFA state", admins)
    p.add_argument("name")
    p = add("enroll", cmd_admin, "enroll an admin not linked to a user (TOTP only)", admins)
    p.add_argument("name")
    p.add_argument("--kind", choices=("totp", "third_party_totp"))
    enrollment_output(p)
    p = add("reset", cmd_admin, "reset the TOTP of an admin not linked to a user", admins)
    p.add_argument("name")
    reset_options(p)
    p = add("password", cmd_admin, "set the admin's local portal password ([portal] "
            "first_factor = local)", admins)
    p.add_argument("name")
    p.add_argument("--stdin", action="store_true", help="read it from one line of stdin")
    p = add("token", cmd_admin, "issue an admin API token (shown once)", admins)
    p.add_argument("name")
    p.add_argument("--ttl", metavar="DURATION", help="lifetime (default from settings: 30d)")

    pol = add("policy", cmd_policy, "organisation policy")
    policies = pol.add_subparsers(dest="policy_cmd", required=True)
    add("show", cmd_policy, "show the policy", policies)
    for name, text in (("merge", "merge push and TOTP into one Protect factor"),
                       ("separate", "separate push and TOTP again (not recommended)")):
        p = add(name, cmd_policy, text, policies)
        p.add_argument("--as", dest="as_admin", required=True, metavar="ADMIN")
        p.add_argument("--yes", action="store_true")
    p = add("totp-source", cmd_policy, "which TOTP new enrollments use", policies)
    p.add_argument("source", choices=("protect", "third_party"))
    p.add_argument("--as", dest="as_admin", required=True, metavar="ADMIN")
    p.add_argument("--yes", action="store_true")
    p = add("preview", cmd_policy, "first step only: show and get a confirmation", policies)
    p.add_argument("action", choices=("merge", "separate", "totp-source"))
    p.add_argument("argument", nargs="?")
    p.add_argument("--as", dest="as_admin", required=True, metavar="ADMIN")
    p = add("confirm", cmd_policy, "second step: apply a previewed change", policies)
    p.add_argument("confirmation")
    p.add_argument("--as", dest="as_admin", required=True, metavar="ADMIN")
    p = add("method", cmd_policy, "enable or disable a method for new enrollments", policies)
    p.add_argument("method", choices=("push", "totp"))
    p.add_argument("state", choices=("on", "off"))
    p.add_argument("--as", dest="as_admin", required=True, metavar="ADMIN")
    p = add("enforcement", cmd_policy, "the organisation's default enforcement", policies)
    p.add_argument("enforcement", choices=ENFORCEMENTS)
    p.add_argument("--as", dest="as_admin", required=True, metavar="ADMIN")

    p = add("enroll", cmd_enroll, "start an enrollment: one URI / QR code")
    p.add_argument("user")
    p.add_argument("--kind", choices=ENROLL_KINDS)
    enrollment_output(p)

    p = add("reset", cmd_reset, "reset a user's Protect enrollment")
    p.add_argument("user")
    reset_options(p)

    factor = add("factor", cmd_factor, "factors")
    factor_cmds = factor.add_subparsers(dest="factor_cmd", required=True)
    p = add("delete", cmd_factor, "delete one factor (never the last working one)", factor_cmds)
    p.add_argument("user")
    p.add_argument("factor_id")
    p.add_argument("--yes", action="store_true")

    bypass = add("bypass", cmd_bypass, "break-glass bypass codes")
    bypass_cmds = bypass.add_subparsers(dest="bypass_cmd", required=True)
    p = add("issue", cmd_bypass, "issue single-use bypass codes", bypass_cmds)
    p.add_argument("user")
    p.add_argument("--as", dest="as_admin", required=True, metavar="ADMIN")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--ttl", metavar="DURATION", help="e.g. 1h, 2d (default from settings)")

    p = add("auth", cmd_auth, "one full MFA check, as an adapter makes it")
    p.add_argument("user")
    p.add_argument("--code", metavar="CODE")
    p.add_argument("--push", action="store_true", help="send a push and wait for the decision")

    p = add("serve", cmd_serve, "the HTTP service (device, auth and admin APIs, the portals)")
    p.add_argument("--listen", metavar="HOST:PORT")

    p = add("radius", cmd_radius, "the RADIUS responder for VPN gateways")
    p.add_argument("--listen", metavar="HOST:PORT", help="default: [radius] listen")

    p = add("pamd", cmd_pamd, "the local daemon behind the PAM module")
    p.add_argument("--socket", metavar="PATH", default="/run/unified-mfa/pamd.sock")

    client = add("client", cmd_client, "API clients of the auth API (remote adapters)")
    client_cmds = client.add_subparsers(dest="client_cmd", required=True)
    p = add("add", cmd_client, "add a client: a secret, or a public key for assertions",
            client_cmds)
    p.add_argument("name")
    p.add_argument("--public-key", metavar="FILE", help="PEM public key (EdDSA, ES256, RS256)")

    audit_parser = add("audit", cmd_audit, "the audit trail")
    audit_cmds = audit_parser.add_subparsers(dest="audit_cmd", required=True)
    p = add("tail", cmd_audit, "the newest audit records", audit_cmds)
    p.add_argument("-n", type=int, default=20)

    key = add("key", cmd_key, "encryption keys")
    key_cmds = key.add_subparsers(dest="key_cmd", required=True)
    add("rotate", cmd_key, "new key; re-encrypt every secret", key_cmds)

    p = add("export", cmd_export, "write the whole store to one file (secrets stay encrypted)")
    p.add_argument("--output", metavar="FILE", help="default: stdout")
    p = add("import", cmd_import, "load an export into a new, empty store")
    p.add_argument("file", metavar="FILE")
    return parser


def skip_unlogged_lookups() -> None:
    """No format of ours (here, serve's, the daemons') shows a record's thread, process or
    source line, so records need not look them up: a login logs two lines, and the lookups
    were a fifth of their cost (the logging HOWTO's "Optimization" names these switches)."""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="unified-mfa: %(message)s")
    skip_unlogged_lookups()
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, default in (("home", None), ("store", None), ("json", False)):
        if not hasattr(args, name):
            setattr(args, name, default)
    return run_command("unified-mfa", args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
