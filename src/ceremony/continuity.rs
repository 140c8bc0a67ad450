//! Audit continuity: a ceremony continues a log, or relies on one, only as
//! far as what lies outside the files an insider can edit vouches for it.
//!
//! Two anchors stand outside the log's directory:
//!
//! * the **paper log**: the last checkpoint, typed back by the witness in
//!   the preflight (words or hex, 128 bits at least; the screen does not
//!   show it), and
//! * the **key store's records** ([`crate::audit::anchor`]): every
//!   ceremony writes where the log stood when it started and the checkpoint
//!   it ended with, as data objects on the token that holds the audit key
//!   (non-modifiable, and non-destroyable where the token allows it), or in
//!   the software store's directory.
//!
//! A CA ceremony continues the CA's log only when the log verifies, extends
//! every record of it, ends with the checkpoint the paper holds (closed or
//! aborted; an interrupted ceremony only with the store's record that it
//! started and the witness's word), and that checkpoint is signed by the
//! audit key on this token, or a custodian-authorised succession on this
//! token leads to it. All of this runs in the preflight: a refused log is
//! left as it was, nothing is appended, no key signs.

use std::path::Path;

use super::operator::PaperAnswer;
use super::{CeremonyError, Operator};
use crate::audit::anchor::{self, AnchorKind, AnchorRecord, ANCHOR_FORMAT, QUORUM_LABEL, SUCCESSION_LABEL};
use crate::audit::succession::{QuorumKey, Succession};
use crate::audit::{self, Artifact, AuditLog, Checkpoint, Ending, Event, VerifyOptions, VerifyReport};
use crate::config::Plan;
use crate::hsm::keystore::{KeyStore, RecordKeeping};
use crate::words;

/// The prompt for the last checkpoint of the log a ceremony continues.
pub const PAPER_PROMPT: &str = "audit-checkpoint";
/// The witness confirms the paper log notes an interrupted ceremony.
pub const INTERRUPTED_PROMPT: &str = "audit-interrupted";
/// The prompt for the final checkpoint of the log a restore or reshare
/// reads (the ceremony that issued the shares).
pub const SOURCE_PAPER_PROMPT: &str = "source-log-checkpoint";

/// The rehearsal-grade reason of an anchor `keyrite rehearse` passed in
/// memory instead of a witness reading it from paper.
pub const REHEARSAL_ANCHOR: &str =
    "a paper checkpoint passed in memory by keyrite rehearse, not read from paper by a witness";

/// Marks an entry that used a paper answer as rehearsal-grade when the
/// rehearsal, not a witness, gave it.
fn grade(event: Event, paper: Option<&PaperAnswer>) -> Event {
    match paper {
        Some(p) if p.answered_by == super::operator::ANSWERED_BY_REHEARSAL => {
            event.detail(crate::audit::REHEARSAL_GRADE, vec![REHEARSAL_ANCHOR])
        }
        _ => event,
    }
}

fn refused(log: &Path, message: String) -> CeremonyError {
    CeremonyError::Continuity { log: log.to_path_buf(), message }
}

fn witness_title(plan: &Plan) -> String {
    plan.role("internal-witness").map_or_else(|| "Internal Witness".to_string(), |r| r.title.clone())
}

/// Asks the witness for a checkpoint from the paper log.
pub fn ask_paper(
    plan: &Plan,
    operator: &mut dyn Operator,
    key: &str,
    what: &str,
) -> Result<PaperAnswer, CeremonyError> {
    let question = format!(
        "{}: type the {what} from the paper log: its note SHA-256, the first {} words or more (or {} hex digits or more); the screen does not show it",
        witness_title(plan),
        audit::paper::MIN_WORDS,
        audit::paper::MIN_HEX
    );
    let answer = operator.paper(key, &question)?;
    audit::paper::PaperCheckpoint::parse(&answer.text)
        .map_err(|detail| CeremonyError::Input { what: format!("the paper checkpoint ({key})"), detail })?;
    Ok(answer)
}

