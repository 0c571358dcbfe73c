package org.unifiedmfa.keycloak;

/** One call to the bridge, made by an authenticator once it knows its settings. */
@FunctionalInterface
interface BridgeCall {
    BridgeForm call(BridgeClient client) throws BridgeException;
}
