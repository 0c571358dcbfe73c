package org.unifiedmfa.keycloak;

import java.util.HashMap;
import java.util.Locale;
import java.util.Map;

import jakarta.ws.rs.core.Response;

import org.keycloak.authentication.AuthenticationFlowContext;
import org.keycloak.forms.login.LoginFormsProvider;

/**
 * The login page of the step ({@code theme-resources/templates/unified-mfa.ftl}), filled from a
 * Form: the message, the enrollment QR, the number of a pending push, a code field while the
 * dialogue has a token, "send push" when the Form allows it, and "start again" when it ended.
 */
final class FormPage {
    static final String TEMPLATE = "unified-mfa.ftl";
    static final String ATTRIBUTE = "umfa";

    /** Form fields the page posts back. */
    static final String ACTION = "umfa-action";
    static final String CODE = "code";

    /** Values of {@link #ACTION}. */
    static final String ACTION_CODE = "code";
    static final String ACTION_PUSH = "push";
    static final String ACTION_POLL = "poll";
    static final String ACTION_RESTART = "restart";

    private FormPage() {
    }

    static Response of(AuthenticationFlowContext context, BridgeForm form, boolean error) {
        boolean pending = form.kind() == BridgeForm.Status.PUSH_PENDING;
        boolean open = form.token() != null && !form.token().isEmpty();
        Map<String, Object> view = new HashMap<>();
        view.put("status", form.kind().name().toLowerCase(Locale.ROOT));
        view.put("message", form.messageOrEmpty());
        view.put("error", error);
        view.put("open", open);
        view.put("pending", pending && open);
        view.put("canPush", form.canPush() && open && !pending);
        view.put("pushNumber", pending && form.pushNumber() != null ? form.pushNumber() : "");
        String qr = form.qrImage();
        view.put("qr", qr == null ? "" : qr);
        return render(context, view);
    }

    /** A page with one of our own messages (a key of messages_en.properties) and "start again". */
    static Response notice(AuthenticationFlowContext context, String messageKey) {
        LoginFormsProvider forms = context.form();
        Map<String, Object> view = new HashMap<>();
        view.put("status", "notice");
        view.put("message", forms.getMessage(messageKey));
        view.put("error", true);
        view.put("open", false);
        view.put("pending", false);
        view.put("canPush", false);
        view.put("pushNumber", "");
        view.put("qr", "");
        return forms.setAttribute(ATTRIBUTE, view).createForm(TEMPLATE);
    }

    private static Response render(AuthenticationFlowContext context, Map<String, Object> view) {
        return context.form().setAttribute(ATTRIBUTE, view).createForm(TEMPLATE);
    }
}
