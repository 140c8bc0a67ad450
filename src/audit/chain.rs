//! The entries a log writes for itself (key announcements, sealed
//! checkpoints), built from the log's moving end wherever its lines are
//! kept: [`super::AuditLog`] appends them to a file, acme-serve's issuance
//! log stores them in its database, in the transaction that takes their
//! sequence number. One construction, so both verify the same way.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{Map, Value};

use super::checkpoint;
use super::entry::{Artifact, Entry, Event, EVENT_CHECKPOINT, EVENT_KEY_ANNOUNCED};
use super::merkle::MerkleTree;
use super::verify::seal_message;
use super::AUDIT_STEP;
use crate::hsm::{self, HsmError, KeyAlgorithm, SignatureAlgorithm, Signer};
use crate::words::Fingerprint;

/// Why a self-written entry could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The key or the entry breaks a rule of the format; the text says which.
    #[error("{0}")]
    Rejected(String),
    /// The audit key failed to sign, or signed something that does not
    /// verify; `what` names the signature.
    #[error("{what} failed: {cause}")]
    Signer { what: String, cause: HsmError },
}

/// The `audit-key-announced` event for a key, with the facts a verifier
/// needs (name, algorithms, SPKI and its SHA-256, note key ID, signature
/// type), and the key's type and fingerprint.
pub fn announcement(
    name: &str,
    spki_der: &[u8],
    algorithm: SignatureAlgorithm,
) -> Result<(Event, KeyAlgorithm, Fingerprint), String> {
    checkpoint::check_key_name(name)?;
    let key_algorithm = hsm::spki_algorithm(spki_der).map_err(|e| format!("audit key {name:?}: {e}"))?;
    if !algorithm.fits(key_algorithm) {
        return Err(format!("audit key {name:?}: {algorithm} cannot be made with a {key_algorithm} key"));
    }
    let fingerprint = Fingerprint::sha256(spki_der);
    let mut details = Map::new();
    details.insert("name".into(), Value::from(name));
    details.insert("algorithm".into(), Value::from(algorithm.name()));
    details.insert("key_algorithm".into(), Value::from(key_algorithm.name()));
    details.insert("spki".into(), Value::from(B64.encode(spki_der)));
    details.insert("spki_sha256".into(), Value::from(fingerprint.hex.clone()));
    details.insert("note_key_id".into(), Value::from(hex::encode(checkpoint::key_id(name, spki_der, algorithm))));
    details.insert("signature_type".into(), Value::from(checkpoint::signature_type_label(algorithm)));
    let mut event = Event::new(AUDIT_STEP, EVENT_KEY_ANNOUNCED).output(Artifact::of("audit-public-key", spki_der));
    event.details = details;
    Ok((event, key_algorithm, fingerprint))
}

/// Signs a checkpoint over `tree` (every line so far) under `origin` and
/// returns the sealed checkpoint entry and its note. `entry_for` places the
/// event at the log's end (seq, prev, time, ceremony); the seal then covers
/// that very line.
pub fn sealed_checkpoint(
    origin: &str,
    tree: &MerkleTree,
    key_name: &str,
    signer: &dyn Signer,
    entry_for: impl FnOnce(Event) -> Entry,
) -> Result<(Entry, String), ChainError> {
    let size = tree.size();
    let root = tree.root();
    let body = checkpoint::checkpoint_body(origin, size, &root);
    let note = checkpoint::sign_note(&body, key_name, signer).map_err(|cause| ChainError::Signer {
        what: format!("signing checkpoint {size} with {}", signer.describe()),
        cause,
    })?;
    let mut event = Event::new(AUDIT_STEP, EVENT_CHECKPOINT).output(Artifact::of("checkpoint-note", note.as_bytes()));
    event.details.insert("key".into(), Value::from(key_name));
    event.details.insert("note".into(), Value::from(note.clone()));
    event.details.insert("root".into(), Value::from(hex::encode(root)));
    event.details.insert("size".into(), Value::from(size));
    let mut entry = entry_for(event);
    let message = seal_message(&entry).map_err(ChainError::Rejected)?;
    let seal = signer.sign(&message).map_err(|cause| ChainError::Signer {
        what: format!("sealing checkpoint entry {size} with {}", signer.describe()),
        cause,
    })?;
    hsm::verify_signature(signer.spki_der(), signer.signature_algorithm(), &message, &seal)
        .map_err(|cause| ChainError::Signer { what: format!("checking the seal from {}", signer.describe()), cause })?;
    entry.details.insert("seal".into(), Value::from(B64.encode(seal)));
    Ok((entry, note))
}
