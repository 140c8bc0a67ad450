//! The issuance log: every certificate acme-serve has the intermediate
//! sign, every serial it retired without handing out a certificate, and
//! every revocation, as a hash-chained log in keyrite's audit format
//! (`docs/audit-format.md`), kept in the store itself.
//!
//! Each entry is written in the transaction that records what it says (the
//! certificate and its order, the revocation), taking its sequence number
//! and the previous line's hash from the log's end (the store's "head"
//! row). Several instances sharing one database therefore write one chain:
//! the transaction that takes a sequence number is the only one that can.
//!
//! Checkpoints are entries too: a signed note over the RFC 6962 Merkle root
//! of every line before it, by the intermediate host's dedicated audit key
//! (made beside the issuing key by `keyrite intermediate request`, never the
//! CA key), sealed like a ceremony's. acme-serve appends one at start, every
//! `checkpoint_interval` while the log grows, and at a clean shutdown. An
//! export (`keyrite acme issuance-log export`) is the log from its first
//! line to its latest checkpoint: every export is a prefix of every later
//! one, so an auditor holding an earlier export can check the next one
//! extends it, and `keyrite audit verify` checks either.

use std::io::Write;

use time::OffsetDateTime;

use super::model::Issuance;
use crate::audit::chain::{self, ChainError};
use crate::audit::entry::{self, Artifact, Entry, Event, GENESIS_PREV, TS_FORMAT};
use crate::audit::merkle::MerkleTree;
use crate::audit::origin_for;
use crate::hsm::{SignatureAlgorithm, Signer};
use crate::profile::lint::Finding;
use crate::words::{sha256_hex, Fingerprint};

/// The `step` of every entry acme-serve writes.
pub const STEP: &str = "acme-serve";
/// A certificate was signed and recorded.
pub const EVENT_ISSUED: &str = "certificate-issued";
/// A reserved serial was retired without a certificate being handed out.
pub const EVENT_ABANDONED: &str = "issuance-abandoned";
/// A certificate was revoked.
pub const EVENT_REVOKED: &str = "certificate-revoked";
/// The store's meta key holding the log's random identity.
pub const LOG_ID_META: &str = "issuance-log-id";

/// Why an entry could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The entry breaks a rule of the audit format (a field, a secret-looking
    /// detail); the text says which.
    #[error("issuance log entry refused: {0}")]
    Rejected(String),
    /// The audit key could not sign a checkpoint.
    #[error("issuance log checkpoint not signed: {0}")]
    Signer(String),
    /// The stored end of the log does not decode.
    #[error("the issuance log's stored end is damaged: {0}")]
    Head(String),
}

impl From<ChainError> for LogError {
    fn from(e: ChainError) -> Self {
        match e {
            ChainError::Rejected(r) => LogError::Rejected(r),
            signer @ ChainError::Signer { .. } => LogError::Signer(signer.to_string()),
        }
    }
}

/// The log's identity: the ceremony id every entry carries, which also
/// names its checkpoints' origin (`keyrite/<id>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogId(String);