/// The records the store keeps of the log `origin`, oldest first. Records
/// of another log that share the label (never written by keyrite) are
/// refused rather than skipped.
pub fn records_of(store: &KeyStore, origin: &str) -> Result<Vec<AnchorRecord>, CeremonyError> {
    let mut records = Vec::new();
    for bytes in store.records(&anchor::anchor_label(origin))? {
        let record = AnchorRecord::parse(&bytes).map_err(|detail| CeremonyError::Input {
            what: format!("a record of log {origin:?} in the key store"),
            detail,
        })?;
        if record.origin != origin {
            return Err(CeremonyError::Input {
                what: format!("a record of log {origin:?} in the key store"),
                detail: format!("it names log {:?}", record.origin),
            });
        }
        records.push(record);
    }
    anchor::sort_records(&mut records);
    Ok(records)
}

/// A CA directory (`ca_root`: its root certificate's SHA-256) must not
/// start a log while the store holds records of one, of this name or of this
/// CA: that log's file is missing, and starting afresh would hide everything
/// it held. Any other new log must not take the name of one the store holds
/// a signed (closed or aborted) record of; an earlier attempt that stopped
/// before its audit key existed left only a start record and may be run
/// again.
pub fn check_new_log(store: &KeyStore, path: &Path, origin: &str, ca_root: Option<&str>) -> Result<(), CeremonyError> {
    let missing = |last: &AnchorRecord, count: usize| {
        refused(
            path,
            format!(
                "this would start a new log {origin:?}, but the key store holds {count} record(s) of {} (the last: {}): {}",
                if last.origin == origin { "a log of that name".to_string() } else { format!("this CA's log {:?}", last.origin) },
                last.describe(),
                if ca_root.is_some() {
                    "that log's file is missing. Restore it (e.g. from `keyrite ca backup`) instead of starting a new one"
                } else {
                    "an earlier run of this ceremony signed it. Keep that log, and give this run a new id in the ceremony file"
                }
            ),
        )
    };
    let records = records_of(store, origin)?;
    let blocking = ca_root.is_some() || records.iter().any(|r| r.kind != AnchorKind::Started);
    if let (true, Some(last)) = (blocking, records.last()) {
        return Err(missing(last, records.len()));
    }
    if let Some(root) = ca_root {
        let mut of_this_ca: Vec<AnchorRecord> = Vec::new();
        for (label, bytes) in store.labelled_records(None)? {
            if !label.starts_with(anchor::ANCHOR_LABEL_PREFIX) {
                continue;
            }
            if let Ok(r) = AnchorRecord::parse(&bytes) {
                if r.ca_root_sha256.as_deref() == Some(root) {
                    of_this_ca.push(r);
                }
            }
        }
        anchor::sort_records(&mut of_this_ca);
        if let Some(last) = of_this_ca.last() {
            return Err(missing(last, of_this_ca.len()));
        }
    }
    Ok(())
}

/// The custodians' quorum key the store keeps, if any. Two different ones
/// are refused: one root ceremony makes one.
pub fn quorum_key(store: &KeyStore) -> Result<Option<QuorumKey>, CeremonyError> {
    let mut found: Vec<QuorumKey> = Vec::new();
    for bytes in store.records(QUORUM_LABEL)? {
        let key = QuorumKey::parse(&bytes)
            .map_err(|detail| CeremonyError::Input { what: "the quorum key record in the key store".into(), detail })?;
        if !found.iter().any(|k| k.public_key_sha256 == key.public_key_sha256) {
            found.push(key);
        }
    }
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(CeremonyError::Input {
            what: "the quorum key records in the key store".into(),
            detail: format!(
                "the store holds {} different quorum keys ({}); one root ceremony makes one: find out who added the other",
                found.len(),
                found.iter().map(|k| k.public_key_sha256.as_str()).collect::<Vec<_>>().join(", ")
            ),
        }),
    }
}

/// The successions the store keeps that name `audit_key_sha256`.
fn successions_for(store: &KeyStore, audit_key_sha256: &str) -> Result<Vec<Succession>, CeremonyError> {
    let mut out = Vec::new();
    for bytes in store.records(SUCCESSION_LABEL)? {
        let s = Succession::parse(&bytes)
            .map_err(|detail| CeremonyError::Input { what: "a succession record in the key store".into(), detail })?;
        if s.audit_key_sha256 == audit_key_sha256 {
            out.push(s);
        }
    }
    Ok(out)
}

