"""The one core: policy, factors, verification and the dialogue. Knows no protocol."""

from pam_unified_mfa.core.context import RequestContext
from pam_unified_mfa.core.dialogue import Outcome, Step
from pam_unified_mfa.core.service import MFA, UserView

__all__ = ["MFA", "Outcome", "RequestContext", "Step", "UserView"]
