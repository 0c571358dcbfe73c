"""The shortest path through the core: enroll, confirm with the first code, log in."""

from pam_unified_mfa.core import MFA
from tests.helpers import code_for, enroll_confirmed, login


def test_enrolled_user_logs_in_with_a_current_code(mfa: MFA) -> None:
    mfa.add_user("alice")
    result = enroll_confirmed(mfa, "alice")
    assert login(mfa, "alice", code_for(mfa, result.uri))
