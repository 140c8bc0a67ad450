//! An RFC 9773 certID from an ACME renewalInfo URL or a `replaces` field.
//! Property: one certificate has one name, so what parses encodes back to
//! the very same string.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else { return };
        if let Ok(id) = keyrite::acme::ari::CertId::parse(text) {
            assert_eq!(id.encode(), text);
        }
    });
}
