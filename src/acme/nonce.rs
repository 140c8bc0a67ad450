//! Stateless, HMAC-authenticated anti-replay nonces.
//!
//! A nonce is `base64url(prefix ‖ issued_at ‖ counter ‖ tag)`: a 4-byte
//! instance prefix, the issue time in seconds and a per-instance counter
//! (both big-endian u64), and a 16-byte truncated HMAC-SHA256 over the rest
//! under a key every instance shares through the store. Any instance behind a
//! load balancer can therefore tell a nonce it or a sibling issued from a
//! forgery without a database read, and only a *redeemed* nonce costs a row
//! (in the used-nonce table, which expires with the nonce's window). This is
//! Boulder's design without its routing: the table makes single use hold
//! across instances.

use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use super::jws::{b64_decode, b64_encode};

const PREFIX_LEN: usize = 4;
const TAG_LEN: usize = 16;
const RAW_LEN: usize = PREFIX_LEN + 8 + 8 + TAG_LEN;
/// The encoded length: 36 bytes of base64url without padding.
pub const NONCE_LEN: usize = 48;

/// Issues and authenticates nonces. Redemption (single use) is the store's.
pub struct NonceService {
    key: hmac::Key,
    prefix: [u8; PREFIX_LEN],
    counter: AtomicU64,
    lifetime_secs: u64,
}

/// A nonce that authenticated and is within its window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidNonce {
    /// The unique part (prefix ‖ counter ‖ time), hex, for the used table.
    pub id: String,
    /// When the nonce stops being accepted (Unix seconds); the used-table row
    /// may be dropped after this.
    pub expires_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NonceError {
    /// The protected header has no `nonce`.
    #[error("the JWS carries no nonce")]
    Missing,
    /// Not a nonce of this store's key (forged, mangled, another server's).
    #[error("the nonce is not one this server issued")]
    Invalid,
    /// Older than the nonce lifetime.
    #[error("the nonce has expired")]
    Expired,
    /// Redeemed before (a replay).
    #[error("the nonce has already been used")]
    Used,
    /// The random number generator failed making the instance's prefix.
    #[error("random number generator failed")]
    Rng,
}

impl NonceService {
    /// `key` is the shared secret (at least 32 bytes) from the store.
    pub fn new(key: &[u8], lifetime_secs: u64) -> Result<Self, NonceError> {
        let mut prefix = [0u8; PREFIX_LEN];
        let mut start = [0u8; 8];
        let rng = SystemRandom::new();
        rng.fill(&mut prefix).map_err(|_| NonceError::Rng)?;
        // A random start keeps counters of restarted instances apart even
        // if two draws of the prefix collide.
        rng.fill(&mut start).map_err(|_| NonceError::Rng)?;
        Ok(NonceService {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            prefix,
            counter: AtomicU64::new(u64::from_be_bytes(start) >> 1),
            lifetime_secs,
        })
    }

    pub fn issue(&self, now: u64) -> String {
        let counter = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut raw = Vec::with_capacity(RAW_LEN);
        raw.extend_from_slice(&self.prefix);
        raw.extend_from_slice(&now.to_be_bytes());
        raw.extend_from_slice(&counter.to_be_bytes());
        let tag = hmac::sign(&self.key, &raw);
        raw.extend_from_slice(&tag.as_ref()[..TAG_LEN]);
        b64_encode(&raw)
    }

    /// Authenticates a nonce and checks its window; does not redeem it.
    pub fn check(&self, nonce: &str, now: u64) -> Result<ValidNonce, NonceError> {
        if nonce.len() != NONCE_LEN {
            return Err(NonceError::Invalid);
        }
        let raw = b64_decode("nonce", nonce).map_err(|_| NonceError::Invalid)?;
        if raw.len() != RAW_LEN {
            return Err(NonceError::Invalid);
        }
        let (body, tag) = raw.split_at(RAW_LEN - TAG_LEN);
        let expected = hmac::sign(&self.key, body);
        verify_slices_are_equal(&expected.as_ref()[..TAG_LEN], tag).map_err(|_| NonceError::Invalid)?;
        let mut t = [0u8; 8];
        t.copy_from_slice(&body[PREFIX_LEN..PREFIX_LEN + 8]);
        let issued = u64::from_be_bytes(t);
        let expires_at = issued.saturating_add(self.lifetime_secs);
        // A nonce from the future (clock skew between instances beyond a
        // minute) is as suspect as an old one.
        if now >= expires_at || issued > now.saturating_add(60) {
            return Err(NonceError::Expired);
        }
        Ok(ValidNonce { id: hex::encode(body), expires_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_check() {
        let svc = NonceService::new(&[7u8; 32], 600).map_err(|e| e.to_string());
        let Ok(svc) = svc else { panic!("nonce service") };
        let n = svc.issue(1000);
        assert_eq!(n.len(), NONCE_LEN);
        let ok = svc.check(&n, 1001);
        assert!(ok.is_ok());
        assert_eq!(svc.check(&n, 1600), Err(NonceError::Expired));
        let mut bad = n.clone().into_bytes();
        bad[10] = if bad[10] == b'A' { b'B' } else { b'A' };
        assert_eq!(svc.check(&String::from_utf8_lossy(&bad), 1001), Err(NonceError::Invalid));
        let other = NonceService::new(&[8u8; 32], 600).map_err(|e| e.to_string());
        let Ok(other) = other else { panic!("nonce service") };
        assert_eq!(other.check(&n, 1001), Err(NonceError::Invalid));
        assert_ne!(svc.issue(1000), svc.issue(1000));
    }
}
