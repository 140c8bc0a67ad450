//! Offline verification of an audit log, one line at a time.
//!
//! The verifier streams: it reads a line, checks it, folds it into the
//! Merkle tree's compact range and forgets it. What it keeps is small and
//! does not grow with the entries: the previous line's hash, the compact
//! range, the announced keys, the last checkpoint and the anchors still to
//! meet. A year of acme-serve issuance (tens of millions of entries) is
//! verified in the memory of a few lines. [`super::AuditLog::open_append`]
//! runs the same code before it continues a log.
//!
//! Each line is checked in this order, and the first failure names its line
//! (1-based) and seq:
//!
//! 1. it is complete, parses as canonical JSON, has a known `v`, and has
//!    `seq` equal to its position (a deleted, inserted or moved line shows
//!    here);
//! 2. its `prev` is the SHA-256 of the line before (an edited byte shows
//!    here; see [`Verifier::chain_break`] for how the edited line is named);
//! 3. audit-key and quorum-key announcements are well formed; a checkpoint's
//!    origin, size and Merkle root match the lines before it, its note
//!    verifies under an announced key and its `seal` covers the checkpoint
//!    line itself; a succession statement verifies under its quorum key;
//! 4. the key store's records of this log (see [`super::anchor`]) agree with
//!    the tree when it reaches their size.
//!
//! Trust is decided alongside (see `docs/audit-format.md`, "What is
//! pinned"): a checkpoint counts only when its key is trusted (pinned on
//! paper, announced in an entry a trusted checkpoint covers, or named by a
//! custodian-authorised succession) or when the paper or the key store
//! vouches for that very checkpoint. At the end: every paper value and
//! store record was met, everything up to the last checkpoint is covered by
//! a trusted one, and, with `expect_closed`, the last ceremony ended with
//! its checkpoint (closed or aborted).

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::Value;

use super::anchor::{AnchorKind, AnchorRecord};
use super::checkpoint::{self, CheckpointBody, NoteKey, SignedNote};
use super::entry::{
    Entry, EVENT_CEREMONY_ABORTED, EVENT_CEREMONY_CLOSED, EVENT_CHECKPOINT, EVENT_KEY_ANNOUNCED, GENESIS_PREV,
};
use super::merkle::{leaf_hash, MerkleTree};
use super::paper::{PaperCheckpoint, PaperDigest};
use super::succession::{QuorumKey, Succession, EVENT_QUORUM_KEY, EVENT_SUCCESSION};
use super::{origin_for, AnnouncedKey, AuditError, Checkpoint, SEAL_CONTEXT};
use crate::files::FileError;
use crate::hsm::{self, SignatureAlgorithm};
use crate::words::{sha256, Fingerprint};

/// The longest line the verifier reads: entries are a few hundred bytes; a
/// file without newlines must not be read into memory whole.
pub const MAX_LINE: usize = 1 << 20;

/// What the verifier should insist on beyond the log's own consistency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// SHA-256 of audit keys' SPKI from the paper log's audit key box: hex
    /// (any case, colons allowed) or words, full or at least 128 bits.
    pub pinned_audit_keys: Vec<String>,
    /// SHA-256 (hex) of audit keys trusted wherever they sign, without
    /// being required to appear: the audit key of the key store whose
    /// records anchor the log (a pin, by contrast, must be announced).
    pub trusted_audit_keys: Vec<String>,
    /// Checkpoints from the paper log: the note copied whole, its body, or
    /// its note SHA-256 (words or hex) or tree root (hex), full or at least
    /// 128 bits. Each must be a checkpoint of the log.
    pub paper_checkpoints: Vec<String>,
    /// The key store's records of this log; the log must extend every one.
    pub anchors: Vec<AnchorRecord>,
    /// The last ceremony must have ended with its checkpoint: closed, or
    /// aborted after its audit key existed.
    pub expect_closed: bool,
    /// Accept a log nothing pins, checking only its own consistency. Without
    /// this, a verification with no pin, paper checkpoint or record fails
    /// with [`AuditError::NotPinned`] after all other checks pass.
    pub unpinned: bool,
}

impl VerifyOptions {
    /// A check of the file's own consistency only, asked for explicitly.
    pub fn unpinned() -> Self {
        VerifyOptions { unpinned: true, ..VerifyOptions::default() }
    }
}

/// How the log ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Empty,
    /// "ceremony-closed" followed by the ceremony's final checkpoint.
    Closed {
        ceremony: String,
    },
    /// "ceremony-aborted" followed by the ceremony's abort checkpoint.
    Aborted {
        ceremony: String,
    },
    /// "ceremony-aborted" with no checkpoint after it: the ceremony failed
    /// before it had an audit key, so its entries are not signed.
    AbortedUnsigned {
        ceremony: String,
        from_seq: u64,
    },
    /// Entries after the last ending checkpoint (from `from_seq`, where the
    /// ceremony began) without a closing one: a ceremony still running,
    /// interrupted (a crash), or a tail that was cut.
    Open {
        ceremony: String,
        from_seq: u64,
    },
}

impl Ending {
    /// Whether the last ceremony ended with its checkpoint.
    pub fn is_ended(&self) -> bool {
        matches!(self, Ending::Closed { .. } | Ending::Aborted { .. })
    }

    pub fn describe(&self) -> String {
        match self {
            Ending::Empty => "empty".into(),
            Ending::Closed { ceremony } => format!("closed (ceremony {ceremony:?} ended with its final checkpoint)"),
            Ending::Aborted { ceremony } => {
                format!("aborted (ceremony {ceremony:?} stopped on a failure and signed an abort checkpoint)")
            }
            Ending::AbortedUnsigned { ceremony, from_seq } => format!(
                "aborted before its audit key existed (ceremony {ceremony:?}; entries from seq {from_seq} are not signed)"
            ),
            Ending::Open { ceremony, from_seq } => {
                format!("open (ceremony {ceremony:?} has entries from seq {from_seq} but no closing checkpoint)")
            }
        }
    }
}