/// The SHA-256 of the plan's audit key as the store holds it.
fn store_audit_key(store: &KeyStore, plan: &Plan) -> Result<String, CeremonyError> {
    let key = store.find(&plan.audit_key.label, Some(plan.audit_key.signature))?;
    Ok(words::sha256_hex(key.signer.spki_der()))
}

/// A log a CA ceremony continues, verified against every anchor, opened
/// for appending; nothing has been written.
pub struct Continued {
    pub log: AuditLog,
    pub report: VerifyReport,
    /// What the witness typed; `None` when the paper holds no checkpoint of
    /// this log yet (see [`continue_log`]).
    pub paper: Option<PaperAnswer>,
    pub records: Vec<AnchorRecord>,
    /// The audit key on this token (SHA-256).
    pub key_sha256: String,
    /// To record first: the succession that makes this token's key trusted.
    pub succession: Option<Succession>,
    /// An interrupted ceremony the log continues past: (ceremony, from seq,
    /// to seq).
    pub interrupted: Option<(String, u64, u64)>,
}

impl Continued {
    /// The `log-continued` entry: what vouched for the log.
    pub fn event(&self) -> Event {
        let r = &self.report;
        let last = r.last_checkpoint.as_ref();
        let latest = anchor::latest_end(&self.records);
        let mut e = Event::new("preflight", "log-continued")
            .detail("entries", r.entries)
            .detail("last_checkpoint_size", last.map_or(0, |c| c.size))
            .detail("last_checkpoint_note_sha256", last.map_or(String::new(), |c| c.fingerprint.hex.clone()))
            .detail("ending", r.ending.describe())
            .detail(
                "paper_checkpoint",
                self.paper.as_ref().map_or("none: no ceremony of this log has ended yet", |p| p.text.as_str()),
            )
            .detail("answered_by", self.paper.as_ref().map_or("nobody (no paper checkpoint)", |p| p.answered_by))
            .detail("store_records", self.records.len() as u64)
            .detail(
                "store_latest_record",
                latest.map_or_else(|| "none: this store keeps no record of this log yet".to_string(), |l| l.describe()),
            )
            .detail("audit_key_sha256", self.key_sha256.as_str());
        if let Some((ceremony, from, to)) = &self.interrupted {
            e = e.detail(
                "interrupted",
                format!(
                    "ceremony {ceremony:?} was interrupted: its entries seq {from}..={to} were never covered by its own checkpoint; the next checkpoint covers them"
                ),
            );
        }
        if let Some(s) = &self.succession {
            e = e.detail(
                "audit_key_succession",
                format!("authorised by the custodians in ceremony {:?}", s.ceremony_id),
            );
        }
        grade(e, self.paper.as_ref())
    }
}

