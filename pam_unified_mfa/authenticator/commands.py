"""What each `unified-mfa-authenticator` command does; main.py only parses and reports.

Every handler returns the exit code (0 done, 1 rejected) and raises `UnifiedMFAError` for
anything that went wrong, which main.py prints as one line (exit 2). Secrets and private keys
are never printed: listings show a key's parameters, `code` shows only the current code.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pam_unified_mfa import totp
from pam_unified_mfa.authenticator import device_client, keys, qr
from pam_unified_mfa.authenticator.device_client import DeviceAPIError, DeviceClient, PendingPush
from pam_unified_mfa.authenticator.state import (
    Account,
    PushPart,
    State,
    TotpPart,
    editing,
    load,
    resolve_home,
)
from pam_unified_mfa.enrollment_uri import Enrollment, parse_uri
from pam_unified_mfa.errors import UnifiedMFAError

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_ERROR = 2
PROG = "unified-mfa-authenticator"
ANSWER_STATUSES = ("approved", "denied", "denied_not_me")


class CommandError(UnifiedMFAError):
    """The command cannot be carried out as asked (usage, refusal, missing account)."""


def _home(args: argparse.Namespace) -> Path:
    home: Path | None = args.home
    return resolve_home(home)


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    elif text:
        print(text)


def _note(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _parse(uri: str) -> Enrollment:
    try:
        return parse_uri(uri)
    except ValueError as exc:
        # parse_uri's messages never quote the URI, which holds the key and the token.
        raise CommandError(f"not an enrollment URI: {exc}") from None


def _totp_part(enrollment: Enrollment) -> TotpPart | None:
    if enrollment.totp_secret is None or enrollment.params is None:
        return None
    p = enrollment.params
    return TotpPart(enrollment.totp_secret, p.algorithm, p.digits, p.period)


# -- enroll -----------------------------------------------------------------------------------


def cmd_enroll(args: argparse.Namespace) -> int:
    """Scan once: register the device for push and/or store the TOTP key (R05)."""
    if (args.uri is None) == (args.qr is None):
        raise CommandError("give either an enrollment URI or --qr IMAGE")
    enrollment = _parse(args.uri if args.uri is not None else qr.decode(args.qr))
    home = _home(args)
    load(home)  # a damaged state file must fail before the single-use token is spent
    push: PushPart | None = None
    if enrollment.service_url is not None and enrollment.token is not None:
        private_pem, public_pem = keys.new_key()
        try:
            registration = device_client.register(enrollment.service_url, enrollment.token,
                                                  public_pem)
        except DeviceAPIError as exc:
            raise CommandError(f"push registration failed, nothing was stored: {exc}") from None
        push = PushPart(registration.device_id, enrollment.service_url, private_pem)
    new_totp = _totp_part(enrollment)
    replaced: list[str] = []
    with editing(home) as state:
        account = state.get(enrollment.issuer, enrollment.account)
        if account is None:
            account = Account(enrollment.issuer, enrollment.account, added_at=time.time())
            state.accounts.append(account)
        # A new scan of the same account (e.g. after a reset) replaces what it brings and
        # keeps the rest: in separated mode push and TOTP arrive in two scans.
        if push is not None:
            replaced += ["push"] if account.push else []
            account.push = push
        if new_totp is not None:
            replaced += ["TOTP"] if account.totp else []
            account.totp = new_totp
    scanned = "push + TOTP" if push and new_totp else ("push" if push else "TOTP")
    data = {"account": account.name, "issuer": account.issuer, "user": account.user,
            "enrolled": scanned, "kind": account.kind, "replaced": replaced,
            "device_id": push.device_id if push else None}
    text = f"enrolled {account.name} (issuer {account.issuer}, user {account.user}): {scanned}"
    if account.kind != scanned:
        text += f"; the account now has {account.kind}"
    if replaced:
        text += f"; replaced the earlier {' and '.join(replaced)} of this account"
    _emit(args, data, text)
    return EXIT_OK


# -- list -------------------------------------------------------------------------------------


def _store_migrated(home: Path, account: Account, payload: dict[str, Any]) -> str:
    """Keep the TOTP a merge sent to this push device (R10); returns the notice to show."""
    uri = payload.get("totp_uri")
    if not isinstance(uri, str):
        raise DeviceAPIError("a migration message without a TOTP key")
    new_totp = _totp_part(_parse(uri))
    if new_totp is None:
        raise DeviceAPIError("a migration message without a TOTP key")
    with editing(home) as state:
        current = state.get(account.issuer, account.user)
        if current is not None:
            current.totp = new_totp
    notice = payload.get("notice")
    return notice if isinstance(notice, str) and notice else "this account now also has TOTP"


def _sync_messages(args: argparse.Namespace, home: Path, state: State) -> list[str]:
    """Fetch, store and acknowledge device messages; returns the problems met."""
    problems: list[str] = []
    for account in state.accounts:
        if account.push is None:
            continue
        client = DeviceClient(account.push)
        try:
            for message in client.messages():
                if message.kind != "migrated":
                    continue  # left for an app version that knows it
                notice = _store_migrated(home, account, message.payload)
                line = f"{account.name}: {notice}"
                print(line, file=sys.stderr if args.json else sys.stdout)
                # Acknowledged only once stored: a lost ack means the message comes again.
                client.ack(message.id)
        except UnifiedMFAError as exc:
            problems.append(f"{account.name}: {exc}")
    return problems


def _account_data(account: Account) -> dict[str, Any]:
    return {
        "account": account.name, "issuer": account.issuer, "user": account.user,
        "kind": account.kind,
        "push": None if account.push is None else {
            "device_id": account.push.device_id, "service_url": account.push.service_url},
        "totp": None if account.totp is None else {
            "algorithm": account.totp.algorithm, "digits": account.totp.digits,
            "period": account.totp.period},
    }


def _account_text(account: Account) -> str:
    lines = [f"{account.name}  ({account.kind})"]
    if account.push:
        lines.append(f"  push: device {account.push.device_id} at {account.push.service_url}")
    if account.totp:
        t = account.totp
        lines.append(f"  TOTP: {t.algorithm}, {t.digits} digits, every {t.period} s")
    return "\n".join(lines)


def cmd_list(args: argparse.Namespace) -> int:
    home = _home(args)
    problems = _sync_messages(args, home, load(home))
    if problems:
        _note("could not check for device messages (" + "; ".join(problems)
              + "); listing the accounts stored on this device")
    accounts = load(home).accounts
    text = "\n".join(_account_text(a) for a in accounts) or "no accounts"
    _emit(args, [_account_data(a) for a in accounts], text)
    return EXIT_OK


# -- code -------------------------------------------------------------------------------------


def cmd_code(args: argparse.Namespace) -> int:
    account = load(_home(args)).find(args.account)
    if account.totp is None:
        raise CommandError(f"{account.name} has no TOTP key (push only)")
    code = totp.code_at(account.totp.secret, account.totp.params(), time.time())
    _emit(args, {"account": account.name, "code": code}, code)
    return EXIT_OK


# -- pending ----------------------------------------------------------------------------------


def _push_accounts(state: State) -> list[Account]:
    found = [a for a in state.accounts if a.push is not None]
    if not found:
        raise CommandError("no push accounts on this device: enroll a push or unified QR first")
    return found


def _fetch(accounts: list[Account]) -> tuple[list[tuple[Account, PendingPush]], list[str]]:
    pushes: list[tuple[Account, PendingPush]] = []
    problems: list[str] = []
    for account in accounts:
        assert account.push is not None
        try:
            pushes += [(account, p) for p in DeviceClient(account.push).pushes()]
        except UnifiedMFAError as exc:
            problems.append(f"{account.name}: {exc}")
    return pushes, problems


def _wait_for_any(accounts: list[Account], seconds: int) -> None:
    """Long-poll every account at once; return when one has a request or time is up.

    One thread per account, because each service holds its call open; the threads are
    daemons, so a poll still open when another account answered does not delay the exit.
    """
    deadline = time.monotonic() + seconds
    results: queue.Queue[bool] = queue.Queue()

    def poll(push: PushPart) -> None:
        found = False
        try:
            client = DeviceClient(push)
            while not found and (left := round(deadline - time.monotonic())) > 0:
                found = bool(client.pushes(wait=min(left, device_client.MAX_WAIT)))
        except UnifiedMFAError:
            pass  # the final fetch reports it
        finally:
            results.put(found)

    for account in accounts:
        assert account.push is not None
        threading.Thread(target=poll, args=(account.push,), daemon=True).start()
    for _ in accounts:
        grace = device_client.CONNECT_TIMEOUT + device_client.READ_TIMEOUT
        try:
            if results.get(timeout=max(0.0, deadline - time.monotonic()) + grace):
                return
        except queue.Empty:
            return


def _push_data(account: Account, push: PendingPush) -> dict[str, Any]:
    return {"id": push.id, "account": account.name, "user": push.user, "service": push.service,
            "client": push.client, "created_at": push.created_at,
            "expires_at": push.expires_at, "choices": list(push.choices)}


def _push_text(account: Account, push: PendingPush) -> str:
    left = max(0, round(push.expires_at - time.time()))
    return "\n".join([
        f"push {push.id} for {account.name}",
        f"  number to match (pick the one shown on the login screen): {'  '.join(push.choices)}",
        f"  user: {push.user}   service: {push.service or '-'}   from: {push.client or '-'}",
        f"  requested: {_when(push.created_at)}   expires: {_when(push.expires_at)}"
        f" (in {left} s)",
        f"  answer: {PROG} approve {push.id} --number N   or   {PROG} deny {push.id} [--not-me]",
    ])


def cmd_pending(args: argparse.Namespace) -> int:
    accounts = _push_accounts(load(_home(args)))
    pushes, problems = _fetch(accounts)
    if not pushes and args.wait > 0:
        reachable = [a for a in accounts if not any(p.startswith(f"{a.name}: ")
                                                    for p in problems)]
        if reachable:
            _wait_for_any(reachable, args.wait)
            pushes, problems = _fetch(accounts)
    pushes.sort(key=lambda item: item[1].created_at)
    text = "\n".join(_push_text(a, p) for a, p in pushes) or "no pending push requests"
    _emit(args, [_push_data(a, p) for a, p in pushes], text)
    if problems:
        _note("; ".join(problems))
        return EXIT_ERROR
    return EXIT_OK


# -- approve / deny ---------------------------------------------------------------------------


def _owner_of(state: State, push_id: str, name: str | None) -> Account:
    """The account whose device must sign the answer to `push_id`."""
    if name is not None:
        account = state.find(name)
        if account.push is None:
            raise CommandError(f"{account.name} has no push device")
        return account
    accounts = _push_accounts(state)
    if len(accounts) == 1:
        return accounts[0]
    pushes, problems = _fetch(accounts)
    for account, push in pushes:
        if push.id == push_id:
            return account
    reason = f" ({'; '.join(problems)})" if problems else ""
    raise CommandError(f"no pending push request {push_id!r} on this device{reason}; "
                       "name the account with --account")


def _answer(args: argparse.Namespace, decision: str, number: str | None = None,
            not_me: bool = False) -> int:
    account = _owner_of(load(_home(args)), args.id, args.account)
    assert account.push is not None
    signed = keys.push_answer(account.push.private_key, account.push.device_id, args.id,
                              decision, number=number, not_me=not_me)
    status = DeviceClient(account.push).answer(args.id, signed)
    data = {"id": args.id, "account": account.name, "status": status}
    if status in ANSWER_STATUSES:
        _emit(args, data, status)
        return EXIT_OK
    if status == "wrong_number":
        _emit(args, data, "wrong_number: the number did not match the login screen; "
                          "the login was refused")
        return EXIT_REJECTED
    raise CommandError(f"the service answered with an unknown status {status[:40]!r}")


def cmd_approve(args: argparse.Namespace) -> int:
    return _answer(args, "approve", number=args.number)


def cmd_deny(args: argparse.Namespace) -> int:
    return _answer(args, "deny", not_me=args.not_me)


# -- delete -----------------------------------------------------------------------------------


def cmd_delete(args: argparse.Namespace) -> int:
    home = _home(args)
    account = load(home).find(args.account)
    name = account.name
    warning = (f"deleting {name} removes its {account.kind} from this device and may lock you "
               "out of the account: without another factor you cannot log in until an admin "
               "resets your MFA")
    if not args.yes:
        if not sys.stdin.isatty():
            raise CommandError(f"{warning}; rerun with --yes to confirm (no terminal to ask on)")
        print(f"Warning: {warning}.", file=sys.stderr)
        try:
            reply = input("Type 'delete' to confirm: ")
        except EOFError:
            reply = ""
        if reply.strip() != "delete":
            _note("nothing deleted")
            return EXIT_ERROR
    with editing(home) as state:
        state.remove(state.find(name))
    _emit(args, {"deleted": name}, f"deleted {name} from this device (the service still "
                                   "has it: ask your admin to reset it if you need to)")
    return EXIT_OK