/// What the pins established.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trust {
    /// Whether anything outside the file pinned it (audit key pins, paper
    /// checkpoints or key store records).
    pub pinned: bool,
    /// SHA-256 of the audit keys trusted by the end of the log.
    pub trusted_keys: Vec<String>,
    /// Entries covered by a checkpoint of a trusted key, or by a checkpoint
    /// the paper or the key store vouches for.
    pub trusted_size: u64,
    /// SHA-256 of the custodians' quorum keys the log trusts.
    pub quorum_keys: Vec<String>,
    /// (seq, SHA-256 of the new audit key) of each succession recorded.
    pub successions: Vec<(u64, String)>,
    /// The sizes of the checkpoints the paper values matched, in the order
    /// the values were given.
    pub paper_matched: Vec<u64>,
    /// The sizes of the key store's records met.
    pub anchors_matched: Vec<u64>,
}

/// What a successful verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub entries: u64,
    pub checkpoints: u64,
    /// `keyrite/<first ceremony id>`, when the log has an entry.
    pub origin: Option<String>,
    /// Ceremony IDs in order of first appearance.
    pub ceremonies: Vec<String>,
    pub last_checkpoint: Option<Checkpoint>,
    /// SHA-256 of the key that signed the last checkpoint.
    pub last_checkpoint_key: Option<String>,
    pub audit_keys: Vec<AnnouncedKey>,
    /// Quorum keys announced (trusted or not; see [`Trust::quorum_keys`]).
    pub quorum_keys: Vec<QuorumKey>,
    /// Entries after the last checkpoint: protected by the hash chain only,
    /// not yet by a signature.
    pub uncovered_entries: u64,
    /// Whether the last ceremony ended with its checkpoint (closed or
    /// aborted).
    pub closed: bool,
    pub ending: Ending,
    /// The size of the last checkpoint that ended a ceremony (closed or
    /// aborted).
    pub last_end_size: Option<u64>,
    /// The ceremonies of the entries after the last ending checkpoint, in
    /// order, and whether the first of them is a "ceremony-started".
    pub tail_ceremonies: Vec<String>,
    pub tail_starts_a_ceremony: bool,
    pub trust: Trust,
    /// The rehearsal aids the log records (see [`super::grade`]); empty when
    /// it records none. Any reason makes the log rehearsal-grade.
    pub rehearsal_grade: Vec<super::RehearsalReason>,
}

/// Verifies the audit log at `path` offline. See the module documentation
/// for what is checked and in which order.
pub fn verify(path: &Path, options: &VerifyOptions) -> Result<VerifyReport, AuditError> {
    verify_visiting(path, options, &mut |_| {})
}

/// Like [`verify`], and shows each entry to `visit` once it has passed the
/// line, chain and checkpoint checks (before the log is known to end well:
/// act on what was visited only when this returns `Ok`).
pub fn verify_visiting(
    path: &Path,
    options: &VerifyOptions,
    visit: &mut dyn FnMut(&Entry),
) -> Result<VerifyReport, AuditError> {
    let file = std::fs::File::open(path).map_err(|e| FileError::io(path, "reading audit log", e))?;
    Ok(scan(path, std::io::BufReader::with_capacity(1 << 16, file), options, visit)?.report)
}

/// The first entry's ceremony id names the log; `None` for an empty file.
pub fn origin_of(path: &Path) -> Result<Option<String>, AuditError> {
    let file = std::fs::File::open(path).map_err(|e| FileError::io(path, "reading audit log", e))?;
    let mut reader = std::io::BufReader::new(file);
    let mut line = Vec::new();
    match read_line(&mut reader, &mut line).map_err(|e| FileError::io(path, "reading audit log", e))? {
        LineRead::Eof => Ok(None),
        LineRead::Line | LineRead::Partial | LineRead::TooLong => {
            let (entry, _) = Entry::parse_line(&line).map_err(|reason| AuditError::Malformed {
                path: path.to_path_buf(),
                line: 1,
                reason,
            })?;
            Ok(Some(origin_for(&entry.ceremony_id)))
        }
    }
}

/// The verified state, which [`super::AuditLog::open_append`] continues from.
pub(crate) struct Scan {
    pub report: VerifyReport,
    pub tree: MerkleTree,
    pub prev: String,
    pub origin: Option<String>,
}

/// The message a checkpoint entry's `seal` signs: the context string and the
/// entry's canonical line without `details.seal`.
pub(crate) fn seal_message(entry: &Entry) -> Result<Vec<u8>, String> {
    let mut unsealed = entry.clone();
    unsealed.details.remove("seal");
    let mut message = SEAL_CONTEXT.to_vec();
    message.extend_from_slice(unsealed.to_line()?.as_bytes());
    Ok(message)
}

enum LineRead {
    Eof,
    /// A line, its newline removed.
    Line,
    /// The file ended without a newline.
    Partial,
    TooLong,
}

/// Reads one line into `buf` without ever holding more than [`MAX_LINE`].
fn read_line(reader: &mut dyn BufRead, buf: &mut Vec<u8>) -> std::io::Result<LineRead> {
    buf.clear();
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(if buf.is_empty() { LineRead::Eof } else { LineRead::Partial });
        }
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if buf.len() + chunk.len() > MAX_LINE {
            return Ok(LineRead::TooLong);
        }
        buf.extend_from_slice(chunk);
        match done {
            Some(n) => {
                reader.consume(n);
                return Ok(LineRead::Line);
            }
            None => {
                let n = chunk.len();
                reader.consume(n);
            }
        }
    }
}

