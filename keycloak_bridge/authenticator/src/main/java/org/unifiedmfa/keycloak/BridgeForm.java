package org.unifiedmfa.keycloak;

import java.util.Locale;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.annotation.JsonProperty;

/**
 * One step of the dialogue as the bridge returns it. The authenticators render it and map its
 * status onto Keycloak's outcomes; they decide nothing themselves.
 */
@JsonIgnoreProperties(ignoreUnknown = true)
record BridgeForm(
        @JsonProperty("status") String status,
        @JsonProperty("message") String message,
        @JsonProperty("token") String token,
        @JsonProperty("can_push") boolean canPush,
        @JsonProperty("push_number") String pushNumber,
        @JsonProperty("enroll_qr") String enrollQr,
        @JsonProperty("allowed") boolean allowed) {

    /** The only kind of image the page embeds: a PNG data URI. */
    private static final String QR_PREFIX = "data:image/png;base64,";

    /** The statuses of the contract; anything else is treated as a refusal. */
    enum Status { PROMPT, ENROLL, PUSH_PENDING, ACCEPT, REJECT, UNAVAILABLE, UNKNOWN }

    Status kind() {
        if (status == null) {
            return Status.UNKNOWN;
        }
        try {
            return Status.valueOf(status.toUpperCase(Locale.ROOT));
        } catch (IllegalArgumentException e) {
            return Status.UNKNOWN;
        }
    }

    /** The enrollment QR when it is a PNG data URI (nothing else goes into the page). */
    String qrImage() {
        boolean png = enrollQr != null && enrollQr.startsWith(QR_PREFIX)
                && enrollQr.substring(QR_PREFIX.length()).matches("[A-Za-z0-9+/=]+");
        return png ? enrollQr : null;
    }

    String messageOrEmpty() {
        return message == null ? "" : message;
    }
}
