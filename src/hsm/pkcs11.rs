//! The PKCS#11 backend.

/// Errors from the PKCS#11 backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs11Error {
    #[error("PKCS#11: {0}")]
    Other(String),
}
