//! Secrets in memory: PINs, passphrases, share words and key bytes.
//!
//! A [`Secret`] zeroizes its buffer when dropped and prints as `[redacted]`,
//! so a secret that strays into a `Debug` or an error message shows nothing.
//! It deliberately implements neither `Display` nor `Serialize`.

use std::fmt;

use zeroize::Zeroizing;

/// Bytes that must never be logged, printed, or left in memory after use.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }

    /// Takes a string (a typed PIN or passphrase) without keeping a copy.
    pub fn from_string(s: String) -> Self {
        Secret(Zeroizing::new(s.into_bytes()))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret as UTF-8, for PKCS#11 PINs (which `cryptoki` takes as text).
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares two secrets in time independent of where they differ.
    pub fn ct_eq(&self, other: &Secret) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.0, &other.0).is_ok()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}
