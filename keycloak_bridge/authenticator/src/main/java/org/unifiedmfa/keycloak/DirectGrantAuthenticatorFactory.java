package org.unifiedmfa.keycloak;

/** Registers the direct-grant step as "unified-mfa-direct-grant" (code in the otp parameter). */
public final class DirectGrantAuthenticatorFactory extends StepFactory {
    public static final String ID = "unified-mfa-direct-grant";

    public DirectGrantAuthenticatorFactory() {
        super(ID, new DirectGrantAuthenticator(), "Unified MFA direct grant (otp parameter)",
                "Second factor from Unified MFA for the password grant: a code in the otp (or "
                        + "totp) parameter of the token request.");
    }
}
