//! Passphrase encryption of the master secret and the share-set digest
//! (SLIP-0039, "Encryption of the master secret" and "SplitSecret").
//!
//! The cipher is a four-round Feistel network with PBKDF2-HMAC-SHA256 as the
//! round function: invertible, so an existing secret can be shared, and
//! deliberately without a check value, so every passphrase decrypts to some
//! secret and a wrong one cannot be told apart offline.

use std::num::NonZeroU32;

use aws_lc_rs::{constant_time, hmac, pbkdf2};
use zeroize::Zeroizing;

use super::SharesError;

/// Round count fixed by the spec.
const ROUNDS: u8 = 4;
/// Iterations per round are `BASE_ROUND_ITERATIONS << e` (10000·2^e total).
const BASE_ROUND_ITERATIONS: u32 = 2500;
/// Bytes of HMAC kept as the digest share's check value.
pub const DIGEST_LEN: usize = 4;

fn round_function(
    round: u8,
    passphrase: &[u8],
    iteration_exponent: u8,
    salt_prefix: &[u8],
    r: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SharesError> {
    let iterations = BASE_ROUND_ITERATIONS
        .checked_shl(u32::from(iteration_exponent))
        .filter(|_| iteration_exponent <= 15)
        .and_then(NonZeroU32::new)
        .ok_or(SharesError::IterationExponent { exponent: iteration_exponent })?;
    let mut password = Zeroizing::new(Vec::with_capacity(1 + passphrase.len()));
    password.push(round);
    password.extend_from_slice(passphrase);
    let mut salt = Zeroizing::new(Vec::with_capacity(salt_prefix.len() + r.len()));
    salt.extend_from_slice(salt_prefix);
    salt.extend_from_slice(r);
    let mut out = Zeroizing::new(vec![0u8; r.len()]);
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, &salt, &password, &mut out);
    Ok(out)
}

/// Non-extendable sets bind the ciphertext to their identifier; extendable
/// ones do not, so more shares can later be made under a new identifier.
fn salt_prefix(identifier: u16, extendable: bool) -> Vec<u8> {
    if extendable {
        Vec::new()
    } else {
        let mut s = b"shamir".to_vec();
        s.extend_from_slice(&identifier.to_be_bytes());
        s
    }
}

fn feistel(
    input: &[u8],
    passphrase: &[u8],
    iteration_exponent: u8,
    identifier: u16,
    extendable: bool,
    rounds: impl Iterator<Item = u8>,
) -> Result<Zeroizing<Vec<u8>>, SharesError> {
    if input.is_empty() || !input.len().is_multiple_of(2) {
        return Err(SharesError::Internal("the Feistel cipher needs an even, non-empty length"));
    }
    let half = input.len() / 2;
    let prefix = salt_prefix(identifier, extendable);
    let mut l = Zeroizing::new(input[..half].to_vec());
    let mut r = Zeroizing::new(input[half..].to_vec());
    for round in rounds {
        let f = round_function(round, passphrase, iteration_exponent, &prefix, &r)?;
        let mut next_r = Zeroizing::new(vec![0u8; half]);
        for ((n, a), b) in next_r.iter_mut().zip(l.iter()).zip(f.iter()) {
            *n = a ^ b;
        }
        l = r;
        r = next_r;
    }
    let mut out = Zeroizing::new(Vec::with_capacity(input.len()));
    out.extend_from_slice(&r);
    out.extend_from_slice(&l);
    Ok(out)
}

/// Master secret to encrypted master secret (EMS).
pub fn encrypt(
    master_secret: &[u8],
    passphrase: &[u8],
    iteration_exponent: u8,
    identifier: u16,
    extendable: bool,
) -> Result<Zeroizing<Vec<u8>>, SharesError> {
    feistel(master_secret, passphrase, iteration_exponent, identifier, extendable, 0..ROUNDS)
}

/// Encrypted master secret back to the master secret.
pub fn decrypt(
    ems: &[u8],
    passphrase: &[u8],
    iteration_exponent: u8,
    identifier: u16,
    extendable: bool,
) -> Result<Zeroizing<Vec<u8>>, SharesError> {
    feistel(ems, passphrase, iteration_exponent, identifier, extendable, (0..ROUNDS).rev())
}

/// First bytes of HMAC-SHA256(key = random part, msg = shared secret).
pub fn digest(random_part: &[u8], shared_secret: &[u8]) -> Zeroizing<[u8; DIGEST_LEN]> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, random_part);
    let tag = hmac::sign(&key, shared_secret);
    let mut out = Zeroizing::new([0u8; DIGEST_LEN]);
    out.copy_from_slice(&tag.as_ref()[..DIGEST_LEN]);
    out
}

/// Checks a recovered digest share (check value followed by the random part)
/// against the recovered secret without an early exit on the first mismatch.
pub fn digest_matches(digest_share: &[u8], shared_secret: &[u8]) -> bool {
    if digest_share.len() < DIGEST_LEN {
        return false;
    }
    let (check, random_part) = digest_share.split_at(DIGEST_LEN);
    let expected = digest(random_part, shared_secret);
    constant_time::verify_slices_are_equal(check, expected.as_slice()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decrypt_inverts_encrypt() {
        let ms: Vec<u8> = (0u8..16).collect();
        for ext in [false, true] {
            let ems = encrypt(&ms, b"TREZOR", 0, 7, ext).expect("must succeed");
            assert_ne!(ems.as_slice(), ms.as_slice());
            assert_eq!(decrypt(&ems, b"TREZOR", 0, 7, ext).expect("must succeed").as_slice(), ms.as_slice());
            // A wrong passphrase still decrypts, to a different secret.
            assert_ne!(decrypt(&ems, b"trezor", 0, 7, ext).expect("must succeed").as_slice(), ms.as_slice());
        }
    }

    #[test]
    fn the_identifier_matters_only_when_not_extendable() {
        let ms = [0x42u8; 32];
        assert_eq!(
            encrypt(&ms, b"", 0, 1, true).expect("must succeed"),
            encrypt(&ms, b"", 0, 2, true).expect("must succeed")
        );
        assert_ne!(
            encrypt(&ms, b"", 0, 1, false).expect("must succeed"),
            encrypt(&ms, b"", 0, 2, false).expect("must succeed")
        );
    }

    #[test]
    fn odd_lengths_and_huge_exponents_are_refused() {
        assert!(encrypt(&[1, 2, 3], b"", 0, 0, true).is_err());
        assert!(encrypt(&[1, 2], b"", 16, 0, true).is_err());
    }

    #[test]
    fn digest_detects_a_changed_secret() {
        let random = [9u8; 12];
        let secret = [1u8; 16];
        let mut share = digest(&random, &secret).to_vec();
        share.extend_from_slice(&random);
        assert!(digest_matches(&share, &secret));
        let mut other = secret;
        other[15] ^= 1;
        assert!(!digest_matches(&share, &other));
    }
}