/// Runs the verifier over a reader. `visit` sees each entry that passed.
pub(crate) fn scan(
    path: &Path,
    mut reader: impl BufRead,
    options: &VerifyOptions,
    visit: &mut dyn FnMut(&Entry),
) -> Result<Scan, AuditError> {
    let mut v = Verifier::new(path, options)?;
    let io = |e| AuditError::File(FileError::io(path, "reading audit log", e));
    let mut current = Vec::new();
    let mut next = Vec::new();
    let mut state = read_line(&mut reader, &mut current).map_err(io)?;
    let mut n: u64 = 0;
    loop {
        match state {
            LineRead::Eof => break,
            LineRead::TooLong => {
                return Err(AuditError::Malformed {
                    path: path.to_path_buf(),
                    line: n + 1,
                    reason: format!("the line is longer than {MAX_LINE} bytes: this is not an audit log line"),
                })
            }
            LineRead::Partial => return Err(AuditError::Malformed {
                path: path.to_path_buf(),
                line: n + 1,
                reason:
                    "the last line has no newline: the file was cut mid-line (a crash during a write, or a truncation)"
                        .into(),
            }),
            LineRead::Line => {}
        }
        n += 1;
        let next_state = read_line(&mut reader, &mut next).map_err(io)?;
        let lookahead = matches!(next_state, LineRead::Line).then_some(next.as_slice());
        let entry = v.line(n, &current, lookahead)?;
        visit(&entry);
        std::mem::swap(&mut current, &mut next);
        state = next_state;
    }
    v.finish()
}

/// A checkpoint by a key not (yet) trusted, remembered until something
/// vouches for it or the end shows nothing will.
#[derive(Debug, Clone)]
struct Untrusted {
    line: u64,
    seq: u64,
    key_name: String,
    key_sha256: String,
    announced_at: u64,
}

struct Verifier<'o> {
    path: PathBuf,
    options: &'o VerifyOptions,
    pins: Vec<(PaperDigest, bool)>,
    paper: Vec<(PaperCheckpoint, Option<u64>)>,
    anchors: Vec<AnchorRecord>,
    /// The size at which the last store record was met (for ranges).
    last_anchor_met: u64,
    anchors_met: Vec<u64>,

    tree: MerkleTree,
    /// SHA-256 (hex) of the previous line.
    prev: String,
    total: u64,
    origin: Option<String>,
    ceremonies: Vec<String>,
    keys: Vec<AnnouncedKey>,
    quorum_keys: Vec<QuorumKey>,
    quorum_announced_at: Vec<u64>,
    trusted: BTreeSet<String>,
    trusted_quorum: BTreeSet<String>,
    successions: Vec<(u64, String)>,
    trusted_size: u64,
    first_untrusted: Option<Untrusted>,
    checkpoints: u64,
    last_cp: Option<Checkpoint>,
    last_cp_key: Option<String>,
    /// (event, ceremony id) of the last two entries.
    last_two: [Option<(String, String)>; 2],
    last_end_size: Option<u64>,
    /// Entries after the last ending checkpoint: from which seq, which
    /// ceremonies, whether the first is "ceremony-started".
    tail_from: u64,
    tail_ceremonies: Vec<String>,
    tail_starts: bool,
    rehearsal_grade: Vec<super::RehearsalReason>,
}

