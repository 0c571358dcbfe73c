package org.unifiedmfa.keycloak;

import java.util.Locale;

/** What the step does when the bridge cannot be reached in time (S07). */
public enum FailMode {
    /** Deny the login (the default). */
    SECURE,
    /** Let the login through without a second factor, and log it. */
    SAFE;

    /** The mode named by a setting value; anything but "secure" or "safe" is refused. */
    static FailMode parse(String value) {
        return switch (value.trim().toLowerCase(Locale.ROOT)) {
            case "secure" -> SECURE;
            case "safe" -> SAFE;
            default -> throw new BridgeConfigException("fail mode must be secure or safe");
        };
    }
}
