//! Audit key succession, authorised by a quorum of custodians.
//!
//! A log trusts the audit key the paper pins (or the paper checkpoint, or the
//! key store's records, vouch for), and any key announced in an entry that a
//! checkpoint of a trusted key covers. When the audit key is lost with its
//! HSM there is no trusted key left to vouch for a new one; the restore
//! ceremony, which makes the new key, is the one moment a quorum of
//! custodians is in the room with the backup's key-encryption key (KEK)
//! rebuilt.
//!
//! So the root ceremony that splits the KEK derives from it an Ed25519
//! **quorum key** (HKDF-SHA256, see `hsm::soft::QuorumKey`) and announces
//! its public key in the log (`audit-quorum-key-announced`), covered by the
//! ceremony's checkpoints like any entry; every CA ceremony announces it in
//! the CA's log too, from the record the key store keeps. Only whoever
//! rebuilds the KEK, a quorum, can sign with it. A restore derives it again
//! and signs a **succession statement** naming the new audit key; a log that
//! trusts the quorum key records the statement (`audit-key-succession`) and
//! trusts the named key from that entry on.
//!
//! An auditor checks a succession with the log alone: the quorum key's
//! announcement is covered by a checkpoint of a key the paper pins, and the
//! statement's Ed25519 signature verifies under it (`keyrite audit verify`
//! does both and lists the succession).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::entry::{check_ceremony_id, is_sha256_hex, Entry};
use crate::hsm::ed25519_raw;
use crate::words::sha256_hex;

/// The entry that announces a quorum key.
pub const EVENT_QUORUM_KEY: &str = "audit-quorum-key-announced";
/// The entry that records a succession statement.
pub const EVENT_SUCCESSION: &str = "audit-key-succession";

/// A quorum key, as announced in a log and kept in the key store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuorumKey {
    /// Always "keyrite-audit-quorum-key-v1".
    pub format: String,
    /// Base64 DER SubjectPublicKeyInfo (Ed25519).
    pub public_key: String,
    /// SHA-256 (hex) of the SPKI.
    pub public_key_sha256: String,
    /// The ceremony that split the KEK it is derived from.
    pub ceremony_id: String,
    /// The SLIP-0039 set of that KEK.
    pub set_identifier: u64,
}

pub const QUORUM_FORMAT: &str = "keyrite-audit-quorum-key-v1";
pub const SUCCESSION_FORMAT: &str = "keyrite-audit-succession-v1";

impl QuorumKey {
    pub fn new(spki: &[u8], ceremony_id: &str, set_identifier: u16) -> Self {
        QuorumKey {
            format: QUORUM_FORMAT.into(),
            public_key: B64.encode(spki),
            public_key_sha256: sha256_hex(spki),
            ceremony_id: ceremony_id.into(),
            set_identifier: u64::from(set_identifier),
        }
    }

    pub fn spki(&self) -> Result<Vec<u8>, String> {
        B64.decode(&self.public_key).map_err(|e| format!("public_key is not base64: {e}"))
    }

    /// Checks the fields agree with each other.
    pub fn check(&self) -> Result<(), String> {
        if self.format != QUORUM_FORMAT {
            return Err(format!("format {:?} is not {QUORUM_FORMAT:?}", self.format));
        }
        let spki = self.spki()?;
        ed25519_raw(&spki)?;
        if sha256_hex(&spki) != self.public_key_sha256 {
            return Err("public_key_sha256 is not the SHA-256 of public_key".into());
        }
        check_ceremony_id(&self.ceremony_id)
    }

    pub fn to_details(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    /// The record's bytes as the key store keeps them: canonical JSON.
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let value = serde_json::to_value(self).map_err(|e| format!("cannot serialise quorum key: {e}"))?;
        Ok(super::canonical::to_canonical_string(&value).map_err(|e| e.0)?.into_bytes())
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let key: QuorumKey =
            serde_json::from_slice(bytes).map_err(|e| format!("not a keyrite quorum key record: {e}"))?;
        key.check()?;
        Ok(key)
    }

    pub fn from_entry(entry: &Entry) -> Result<Self, String> {
        let key: QuorumKey = serde_json::from_value(Value::Object(entry.details.clone()))
            .map_err(|e| format!("the quorum key announcement is malformed: {e}"))?;
        key.check()?;
        Ok(key)
    }
}

/// A statement, signed by a quorum key, that names a new audit key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Succession {
    /// Always "keyrite-audit-succession-v1".
    pub format: String,
    /// SHA-256 of the quorum key's SPKI.
    pub quorum_key_sha256: String,
    /// SHA-256 of the new audit key's SPKI.
    pub audit_key_sha256: String,
    /// The ceremony in which the custodians authorised it.
    pub ceremony_id: String,
    /// The signed text (see [`Succession::statement`]).
    pub statement: String,
    /// Base64 Ed25519 signature over `statement`.
    pub signature: String,
}

impl Succession {
    /// The exact text the quorum key signs.
    pub fn statement(quorum_key_sha256: &str, audit_key_sha256: &str, ceremony_id: &str) -> String {
        format!(
            "keyrite audit key succession v1\nquorum-key {quorum_key_sha256}\naudit-key {audit_key_sha256}\nceremony {ceremony_id}\n"
        )
    }

    pub fn new(quorum_key_sha256: &str, audit_key_sha256: &str, ceremony_id: &str, signature: &[u8]) -> Self {
        Succession {
            format: SUCCESSION_FORMAT.into(),
            quorum_key_sha256: quorum_key_sha256.into(),
            audit_key_sha256: audit_key_sha256.into(),
            ceremony_id: ceremony_id.into(),
            statement: Self::statement(quorum_key_sha256, audit_key_sha256, ceremony_id),
            signature: B64.encode(signature),
        }
    }

    /// Checks the fields agree and the signature verifies under `quorum`.
    pub fn verify(&self, quorum: &QuorumKey) -> Result<(), String> {
        if self.format != SUCCESSION_FORMAT {
            return Err(format!("format {:?} is not {SUCCESSION_FORMAT:?}", self.format));
        }
        if !is_sha256_hex(&self.quorum_key_sha256) || !is_sha256_hex(&self.audit_key_sha256) {
            return Err("quorum_key_sha256 and audit_key_sha256 must be 64 lowercase hex digits".into());
        }
        check_ceremony_id(&self.ceremony_id)?;
        if self.statement != Self::statement(&self.quorum_key_sha256, &self.audit_key_sha256, &self.ceremony_id) {
            return Err("the statement does not say what its fields say".into());
        }
        if quorum.public_key_sha256 != self.quorum_key_sha256 {
            return Err(format!(
                "it is signed for quorum key {}, not {}",
                self.quorum_key_sha256, quorum.public_key_sha256
            ));
        }
        let spki = quorum.spki()?;
        let raw = ed25519_raw(&spki)?;
        let signature = B64.decode(&self.signature).map_err(|e| format!("signature is not base64: {e}"))?;
        aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, raw)
            .verify(self.statement.as_bytes(), &signature)
            .map_err(|_| format!("its signature does not verify under quorum key {}", self.quorum_key_sha256))
    }

    pub fn to_details(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    pub fn from_entry(entry: &Entry) -> Result<Self, String> {
        serde_json::from_value(Value::Object(entry.details.clone()))
            .map_err(|e| format!("the succession entry is malformed: {e}"))
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not a keyrite succession record: {e}"))
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let value = serde_json::to_value(self).map_err(|e| format!("cannot serialise succession: {e}"))?;
        Ok(super::canonical::to_canonical_string(&value).map_err(|e| e.0)?.into_bytes())
    }
}
