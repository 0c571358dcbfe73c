package org.unifiedmfa.keycloak;

import jakarta.ws.rs.core.MultivaluedMap;

import org.jboss.logging.Logger;
import org.keycloak.authentication.AuthenticationFlowContext;
import org.keycloak.authentication.AuthenticationFlowError;
import org.keycloak.authentication.Authenticator;
import org.keycloak.events.Errors;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.RealmModel;
import org.keycloak.models.UserModel;

/**
 * The browser step: asks the bridge for the user's second factor and shows what it answers
 * (code field, "send push", the number while a push is pending, the enrollment QR). Each Form
 * status maps to one Keycloak outcome; a rejection goes through {@code failureChallenge}, so
 * brute-force detection and the event log see it. Stateless: one instance serves every login.
 */
final class UnifiedMfaAuthenticator implements Authenticator {
    private static final Logger LOG = Logger.getLogger(UnifiedMfaAuthenticator.class);

    /** Event error when the second factor could not be asked (bridge down, refused, denied). */
    static final String UNAVAILABLE_ERROR = "unified_mfa_unavailable";

    @Override
    public void authenticate(AuthenticationFlowContext context) {
        BridgeSettings settings = settings(context);
        if (settings == null) {
            return;
        }
        UserModel user = context.getUser();
        if (!GroupFilter.asks(user, settings.includeGroups(), settings.excludeGroups())) {
            context.success();
            return;
        }
        DialogueNotes.clear(context.getAuthenticationSession());
        ask(context, settings, client -> client.begin(user.getUsername()));
    }

    @Override
    public void action(AuthenticationFlowContext context) {
        BridgeSettings settings = settings(context);
        if (settings == null) {
            return;
        }
        MultivaluedMap<String, String> params = context.getHttpRequest().getDecodedFormParameters();
        String action = params.getFirst(FormPage.ACTION);
        String token = DialogueNotes.token(context.getAuthenticationSession());
        if (token == null || FormPage.ACTION_RESTART.equals(action)) {
            authenticate(context);
        } else if (FormPage.ACTION_PUSH.equals(action)) {
            ask(context, settings, client -> client.answer(token, "push"));
        } else if (FormPage.ACTION_POLL.equals(action)) {
            ask(context, settings,
                    client -> client.poll(token, BridgeClient.PAGE_POLL_WAIT_SECONDS));
        } else {
            String code = params.getFirst(FormPage.CODE);
            if (code == null || code.isBlank()) {
                // The bridge takes an empty answer as "push": look, without spending the token.
                ask(context, settings, client -> client.poll(token, 0));
            } else {
                askWithCode(context, settings, token, code.trim());
            }
        }
    }

    private static BridgeSettings settings(AuthenticationFlowContext context) {
        try {
            return BridgeSettings.from(context.getAuthenticatorConfig(),
                    context.getSession().vault());
        } catch (BridgeConfigException e) {
            LOG.errorf("unified-mfa step in realm %s is misconfigured: %s",
                    context.getRealm().getName(), e.getMessage());
            context.getEvent().user(context.getUser()).error(Errors.INVALID_CONFIG);
            context.challenge(FormPage.notice(context, "unifiedMfaNotConfigured"));
            return null;
        }
    }

    private static void ask(AuthenticationFlowContext context, BridgeSettings settings,
                            BridgeCall call) {
        BridgeForm form = call(context, settings, call);
        if (form != null) {
            show(context, form);
        }
    }

    /**
     * A code was typed: if the dialogue asks again instead of deciding, the code was refused
     * and the attempt failed. Keycloak hears of it through {@code failureChallenge}, like a
     * wrong code in its own OTP form; the page shows the bridge's message as an error.
     */
    private static void askWithCode(AuthenticationFlowContext context, BridgeSettings settings,
                                    String token, String code) {
        BridgeForm form = call(context, settings, client -> client.answer(token, code));
        if (form == null) {
            return;
        }
        BridgeForm.Status status = form.kind();
        if (status == BridgeForm.Status.PROMPT || status == BridgeForm.Status.ENROLL) {
            DialogueNotes.keep(context.getAuthenticationSession(), form);
            failed(context, form);
        } else {
            show(context, form);
        }
    }