impl<'o> Verifier<'o> {
    fn new(path: &Path, options: &'o VerifyOptions) -> Result<Self, AuditError> {
        let bad_pin = |what: &'static str, value: &str, reason: String| AuditError::PaperValue {
            what,
            value: value.trim().to_string(),
            reason,
        };
        let pins = options
            .pinned_audit_keys
            .iter()
            .map(|p| PaperDigest::parse(p).map(|d| (d, false)).map_err(|r| bad_pin("audit key pin", p, r)))
            .collect::<Result<Vec<_>, _>>()?;
        let paper = options
            .paper_checkpoints
            .iter()
            .map(|p| PaperCheckpoint::parse(p).map(|c| (c, None)).map_err(|r| bad_pin("paper checkpoint", p, r)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut anchors = options.anchors.clone();
        super::anchor::sort_records(&mut anchors);
        Ok(Verifier {
            path: path.to_path_buf(),
            options,
            pins,
            paper,
            anchors,
            last_anchor_met: 0,
            anchors_met: Vec::new(),
            tree: MerkleTree::new(),
            prev: GENESIS_PREV.to_string(),
            total: 0,
            origin: None,
            ceremonies: Vec::new(),
            keys: Vec::new(),
            quorum_keys: Vec::new(),
            quorum_announced_at: Vec::new(),
            trusted: BTreeSet::new(),
            trusted_quorum: BTreeSet::new(),
            successions: Vec::new(),
            trusted_size: 0,
            first_untrusted: None,
            checkpoints: 0,
            last_cp: None,
            last_cp_key: None,
            last_two: [None, None],
            last_end_size: None,
            tail_from: 0,
            tail_ceremonies: Vec::new(),
            tail_starts: false,
            rehearsal_grade: Vec::new(),
        })
    }

    fn p(&self) -> PathBuf {
        self.path.clone()
    }

    /// Whether anything outside the file says what it should hold.
    fn pinned(&self) -> bool {
        !self.pins.is_empty()
            || !self.paper.is_empty()
            || !self.anchors.is_empty()
            || !self.options.trusted_audit_keys.is_empty()
    }

    /// Whether nothing pins: every announced key is then taken at its word
    /// while the file's own consistency is checked, and the end says that
    /// nothing was established beyond it ([`AuditError::NotPinned`] unless
    /// the caller asked for an unpinned check).
    fn trust_all(&self) -> bool {
        !self.pinned()
    }

    /// Whether a paper value or store record may still vouch for a
    /// checkpoint at or after `seq`.
    fn vouching_pending(&self, seq: u64) -> bool {
        self.paper.iter().any(|(_, m)| m.is_none()) || self.anchors.iter().any(|a| a.size >= seq)
    }

    /// Checks one line; `next` is the following line, if any, used only to
    /// name the edited line when the chain breaks.
    fn line(&mut self, n: u64, line: &[u8], next: Option<&[u8]>) -> Result<Entry, AuditError> {
        let i = n - 1;
        let (entry, _) =
            Entry::parse_line(line).map_err(|reason| AuditError::Malformed { path: self.p(), line: n, reason })?;
        if entry.seq != i {
            return Err(AuditError::Sequence { path: self.p(), line: n, expected: i, found: entry.seq });
        }
        let hash = sha256(line);
        if entry.prev != self.prev {
            return Err(self.chain_break(n, &entry, &hash, next));
        }
        if i == 0 {
            self.origin = Some(origin_for(&entry.ceremony_id));
        }
        if entry.event != EVENT_CHECKPOINT {
            if let Some(a) = self.anchors.iter().find(|a| a.size == i && a.kind != AnchorKind::Started) {
                return Err(AuditError::Anchor {
                    path: self.p(),
                    from_seq: i,
                    to_seq: i,
                    reason: format!(
                        "the key store recorded a checkpoint at seq {i} ({}), but the entry there is {:?}",
                        a.describe(),
                        entry.event
                    ),
                });
            }
        }
        if !self.ceremonies.contains(&entry.ceremony_id) {
            self.ceremonies.push(entry.ceremony_id.clone());
        }
        match entry.event.as_str() {
            EVENT_KEY_ANNOUNCED => self.announcement(n, &entry)?,
            EVENT_CHECKPOINT => self.checkpoint(n, &entry)?,
            EVENT_QUORUM_KEY => self.quorum_key(n, &entry)?,
            EVENT_SUCCESSION => self.succession(n, &entry)?,
            _ => {}
        }
        let ends = entry.event == EVENT_CHECKPOINT
            && matches!(&self.last_two[1], Some((e, c))
                if (e == EVENT_CEREMONY_CLOSED || e == EVENT_CEREMONY_ABORTED) && *c == entry.ceremony_id);
        if ends {
            self.last_end_size = Some(i);
            self.tail_from = i + 1;
            self.tail_ceremonies.clear();
            self.tail_starts = false;
        } else {
            if self.tail_ceremonies.is_empty() {
                self.tail_starts = entry.event == "ceremony-started";
            }
            if self.tail_ceremonies.last() != Some(&entry.ceremony_id) {
                self.tail_ceremonies.push(entry.ceremony_id.clone());
            }
        }
        super::grade::add_reasons(&mut self.rehearsal_grade, &entry).map_err(|reason| AuditError::Invalid {
            path: self.p(),
            line: n,
            seq: i,
            reason,
        })?;
        self.last_two = [self.last_two[1].take(), Some((entry.event.clone(), entry.ceremony_id.clone()))];
        self.tree.push_leaf_hash(leaf_hash(line));
        self.prev = hex::encode(hash);
        self.total = n;
        self.meet_anchors()?;
        Ok(entry)
    }

    /// Names the line most likely edited when line `n`'s `prev` does not
    /// match the line before.
    ///
    /// An edit to line k changes k's hash, so line k+1's `prev` no longer
    /// matches: the break shows *after* the edited line. Blaming the line
    /// where it shows would point at an intact line, so we look one further:
    /// if line n+1's `prev` matches line n's hash, line n is intact and line
    /// n−1 was edited; if it does not, line n's own bytes changed too, which a
    /// single edit explains only if it was to line n (its `prev` field). For
    /// the last line there is no line after it; if it is a checkpoint, its
    /// `seal` over its own content decides.
    fn chain_break(&self, n: u64, entry: &Entry, hash: &[u8; 32], next: Option<&[u8]>) -> AuditError {
        let altered = |line: u64, reason: String| AuditError::Altered { path: self.p(), line, seq: line - 1, reason };
        if n == 1 {
            return altered(1, "the first entry's prev is not 64 zeros".into());
        }
        let edited_line_before = |note: &str| {
            altered(n - 1, format!("its SHA-256 is {} but line {n} recorded prev {}{note}", self.prev, entry.prev))
        };
        if let Some(next) = next {
            let (next_entry, _) = match Entry::parse_line(next) {
                Ok(e) => e,
                Err(reason) => return AuditError::Malformed { path: self.p(), line: n + 1, reason },
            };
            if next_entry.seq != n {
                return AuditError::Sequence { path: self.p(), line: n + 1, expected: n, found: next_entry.seq };
            }
            if next_entry.prev != hex::encode(hash) {
                return altered(
                    n,
                    format!(
                        "its prev does not match line {}, and its own hash does not match the prev line {} recorded for it",
                        n - 1,
                        n + 1
                    ),
                );
            }
            return edited_line_before(&format!(
                " (line {n} itself is intact: line {} recorded its hash correctly)",
                n + 1
            ));
        }
        if entry.event == EVENT_CHECKPOINT {
            return match check_seal(entry, &self.keys) {
                Ok(()) => edited_line_before(" (the last line, a checkpoint, is intact: its seal verifies)"),
                Err(_) => altered(n, "its prev does not match line before it and its seal does not verify".into()),
            };
        }
        edited_line_before(&format!(
            "; or line {n} (the last line, which nothing after it protects) had its prev edited"
        ))
    }

    fn announcement(&mut self, n: u64, entry: &Entry) -> Result<(), AuditError> {
        let invalid = |reason: String| AuditError::Invalid { path: self.p(), line: n, seq: entry.seq, reason };
        let key = parse_announcement(entry).map_err(invalid)?;
        if let Some(old) = self.keys.iter().find(|k| k.name == key.name) {
            if old.spki_der != key.spki_der || old.algorithm != key.algorithm {
                return Err(invalid(format!(
                    "audit key name {:?} is announced again for a different key (first at seq {})",
                    key.name, old.seq
                )));
            }
            return Ok(());
        }
        let mut pinned = false;
        for (pin, matched) in &mut self.pins {
            if pin.matches_hex(&key.fingerprint.hex) {
                *matched = true;
                pinned = true;
            }
        }
        if pinned || self.trust_all() || self.options.trusted_audit_keys.contains(&key.fingerprint.hex) {
            self.trusted.insert(key.fingerprint.hex.clone());
        }
        self.keys.push(key);
        Ok(())
    }

    fn quorum_key(&mut self, n: u64, entry: &Entry) -> Result<(), AuditError> {
        let key = QuorumKey::from_entry(entry).map_err(|reason| AuditError::Invalid {
            path: self.p(),
            line: n,
            seq: entry.seq,
            reason,
        })?;
        if self.trust_all() {
            self.trusted_quorum.insert(key.public_key_sha256.clone());
        }
        if !self.quorum_keys.iter().any(|q| q.public_key_sha256 == key.public_key_sha256) {
            self.quorum_keys.push(key);
            self.quorum_announced_at.push(entry.seq);
        }
        Ok(())
    }

    fn succession(&mut self, n: u64, entry: &Entry) -> Result<(), AuditError> {
        let invalid = |reason: String| AuditError::Invalid { path: self.p(), line: n, seq: entry.seq, reason };
        let succession = Succession::from_entry(entry).map_err(invalid)?;
        let quorum =
            self.quorum_keys.iter().find(|q| q.public_key_sha256 == succession.quorum_key_sha256).ok_or_else(|| {
                invalid(format!(
                    "the succession is signed by quorum key {}, which no earlier entry announced",
                    succession.quorum_key_sha256
                ))
            })?;
        succession.verify(quorum).map_err(invalid)?;
        // An untrusted quorum key's statement proves nothing yet; a trusted
        // checkpoint covering this entry would vouch for the key it names
        // anyway, as for any announcement.
        if self.trusted_quorum.contains(&succession.quorum_key_sha256) {
            self.trusted.insert(succession.audit_key_sha256.clone());
            self.successions.push((entry.seq, succession.audit_key_sha256));
        }
        Ok(())
    }

    fn checkpoint(&mut self, n: u64, entry: &Entry) -> Result<(), AuditError> {
        let seq = entry.seq;
        let cp_err = |reason: String| AuditError::Checkpoint { path: self.p(), line: n, seq, reason };
        let origin = self.origin.clone().unwrap_or_default();
        let from = self.last_cp.as_ref().map_or(0, |c| c.size);
        let (cp, signer) = check_checkpoint(entry, &origin, &self.tree, &self.keys, from).map_err(cp_err)?;
        let signer_fp = self.keys[signer].fingerprint.hex.clone();

        // The store's record of this checkpoint must be this very note.
        let mut vouched = false;
        for a in self.anchors.iter().filter(|a| a.size == seq && a.kind != AnchorKind::Started) {
            if a.note_sha256.as_deref() != Some(cp.fingerprint.hex.as_str()) {
                return Err(AuditError::Anchor {
                    path: self.p(),
                    from_seq: seq,
                    to_seq: seq,
                    reason: format!(
                        "the key store recorded the checkpoint {} with note SHA-256 {}, but this checkpoint's note has SHA-256 {}",
                        a.describe(),
                        a.note_sha256.as_deref().unwrap_or("?"),
                        cp.fingerprint.hex
                    ),
                });
            }
            vouched = true;
        }
        for (paper, matched) in &mut self.paper {
            if matched.is_none() && paper.matches(&cp.note_text, &cp.fingerprint.hex, &cp.root_hex) {
                *matched = Some(cp.size);
                vouched = true;
            }
        }
        if vouched || self.trusted.contains(&signer_fp) || self.trust_all() {
            // Everything before this checkpoint is vouched for: its keys
            // (this one's among them) and quorum keys become trusted.
            self.trusted_size = seq;
            for k in &self.keys {
                self.trusted.insert(k.fingerprint.hex.clone());
            }
            for (q, at) in self.quorum_keys.iter().zip(&self.quorum_announced_at) {
                if *at < seq {
                    self.trusted_quorum.insert(q.public_key_sha256.clone());
                }
            }
            self.first_untrusted = None;
        } else {
            let key = &self.keys[signer];
            let untrusted = Untrusted {
                line: n,
                seq,
                key_name: key.name.clone(),
                key_sha256: signer_fp.clone(),
                announced_at: key.seq,
            };
            if !self.vouching_pending(seq) {
                return Err(self.untrusted_error(&untrusted));
            }
            if self.first_untrusted.is_none() {
                self.first_untrusted = Some(untrusted);
            }
        }
        self.checkpoints += 1;
        self.last_cp = Some(cp);
        self.last_cp_key = Some(signer_fp);
        Ok(())
    }

    fn untrusted_error(&self, u: &Untrusted) -> AuditError {
        AuditError::Untrusted {
            path: self.p(),
            line: u.line,
            seq: u.seq,
            reason: format!(
                "this checkpoint is signed by audit key {:?} (SPKI SHA-256 {}), announced at seq {}, which nothing trusted vouches for: it is not pinned, no checkpoint of a trusted key covers its announcement, and no custodian-authorised succession names it; entries after seq {} are covered by no trusted checkpoint",
                u.key_name, u.key_sha256, u.announced_at, self.trusted_size
            ),
        }
    }

    /// Checks the store's records whose size the tree has just reached.
    fn meet_anchors(&mut self) -> Result<(), AuditError> {
        let size = self.tree.size();
        let root = hex::encode(self.tree.root());
        let mut met = false;
        for a in self.anchors.iter().filter(|a| a.size == size) {
            if a.origin != self.origin.clone().unwrap_or_default() {
                return Err(AuditError::Anchor {
                    path: self.p(),
                    from_seq: 0,
                    to_seq: 0,
                    reason: format!("the key store's record is of log {:?}, not this one", a.origin),
                });
            }
            if a.root != root {
                let from = self.last_anchor_met;
                return Err(AuditError::Anchor {
                    path: self.p(),
                    from_seq: from,
                    to_seq: size - 1,
                    reason: format!(
                        "the key store recorded the log {} with Merkle root {} over its first {size} entries, but this file's root is {root}: an entry between seq {from} and seq {} was changed, added or removed since",
                        a.describe(),
                        a.root,
                        size - 1
                    ),
                });
            }
            met = true;
        }
        if met {
            self.last_anchor_met = size;
            self.anchors_met.push(size);
        }
        Ok(())
    }

    fn finish(self) -> Result<Scan, AuditError> {
        let total = self.total;
        if let Some(a) =
            self.anchors.iter().find(|a| a.size > total || (a.kind != AnchorKind::Started && a.size >= total))
        {
            return Err(AuditError::AnchorAhead {
                path: self.p(),
                entries: total,
                reason: format!(
                    "the key store recorded the log {}, but this file has only {total} entries: entries from seq {total} on are missing",
                    a.describe()
                ),
            });
        }
        let last_size = self.last_cp.as_ref().map_or(0, |c| c.size);
        if let Some((paper, _)) = self.paper.iter().find(|(_, m)| m.is_none()) {
            return Err(AuditError::PaperMismatch {
                path: self.p(),
                reason: format!(
                    "no checkpoint in the log matches the paper log's {} (the log has {} checkpoint(s), the last at size {last_size})",
                    paper.describe(),
                    self.checkpoints
                ),
            });
        }
        if let Some((pin, _)) = self.pins.iter().find(|(_, m)| !m) {
            return Err(AuditError::PaperMismatch {
                path: self.p(),
                reason: format!(
                    "no audit key announced in this log has the pinned SHA-256 {:?} (from the paper's audit key box); the log's keys are: {}",
                    pin.text(),
                    self.keys.iter().map(|k| format!("{} {}", k.name, k.fingerprint.hex)).collect::<Vec<_>>().join(", ")
                ),
            });
        }
        if let Some(u) = &self.first_untrusted {
            return Err(self.untrusted_error(u));
        }

        let ending = self.ending();
        let closed = ending.is_ended();
        if self.options.expect_closed && !closed {
            let last_seq = total.saturating_sub(1);
            return Err(match &ending {
                Ending::AbortedUnsigned { ceremony, from_seq } => AuditError::AbortedUnsigned {
                    path: self.p(),
                    line: total,
                    seq: last_seq,
                    ceremony: ceremony.clone(),
                    from_seq: *from_seq,
                },
                Ending::Empty => {
                    AuditError::NotClosed { path: self.p(), line: 0, seq: 0, reason: "the log is empty".into() }
                }
                _ => {
                    let reason = match &self.last_two[1] {
                        Some((e, _)) if e == EVENT_CHECKPOINT => {
                            "the last checkpoint does not follow a \"ceremony-closed\" or \"ceremony-aborted\" entry"
                                .to_string()
                        }
                        Some((e, _)) if e == EVENT_CEREMONY_CLOSED => {
                            "\"ceremony-closed\" is not followed by its final checkpoint".to_string()
                        }
                        Some((e, _)) => format!("the last entry is {e:?}, not the final checkpoint"),
                        None => "the log is empty".into(),
                    };
                    AuditError::NotClosed { path: self.p(), line: total, seq: last_seq, reason }
                }
            });
        }

        let pinned = self.pinned();
        if !pinned && !self.options.unpinned {
            return Err(AuditError::NotPinned {
                path: self.p(),
                summary: format!(
                    "its {total} entries and {} checkpoint(s) are consistent with each other ({})",
                    self.checkpoints,
                    ending.describe()
                ),
            });
        }

        let trust = Trust {
            pinned,
            trusted_keys: self.trusted.iter().cloned().collect(),
            trusted_size: self.trusted_size,
            quorum_keys: self.trusted_quorum.iter().cloned().collect(),
            successions: self.successions.clone(),
            paper_matched: self.paper.iter().filter_map(|(_, m)| *m).collect(),
            anchors_matched: self.anchors_met.clone(),
        };
        let report = VerifyReport {
            entries: total,
            checkpoints: self.checkpoints,
            origin: self.origin.clone(),
            ceremonies: self.ceremonies,
            last_checkpoint: self.last_cp,
            last_checkpoint_key: self.last_cp_key,
            audit_keys: self.keys,
            quorum_keys: self.quorum_keys,
            uncovered_entries: total - last_size,
            closed,
            ending,
            last_end_size: self.last_end_size,
            tail_ceremonies: self.tail_ceremonies,
            tail_starts_a_ceremony: self.tail_starts,
            trust,
            rehearsal_grade: self.rehearsal_grade,
        };
        Ok(Scan { report, tree: self.tree, prev: self.prev, origin: self.origin })
    }

    fn ending(&self) -> Ending {
        match &self.last_two {
            [_, None] => Ending::Empty,
            [Some((closing, c1)), Some((last, c2))] if last == EVENT_CHECKPOINT && c1 == c2 => match closing.as_str() {
                EVENT_CEREMONY_CLOSED => Ending::Closed { ceremony: c2.clone() },
                EVENT_CEREMONY_ABORTED => Ending::Aborted { ceremony: c2.clone() },
                _ => Ending::Open { ceremony: c2.clone(), from_seq: self.tail_from },
            },
            [_, Some((last, c))] if last == EVENT_CEREMONY_ABORTED => {
                Ending::AbortedUnsigned { ceremony: c.clone(), from_seq: self.tail_from }
            }
            [_, Some((_, c))] => Ending::Open { ceremony: c.clone(), from_seq: self.tail_from },
        }
    }
}

fn detail_str<'a>(entry: &'a Entry, key: &str) -> Result<&'a str, String> {
    entry.details.get(key).and_then(Value::as_str).ok_or_else(|| format!("details.{key} is missing or not a string"))
}