/// Opens the CA's log for a ceremony to continue, after checking it against
/// the paper and the key store. See the module documentation.
pub fn continue_log(
    plan: &Plan,
    store: &KeyStore,
    path: &Path,
    operator: &mut dyn Operator,
) -> Result<Continued, CeremonyError> {
    let Some(origin) = audit::origin_of(path)? else {
        return Err(refused(
            path,
            "the log file is empty: a ceremony that created it stopped before its first entry; move it away (keep it for the record) and run again".into(),
        ));
    };
    let records = records_of(store, &origin)?;
    let key_sha256 = store_audit_key(store, plan)?;
    // The witness types the last checkpoint from the paper log, except when
    // the store knows this log and knows no ceremony of it ever ended: then
    // the paper holds no checkpoint of it yet, only the note of an
    // interruption, and the audit key on this store (which made the
    // records) is the pin.
    let ended_before = records.iter().any(|r| r.kind != AnchorKind::Started);
    let paper = if ended_before || records.is_empty() {
        Some(ask_paper(plan, operator, PAPER_PROMPT, "last checkpoint of the CA's audit log")?)
    } else {
        None
    };
    let options = VerifyOptions {
        paper_checkpoints: paper.iter().map(|p| p.text.clone()).collect(),
        trusted_audit_keys: if paper.is_none() { vec![key_sha256.clone()] } else { Vec::new() },
        anchors: records.clone(),
        ..VerifyOptions::default()
    };
    let (log, report) = AuditLog::open_append(path, &plan.id, &options)?;

    // The witness must have typed the checkpoint that ended the last
    // ceremony (or a later one of an interrupted ceremony), not an older one.
    if paper.is_some() {
        let matched = report.trust.paper_matched.first().copied().unwrap_or_default();
        let last_end = report.last_end_size.unwrap_or_default();
        if matched < last_end {
            return Err(refused(
                path,
                format!(
                    "the paper checkpoint is the log's checkpoint over {matched} entries, but a later ceremony ended with a checkpoint over {last_end} entries: type the LAST checkpoint on the paper log; if the paper log has none this recent, stop: the log holds a ceremony the paper does not know"
                ),
            ));
        }
    }

    // How the log ends: closed or aborted with a checkpoint, or a ceremony
    // the store saw start and that never ended.
    let interrupted = match &report.ending {
        Ending::Closed { .. } | Ending::Aborted { .. } => None,
        Ending::Open { ceremony, from_seq } | Ending::AbortedUnsigned { ceremony, from_seq } => {
            let started = records
                .iter()
                .any(|r| r.kind == AnchorKind::Started && r.ceremony_id == *ceremony && r.size == *from_seq);
            let ended = records.iter().any(|r| r.kind != AnchorKind::Started && r.size > *from_seq);
            let one_ceremony = report.tail_ceremonies.len() == 1 && report.tail_starts_a_ceremony;
            if !(started && !ended && one_ceremony) {
                return Err(refused(
                    path,
                    format!(
                        "the log is {}; the key store has no record that this ceremony started there, so these entries cannot be told from lines added to the file: restore the log from a backup",
                        report.ending.describe()
                    ),
                ));
            }
            let to = report.entries - 1;
            let question = format!(
                "{}: ceremony {ceremony:?} was interrupted (entries seq {from_seq}..={to} have no closing checkpoint); the key store recorded its start. Does the paper log note the interruption? The next checkpoint will cover these entries",
                witness_title(plan)
            );
            if !operator.confirm(INTERRUPTED_PROMPT, &question)? {
                return Err(refused(
                    path,
                    format!(
                        "the witness did not confirm the interruption of ceremony {ceremony:?}; nothing was written"
                    ),
                ));
            }
            Some((ceremony.clone(), *from_seq, to))
        }
        Ending::Empty => return Err(refused(path, "the log is empty".into())),
    };

    // The token's audit key must be the one that signed, or succeed to it.
    // (A log whose only ceremony was interrupted before any checkpoint has
    // no signer; the store's records and key vouch for its start.)
    let signer = report.last_checkpoint_key.clone().unwrap_or_else(|| key_sha256.clone());
    let succession = if signer == key_sha256 {
        None
    } else {
        let trusted_quorum = |s: &Succession| {
            report.trust.quorum_keys.contains(&s.quorum_key_sha256)
                && report
                    .quorum_keys
                    .iter()
                    .find(|q| q.public_key_sha256 == s.quorum_key_sha256)
                    .is_some_and(|q| s.verify(q).is_ok())
        };
        let found = successions_for(store, &key_sha256)?.into_iter().find(trusted_quorum);
        if found.is_none() {
            return Err(refused(
                path,
                format!(
                    "the audit key {:?} on this token (SHA-256 {key_sha256}) did not sign the log's last checkpoint (signed by SHA-256 {signer}), and no succession on this token, signed by a custodians' quorum key this log trusts, names it: this is not the token that kept this log, or the log was re-signed",
                    plan.audit_key.label
                ),
            ));
        }
        found
    };
    Ok(Continued { log, report, paper, records, key_sha256, succession, interrupted })
}

/// Checks a log a ceremony reads but does not continue (the root
/// ceremony's log, for activation cards or a software root's sealing key)
/// against the store it opens: the audit key on it is pinned, its records
/// of the log are anchors. Returns the entry that records the check.
pub fn check_with_store(plan: &Plan, store: &KeyStore, path: &Path) -> Result<Event, CeremonyError> {
    let Some(origin) = audit::origin_of(path)? else {
        return Err(refused(path, "the log is empty".into()));
    };
    let records = records_of(store, &origin)?;
    let key_sha256 = store_audit_key(store, plan)?;
    let options = VerifyOptions {
        pinned_audit_keys: vec![key_sha256.clone()],
        anchors: records.clone(),
        expect_closed: true,
        ..VerifyOptions::default()
    };
    let report = audit::verify(path, &options)?;
    let bytes_sha256 = file_sha256(path)?;
    Ok(Event::new("preflight", "source-log-verified")
        .input(Artifact { name: super::engine::display_name(path), sha256: bytes_sha256 })
        .detail("origin", origin)
        .detail("entries", report.entries)
        .detail("anchored_by", format!("audit key {:?} on this key store (SHA-256 {key_sha256})", plan.audit_key.label))
        .detail("store_records", records.len() as u64))
}

