//! The opening handshake's checks (RFC 6455 §4.2.1).

/// Whether `key` is a `Sec-WebSocket-Key` as RFC 6455 §4.2.1 requires: 16 bytes, base64. Such
/// a key is 24 characters: 21 that carry 6 bits each, one that carries the last 2 bits (so
/// its low 4 bits are zero: `A`, `Q`, `g` or `w`), and the padding `==`.
pub(crate) fn is_valid_key(key: &[u8]) -> bool {
    let is_base64 = |c: &u8| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/';
    key.len() == 24
        && key[..21].iter().all(is_base64)
        && matches!(key[21], b'A' | b'Q' | b'g' | b'w')
        && &key[22..] == b"=="
}

#[cfg(test)]
mod tests {
    use super::is_valid_key;

    #[test]
    fn keys_are_sixteen_bytes_of_base64() {
        // RFC 6455's own example, and the keys of real clients.
        for good in
            ["dGhlIHNhbXBsZSBub25jZQ==", "x3JJHMbDL1EzLkh9GBhXDw==", "AAAAAAAAAAAAAAAAAAAAAA=="]
        {
            assert!(is_valid_key(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            "a",
            "dGhlIHNhbXBsZSBub25jZQ",       // no padding
            "dGhlIHNhbXBsZSBub25jZR==",     // bits set past the 16th byte
            "dGhlIHNhbXBsZSBub25j ZQ==",    // not base64
            "dGhlIHNhbXBsZSBub25jZQ==dGhl", // longer
            "dGhlIHNhbXBsZSBub25jZQ=A",     // bad padding
            "dGhlIHNhbXBsZSBub2=jZQ==",     // padding inside
        ] {
            assert!(!is_valid_key(bad.as_bytes()), "{bad}");
        }
    }
}