impl LogId {
    /// The identity from the random bytes the store keeps for it.
    pub fn from_random(bytes: &[u8]) -> Self {
        LogId(format!("acme-issuance-{}", hex::encode(bytes)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The checkpoint origin, `keyrite/acme-issuance-…`.
    pub fn origin(&self) -> String {
        origin_for(&self.0)
    }

    /// The signed-note name of an audit key in this log: the origin and the
    /// start of the key's SHA-256, so a new key (a new intermediate) gets a
    /// new name and a name always means one key.
    pub fn key_name(&self, spki_der: &[u8]) -> String {
        format!("{}/{}", self.origin(), &sha256_hex(spki_der)[..16])
    }
}

/// The log's moving end: how many lines, the last line's hash, the compact
/// Merkle range, and where the last checkpoint is. The store keeps it in one
/// row beside the lines and updates it in every appending transaction.
#[derive(Debug, Clone)]
pub struct LogHead {
    pub size: u64,
    /// SHA-256 (hex) of the last line; 64 zeros for an empty log.
    pub prev: String,
    pub tree: MerkleTree,
    /// The seq of the last checkpoint entry, if there is one.
    pub last_checkpoint: Option<u64>,
    /// The audit key names announced so far.
    pub announced: Vec<String>,
}

impl Default for LogHead {
    fn default() -> Self {
        LogHead {
            size: 0,
            prev: GENESIS_PREV.to_string(),
            tree: MerkleTree::new(),
            last_checkpoint: None,
            announced: Vec::new(),
        }
    }
}

impl LogHead {
    /// The head from its stored columns.
    pub fn from_stored(
        size: u64,
        prev: String,
        range: &[u8],
        last_checkpoint: Option<u64>,
        announced: &str,
    ) -> Result<Self, LogError> {
        let tree = MerkleTree::from_bytes(range).map_err(LogError::Head)?;
        if tree.size() != size || !entry::is_sha256_hex(&prev) {
            return Err(LogError::Head(format!("size {size} and its Merkle range or previous hash disagree")));
        }
        let announced: Vec<String> =
            serde_json::from_str(announced).map_err(|e| LogError::Head(format!("announced keys: {e}")))?;
        Ok(LogHead { size, prev, tree, last_checkpoint, announced })
    }

    /// The announced key names as stored.
    pub fn announced_json(&self) -> String {
        serde_json::Value::from(self.announced.clone()).to_string()
    }

    /// Whether every line is covered by the last checkpoint (the log ends
    /// with one, or is empty).
    pub fn is_checkpointed(&self) -> bool {
        self.size == 0 || self.last_checkpoint == Some(self.size - 1)
    }
}

/// Appends entries to a head inside the caller's transaction; the caller
/// stores [`Self::into_lines`] and the updated head together.
pub struct LogAppender<'a> {
    head: &'a mut LogHead,
    id: &'a LogId,
    ts: String,
    lines: Vec<(u64, String)>,
}

impl<'a> LogAppender<'a> {
    /// Entries made by this appender carry the time `now` (to the second).
    pub fn new(head: &'a mut LogHead, id: &'a LogId, now: OffsetDateTime) -> Self {
        let ts = now.format(TS_FORMAT).unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string());
        LogAppender { head, id, ts, lines: Vec::new() }
    }

    pub fn head(&self) -> &LogHead {
        self.head
    }

    fn entry_for(&self, event: Event) -> Entry {
        Entry::at(event, self.head.size, self.ts.clone(), self.id.as_str().to_string(), self.head.prev.clone())
    }

    fn push(&mut self, entry: &Entry) -> Result<u64, LogError> {
        entry.check_fields().map_err(LogError::Rejected)?;
        let line = entry.to_line().map_err(LogError::Rejected)?;
        let seq = self.head.size;
        self.head.prev = sha256_hex(line.as_bytes());
        self.head.tree.push(line.as_bytes());
        self.head.size += 1;
        self.lines.push((seq, line));
        Ok(seq)
    }

    /// Appends an event (issued, abandoned, revoked); returns its seq.
    pub fn append(&mut self, event: Event) -> Result<u64, LogError> {
        entry::check_no_secrets(&event.details, "details").map_err(LogError::Rejected)?;
        let entry = self.entry_for(event);
        self.push(&entry)
    }

    /// Announces an audit key under `name` (see [`LogId::key_name`]).
    pub fn announce(&mut self, name: &str, spki_der: &[u8], algorithm: SignatureAlgorithm) -> Result<u64, LogError> {
        let (event, _, _) = chain::announcement(name, spki_der, algorithm).map_err(LogError::Rejected)?;
        let entry = self.entry_for(event);
        let seq = self.push(&entry)?;
        if !self.head.announced.iter().any(|n| n == name) {
            self.head.announced.push(name.to_string());
        }
        Ok(seq)
    }

    /// Signs and appends a checkpoint over every line so far with the
    /// announced audit key `key_name`; returns its seq.
    pub fn checkpoint(&mut self, key_name: &str, signer: &dyn Signer) -> Result<u64, LogError> {
        let origin = self.id.origin();
        let (entry, _note) =
            chain::sealed_checkpoint(&origin, &self.head.tree, key_name, signer, |event| self.entry_for(event))?;
        let seq = self.push(&entry)?;
        self.head.last_checkpoint = Some(seq);
        Ok(seq)
    }

    /// The new lines, in order, with their seqs.
    pub fn into_lines(self) -> Vec<(u64, String)> {
        self.lines
    }
}

fn names(issuance: &Issuance) -> Vec<String> {
    issuance.identifiers.iter().map(|i| format!("{}:{}", i.kind, i.value)).collect()
}

fn intent_event(event: &str, issuance: &Issuance) -> Event {
    let mut e = Event::new(STEP, event)
        .detail("serial", issuance.serial_hex.clone())
        .detail("kind", issuance.kind.name())
        .detail("names", names(issuance))
        .detail("not_before", super::model::rfc3339(issuance.not_before))
        .detail("not_after", super::model::rfc3339(issuance.not_after))
        .detail("spki_sha256", issuance.spki_sha256.clone());
    if let Some(o) = &issuance.order_id {
        e = e.detail("order", o.clone());
    }
    if let Some(a) = &issuance.account_id {
        e = e.detail("account", a.clone());
    }
    if let Some(p) = &issuance.profile {
        e = e.detail("profile", p.clone());
    }
    e
}

/// What the signer returned, as the log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedFacts {
    /// SHA-256 of the certificate DER.
    pub certificate_sha256: String,
    /// SHA-256 of the linted and signed TBSCertificate.
    pub tbs_sha256: String,
    /// Warning-level lint findings, as text.
    pub lint_warnings: Vec<String>,
}

