//! The body of an ACME POST: a flattened JWS whose protected header carries
//! a JWK or a kid. Nothing may panic, and a key that parses has one
//! thumbprint however often it is computed.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(jws) = keyrite::acme::jws::Jws::parse(data) else { return };
        if let Some(jwk) = jws.header.jwk.as_ref() {
            assert_eq!(jwk.thumbprint(), jwk.thumbprint());
            let _ = jwk.check_quality();
            let _ = jwk.to_spki_der();
            let _ = jws.verify(jwk);
        }
    });
}
