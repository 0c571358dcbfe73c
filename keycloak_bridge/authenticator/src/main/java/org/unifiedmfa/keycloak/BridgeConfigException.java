package org.unifiedmfa.keycloak;

/** The step's settings are missing or invalid: the login is denied whatever the fail mode. */
final class BridgeConfigException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    BridgeConfigException(String message) {
        super(message);
    }

    BridgeConfigException(String message, Throwable cause) {
        super(message, cause);
    }
}