fn parse_announcement(entry: &Entry) -> Result<AnnouncedKey, String> {
    let name = detail_str(entry, "name")?;
    checkpoint::check_key_name(name)?;
    let algorithm: SignatureAlgorithm = serde_json::from_value(Value::from(detail_str(entry, "algorithm")?))
        .map_err(|_| "details.algorithm is not a known signature algorithm".to_string())?;
    let spki_der = B64.decode(detail_str(entry, "spki")?).map_err(|e| format!("details.spki is not base64: {e}"))?;
    let key_algorithm = hsm::spki_algorithm(&spki_der).map_err(|e| format!("details.spki: {e}"))?;
    if !algorithm.fits(key_algorithm) || detail_str(entry, "key_algorithm")? != key_algorithm.name() {
        return Err(format!("announced algorithm {algorithm} does not fit the announced {key_algorithm} key"));
    }
    let fingerprint = Fingerprint::sha256(&spki_der);
    if detail_str(entry, "spki_sha256")? != fingerprint.hex {
        return Err("details.spki_sha256 is not the SHA-256 of details.spki".into());
    }
    Ok(AnnouncedKey { name: name.to_string(), algorithm, key_algorithm, spki_der, fingerprint, seq: entry.seq })
}

fn check_seal(entry: &Entry, keys: &[AnnouncedKey]) -> Result<(), String> {
    let key_name = detail_str(entry, "key")?;
    let key = keys
        .iter()
        .find(|k| k.name == key_name)
        .ok_or_else(|| format!("it names audit key {key_name:?}, which no earlier entry announced"))?;
    let seal = B64.decode(detail_str(entry, "seal")?).map_err(|e| format!("details.seal is not base64: {e}"))?;
    let message = seal_message(entry)?;
    hsm::verify_signature(&key.spki_der, key.algorithm, &message, &seal).map_err(|_| {
        format!("the seal over the checkpoint line does not verify under audit key {key_name:?}: the line was edited")
    })
}

