package org.unifiedmfa.keycloak;

import jakarta.ws.rs.core.MediaType;
import jakarta.ws.rs.core.MultivaluedMap;
import jakarta.ws.rs.core.Response;

import org.jboss.logging.Logger;
import org.keycloak.authentication.AuthenticationFlowContext;
import org.keycloak.authentication.AuthenticationFlowError;
import org.keycloak.authentication.Authenticator;
import org.keycloak.events.Errors;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.RealmModel;
import org.keycloak.models.UserModel;
import org.keycloak.representations.idm.OAuth2ErrorRepresentation;

/**
 * The direct-grant step (the token endpoint's password grant): the code comes in the same
 * request as an {@code otp} (or {@code totp}) form parameter. A refusal is {@code invalid_grant}
 * through Keycloak's failure path (events, brute-force detection); a bridge that cannot be
 * asked is a 503 {@code temporarily_unavailable}, or a pass with fail mode safe.
 */
final class DirectGrantAuthenticator implements Authenticator {
    private static final Logger LOG = Logger.getLogger(DirectGrantAuthenticator.class);
    private static final String[] PARAMETERS = {"otp", "totp"};

    @Override
    public void authenticate(AuthenticationFlowContext context) {
        BridgeSettings settings;
        try {
            settings = BridgeSettings.from(context.getAuthenticatorConfig(),
                    context.getSession().vault());
        } catch (BridgeConfigException e) {
            LOG.errorf("unified-mfa direct-grant step in realm %s is misconfigured: %s",
                    context.getRealm().getName(), e.getMessage());
            unavailable(context, Errors.INVALID_CONFIG);
            return;
        }
        UserModel user = context.getUser();
        if (!GroupFilter.asks(user, settings.includeGroups(), settings.excludeGroups())) {
            context.success();
            return;
        }
        BridgeClient client = BridgeClient.forLogin(settings, context);
        BridgeForm form;
        try {
            form = run(client, user.getUsername(), code(context));
        } catch (BridgeException e) {
            boolean unreachable = e.kind() == BridgeException.Kind.UNREACHABLE;
            if (unreachable && settings.failMode() == FailMode.SAFE) {
                LOG.warnf("unified-mfa: %s; fail mode safe lets %s in without a second factor",
                        e.getMessage(), user.getUsername());
                context.success();
            } else {
                LOG.warnf("unified-mfa: %s; login denied", e.getMessage());
                unavailable(context, UnifiedMfaAuthenticator.UNAVAILABLE_ERROR);
            }
            return;
        }
        switch (form.kind()) {
            case ACCEPT -> context.success();
            case UNAVAILABLE -> {
                if (form.allowed()) {
                    LOG.warnf("unified-mfa: service unavailable, its fail mode lets %s in "
                            + "without a second factor", user.getUsername());
                    context.success();
                } else {
                    unavailable(context, UnifiedMfaAuthenticator.UNAVAILABLE_ERROR);
                }
            }
            default -> {
                // Counted: Keycloak's failure path feeds brute-force detection.
                recordError(context, Errors.INVALID_USER_CREDENTIALS);
                context.failure(AuthenticationFlowError.INVALID_CREDENTIALS, response(
                        Response.Status.UNAUTHORIZED, "invalid_grant", "Invalid user credentials"));
            }
        }
    }

    /**
     * Begin, then offer the request's code when the bridge asks for one. Whatever still asks
     * for something afterwards (a prompt, a pending push) is a refusal: a token request has no
     * screen to show the number of a push on, so a push is never sent from here (S03).
     */
    private static BridgeForm run(BridgeClient client, String user, String code)
            throws BridgeException {
        BridgeForm form = client.begin(user);
        BridgeForm.Status status = form.kind();
        boolean asks = status == BridgeForm.Status.PROMPT || status == BridgeForm.Status.ENROLL;
        if (asks && code != null && form.token() != null) {
            return client.answer(form.token(), code);
        }
        return form;
    }

    /** The code of the request ({@code otp}, else {@code totp}); never the word push. */
    private static String code(AuthenticationFlowContext context) {
        MultivaluedMap<String, String> params = context.getHttpRequest().getDecodedFormParameters();
        for (String name : PARAMETERS) {
            String value = params.getFirst(name);
            if (value != null && !value.isBlank() && !"push".equalsIgnoreCase(value.trim())) {
                return value.trim();
            }
        }
        return null;
    }

    /**
     * Denied because the factor could not be asked: an event error and a 503, through a
     * challenge rather than a failure, since it is not the user's failed attempt.
     */
    private static void unavailable(AuthenticationFlowContext context, String event) {
        recordError(context, event);
        context.challenge(response(Response.Status.SERVICE_UNAVAILABLE, "temporarily_unavailable",
                "Second factor not available"));
    }

    private static void recordError(AuthenticationFlowContext context, String event) {
        if (context.getUser() != null) {
            context.getEvent().user(context.getUser());
        }
        context.getEvent().error(event);
    }

    private static Response response(Response.Status status, String error, String description) {
        return Response.status(status)
                .entity(new OAuth2ErrorRepresentation(error, description))
                .type(MediaType.APPLICATION_JSON_TYPE)
                .build();
    }

    @Override
    public void action(AuthenticationFlowContext context) {
        // A direct grant is one request: there is no form to come back to.
    }

    @Override
    public boolean requiresUser() {
        return true;
    }

    @Override
    public boolean configuredFor(KeycloakSession session, RealmModel realm, UserModel user) {
        return true;
    }

    @Override
    public void setRequiredActions(KeycloakSession session, RealmModel realm, UserModel user) {
        // Nothing to set up from a token request.
    }

    @Override
    public void close() {
        // Nothing held per session.
    }
}
