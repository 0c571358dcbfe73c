package org.unifiedmfa.keycloak;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.PrivateKey;
import java.security.SecureRandom;
import java.security.Signature;
import java.security.interfaces.ECPrivateKey;
import java.time.Instant;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.Map;

import org.keycloak.util.JsonSerialization;

/**
 * The Bearer JWT that proves to the bridge which API client calls: signed with the client's
 * private key (ES256 for EC P-256, RS256 for RSA), {@code iss = sub =} the client id,
 * {@code aud =} the service's public URL plus /v1/auth, valid 60 s, with a fresh {@code jti}.
 */
final class ClientAssertion {
    static final long LIFETIME_SECONDS = 60;
    private static final int ES256_PART_BYTES = 32;
    private static final SecureRandom RANDOM = new SecureRandom();
    private static final Base64.Encoder URL = Base64.getUrlEncoder().withoutPadding();

    private ClientAssertion() {
    }

    static String create(BridgeSettings settings, Instant now) {
        PrivateKey key = settings.clientKey();
        boolean ec = key instanceof ECPrivateKey;
        Map<String, Object> header = new LinkedHashMap<>();
        header.put("alg", ec ? "ES256" : "RS256");
        header.put("typ", "JWT");
        Map<String, Object> claims = new LinkedHashMap<>();
        claims.put("iss", settings.clientId());
        claims.put("sub", settings.clientId());
        claims.put("aud", settings.audience());
        claims.put("iat", now.getEpochSecond());
        claims.put("exp", now.getEpochSecond() + LIFETIME_SECONDS);
        claims.put("jti", randomId());
        String signingInput = encode(header) + "." + encode(claims);
        try {
            Signature signer = Signature.getInstance(ec ? "SHA256withECDSA" : "SHA256withRSA");
            signer.initSign(key);
            signer.update(signingInput.getBytes(StandardCharsets.US_ASCII));
            byte[] signature = signer.sign();
            if (ec) {
                signature = EcdsaSignatures.derToJose(signature, ES256_PART_BYTES);
            }
            return signingInput + "." + URL.encodeToString(signature);
        } catch (GeneralSecurityException e) {
            throw new BridgeConfigException("cannot sign with the client key", e);
        }
    }

    private static String encode(Map<String, Object> json) {
        try {
            return URL.encodeToString(JsonSerialization.writeValueAsBytes(json));
        } catch (IOException e) {
            throw new IllegalStateException("cannot write a JWT part", e);
        }
    }

    private static String randomId() {
        byte[] bytes = new byte[18];
        RANDOM.nextBytes(bytes);
        return URL.encodeToString(bytes);
    }
}
