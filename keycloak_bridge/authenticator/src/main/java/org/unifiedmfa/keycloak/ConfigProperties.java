package org.unifiedmfa.keycloak;

import java.util.List;

import org.keycloak.provider.ProviderConfigProperty;

/** The settings both steps show in the admin console (keys as in {@link BridgeSettings}). */
final class ConfigProperties {
    private ConfigProperties() {
    }

    static List<ProviderConfigProperty> all() {
        ProviderConfigProperty url = property(BridgeSettings.BRIDGE_URL, "Bridge URL",
                "The public URL of unified-mfa serve (its public_url), e.g. "
                        + "https://mfa.example.org",
                ProviderConfigProperty.STRING_TYPE, null);
        url.setRequired(true);
        ProviderConfigProperty client = property(BridgeSettings.CLIENT_ID, "Client id",
                "The API client registered with: unified-mfa client add NAME --public-key FILE",
                ProviderConfigProperty.STRING_TYPE, null);
        client.setRequired(true);
        ProviderConfigProperty key = property(BridgeSettings.CLIENT_KEY, "Client private key",
                "The client's private key as PKCS#8 PEM (BEGIN PRIVATE KEY), EC P-256 or RSA; "
                        + "or a vault reference ${vault.NAME}",
                ProviderConfigProperty.TEXT_TYPE, null);
        key.setRequired(true);
        key.setSecret(true);
        ProviderConfigProperty timeout = property(BridgeSettings.TIMEOUT, "Timeout (seconds)",
                "How long to wait for the bridge before the fail mode applies (1-60)",
                ProviderConfigProperty.STRING_TYPE,
                String.valueOf(BridgeSettings.DEFAULT_TIMEOUT_SECONDS));
        ProviderConfigProperty failMode = property(BridgeSettings.FAIL_MODE, "Fail mode",
                "When the bridge cannot be reached: secure denies the login, safe lets it "
                        + "through (logged)",
                ProviderConfigProperty.LIST_TYPE, "secure");
        failMode.setOptions(List.of("secure", "safe"));
        ProviderConfigProperty include = property(BridgeSettings.INCLUDE_GROUPS,
                "Only these groups",
                "If set, only members of these groups are asked (a path /a/b or a name; "
                        + "subgroups included)",
                ProviderConfigProperty.MULTIVALUED_STRING_TYPE, null);
        ProviderConfigProperty exclude = property(BridgeSettings.EXCLUDE_GROUPS,
                "Never these groups",
                "Members of these groups skip the step (a path /a/b or a name; subgroups "
                        + "included)",
                ProviderConfigProperty.MULTIVALUED_STRING_TYPE, null);
        return List.of(url, client, key, timeout, failMode, include, exclude);
    }

    private static ProviderConfigProperty property(String name, String label, String help,
                                                   String type, Object defaultValue) {
        return new ProviderConfigProperty(name, label, help, type, defaultValue);
    }
}
