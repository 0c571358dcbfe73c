package org.unifiedmfa.keycloak;

import java.util.List;

import org.keycloak.Config;
import org.keycloak.authentication.Authenticator;
import org.keycloak.authentication.AuthenticatorFactory;
import org.keycloak.models.AuthenticationExecutionModel.Requirement;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.KeycloakSessionFactory;
import org.keycloak.provider.ProviderConfigProperty;

/**
 * What both of our steps register alike: one stateless authenticator serving every login, the
 * same settings ({@link ConfigProperties}), nothing server-wide. Subclasses name the step.
 */
abstract class StepFactory implements AuthenticatorFactory {
    private static final Requirement[] CHOICES = {
        Requirement.REQUIRED, Requirement.ALTERNATIVE, Requirement.DISABLED,
    };

    private final String id;
    private final Authenticator authenticator;
    private final String displayType;
    private final String helpText;

    StepFactory(String id, Authenticator authenticator, String displayType, String helpText) {
        this.id = id;
        this.authenticator = authenticator;
        this.displayType = displayType;
        this.helpText = helpText;
    }

    @Override
    public final String getId() {
        return id;
    }

    @Override
    public final Authenticator create(KeycloakSession session) {
        return authenticator;
    }

    @Override
    public final String getDisplayType() {
        return displayType;
    }

    @Override
    public final String getHelpText() {
        return helpText;
    }

    @Override
    public final String getReferenceCategory() {
        return null;
    }

    @Override
    public final boolean isConfigurable() {
        return true;
    }

    @Override
    public final Requirement[] getRequirementChoices() {
        return CHOICES.clone();
    }

    @Override
    public final boolean isUserSetupAllowed() {
        return false;
    }

    @Override
    public final List<ProviderConfigProperty> getConfigProperties() {
        return ConfigProperties.all();
    }

    @Override
    public final void init(Config.Scope config) {
        // No server-wide settings: each step is configured in its flow.
    }

    @Override
    public final void postInit(KeycloakSessionFactory factory) {
        // Nothing to look up.
    }

    @Override
    public final void close() {
        // Nothing to release.
    }
}
