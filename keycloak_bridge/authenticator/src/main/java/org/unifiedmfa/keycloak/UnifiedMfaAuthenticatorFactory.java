package org.unifiedmfa.keycloak;

import java.util.List;

import org.keycloak.Config;
import org.keycloak.authentication.Authenticator;
import org.keycloak.authentication.AuthenticatorFactory;
import org.keycloak.models.AuthenticationExecutionModel.Requirement;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.KeycloakSessionFactory;
import org.keycloak.provider.ProviderConfigProperty;

/** Registers the browser step as "unified-mfa"; its one stateless authenticator serves all. */
public final class UnifiedMfaAuthenticatorFactory implements AuthenticatorFactory {
    public static final String ID = "unified-mfa";
    private static final Authenticator SINGLETON = new UnifiedMfaAuthenticator();
    private static final Requirement[] CHOICES = {
        Requirement.REQUIRED, Requirement.ALTERNATIVE, Requirement.DISABLED,
    };

    @Override
    public String getId() {
        return ID;
    }

    @Override
    public Authenticator create(KeycloakSession session) {
        return SINGLETON;
    }

    @Override
    public String getDisplayType() {
        return "Unified MFA (push or code)";
    }

    @Override
    public String getHelpText() {
        return "Second factor from Unified MFA: a push with number matching or a TOTP code; "
                + "users without a factor are shown the enrollment QR.";
    }

    @Override
    public String getReferenceCategory() {
        return null;
    }

    @Override
    public boolean isConfigurable() {
        return true;
    }

    @Override
    public Requirement[] getRequirementChoices() {
        return CHOICES.clone();
    }

    @Override
    public boolean isUserSetupAllowed() {
        return false;
    }

    @Override
    public List<ProviderConfigProperty> getConfigProperties() {
        return ConfigProperties.all();
    }

    @Override
    public void init(Config.Scope config) {
        // No server-wide settings: each step is configured in its flow.
    }

    @Override
    public void postInit(KeycloakSessionFactory factory) {
        // Nothing to look up.
    }

    @Override
    public void close() {
        // Nothing to release.
    }
}
