//! The `audit` room: a tamper-evident record of every ceremony.
//!
//! The log is a JSON Lines file, one canonical JSON entry per line
//! ([`canonical`]), appended and fsynced one entry at a time. Three layers
//! make tampering visible:
//!
//! 1. each entry carries `seq` (consecutive from 0) and `prev`, the SHA-256 of
//!    the line before it, so a deleted, reordered or edited line breaks the
//!    sequence or the chain at a precise place;
//! 2. checkpoint entries carry a C2SP signed note ([`checkpoint`]) over the
//!    RFC 6962 Merkle root ([`merkle`]) of every line before them, signed by a
//!    dedicated audit key the log itself announced, so rewriting the chain
//!    consistently still fails unless the audit key signs again;
//! 3. the final checkpoint's fingerprint goes on the paper log, and the key
//!    store that holds the audit key keeps its own records of each
//!    ceremony's checkpoint ([`anchor`]), so neither a holder of the audit
//!    key nor someone who swaps the whole directory for an older copy can
//!    rewrite history unnoticed. Which audit keys a log trusts comes from
//!    these pins, never from the log's own say-so ([`succession`] covers a
//!    key lost with its HSM).
//!
//! `docs/audit-format.md` describes the format for auditors.

pub mod anchor;
pub mod canonical;
pub mod chain;
pub mod checkpoint;
pub mod entry;
pub mod grade;
pub mod merkle;
pub mod paper;
pub mod succession;
mod verify;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub use entry::{Artifact, Entry, Event, Outcome};
pub use grade::{RehearsalReason, REHEARSAL_GRADE};
pub use verify::{origin_of, verify, verify_visiting, Ending, Trust, VerifyOptions, VerifyReport, MAX_LINE};

use crate::files::{self, FileError};
use crate::hsm::{HsmError, KeyAlgorithm, SignatureAlgorithm, Signer};
use crate::words::{self, Fingerprint};
use entry::{EVENT_CHECKPOINT, EVENT_KEY_ANNOUNCED, GENESIS_PREV};
use merkle::MerkleTree;
use succession::{QuorumKey, Succession, EVENT_QUORUM_KEY, EVENT_SUCCESSION};

/// The step name of entries the log writes for itself.
pub const AUDIT_STEP: &str = "audit";

/// Prefix of the message a checkpoint entry's `seal` signs, so the audit
/// key's signature over a line can never be mistaken for a note signature
/// (note texts start with the origin, `keyrite/…`).
pub const SEAL_CONTEXT: &[u8] = b"keyrite audit checkpoint entry v1\n";

/// The checkpoint origin for a log whose first entry belongs to
/// `first_ceremony_id`.
///
/// The origin names the log, not the current ceremony: a long-lived CA log
/// spans many ceremonies and tlog-checkpoint requires one log identity whose
/// checkpoints are all mutually consistent. The ceremony that created the
/// file therefore names it for life.
pub fn origin_for(first_ceremony_id: &str) -> String {
    format!("keyrite/{first_ceremony_id}")
}

/// What [`AuditLog::append`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    pub seq: u64,
    /// SHA-256 (hex) of the line without its newline: the next entry's `prev`.
    pub sha256: String,
}

/// An audit key announced in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnouncedKey {
    /// The signed-note key name.
    pub name: String,
    pub algorithm: SignatureAlgorithm,
    pub key_algorithm: KeyAlgorithm,
    pub spki_der: Vec<u8>,
    /// SHA-256 of the SPKI: what operators pin and read aloud.
    pub fingerprint: Fingerprint,
    /// The seq of the entry that announced it.
    pub seq: u64,
}

/// A signed checkpoint, as printed for the paper log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The seq of the "checkpoint" entry that holds it (equal to `size`).
    pub entry_seq: u64,
    /// Entries covered: seq 0 to size − 1.
    pub size: u64,
    pub root_hex: String,
    /// The full signed note (body, blank line, signature line).
    pub note_text: String,
    /// SHA-256 of `note_text`, in hex and words.
    pub fingerprint: Fingerprint,
    pub key_name: String,
}