/// Checks a checkpoint entry against the tree of the lines before it and
/// the announced keys; returns it and the index of the key that signed it.
fn check_checkpoint(
    entry: &Entry,
    origin: &str,
    tree: &MerkleTree,
    keys: &[AnnouncedKey],
    previous_size: u64,
) -> Result<(Checkpoint, usize), String> {
    let mut fields: Vec<&str> = entry.details.keys().map(String::as_str).collect();
    fields.sort_unstable();
    if fields != ["key", "note", "root", "seal", "size"] {
        return Err(format!("details has fields {fields:?}, expected key, note, root, seal, size"));
    }
    let note_text = detail_str(entry, "note")?;
    let key_name = detail_str(entry, "key")?;
    let size = entry.details.get("size").and_then(Value::as_u64).ok_or("details.size is not a number")?;
    let note = SignedNote::parse(note_text)?;
    let body = CheckpointBody::parse(&note.text)?;
    if body.origin != origin {
        return Err(format!("its origin is {:?} but this log's is {origin:?}: it belongs to another log", body.origin));
    }
    if body.size != entry.seq || size != entry.seq {
        return Err(format!(
            "it claims size {} (details.size {size}) but, as entry seq {}, must cover exactly the {} entries before it",
            body.size, entry.seq, entry.seq
        ));
    }
    let root = tree.root();
    let root_hex = hex::encode(root);
    if body.root != root || detail_str(entry, "root")? != root_hex {
        return Err(format!(
            "its Merkle root {} does not match the {} entries before it (root {root_hex}): one of lines {}..={} was altered after it was signed and the hash chain rewritten to hide it",
            hex::encode(body.root),
            entry.seq,
            previous_size + 1,
            entry.seq
        ));
    }
    let note_keys: Vec<NoteKey<'_>> =
        keys.iter().map(|k| NoteKey { name: &k.name, spki_der: &k.spki_der, algorithm: k.algorithm }).collect();
    let verified = checkpoint::verify_note(&note, &note_keys)?;
    let Some(&signer) = verified.iter().find(|&&k| keys[k].name == key_name) else {
        return Err(format!("details.key names {key_name:?} but the note is not signed by that key"));
    };
    check_seal(entry, keys)?;
    let expected_output = super::Artifact::of("checkpoint-note", note_text.as_bytes());
    if entry.outputs != [expected_output] || !entry.inputs.is_empty() {
        return Err("its outputs must be exactly the checkpoint-note artifact".into());
    }
    Ok((
        Checkpoint {
            entry_seq: entry.seq,
            size,
            root_hex,
            note_text: note_text.to_string(),
            fingerprint: Fingerprint::sha256(note_text.as_bytes()),
            key_name: key_name.to_string(),
        },
        signer,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::anchor::{AnchorRecord, ANCHOR_FORMAT};
    use crate::audit::{AuditLog, Event};
    use crate::hsm::soft::{QuorumKey as QuorumSigner, SoftKey};
    use crate::hsm::{KeyAlgorithm, Signer};
    use crate::secret::Secret;

    /// A closed two-ceremony log: "first" under `key`, then "second".
    fn log_with(dir: &Path, key: &SoftKey) -> (PathBuf, Checkpoint) {
        let path = dir.join("audit.jsonl");
        let mut log = AuditLog::create(&path, "first").expect("create");
        log.append(Event::new("1", "ceremony-started")).expect("append");
        log.announce_key("audit", key.spki_der(), key.signature_algorithm()).expect("announce");
        log.append(Event::new("2", "ceremony-closed")).expect("append");
        log.checkpoint(key, "audit").expect("checkpoint");
        let (mut log, _) = AuditLog::open_append(&path, "second", &VerifyOptions::unpinned()).expect("open");
        log.append(Event::new("1", "ceremony-started")).expect("append");
        log.append(Event::new("2", "ceremony-closed")).expect("append");
        let cp = log.checkpoint(key, "audit").expect("checkpoint");
        (path, cp)
    }

    fn record(origin: &str, size: u64, root: &str, note: Option<&str>) -> AnchorRecord {
        AnchorRecord {
            format: ANCHOR_FORMAT.into(),
            origin: origin.into(),
            kind: if note.is_some() { AnchorKind::Closed } else { AnchorKind::Started },
            ceremony_id: "first".into(),
            size,
            root: root.into(),
            note_sha256: note.map(str::to_string),
            key_sha256: note.map(|_| "00".repeat(32)),
            ts: "2025-03-01T10:00:00Z".into(),
            ca_root_sha256: None,
        }
    }

    #[test]
    fn store_records_must_be_met_in_order_and_not_lie_beyond_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = SoftKey::generate("audit", KeyAlgorithm::EcdsaP256).expect("key");
        let (path, cp) = log_with(dir.path(), &key);
        let good = record("keyrite/first", cp.size, &cp.root_hex, Some(&cp.fingerprint.hex));
        let options = VerifyOptions { anchors: vec![good.clone()], expect_closed: true, ..VerifyOptions::default() };
        let report = verify(&path, &options).expect("verifies");
        assert_eq!(report.trust.anchors_matched, vec![cp.size]);
        assert_eq!(report.trust.trusted_size, cp.size, "the record vouches for its checkpoint");

        let wrong_root = record("keyrite/first", 3, &"ab".repeat(32), None);
        let err = verify(&path, &VerifyOptions { anchors: vec![wrong_root], ..VerifyOptions::default() })
            .expect_err("root differs");
        assert!(matches!(err, AuditError::Anchor { from_seq: 0, to_seq: 2, .. }), "{err}");

        let ahead = record("keyrite/first", cp.size + 5, &cp.root_hex, Some(&cp.fingerprint.hex));
        let err =
            verify(&path, &VerifyOptions { anchors: vec![ahead], ..VerifyOptions::default() }).expect_err("ahead");
        assert!(matches!(err, AuditError::AnchorAhead { .. }), "{err}");
    }

    /// A log whose audit key "old" is lost; the custodians' quorum key
    /// names "new" when `succession` is set, else "new" only announces
    /// itself. The file is pinned by the old key.
    fn handover(dir: &Path, succession: bool) -> (PathBuf, VerifyOptions, String) {
        let old = SoftKey::generate("old", KeyAlgorithm::EcdsaP256).expect("key");
        let new = SoftKey::generate("new", KeyAlgorithm::EcdsaP256).expect("key");
        let path = dir.join(format!("audit-{succession}.jsonl"));
        let quorum = QuorumSigner::derive(&Secret::new(vec![1u8; 32])).expect("quorum");
        let q = QuorumKey::new(quorum.spki_der(), "first", 7);
        let mut log = AuditLog::create(&path, "first").expect("create");
        log.announce_key("old", old.spki_der(), old.signature_algorithm()).expect("announce");
        log.announce_quorum_key(&q).expect("quorum");
        log.append(Event::new("2", "ceremony-closed")).expect("append");
        log.checkpoint(&old, "old").expect("checkpoint");
        let new_fp = crate::words::sha256_hex(new.spki_der());
        if succession {
            let statement = Succession::statement(&q.public_key_sha256, &new_fp, "restore");
            let signature = quorum.sign(statement.as_bytes());
            log.record_succession(&Succession::new(&q.public_key_sha256, &new_fp, "restore", &signature))
                .expect("succession");
        }
        log.announce_key("new", new.spki_der(), new.signature_algorithm()).expect("announce");
        log.append(Event::new("3", "ceremony-closed")).expect("append");
        log.checkpoint(&new, "new").expect("checkpoint");
        let pinned = VerifyOptions {
            pinned_audit_keys: vec![crate::words::sha256_hex(old.spki_der())],
            expect_closed: true,
            ..VerifyOptions::default()
        };
        (path, pinned, new_fp)
    }

    #[test]
    fn a_succession_under_a_trusted_quorum_key_makes_the_new_key_trusted_and_a_self_announced_one_does_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, pinned, new_fp) = handover(dir.path(), true);
        let report = verify(&path, &pinned).expect("succession trusted");
        assert_eq!(report.trust.successions.len(), 1);
        assert!(report.trust.trusted_keys.contains(&new_fp));

        let (path, pinned, _) = handover(dir.path(), false);
        let err = verify(&path, &pinned).expect_err("self-announced");
        assert!(matches!(err, AuditError::Untrusted { .. }), "{err}");
        assert!(err.to_string().contains("signed by audit key \"new\""), "{err}");
    }

    #[test]
    fn a_line_longer_than_the_limit_is_refused_without_reading_it_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, vec![b'x'; MAX_LINE + 10]).expect("write");
        let err = verify(&path, &VerifyOptions::unpinned()).expect_err("too long");
        assert!(err.to_string().contains("longer than"), "{err}");
    }
}
