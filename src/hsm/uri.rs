//! PKCS#11 URIs (RFC 7512).

/// Errors parsing a PKCS#11 URI.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    #[error("PKCS#11 URI {uri:?}: {what}")]
    Bad { uri: String, what: String },
}
