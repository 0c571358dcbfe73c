package org.unifiedmfa.keycloak;

import java.security.GeneralSecurityException;
import java.security.KeyFactory;
import java.security.PrivateKey;
import java.security.interfaces.ECPrivateKey;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.Base64;

/** Reads the client's private key: a PKCS#8 PEM ("BEGIN PRIVATE KEY"), EC P-256 or RSA. */
final class PemKeys {
    private static final String BEGIN = "-----BEGIN PRIVATE KEY-----";
    private static final String END = "-----END PRIVATE KEY-----";

    private PemKeys() {
    }

    static PrivateKey privateKey(String pem) {
        String text = pem.trim();
        if (!text.startsWith(BEGIN) || !text.endsWith(END)) {
            throw new BridgeConfigException("client key must be a PKCS#8 PEM (BEGIN PRIVATE KEY); "
                    + "convert with: openssl pkcs8 -topk8 -nocrypt -in key.pem");
        }
        String body = text.substring(BEGIN.length(), text.length() - END.length())
                .replaceAll("\\s", "");
        byte[] der;
        try {
            der = Base64.getDecoder().decode(body);
        } catch (IllegalArgumentException e) {
            throw new BridgeConfigException("client key PEM is not valid base64", e);
        }
        PKCS8EncodedKeySpec spec = new PKCS8EncodedKeySpec(der);
        for (String algorithm : new String[] {"EC", "RSA"}) {
            try {
                PrivateKey key = KeyFactory.getInstance(algorithm).generatePrivate(spec);
                if (key instanceof ECPrivateKey ec
                        && ec.getParams().getCurve().getField().getFieldSize() != 256) {
                    throw new BridgeConfigException("an EC client key must be on P-256");
                }
                return key;
            } catch (GeneralSecurityException e) {
                // Not this algorithm: try the next one.
            }
        }
        throw new BridgeConfigException("client key is neither an EC nor an RSA private key");
    }
}
