//! The intermediate host's audit key.
//!
//! acme-serve records every certificate it issues in an issuance log
//! (`acme::issuance_log`) whose checkpoints must be signed by a dedicated
//! audit key, never by the CA key: a key that signs certificates must not
//! also vouch for the record of what it signed. `keyrite intermediate
//! request` therefore makes a second key beside the issuing key, in the
//! same token (or software store), labelled `<issuing label>-audit`: ECDSA
//! P-256 with SHA-256, signed-note type `0x02`, which standard checkpoint
//! verifiers accept (`docs/audit-format.md`). It never leaves the store,
//! is recorded in `request.json`, named in `issuer.toml` with its SPKI
//! SHA-256 (the fingerprint an auditor pins: `keyrite audit verify
//! --audit-key-sha256`), and re-checked by acme-serve at every start.

use super::IntermediateError;
use crate::hsm::keystore::{GeneratedKey, KeyStore};
use crate::hsm::{KeyAlgorithm, SignatureAlgorithm};
use crate::words;

/// The audit key's type: P-256, signed-note type `0x02`.
pub const ALGORITHM: KeyAlgorithm = KeyAlgorithm::EcdsaP256;
pub const SIGNATURE: SignatureAlgorithm = SignatureAlgorithm::EcdsaSha256;

/// The audit key's label for an issuing key labelled `issuing`.
pub fn label_for(issuing: &str) -> String {
    format!("{issuing}-audit")
}

/// Checks, before anything is generated, that the audit key can be made.
pub fn check_new(store: &KeyStore, label: &str) -> Result<(), IntermediateError> {
    Ok(store.check_new_key(label, ALGORITHM, SIGNATURE)?)
}

/// Generates the audit key.
pub fn generate<'s>(store: &'s KeyStore, label: &str) -> Result<GeneratedKey<'s>, IntermediateError> {
    Ok(store.generate(label, ALGORITHM, SIGNATURE)?)
}

/// Finds the audit key `label` and checks it is the recorded key
/// (`expected_sha256`, hex of its SPKI) and not the CA key. Returns it.
pub fn find<'s>(
    store: &'s KeyStore,
    label: &str,
    expected_sha256: &str,
    ca_spki: &[u8],
    what: &std::path::Path,
) -> Result<GeneratedKey<'s>, IntermediateError> {
    let key = store.find(label, Some(SIGNATURE))?;
    let found = words::sha256_hex(key.signer.spki_der());
    let field = |problem: String| IntermediateError::Config {
        path: what.to_path_buf(),
        field: "audit_key_sha256".into(),
        problem,
    };
    if found != expected_sha256 {
        return Err(field(format!(
            "audit key {label:?} in the store has SHA-256 {found}, not the recorded {expected_sha256}: the key was replaced"
        )));
    }
    if key.signer.spki_der() == ca_spki {
        return Err(field(format!("audit key {label:?} is the issuing key; the audit key must be a key of its own")));
    }
    Ok(key)
}
