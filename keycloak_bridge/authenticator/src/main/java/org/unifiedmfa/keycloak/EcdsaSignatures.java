package org.unifiedmfa.keycloak;

/**
 * The JDK signs ECDSA as DER {@code SEQUENCE { INTEGER r, INTEGER s }}; JOSE wants the two
 * numbers as fixed-size unsigned big-endian halves, {@code r || s}.
 */
final class EcdsaSignatures {
    private static final int SEQUENCE = 0x30;
    private static final int INTEGER = 0x02;

    private EcdsaSignatures() {
    }

    static byte[] derToJose(byte[] der, int partBytes) {
        Reader reader = new Reader(der);
        reader.expect(SEQUENCE);
        int sequenceLength = reader.length();
        if (sequenceLength != der.length - reader.position) {
            throw new IllegalArgumentException("DER signature has a wrong length");
        }
        byte[] jose = new byte[2 * partBytes];
        reader.integerInto(jose, 0, partBytes);
        reader.integerInto(jose, partBytes, partBytes);
        if (reader.position != der.length) {
            throw new IllegalArgumentException("DER signature has trailing bytes");
        }
        return jose;
    }

    /** Walks a DER signature; any malformed input is an IllegalArgumentException. */
    private static final class Reader {
        private final byte[] der;
        private int position;

        Reader(byte[] der) {
            this.der = der;
        }

        int next() {
            if (position >= der.length) {
                throw new IllegalArgumentException("DER signature is truncated");
            }
            return der[position++] & 0xff;
        }

        void expect(int tag) {
            if (next() != tag) {
                throw new IllegalArgumentException("DER signature has an unexpected tag");
            }
        }

        int length() {
            int first = next();
            if (first < 0x80) {
                return first;
            }
            if (first != 0x81) {
                throw new IllegalArgumentException("DER length form not used by ECDSA P-256");
            }
            return next();
        }

        void integerInto(byte[] out, int offset, int partBytes) {
            expect(INTEGER);
            int length = length();
            int start = position;
            int end = start + length;
            if (length == 0 || end > der.length) {
                throw new IllegalArgumentException("DER integer is truncated");
            }
            while (start < end - 1 && der[start] == 0) {
                start++; // a leading zero keeps a DER integer positive; JOSE has none
            }
            int size = end - start;
            if (size > partBytes) {
                throw new IllegalArgumentException("DER integer is too large");
            }
            System.arraycopy(der, start, out, offset + partBytes - size, size);
            position = end;
        }
    }
}
