package org.unifiedmfa.keycloak;

import java.io.IOException;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.time.Instant;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;

import org.keycloak.authentication.AuthenticationFlowContext;
import org.keycloak.util.JsonSerialization;

/**
 * The three calls of the bridge ({@code /v1/keycloak/begin}, {@code answer}, {@code poll}),
 * each authenticated by a fresh client assertion, each returning a {@link BridgeForm}.
 */
final class BridgeClient {
    /** How long one poll from the page waits on the bridge for the push to be decided. */
    static final int PAGE_POLL_WAIT_SECONDS = 3;
    /** The longest wait the bridge accepts for one poll. */
    static final int MAX_POLL_WAIT_SECONDS = 25;

    /** One HTTP client for every login (it is thread-safe and pools connections). */
    private static final HttpClient HTTP = HttpClient.newBuilder()
            .version(HttpClient.Version.HTTP_1_1)
            .connectTimeout(Duration.ofSeconds(5))
            .followRedirects(HttpClient.Redirect.NEVER)
            .build();

    private final HttpClient http;
    private final BridgeSettings settings;
    private final String clientAddress;
    private final String service;

    BridgeClient(HttpClient http, BridgeSettings settings, String clientAddress, String service) {
        this.http = http;
        this.settings = settings;
        this.clientAddress = clientAddress;
        this.service = service;
    }

    /** The client for this login: the browser's address, service "keycloak:REALM/CLIENT". */
    static BridgeClient forLogin(BridgeSettings settings, AuthenticationFlowContext context) {
        String service = "keycloak:" + context.getRealm().getName() + "/"
                + context.getAuthenticationSession().getClient().getClientId();
        return new BridgeClient(HTTP, settings, context.getConnection().getRemoteAddr(), service);
    }

    BridgeForm begin(String user) throws BridgeException {
        Map<String, Object> body = body();
        body.put("user", user);
        return post("/v1/keycloak/begin", body, 0);
    }

    BridgeForm answer(String token, String answer) throws BridgeException {
        Map<String, Object> body = body();
        body.put("token", token);
        body.put("answer", answer);
        return post("/v1/keycloak/answer", body, 0);
    }

    BridgeForm poll(String token, int waitSeconds) throws BridgeException {
        int wait = Math.max(0, Math.min(waitSeconds, MAX_POLL_WAIT_SECONDS));
        Map<String, Object> body = body();
        body.put("token", token);
        body.put("wait", wait);
        return post("/v1/keycloak/poll", body, wait);
    }

    private Map<String, Object> body() {
        Map<String, Object> body = new LinkedHashMap<>();
        body.put("client_address", clientAddress);
        body.put("service", service);
        body.put("fail_mode", settings.failMode().name().toLowerCase(Locale.ROOT));
        return body;
    }

    private BridgeForm post(String path, Map<String, Object> body, int waitSeconds)
            throws BridgeException {
        byte[] json;
        try {
            json = JsonSerialization.writeValueAsBytes(body);
        } catch (IOException e) {
            throw new IllegalStateException("cannot write a bridge request", e);
        }
        String assertion = ClientAssertion.create(settings, Instant.now());
        HttpRequest request = HttpRequest.newBuilder(settings.endpoint(path))
                .timeout(settings.timeout().plus(Duration.ofSeconds(waitSeconds)))
                .header("Content-Type", "application/json")
                .header("Accept", "application/json")
                .header("Authorization", "Bearer " + assertion)
                .POST(HttpRequest.BodyPublishers.ofByteArray(json))
                .build();
        HttpResponse<String> response;
        try {
            response = http.send(request, HttpResponse.BodyHandlers.ofString());
        } catch (IOException e) {
            throw new BridgeException(BridgeException.Kind.UNREACHABLE,
                    "bridge not reachable: " + e.getClass().getSimpleName(), e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new BridgeException(BridgeException.Kind.UNREACHABLE, "interrupted", e);
        }
        int status = response.statusCode();
        if (status >= 500) {
            throw new BridgeException(BridgeException.Kind.UNREACHABLE,
                    "bridge answered HTTP " + status);
        }
        if (status != 200) {
            throw new BridgeException(BridgeException.Kind.REFUSED, "bridge refused " + path
                    + " with HTTP " + status + ": " + detail(response.body()));
        }
        try {
            return JsonSerialization.readValue(response.body(), BridgeForm.class);
        } catch (IOException e) {
            throw new BridgeException(BridgeException.Kind.REFUSED,
                    "bridge answer is not a Form", e);
        }
    }

    /** The one-line {@code detail} of an error answer, for the server log. */
    private static String detail(String body) {
        try {
            Object detail = JsonSerialization.readValue(body, Map.class).get("detail");
            return String.valueOf(detail);
        } catch (IOException | RuntimeException e) {
            return "(no detail)";
        }
    }
}
