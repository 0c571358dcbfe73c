package org.unifiedmfa.keycloak;

/** A call to the bridge that produced no Form. */
final class BridgeException extends Exception {
    private static final long serialVersionUID = 1L;

    /** Why no Form came back. */
    enum Kind {
        /** Not reachable, timed out or a server error: the step's fail mode decides. */
        UNREACHABLE,
        /** The bridge refused the call (4xx: our key, client id or request): always denied. */
        REFUSED
    }

    private final Kind kind;

    BridgeException(Kind kind, String message) {
        super(message);
        this.kind = kind;
    }

    BridgeException(Kind kind, String message, Throwable cause) {
        super(message, cause);
        this.kind = kind;
    }

    Kind kind() {
        return kind;
    }
}