/// Everything that can go wrong writing or verifying an audit log. Messages
/// name the file and, when known, the line (1-based) and seq, and say what
/// to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path}: {reason}; nothing was written")]
    Rejected { path: PathBuf, reason: String },
    #[error("{path}: event refused: {reason}; nothing was written")]
    SecretRefused { path: PathBuf, reason: String },
    #[error("{path}: {what} failed: {source}; nothing was written")]
    Signer {
        path: PathBuf,
        what: String,
        #[source]
        source: HsmError,
    },
    #[error("{path}: {reason}; checkpoints must be signed by the dedicated audit key announced in this log, never by a CA key")]
    WrongSigner { path: PathBuf, reason: String },
    #[error("{path}: an earlier write failed, so the file's end is unknown; stop, run `keyrite audit verify` on it, and record the incident on the paper log")]
    Poisoned { path: PathBuf },
    #[error("{path}: line {line}: {reason}; compare the file with its backup and the paper log's final checkpoint")]
    Malformed { path: PathBuf, line: u64, reason: String },
    #[error("{path}: line {line}: expected seq {expected} but found seq {found}: an entry was deleted, inserted or moved here; compare with the paper log's final checkpoint")]
    Sequence { path: PathBuf, line: u64, expected: u64, found: u64 },
    #[error("{path}: line {line} (seq {seq}) was altered: {reason}; compare it with a backup copy and the paper log's final checkpoint")]
    Altered { path: PathBuf, line: u64, seq: u64, reason: String },
    #[error(
        "{path}: line {line} (seq {seq}): {reason}; compare with a backup copy and the paper log's final checkpoint"
    )]
    Invalid { path: PathBuf, line: u64, seq: u64, reason: String },
    #[error("{path}: line {line} (seq {seq}): checkpoint fails: {reason}; compare with a backup copy and the paper log's checkpoints")]
    Checkpoint { path: PathBuf, line: u64, seq: u64, reason: String },
    #[error("{path}: log ends at entry {seq} (line {line}) without its closing checkpoint: the tail may have been cut ({reason}); compare with the paper log's final checkpoint and restore the tail from a backup")]
    NotClosed { path: PathBuf, line: u64, seq: u64, reason: String },
    #[error("{path}: {reason}; the log differs from what the paper log recorded: treat it as rewritten or truncated and restore it from a backup")]
    PaperMismatch { path: PathBuf, reason: String },
    #[error("{path}: line {line} (seq {seq}): ceremony {ceremony:?} was aborted before it had an audit key, so its entries from seq {from_seq} are not covered by a checkpoint (the log records the abort; this is not a cut tail); compare with the paper log's note of the abort")]
    AbortedUnsigned { path: PathBuf, line: u64, seq: u64, ceremony: String, from_seq: u64 },
    #[error("{path}: line {line} (seq {seq}): {reason}; trust comes from the paper log's audit key or checkpoint, the key store's records, or a custodian-authorised succession, never from a key the log announces for itself: treat those entries as forged until the paper log says otherwise")]
    Untrusted { path: PathBuf, line: u64, seq: u64, reason: String },
    #[error("{path}: entries seq {from_seq}..={to_seq} differ from the key store's record of this log: {reason}; the log was rewritten: restore it from a backup and compare it with the paper log")]
    Anchor { path: PathBuf, from_seq: u64, to_seq: u64, reason: String },
    #[error("{path}: {reason}: the log was cut back or restored from an older copy (the key store that holds the audit key remembers more); restore the newest copy of the log and compare it with the paper log")]
    AnchorAhead { path: PathBuf, entries: u64, reason: String },
    #[error("the {what} {value:?} cannot be used: {reason}")]
    PaperValue { what: &'static str, value: String, reason: String },
    #[error("{path}: {summary}, but nothing ties it to the paper record: no audit key pin (--audit-key-sha256, the paper's audit key box) and no paper checkpoint (--checkpoint) were given, so a log rewritten and re-signed under a fresh key would look the same; give a pin, or --unpinned to accept a check of the file's own consistency only")]
    NotPinned { path: PathBuf, summary: String },
}

