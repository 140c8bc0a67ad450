//! `issuer.toml`: which certificate files and which keys acme-serve's
//! issuer is made of, as `keyrite intermediate install` wrote it. Parsed
//! strictly (unknown keys, a PIN in a key URI, a malformed fingerprint are
//! refused with the field named); paths are resolved against the file's
//! directory. Whether the files and keys are *right* (the chain, the pinned
//! root, the keys in the token) is checked by `intermediate::check_issuer`,
//! at install and at every acme-serve start.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::hsm::uri::Pkcs11Uri;
use crate::hsm::KeyAlgorithm;

/// The format line of the issuer configuration.
pub const ISSUER_FORMAT: &str = "keyrite-issuer-v1";

/// Where the issuing key lives, as `issuer.toml`'s `[key]` table says it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "kebab-case", deny_unknown_fields)]
pub enum IssuerKey {
    /// An RFC 7512 URI with token, serial, object, id, type=private and the
    /// module as `module-path`; never `pin-value` or `pin-source`.
    Pkcs11 { uri: String },
    /// A software key store directory and the key's label.
    Soft { dir: PathBuf, label: String },
}

/// `issuer.toml` as written: `keyrite intermediate install` fills it in,
/// [`IssuerConfig::load`] reads it back.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuerConfig {
    pub format: String,
    pub certificate: PathBuf,
    pub chain: PathBuf,
    pub root: PathBuf,
    pub root_sha256: String,
    pub certificate_sha256: String,
    pub key_algorithm: KeyAlgorithm,
    pub key: IssuerKey,
    /// The intermediate host's audit key (`intermediate::audit_key`);
    /// absent in issuers installed before audit keys, which acme-serve
    /// refuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_key: Option<IssuerKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_key_sha256: Option<String>,
}

impl RawIssuerConfig {
    /// The file's text, with a header saying who wrote it.
    pub fn to_toml(&self, path: &Path) -> Result<String, ConfigError> {
        let text = toml::to_string(self).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: format!("cannot serialise the issuer configuration: {e}"),
        })?;
        Ok(format!(
            "# keyrite issuer configuration, written by `keyrite intermediate install`.\n# Loaded by `keyrite acme-serve`; it names no PIN: the server's environment file says where the PIN comes from.\n{text}"
        ))
    }
}

/// `issuer.toml`, loaded and validated. Paths are resolved against the
/// file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerConfig {
    /// The file it was loaded from.
    pub path: PathBuf,
    pub certificate: PathBuf,
    pub chain: PathBuf,
    pub root: PathBuf,
    /// The pinned root's SHA-256 (lower-case hex of the DER).
    pub root_sha256: String,
    /// The intermediate certificate's SHA-256 (lower-case hex of the DER).
    pub certificate_sha256: String,
    pub key_algorithm: KeyAlgorithm,
    pub key: IssuerKey,
    /// The key's label in its store (the URI's `object`, or the soft label).
    pub key_label: String,
    /// The audit key's label and SPKI SHA-256, when `issuer.toml` names one
    /// (in the same store as the issuing key).
    pub audit_key: Option<(String, String)>,
}

impl IssuerConfig {
    /// Reads and validates `issuer.toml`: unknown keys, a wrong format, a
    /// malformed fingerprint, a PIN in the key URI or a URI without its
    /// module are refused with the field named.
    pub fn load(path: &Path) -> Result<IssuerConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let raw: RawIssuerConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: format!("not a keyrite issuer configuration: {}", e.to_string().trim_end().replace('\n', " ")),
        })?;
        let field = |field: &str, problem: String| ConfigError::invalid(path, field, problem);
        if raw.format != ISSUER_FORMAT {
            return Err(field("format", format!("{:?} is not {ISSUER_FORMAT:?}", raw.format)));
        }
        for (name, value) in [("root_sha256", &raw.root_sha256), ("certificate_sha256", &raw.certificate_sha256)] {
            if !crate::audit::entry::is_sha256_hex(value) {
                return Err(field(name, "must be 64 lower-case hex digits".into()));
            }
        }
        let key_label = stored_key_label(&raw.key, "key", &field)?;
        let audit_key = match (&raw.audit_key, &raw.audit_key_sha256) {
            (None, None) => None,
            (Some(audit), Some(sha)) => {
                let label = stored_key_label(audit, "audit_key", &field)?;
                if !crate::audit::entry::is_sha256_hex(sha) {
                    return Err(field("audit_key_sha256", "must be 64 lower-case hex digits".into()));
                }
                if !same_store(&raw.key, audit) {
                    return Err(field("audit_key", "must be in the same token or store as `key`".into()));
                }
                Some((label, sha.clone()))
            }
            _ => return Err(field("audit_key", "and audit_key_sha256 come together".into())),
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        Ok(IssuerConfig {
            path: path.to_path_buf(),
            certificate: resolve(raw.certificate),
            chain: resolve(raw.chain),
            root: resolve(raw.root),
            root_sha256: raw.root_sha256,
            certificate_sha256: raw.certificate_sha256,
            key_algorithm: raw.key_algorithm,
            key: raw.key,
            key_label,
            audit_key,
        })
    }
}

/// The label a `[key]`-like table names: the URI's `object`, or the soft
/// store's label; a PIN source, a missing module or token is refused.
fn stored_key_label(
    key: &IssuerKey,
    prefix: &str,
    field: &dyn Fn(&str, String) -> ConfigError,
) -> Result<String, ConfigError> {
    Ok(match key {
        IssuerKey::Pkcs11 { uri } => {
            // Parsing refuses pin-value without echoing it.
            let parsed = Pkcs11Uri::parse(uri).map_err(|e| field(&format!("{prefix}.uri"), e.to_string()))?;
            if parsed.pin_source.is_some() {
                return Err(field(
                    &format!("{prefix}.uri"),
                    "names a pin-source; the server's PIN comes from its own environment file, not issuer.toml".into(),
                ));
            }
            if parsed.module_path.is_none() {
                return Err(field(
                    &format!("{prefix}.uri"),
                    "has no module-path query attribute naming the PKCS#11 module".into(),
                ));
            }
            if parsed.token.is_none() {
                return Err(field(&format!("{prefix}.uri"), "names no token (token=...)".into()));
            }
            parsed.object.ok_or_else(|| field(&format!("{prefix}.uri"), "names no key (object=...)".into()))?
        }
        IssuerKey::Soft { dir, label } => {
            if !dir.is_absolute() {
                return Err(field(&format!("{prefix}.dir"), "must be an absolute path".into()));
            }
            if label.is_empty() {
                return Err(field(&format!("{prefix}.label"), "is empty".into()));
            }
            label.clone()
        }
    })
}

/// Whether two keys live in the same token (or software store).
fn same_store(a: &IssuerKey, b: &IssuerKey) -> bool {
    match (a, b) {
        (IssuerKey::Pkcs11 { uri: x }, IssuerKey::Pkcs11 { uri: y }) => {
            match (Pkcs11Uri::parse(x), Pkcs11Uri::parse(y)) {
                (Ok(x), Ok(y)) => x.token == y.token && x.serial == y.serial && x.module_path == y.module_path,
                _ => false,
            }
        }
        (IssuerKey::Soft { dir: x, .. }, IssuerKey::Soft { dir: y, .. }) => x == y,
        _ => false,
    }
}