    /** The Form of one bridge call, or null once the call's failure has been answered. */
    private static BridgeForm call(AuthenticationFlowContext context, BridgeSettings settings,
                                   BridgeCall call) {
        try {
            return call.call(BridgeClient.forLogin(settings, context));
        } catch (BridgeException e) {
            unreachable(context, settings, e);
            return null;
        }
    }

    private static void failed(AuthenticationFlowContext context, BridgeForm form) {
        context.getEvent().user(context.getUser()).error(Errors.INVALID_USER_CREDENTIALS);
        context.failureChallenge(AuthenticationFlowError.INVALID_CREDENTIALS,
                FormPage.of(context, form, true));
    }

    /** The mapping of a Form onto Keycloak's outcomes: one case per status. */
    private static void show(AuthenticationFlowContext context, BridgeForm form) {
        switch (form.kind()) {
            case ACCEPT -> {
                DialogueNotes.clear(context.getAuthenticationSession());
                context.success();
            }
            case PROMPT, ENROLL, PUSH_PENDING -> {
                DialogueNotes.keep(context.getAuthenticationSession(), form);
                context.challenge(FormPage.of(context, form, false));
            }
            case REJECT -> {
                DialogueNotes.keep(context.getAuthenticationSession(), form);
                failed(context, form);
            }
            case UNAVAILABLE -> {
                DialogueNotes.keep(context.getAuthenticationSession(), form);
                if (form.allowed()) {
                    LOG.warnf("unified-mfa: service unavailable, its fail mode lets %s in "
                            + "without a second factor", context.getUser().getUsername());
                    context.success();
                } else {
                    context.getEvent().user(context.getUser()).error(UNAVAILABLE_ERROR);
                    context.challenge(FormPage.of(context, form, true));
                }
            }
            default -> {
                LOG.errorf("unified-mfa: the bridge answered an unknown status; login denied");
                DialogueNotes.clear(context.getAuthenticationSession());
                context.getEvent().user(context.getUser()).error(UNAVAILABLE_ERROR);
                context.challenge(FormPage.notice(context, "unifiedMfaUnavailable"));
            }
        }
    }

    /** No Form: a refusal always denies; an unreachable bridge follows the fail mode (S07). */
    private static void unreachable(AuthenticationFlowContext context, BridgeSettings settings,
                                    BridgeException e) {
        DialogueNotes.clear(context.getAuthenticationSession());
        if (e.kind() == BridgeException.Kind.UNREACHABLE && settings.failMode() == FailMode.SAFE) {
            LOG.warnf("unified-mfa: %s; fail mode safe lets %s in without a second factor",
                    e.getMessage(), context.getUser().getUsername());
            context.success();
            return;
        }
        if (e.kind() == BridgeException.Kind.REFUSED) {
            LOG.errorf("unified-mfa: %s", e.getMessage());
        } else {
            LOG.warnf("unified-mfa: %s; fail mode secure denies the login", e.getMessage());
        }
        context.getEvent().user(context.getUser()).error(UNAVAILABLE_ERROR);
        context.challenge(FormPage.notice(context, "unifiedMfaUnavailable"));
    }

    @Override
    public boolean requiresUser() {
        return true;
    }

    @Override
    public boolean configuredFor(KeycloakSession session, RealmModel realm, UserModel user) {
        return true; // the service decides whether the user has a factor or must enroll
    }

    @Override
    public void setRequiredActions(KeycloakSession session, RealmModel realm, UserModel user) {
        // Enrollment happens inside the step (the QR page), not as a required action.
    }

    @Override
    public void close() {
        // Nothing held per session.
    }
}
