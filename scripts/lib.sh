# shellcheck shell=bash
# Shared helpers for scripts/*. Source it; do not execute it.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
export REPO_ROOT VENV

say() {
    printf '==> %s\n' "$*"
}

warn() {
    printf '!!! %s\n' "$*" >&2
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

is_root() {
    [ "$(id -u)" -eq 0 ]
}

# Run a command as root: directly when we are root, otherwise through sudo.
as_root() {
    if is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root for: $* (run as root or install sudo)"
    fi
}

# Run a command with its output captured; print the output only when it fails.
quietly() {
    local log rc=0
    log="$(mktemp "${TMPDIR:-/tmp}/unified-mfa-log.XXXXXX")"
    "$@" >"$log" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        warn "command failed (exit $rc): $*"
        tail -n 60 "$log" >&2
    fi
    rm -f "$log"
    return "$rc"
}
