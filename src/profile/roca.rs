//! The ROCA fingerprint (CVE-2017-15361): RSA keys made by Infineon's
//! flawed RSALib have the form `k·M + (65537^a mod M)` for a primorial `M`,
//! which is what lets them be factored. Such a modulus, reduced modulo each
//! small prime `p` dividing `M`, always lands in the subgroup that 65537
//! generates modulo `p`. A random modulus does so for all 38 primes with
//! negligible probability, so a key that does is refused.
//!
//! This is the detector of the paper's authors (the "moduli" method, also
//! what Boulder's key policy runs); the subgroups are computed here rather
//! than shipped as tables.

/// The odd primes up to 167: the small factors of the RSALib primorial.
const PRIMES: [u32; 38] = [
    3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107, 109,
    113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
];

/// Whether the big-endian modulus `n` has the ROCA fingerprint.
pub fn has_fingerprint(n: &[u8]) -> bool {
    PRIMES.iter().all(|&p| in_subgroup_of_65537(residue(n, p), p))
}

/// `n mod p`, one byte at a time.
fn residue(n: &[u8], p: u32) -> u32 {
    n.iter().fold(0u32, |r, &b| ((r << 8) | u32::from(b)) % p)
}

/// Whether `r` is a power of 65537 modulo `p`.
fn in_subgroup_of_65537(r: u32, p: u32) -> bool {
    let g = 65_537 % p;
    let mut x = 1 % p;
    for _ in 0..p {
        if x == r {
            return true;
        }
        x = x * g % p;
        if x == 1 {
            return false;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_file(text: &str) -> Vec<u8> {
        hex::decode(text.trim().trim_start_matches("0x")).expect("hex")
    }

    #[test]
    fn the_authors_positive_samples_are_detected() {
        let n = hex_file(include_str!("../../tests/data/roca/mod03.txt"));
        assert_eq!(n.len(), 256);
        assert!(has_fingerprint(&n));
        let pem = include_str!("../../tests/data/roca/pubkey03.pem");
        let (_, spki) = pem_rfc7468::decode_vec(pem.as_bytes()).expect("pem");
        let spki = spki::SubjectPublicKeyInfoRef::try_from(spki.as_slice()).expect("spki");
        let (n, _) = crate::hsm::rsa_public_key_parts(spki.subject_public_key.raw_bytes()).expect("rsa");
        assert!(has_fingerprint(&n));
    }

    /// A CSR's key policy refuses it, and says why.
    #[test]
    fn the_key_policy_refuses_it() {
        let n = hex_file(include_str!("../../tests/data/roca/mod03.txt"));
        let mut spki = hex::decode("30820122300d06092a864886f70d01010105000382010f003082010a0282010100").expect("hex");
        spki.extend_from_slice(&n);
        spki.extend_from_slice(&[0x02, 0x03, 0x01, 0x00, 0x01]);
        let leaf = crate::profile::Profile::from_toml_str(include_str!("../../templates/tls-leaf.toml"), "tls-leaf")
            .expect("template");
        let err = leaf.subject_keys().check(&spki).expect_err("refused");
        assert!(err.contains("ROCA"), "{err}");
    }

    #[test]
    fn ordinary_keys_are_not() {
        for _ in 0..8 {
            let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa");
            use aws_lc_rs::signature::KeyPair as _;
            let (n, _) = crate::hsm::rsa_public_key_parts(key.public_key().as_ref()).expect("parts");
            assert!(!has_fingerprint(&n));
        }
        // A modulus of 1 mod every prime is the subgroup's identity: flagged,
        // which shows the test is per prime and not a constant.
        assert!(has_fingerprint(&[1]));
        assert!(!has_fingerprint(&[2]));
    }
}
