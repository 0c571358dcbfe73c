package org.unifiedmfa.keycloak;

import org.keycloak.sessions.AuthenticationSessionModel;

/**
 * The bridge's current single-use token, kept in the Keycloak authentication session (server
 * side), never in the page. Every Form replaces it.
 */
final class DialogueNotes {
    private static final String TOKEN = "unified-mfa.token";

    private DialogueNotes() {
    }

    static String token(AuthenticationSessionModel session) {
        return session.getAuthNote(TOKEN);
    }

    static void keep(AuthenticationSessionModel session, BridgeForm form) {
        if (form.token() == null || form.token().isEmpty()) {
            session.removeAuthNote(TOKEN);
        } else {
            session.setAuthNote(TOKEN, form.token());
        }
    }

    static void clear(AuthenticationSessionModel session) {
        session.removeAuthNote(TOKEN);
    }
}
