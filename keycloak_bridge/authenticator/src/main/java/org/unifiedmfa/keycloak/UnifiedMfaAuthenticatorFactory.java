package org.unifiedmfa.keycloak;

/** Registers the browser step as "unified-mfa"; its one stateless authenticator serves all. */
public final class UnifiedMfaAuthenticatorFactory extends StepFactory {
    public static final String ID = "unified-mfa";

    public UnifiedMfaAuthenticatorFactory() {
        super(ID, new UnifiedMfaAuthenticator(), "Unified MFA (push or code)",
                "Second factor from Unified MFA: a push with number matching or a TOTP code; "
                        + "users without a factor are shown the enrollment QR.");
    }
}