/// The event that records a source log checked against the paper.
pub fn paper_checked_event(path: &Path, report: &VerifyReport, paper: &PaperAnswer) -> Result<Event, CeremonyError> {
    let event = Event::new("preflight", "source-log-verified")
        .input(Artifact { name: super::engine::display_name(path), sha256: file_sha256(path)? })
        .detail("origin", report.origin.clone().unwrap_or_default())
        .detail("entries", report.entries)
        .detail("anchored_by", "its final checkpoint, typed from the paper log")
        .detail("paper_checkpoint", paper.text.as_str())
        .detail("answered_by", paper.answered_by);
    Ok(grade(event, Some(paper)))
}

fn file_sha256(path: &Path) -> Result<String, CeremonyError> {
    let bytes = std::fs::read(path).map_err(|e| crate::files::FileError::io(path, "reading", e))?;
    Ok(words::sha256_hex(&bytes))
}

/// Records in the store that a ceremony starts on `log` as it stands.
/// A store that cannot keep records is tolerated only for a log it never
/// kept records of; the returned text goes into "ceremony-started".
pub fn record_start(store: &KeyStore, log: &AuditLog, ca_root: Option<&str>) -> Result<String, CeremonyError> {
    let record = AnchorRecord {
        format: ANCHOR_FORMAT.into(),
        origin: log.origin().to_string(),
        kind: AnchorKind::Started,
        ceremony_id: log.ceremony_id().to_string(),
        size: log.len(),
        root: log.root_hex(),
        note_sha256: None,
        key_sha256: None,
        ts: now(),
        ca_root_sha256: ca_root.map(str::to_string),
    };
    add(store, log, &record)
}

/// Records the checkpoint that ended a ceremony (closed or aborted).
pub fn record_end(
    store: &KeyStore,
    log: &AuditLog,
    kind: AnchorKind,
    cp: &Checkpoint,
    key_sha256: &str,
    ca_root: Option<&str>,
) -> Result<String, CeremonyError> {
    let record = AnchorRecord {
        format: ANCHOR_FORMAT.into(),
        origin: log.origin().to_string(),
        kind,
        ceremony_id: log.ceremony_id().to_string(),
        size: cp.size,
        root: cp.root_hex.clone(),
        note_sha256: Some(cp.fingerprint.hex.clone()),
        key_sha256: Some(key_sha256.to_string()),
        ts: now(),
        ca_root_sha256: ca_root.map(str::to_string),
    };
    add(store, log, &record)
}

fn add(store: &KeyStore, log: &AuditLog, record: &AnchorRecord) -> Result<String, CeremonyError> {
    let existing = records_of(store, &record.origin)?;
    // Records only move forward: keyrite never writes one behind the last.
    if let Some(last) = existing.iter().max_by_key(|r| r.size) {
        if last.size > record.size {
            return Err(refused(
                log.path(),
                format!(
                    "the key store's last record of this log ({}) is ahead of this one at size {}",
                    last.describe(),
                    record.size
                ),
            ));
        }
    }
    let bytes = record.to_bytes().map_err(|detail| CeremonyError::Input { what: "an anchor record".into(), detail })?;
    match store.add_record(&anchor::anchor_label(&record.origin), &bytes) {
        Ok(keeping) => Ok(keeping.describe().to_string()),
        Err(e) if existing.is_empty() => Ok(format!("not kept: {e}")),
        Err(e) => Err(e.into()),
    }
}

/// Adds a quorum key or succession record; the returned text says how it
/// is kept.
pub fn add_record(store: &KeyStore, label: &str, bytes: &[u8]) -> Result<RecordKeeping, CeremonyError> {
    Ok(store.add_record(label, bytes)?)
}

fn now() -> String {
    time::OffsetDateTime::now_utc().format(crate::audit::entry::TS_FORMAT).unwrap_or_default()
}