impl AuditError {
    /// The 1-based line the error names, if any.
    pub fn line(&self) -> Option<u64> {
        match self {
            AuditError::Malformed { line, .. }
            | AuditError::Sequence { line, .. }
            | AuditError::Altered { line, .. }
            | AuditError::Invalid { line, .. }
            | AuditError::Checkpoint { line, .. }
            | AuditError::AbortedUnsigned { line, .. }
            | AuditError::Untrusted { line, .. }
            | AuditError::NotClosed { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// The seq of the entry the error names, if any (for a sequence break,
    /// the seq found on the line).
    pub fn seq(&self) -> Option<u64> {
        match self {
            AuditError::Sequence { found, .. } => Some(*found),
            AuditError::Altered { seq, .. }
            | AuditError::Invalid { seq, .. }
            | AuditError::Checkpoint { seq, .. }
            | AuditError::AbortedUnsigned { seq, .. }
            | AuditError::Untrusted { seq, .. }
            | AuditError::NotClosed { seq, .. } => Some(*seq),
            AuditError::Anchor { from_seq, .. } => Some(*from_seq),
            _ => None,
        }
    }
}

/// An audit log open for appending.
pub struct AuditLog {
    path: PathBuf,
    file: File,
    ceremony_id: String,
    origin: String,
    next_seq: u64,
    prev: String,
    tree: MerkleTree,
    keys: Vec<AnnouncedKey>,
    quorum_keys: Vec<QuorumKey>,
    /// Whether each entry is fsynced before `append` returns (the default)
    /// or only at checkpoints and [`AuditLog::sync`] (bulk export).
    sync_each: bool,
    poisoned: bool,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("ceremony_id", &self.ceremony_id)
            .field("len", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Creates a new, empty log for `ceremony_id`. The file must not exist.
    pub fn create(path: &Path, ceremony_id: &str) -> Result<Self, AuditError> {
        entry::check_ceremony_id(ceremony_id)
            .map_err(|reason| AuditError::Rejected { path: path.to_path_buf(), reason })?;
        let file =
            OpenOptions::new().append(true).create_new(true).mode(0o644).open(path).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => FileError::Exists { path: path.to_path_buf() },
                _ => FileError::io(path, "creating audit log", e),
            })?;
        // The new name must survive a crash too, or the first entries' fsyncs
        // protect a file nobody can find.
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| FileError::io(&dir, "fsync of directory", e))?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            file,
            ceremony_id: ceremony_id.to_string(),
            origin: origin_for(ceremony_id),
            next_seq: 0,
            prev: GENESIS_PREV.to_string(),
            tree: MerkleTree::new(),
            keys: Vec::new(),
            quorum_keys: Vec::new(),
            sync_each: true,
            poisoned: false,
        })
    }

    /// Opens an existing log to record a new ceremony, `ceremony_id`. The
    /// whole file is verified first, streaming (chain, checkpoints,
    /// signatures, and the pins and records in `options`), so a ceremony
    /// never builds on a tampered record; the report says how it ends and
    /// what the pins established.
    ///
    /// There is no default here: a caller that continues a log without
    /// pins says so with [`VerifyOptions::unpinned`].
    pub fn open_append(
        path: &Path,
        ceremony_id: &str,
        options: &VerifyOptions,
    ) -> Result<(Self, VerifyReport), AuditError> {
        entry::check_ceremony_id(ceremony_id)
            .map_err(|reason| AuditError::Rejected { path: path.to_path_buf(), reason })?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| FileError::io(path, "opening audit log", e))?;
        let scan = verify::scan(path, std::io::BufReader::with_capacity(1 << 16, &file), options, &mut |_| {})?;
        let origin = scan.origin.unwrap_or_else(|| origin_for(ceremony_id));
        let log = AuditLog {
            path: path.to_path_buf(),
            file,
            ceremony_id: ceremony_id.to_string(),
            origin,
            next_seq: scan.report.entries,
            prev: scan.prev,
            tree: scan.tree,
            keys: scan.report.audit_keys.clone(),
            quorum_keys: scan.report.quorum_keys.clone(),
            sync_each: true,
            poisoned: false,
        };
        Ok((log, scan.report))
    }

    /// For writing a whole log in bulk (an export of acme-serve's issuance
    /// records, a benchmark): entries are no longer fsynced one by one, only
    /// at each checkpoint and at [`Self::sync`]. A ceremony never uses this;
    /// an export that fails is discarded and run again.
    pub fn sync_at_checkpoints_only(mut self) -> Self {
        self.sync_each = false;
        self
    }

    /// Fsyncs what was written.
    pub fn sync(&mut self) -> Result<(), AuditError> {
        self.file.sync_data().map_err(|e| FileError::io(&self.path, "fsync", e).into())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of entries in the log (the next entry's seq).
    pub fn len(&self) -> u64 {
        self.next_seq
    }

    pub fn is_empty(&self) -> bool {
        self.next_seq == 0
    }

    pub fn ceremony_id(&self) -> &str {
        &self.ceremony_id
    }

    /// The checkpoint origin line; announce the audit key under this name to
    /// follow tlog-checkpoint's "key name SHOULD match the origin".
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The audit keys announced so far.
    pub fn audit_keys(&self) -> &[AnnouncedKey] {
        &self.keys
    }

    /// The custodians' quorum keys announced so far.
    pub fn quorum_keys(&self) -> &[QuorumKey] {
        &self.quorum_keys
    }

    /// The Merkle root (hex) of every entry so far.
    pub fn root_hex(&self) -> String {
        hex::encode(self.tree.root())
    }

    /// Appends `event`, fsynced before this returns.
    ///
    /// Refuses events whose details look secret, malformed names, and the
    /// event names this log reserves for itself ("audit-key-announced",
    /// "checkpoint"): those go through [`Self::announce_key`] and
    /// [`Self::checkpoint`], so a verifier can rely on their structure.
    pub fn append(&mut self, event: Event) -> Result<EntryInfo, AuditError> {
        let reserved = match event.event.as_str() {
            EVENT_CHECKPOINT => Some("checkpoint"),
            EVENT_KEY_ANNOUNCED => Some("announce_key"),
            EVENT_QUORUM_KEY => Some("announce_quorum_key"),
            EVENT_SUCCESSION => Some("record_succession"),
            _ => None,
        };
        if let Some(method) = reserved {
            return Err(self.rejected(format!("event name {:?} is reserved; use AuditLog::{method}", event.event)));
        }
        if let Err(reason) = entry::check_no_secrets(&event.details, "details") {
            return Err(AuditError::SecretRefused { path: self.path.clone(), reason });
        }
        let entry = self.entry_for(event);
        entry.check_fields().map_err(|r| self.rejected(r))?;
        self.write(&entry)
    }

    /// Announces the audit key that will sign this log's checkpoints, so the
    /// log itself tells a verifier which key to trust (operators also pin its
    /// fingerprint on paper). `name` becomes the signed-note key name;
    /// [`Self::origin`] is the conventional choice.
    pub fn announce_key(
        &mut self,
        name: &str,
        spki_der: &[u8],
        algorithm: SignatureAlgorithm,
    ) -> Result<AnnouncedKey, AuditError> {
        let (event, key_algorithm, fingerprint) =
            chain::announcement(name, spki_der, algorithm).map_err(|r| self.rejected(r))?;
        if let Some(k) = self.keys.iter().find(|k| k.name == name) {
            if k.spki_der != spki_der || k.algorithm != algorithm {
                return Err(self.rejected(format!(
                    "audit key name {name:?} was already announced (seq {}) for another key; choose a new name for a new key",
                    k.seq
                )));
            }
        }
        let entry = self.entry_for(event);
        let info = self.write(&entry)?;
        let key = AnnouncedKey {
            name: name.to_string(),
            algorithm,
            key_algorithm,
            spki_der: spki_der.to_vec(),
            fingerprint,
            seq: info.seq,
        };
        if !self.keys.iter().any(|k| k.name == name) {
            self.keys.push(key.clone());
        }
        Ok(key)
    }

    /// Announces the custodians' quorum key (see [`succession`]): the key
    /// whose signature names a successor when the audit key is lost. Does
    /// nothing if it is announced already.
    pub fn announce_quorum_key(&mut self, key: &QuorumKey) -> Result<Option<EntryInfo>, AuditError> {
        key.check().map_err(|r| self.rejected(format!("quorum key: {r}")))?;
        if self.quorum_keys.iter().any(|q| q.public_key_sha256 == key.public_key_sha256) {
            return Ok(None);
        }
        let spki = key.spki().map_err(|r| self.rejected(r))?;
        let mut event = Event::new(AUDIT_STEP, EVENT_QUORUM_KEY).output(Artifact::of("audit-quorum-public-key", &spki));
        event.details = key.to_details();
        let entry = self.entry_for(event);
        let info = self.write(&entry)?;
        self.quorum_keys.push(key.clone());
        Ok(Some(info))
    }

    /// Records a succession statement; refused unless it verifies under a
    /// quorum key this log announced.
    pub fn record_succession(&mut self, succession: &Succession) -> Result<EntryInfo, AuditError> {
        let quorum =
            self.quorum_keys.iter().find(|q| q.public_key_sha256 == succession.quorum_key_sha256).ok_or_else(|| {
                self.rejected(format!(
                    "the succession is signed by quorum key {}, which this log has not announced",
                    succession.quorum_key_sha256
                ))
            })?;
        succession.verify(quorum).map_err(|r| self.rejected(format!("succession: {r}")))?;
        let mut event = Event::new(AUDIT_STEP, EVENT_SUCCESSION);
        event.details = succession.to_details();
        let entry = self.entry_for(event);
        self.write(&entry)
    }

    /// Signs a checkpoint over every entry so far and appends it.
    ///
    /// `signer` must hold the audit key announced as `key_name`; any other
    /// key (in particular a CA key) is refused before it signs anything.
    pub fn checkpoint(&mut self, signer: &dyn Signer, key_name: &str) -> Result<Checkpoint, AuditError> {
        if self.poisoned {
            return Err(AuditError::Poisoned { path: self.path.clone() });
        }
        let Some(key) = self.keys.iter().find(|k| k.name == key_name) else {
            return Err(AuditError::WrongSigner {
                path: self.path.clone(),
                reason: format!("no audit key named {key_name:?} was announced in this log"),
            });
        };
        if signer.spki_der() != key.spki_der.as_slice() || signer.signature_algorithm() != key.algorithm {
            return Err(AuditError::WrongSigner {
                path: self.path.clone(),
                reason: format!(
                    "the signer ({}, public key SHA-256 {}) is not the audit key announced as {key_name:?} (SHA-256 {}, {})",
                    signer.describe(),
                    words::sha256_hex(signer.spki_der()),
                    key.fingerprint.hex,
                    key.algorithm
                ),
            });
        }
        let size = self.tree.size();
        let (entry, note) =
            chain::sealed_checkpoint(&self.origin, &self.tree, key_name, signer, |event| self.entry_for(event))
                .map_err(|e| match e {
                    chain::ChainError::Rejected(r) => self.rejected(r),
                    chain::ChainError::Signer { what, cause } => {
                        AuditError::Signer { path: self.path.clone(), what, source: cause }
                    }
                })?;
        let root_hex = hex::encode(self.tree.root());
        let info = self.write(&entry)?;
        Ok(Checkpoint {
            entry_seq: info.seq,
            size,
            root_hex,
            fingerprint: Fingerprint::sha256(note.as_bytes()),
            note_text: note,
            key_name: key_name.to_string(),
        })
    }

    fn rejected(&self, reason: String) -> AuditError {
        AuditError::Rejected { path: self.path.clone(), reason }
    }

    fn entry_for(&self, event: Event) -> Entry {
        Entry::at(event, self.next_seq, now_ts(), self.ceremony_id.clone(), self.prev.clone())
    }

    fn write(&mut self, entry: &Entry) -> Result<EntryInfo, AuditError> {
        if self.poisoned {
            return Err(AuditError::Poisoned { path: self.path.clone() });
        }
        let line = entry.to_line().map_err(|r| self.rejected(r))?;
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        let written = if self.sync_each || entry.event == EVENT_CHECKPOINT {
            files::append_line(&mut self.file, &self.path, &bytes)
        } else {
            std::io::Write::write_all(&mut self.file, &bytes).map_err(|e| FileError::io(&self.path, "appending", e))
        };
        if let Err(e) = written {
            // Part of the line may be on disk: appending more would hide that.
            self.poisoned = true;
            return Err(e.into());
        }
        let hash = words::sha256_hex(line.as_bytes());
        self.tree.push(line.as_bytes());
        self.prev = hash.clone();
        let seq = self.next_seq;
        self.next_seq += 1;
        Ok(EntryInfo { seq, sha256: hash })
    }
}

fn now_ts() -> String {
    let now = time::OffsetDateTime::now_utc();
    // Formatting a valid UTC time with a fixed description cannot fail for
    // years 0..=9999; fall back to the epoch rather than panic.
    now.format(entry::TS_FORMAT).unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}
