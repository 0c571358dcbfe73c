package org.unifiedmfa.keycloak;

import java.net.URI;
import java.net.URISyntaxException;
import java.security.PrivateKey;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.keycloak.models.AuthenticatorConfigModel;
import org.keycloak.vault.VaultStringSecret;
import org.keycloak.vault.VaultTranscriber;

/**
 * The step's settings, read from its Keycloak authenticator config and checked once per login.
 * A missing required key, an unknown key or a bad value is a {@link BridgeConfigException}.
 */
record BridgeSettings(
        URI bridgeUrl,
        String clientId,
        PrivateKey clientKey,
        Duration timeout,
        FailMode failMode,
        List<String> includeGroups,
        List<String> excludeGroups) {

    static final String BRIDGE_URL = "bridge-url";
    static final String CLIENT_ID = "client-id";
    static final String CLIENT_KEY = "client-key";
    static final String TIMEOUT = "timeout-seconds";
    static final String FAIL_MODE = "fail-mode";
    static final String INCLUDE_GROUPS = "include-groups";
    static final String EXCLUDE_GROUPS = "exclude-groups";

    static final int DEFAULT_TIMEOUT_SECONDS = 10;
    private static final int MAX_TIMEOUT_SECONDS = 60;
    /** How Keycloak joins the values of a multivalued setting. */
    private static final String LIST_SEPARATOR = "##";

    private static final Set<String> KNOWN = Set.of(
            BRIDGE_URL, CLIENT_ID, CLIENT_KEY, TIMEOUT, FAIL_MODE, INCLUDE_GROUPS, EXCLUDE_GROUPS);

    /**
     * The settings of a step; the client key may be a vault reference ({@code ${vault.NAME}}),
     * read through Keycloak's vault so that the key need not sit in the realm's configuration.
     */
    static BridgeSettings from(AuthenticatorConfigModel model, VaultTranscriber vault) {
        if (model == null || model.getConfig() == null) {
            throw new BridgeConfigException(
                    "the step has no configuration (bridge URL, client id, key)");
        }
        Map<String, String> config = model.getConfig();
        for (String key : config.keySet()) {
            if (!KNOWN.contains(key)) {
                throw new BridgeConfigException("unknown setting " + key);
            }
        }
        return new BridgeSettings(
                bridgeUrl(required(config, BRIDGE_URL)),
                required(config, CLIENT_ID).trim(),
                PemKeys.privateKey(fromVault(vault, required(config, CLIENT_KEY))),
                Duration.ofSeconds(timeoutSeconds(config.get(TIMEOUT))),
                FailMode.parse(orDefault(config.get(FAIL_MODE), "secure")),
                groups(config.get(INCLUDE_GROUPS)),
                groups(config.get(EXCLUDE_GROUPS)));
    }

    /** The audience of our client assertions: the service's public URL plus /v1/auth. */
    String audience() {
        return trimmedUrl() + "/v1/auth";
    }

    /** The URL of a bridge call, such as {@code /v1/keycloak/begin}. */
    URI endpoint(String path) {
        return URI.create(trimmedUrl() + path);
    }

    private String trimmedUrl() {
        String url = bridgeUrl.toString();
        return url.endsWith("/") ? url.substring(0, url.length() - 1) : url;
    }

    private static String required(Map<String, String> config, String key) {
        String value = config.get(key);
        if (value == null || value.isBlank()) {
            throw new BridgeConfigException("setting " + key + " is required");
        }
        return value;
    }

    /** The value itself, or the secret it names when it is a vault reference. */
    private static String fromVault(VaultTranscriber vault, String value) {
        try (VaultStringSecret secret = vault.getStringSecret(value)) {
            return secret.get().filter(text -> !text.isBlank()).orElseThrow(
                    () -> new BridgeConfigException("client key: the vault has no such secret"));
        }
    }

    private static String orDefault(String value, String fallback) {
        return value == null || value.isBlank() ? fallback : value;
    }

    private static URI bridgeUrl(String value) {
        try {
            URI uri = new URI(value.trim());
            String scheme = uri.getScheme();
            if (!("https".equals(scheme) || "http".equals(scheme)) || uri.getHost() == null
                    || uri.getRawQuery() != null || uri.getRawFragment() != null
                    || uri.getRawUserInfo() != null) {
                throw new BridgeConfigException("bridge URL must be http(s)://host[:port][/path]");
            }
            return uri;
        } catch (URISyntaxException e) {
            throw new BridgeConfigException("bridge URL is not a URL", e);
        }
    }

    private static int timeoutSeconds(String value) {
        if (value == null || value.isBlank()) {
            return DEFAULT_TIMEOUT_SECONDS;
        }
        try {
            int seconds = Integer.parseInt(value.trim());
            if (seconds < 1 || seconds > MAX_TIMEOUT_SECONDS) {
                throw new BridgeConfigException(
                        "timeout must be 1 to " + MAX_TIMEOUT_SECONDS + " seconds");
            }
            return seconds;
        } catch (NumberFormatException e) {
            throw new BridgeConfigException("timeout must be a whole number of seconds", e);
        }
    }

    private static List<String> groups(String value) {
        if (value == null || value.isBlank()) {
            return List.of();
        }
        return Arrays.stream(value.split(LIST_SEPARATOR))
                .map(String::trim)
                .filter(group -> !group.isEmpty())
                .toList();
    }
}
