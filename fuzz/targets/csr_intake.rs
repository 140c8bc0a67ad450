//! A certificate request from a USB bundle (PEM or DER). Property: what is
//! accepted is strict DER whose encoding is the bytes accepted.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(csr) = keyrite::transfer::csr::parse_csr(data) {
            assert!(!csr.der().is_empty());
            let again = keyrite::transfer::csr::parse_csr(csr.der()).expect("the DER of an accepted CSR is accepted");
            assert_eq!(again.der(), csr.der());
        }
    });
}
