//! Records of a log kept outside the files an insider can edit.
//!
//! A log's own checkpoints prove that its lines were not changed after they
//! were signed, but not that the file is the latest one: the whole file can
//! be swapped for an older copy that still ends in a valid checkpoint, or
//! rewritten and re-signed by anyone who can use the audit key. So every
//! ceremony leaves records of where the log stood *outside* the log's
//! directory, in the key store that holds the audit key:
//!
//! * `started`: when a ceremony begins, the number of entries it found and
//!   their Merkle root;
//! * `closed` / `aborted`: the checkpoint that ended it (size, root, note
//!   SHA-256, the key that signed it).
//!
//! On a PKCS#11 token each record is a data object (`CKO_DATA`, application
//! [`APPLICATION`]) created non-modifiable and, where the token allows it,
//! non-destroyable: one object per record, so the history only grows. In the
//! software key store the records are lines of a file in the store's
//! directory. A later ceremony continues the log only if the log consistently
//! extends every record of it (see `docs/audit-format.md`).
//!
//! The same store also keeps two records about audit keys: the custodians'
//! quorum key (see [`super::succession`]) and the successions it authorised.

use serde::{Deserialize, Serialize};

use super::canonical::to_canonical_string;
use super::entry::{check_ceremony_id, is_sha256_hex};
use crate::words::sha256_hex;

/// `CKA_APPLICATION` of every record keyrite keeps on a token.
pub const APPLICATION: &str = "keyrite audit records v1";
/// `CKA_LABEL` of the quorum key records.
pub const QUORUM_LABEL: &str = "keyrite-audit-quorum-key";
/// `CKA_LABEL` of the succession records.
pub const SUCCESSION_LABEL: &str = "keyrite-audit-succession";

/// The prefix of every log's anchor record label.
pub const ANCHOR_LABEL_PREFIX: &str = "keyrite-audit-log-";

/// The `CKA_LABEL` of a log's anchor records: the origin's SHA-256, so that a
/// label stays short and free of characters a token might refuse.
pub fn anchor_label(origin: &str) -> String {
    format!("{ANCHOR_LABEL_PREFIX}{}", &sha256_hex(origin.as_bytes())[..32])
}

/// What a record marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnchorKind {
    /// A ceremony began: `size` is the number of entries it found.
    Started,
    /// A ceremony closed: `size` is its final checkpoint's tree size.
    Closed,
    /// A ceremony stopped on a failure and signed an abort checkpoint.
    Aborted,
}

impl AnchorKind {
    pub fn name(self) -> &'static str {
        match self {
            AnchorKind::Started => "started",
            AnchorKind::Closed => "closed",
            AnchorKind::Aborted => "aborted",
        }
    }
}

/// One record of where a log stood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchorRecord {
    /// Always "keyrite-audit-anchor-v1".
    pub format: String,
    /// The log's checkpoint origin (`keyrite/<first ceremony id>`).
    pub origin: String,
    pub kind: AnchorKind,
    pub ceremony_id: String,
    /// `started`: entries in the log; `closed`/`aborted`: the checkpoint's
    /// tree size (its entry is seq `size`).
    pub size: u64,
    /// Merkle root (hex) of the first `size` entries.
    pub root: String,
    /// `closed`/`aborted`: SHA-256 (hex) of the checkpoint's signed note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note_sha256: Option<String>,
    /// `closed`/`aborted`: SHA-256 of the SPKI of the key that signed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_sha256: Option<String>,
    /// When the record was made (UTC, to the second).
    pub ts: String,
    /// For a CA directory's log: SHA-256 of the CA's root certificate, so a
    /// store that holds the root key knows the CA has a log, whatever its
    /// name (a CA directory rolled back to before its log existed cannot
    /// start a new one unnoticed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_root_sha256: Option<String>,
}

/// The record format this code writes.
pub const ANCHOR_FORMAT: &str = "keyrite-audit-anchor-v1";

impl AnchorRecord {
    /// The record's bytes as stored: canonical JSON.
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let value = serde_json::to_value(self).map_err(|e| format!("cannot serialise anchor record: {e}"))?;
        Ok(to_canonical_string(&value).map_err(|e| e.0)?.into_bytes())
    }

    /// Parses and checks a stored record.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let record: AnchorRecord =
            serde_json::from_slice(bytes).map_err(|e| format!("not a keyrite anchor record: {e}"))?;
        if record.format != ANCHOR_FORMAT {
            return Err(format!("format {:?} is not {ANCHOR_FORMAT:?}", record.format));
        }
        check_ceremony_id(&record.ceremony_id)?;
        if !is_sha256_hex(&record.root) || record.ca_root_sha256.as_deref().is_some_and(|r| !is_sha256_hex(r)) {
            return Err("root and ca_root_sha256 must be 64 lowercase hex digits".into());
        }
        let ends = record.kind != AnchorKind::Started;
        match (&record.note_sha256, &record.key_sha256) {
            (Some(n), Some(k)) if ends && is_sha256_hex(n) && is_sha256_hex(k) => {}
            (None, None) if !ends => {}
            _ => {
                return Err(format!(
                    "a {} record {} note_sha256 and key_sha256 (64 lowercase hex digits)",
                    record.kind.name(),
                    if ends { "needs" } else { "has no" }
                ))
            }
        }
        Ok(record)
    }

    /// One line for messages: "closed by ceremony X at size N (ts)".
    pub fn describe(&self) -> String {
        format!("{} by ceremony {:?} at size {} ({})", self.kind.name(), self.ceremony_id, self.size, self.ts)
    }
}

/// Sorts a log's records into the order they were made: by size, a start
/// before the end at the same size.
pub fn sort_records(records: &mut [AnchorRecord]) {
    records.sort_by_key(|r| (r.size, r.kind != AnchorKind::Started));
}

/// The record that ended the latest ceremony, if any.
pub fn latest_end(records: &[AnchorRecord]) -> Option<&AnchorRecord> {
    records.iter().filter(|r| r.kind != AnchorKind::Started).max_by_key(|r| r.size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed() -> AnchorRecord {
        AnchorRecord {
            format: ANCHOR_FORMAT.into(),
            origin: "keyrite/root-r1-sign-intermediate".into(),
            kind: AnchorKind::Closed,
            ceremony_id: "root-r1-crl".into(),
            size: 40,
            root: "ab".repeat(32),
            note_sha256: Some("cd".repeat(32)),
            key_sha256: Some("ef".repeat(32)),
            ts: "2025-03-01T10:00:00Z".into(),
            ca_root_sha256: None,
        }
    }

    #[test]
    fn a_record_round_trips_through_its_canonical_bytes() {
        let r = closed();
        let bytes = r.to_bytes().expect("bytes");
        assert!(bytes.starts_with(b"{\"ceremony_id\":\"root-r1-crl\""));
        assert_eq!(AnchorRecord::parse(&bytes).expect("parse"), r);
        assert!(anchor_label(&r.origin).len() < 64);
    }

    #[test]
    fn records_missing_what_their_kind_needs_are_refused() {
        let mut r = closed();
        r.note_sha256 = None;
        assert!(AnchorRecord::parse(&r.to_bytes().expect("bytes")).expect_err("no note").contains("needs"));
        let mut r = closed();
        r.kind = AnchorKind::Started;
        assert!(AnchorRecord::parse(&r.to_bytes().expect("bytes")).expect_err("note on start").contains("has no"));
        assert!(AnchorRecord::parse(b"{}").is_err());
    }
}
