//! An RFC 7512 PKCS#11 URI from an environment file. Property: a URI that
//! parses prints as a URI that parses to the same thing.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else { return };
        if let Ok(uri) = keyrite::hsm::uri::Pkcs11Uri::parse(text) {
            let printed = uri.to_string();
            let again = keyrite::hsm::uri::Pkcs11Uri::parse(&printed).expect("a printed URI parses");
            assert_eq!(again, uri, "{printed}");
        }
    });
}