impl SignedFacts {
    pub fn new(der: &[u8], tbs_sha256: &str, findings: &[Finding]) -> Self {
        SignedFacts {
            certificate_sha256: Fingerprint::sha256(der).hex,
            tbs_sha256: tbs_sha256.to_string(),
            lint_warnings: findings.iter().map(ToString::to_string).collect(),
        }
    }
}

/// `certificate-issued`: the intent, the certificate's and its TBS's
/// hashes, the lint warnings; `completed_later` when a restart completed
/// it from the certificate the interrupted finalize had stored.
pub fn issued_event(issuance: &Issuance, signed: &SignedFacts, completed_later: bool) -> Event {
    let mut e = intent_event(EVENT_ISSUED, issuance)
        .output(Artifact { name: "certificate".into(), sha256: signed.certificate_sha256.clone() })
        .detail("tbs_sha256", signed.tbs_sha256.clone())
        .detail("lint_warnings", signed.lint_warnings.clone());
    if completed_later {
        e = e.detail("completed_after_interruption", true);
    }
    e
}

/// `issuance-abandoned`: a serial retired without a certificate handed
/// out; `why` says what interrupted it. The serial may have been signed
/// (the process may have died after the signature), so an auditor counts
/// it among the serials the intermediate may have used.
pub fn abandoned_event(issuance: &Issuance, why: &str) -> Event {
    intent_event(EVENT_ABANDONED, issuance).detail("reason", why.to_string())
}

/// `certificate-revoked`: which serial, the RFC 5280 reason code, when,
/// and on whose authority (`account`, `authorized-account` or
/// `certificate-key`).
pub fn revoked_event(serial_hex: &str, reason: u8, revoked_at: i64, authority: &str) -> Event {
    Event::new(STEP, EVENT_REVOKED)
        .detail("serial", serial_hex.to_string())
        .detail("reason_code", u64::from(reason))
        .detail("revoked_at", super::model::rfc3339(revoked_at))
        .detail("authority", authority.to_string())
}

/// Writes lines to `out`, each followed by a newline (the file format's
/// line end), for a streaming export.
pub fn write_line(out: &mut dyn Write, line: &str) -> std::io::Result<()> {
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")
}
