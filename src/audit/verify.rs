//! Offline verification of an audit log.
//!
//! Checks run in passes, in this order, and the first failure names its line
//! (1-based) and seq:
//!
//! 1. every line is complete, parses as canonical JSON, has a known `v`, and
//!    has `seq` equal to its position (a deleted, inserted or moved line
//!    shows here);
//! 2. every `prev` is the SHA-256 of the line before (an edited byte shows
//!    here; see [`locate_chain_break`] for how the edited line is named);
//! 3. audit-key announcements are well formed, and every checkpoint's origin,
//!    size and Merkle root match the lines before it, its note verifies under
//!    an announced (and, when pinned, pinned) key, and its `seal` covers the
//!    checkpoint line itself;
//! 4. with `expect_closed`, the log ends with "ceremony-closed" and a final
//!    checkpoint; and a checkpoint from the paper log, when given, is found.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::Value;

use super::checkpoint::{self, CheckpointBody, NoteKey, SignedNote};
use super::entry::{Entry, EVENT_CEREMONY_CLOSED, EVENT_CHECKPOINT, EVENT_KEY_ANNOUNCED, GENESIS_PREV};
use super::merkle::MerkleTree;
use super::{origin_for, AnnouncedKey, AuditError, Checkpoint, SEAL_CONTEXT};
use crate::files::FileError;
use crate::hsm::{self, SignatureAlgorithm};
use crate::words::{sha256, Fingerprint};

/// What the verifier should insist on beyond the log's own consistency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// SHA-256 (hex) of the audit keys' SPKI, from the paper log. When not
    /// empty, every checkpoint must verify under one of these keys: a log
    /// rewritten and re-signed with a fresh key announced in it fails here.
    pub pinned_audit_keys: Vec<String>,
    /// The log must end with "ceremony-closed" and a checkpoint covering
    /// everything before it.
    pub expect_closed: bool,
    /// A checkpoint from the paper log: the full note, its body, its root
    /// (hex) or its fingerprint (hex). It must match a checkpoint in the log.
    pub expected_checkpoint: Option<String>,
}

/// What a successful verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub entries: u64,
    pub checkpoints: u64,
    /// Ceremony IDs in order of first appearance.
    pub ceremonies: Vec<String>,
    pub last_checkpoint: Option<Checkpoint>,
    pub audit_keys: Vec<AnnouncedKey>,
    /// Entries after the last checkpoint: protected by the hash chain only,
    /// not yet by a signature.
    pub uncovered_entries: u64,
    /// Whether the log ends with "ceremony-closed" and its final checkpoint.
    pub closed: bool,
    /// The size of the checkpoint that matched `expected_checkpoint`.
    pub matched_expected_checkpoint: Option<u64>,
    /// The rehearsal aids the log records (see [`super::grade`]); empty when
    /// it records none. Any reason makes the log rehearsal-grade.
    pub rehearsal_grade: Vec<super::RehearsalReason>,
}

/// Verifies the audit log at `path` offline. See the module documentation
/// for what is checked and in which order.
pub fn verify(path: &Path, options: &VerifyOptions) -> Result<VerifyReport, AuditError> {
    let bytes = std::fs::read(path).map_err(|e| FileError::io(path, "reading audit log", e))?;
    Ok(scan(path, &bytes, options)?.report)
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

pub(crate) fn scan(path: &Path, bytes: &[u8], options: &VerifyOptions) -> Result<Scan, AuditError> {
    let p = || path.to_path_buf();

    // Pass 1: lines, canonical JSON, version, sequence.
    let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    // A well-formed file ends in a newline, leaving one empty piece.
    let complete = lines.last().is_some_and(|l| l.is_empty());
    if complete {
        lines.pop();
    } else if !bytes.is_empty() {
        return Err(AuditError::Malformed {
            path: p(),
            line: lines.len() as u64,
            reason: "the last line has no newline: the file was cut mid-line (a crash during a write, or a truncation)"
                .into(),
        });
    }
    let mut entries = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let n = i as u64 + 1;
        let (entry, _) =
            Entry::parse_line(line).map_err(|reason| AuditError::Malformed { path: p(), line: n, reason })?;
        if entry.seq != i as u64 {
            return Err(AuditError::Sequence { path: p(), line: n, expected: i as u64, found: entry.seq });
        }
        entries.push(entry);
    }

    // Pass 2: the hash chain.
    let hashes: Vec<String> = lines.iter().map(|l| hex::encode(sha256(l))).collect();
    if let Some(err) = locate_chain_break(path, &entries, &hashes) {
        return Err(err);
    }

    // Pass 3: announcements, Merkle roots, checkpoint signatures and seals.
    let origin = entries.first().map(|e| origin_for(&e.ceremony_id));
    let pinned: Vec<String> = options.pinned_audit_keys.iter().map(|k| k.trim().to_ascii_lowercase()).collect();
    let mut tree = MerkleTree::new();
    let mut keys: Vec<AnnouncedKey> = Vec::new();
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    let mut ceremonies: Vec<String> = Vec::new();
    for (i, (entry, line)) in entries.iter().zip(&lines).enumerate() {
        let n = i as u64 + 1;
        let seq = entry.seq;
        if !ceremonies.contains(&entry.ceremony_id) {
            ceremonies.push(entry.ceremony_id.clone());
        }
        match entry.event.as_str() {
            EVENT_KEY_ANNOUNCED => {
                let key = parse_announcement(entry).map_err(|reason| AuditError::Invalid {
                    path: p(),
                    line: n,
                    seq,
                    reason,
                })?;
                if let Some(old) = keys.iter().find(|k| k.name == key.name) {
                    if old.spki_der != key.spki_der || old.algorithm != key.algorithm {
                        return Err(AuditError::Invalid {
                            path: p(),
                            line: n,
                            seq,
                            reason: format!(
                                "audit key name {:?} is announced again for a different key (first at seq {})",
                                key.name, old.seq
                            ),
                        });
                    }
                } else {
                    keys.push(key);
                }
            }
            EVENT_CHECKPOINT => {
                let cp_err = |reason: String| AuditError::Checkpoint { path: p(), line: n, seq, reason };
                let origin = origin.as_deref().unwrap_or_default();
                let cp = check_checkpoint(entry, origin, &tree, &keys, &pinned, &checkpoints).map_err(cp_err)?;
                checkpoints.push(cp);
            }
            _ => {}
        }
        tree.push(line);
    }

    // Pass 4: closure and the paper log.
    let last_cp = checkpoints.last().cloned();
    let total = entries.len() as u64;
    let closed = match entries.as_slice() {
        [.., closing, cp] => {
            cp.event == EVENT_CHECKPOINT
                && closing.event == EVENT_CEREMONY_CLOSED
                && closing.ceremony_id == cp.ceremony_id
        }
        _ => false,
    };
    if options.expect_closed && !closed {
        let (line, seq, reason) = match entries.last() {
            None => (0, 0, "the log is empty".to_string()),
            Some(last) if last.event == EVENT_CHECKPOINT => {
                (total, last.seq, "the last checkpoint does not follow a \"ceremony-closed\" entry".to_string())
            }
            Some(last) if last.event == EVENT_CEREMONY_CLOSED => {
                (total, last.seq, "\"ceremony-closed\" is not followed by its final checkpoint".to_string())
            }
            Some(last) => (total, last.seq, format!("the last entry is {:?}, not the final checkpoint", last.event)),
        };
        return Err(AuditError::NotClosed { path: p(), line, seq, reason });
    }
    let matched = match &options.expected_checkpoint {
        None => None,
        Some(expected) => Some(match_expected(expected, &checkpoints).ok_or_else(|| AuditError::PaperMismatch {
            path: p(),
            reason: format!(
                "no checkpoint in the log matches the paper log's {:?} (the log has {} checkpoint(s), the last at size {})",
                expected.trim(),
                checkpoints.len(),
                last_cp.as_ref().map_or(0, |c| c.size)
            ),
        })?),
    };

    let uncovered = match &last_cp {
        Some(cp) => total - cp.size,
        None => total,
    };
    let prev = hashes.last().cloned().unwrap_or_else(|| GENESIS_PREV.to_string());
    let rehearsal_grade = super::grade::rehearsal_reasons(&entries).map_err(|(i, reason)| AuditError::Invalid {
        path: p(),
        line: i as u64 + 1,
        seq: i as u64,
        reason,
    })?;
    Ok(Scan {
        report: VerifyReport {
            entries: total,
            checkpoints: checkpoints.len() as u64,
            ceremonies,
            last_checkpoint: last_cp,
            audit_keys: keys,
            uncovered_entries: uncovered,
            closed,
            matched_expected_checkpoint: matched,
            rehearsal_grade,
        },
        tree,
        prev,
        origin,
    })
}

/// Finds the first break in the `prev` chain and names the line that was
/// most likely edited.
///
/// An edit to line k changes k's hash, so line k+1's `prev` no longer
/// matches: the first break shows *after* the edited line. Blaming the line
/// where the break shows would point at an intact line. So when the break
/// shows at line i, we look one further: if line i+1's `prev` matches line
/// i's hash, line i is intact and line i−1 was edited; if it does not, line
/// i's own bytes changed too, which a single edit explains only if it was to
/// line i (its `prev` field). For the last line there is no line after it;
/// if it is a checkpoint, its `seal` signature over its own content decides.
fn locate_chain_break(path: &Path, entries: &[Entry], hashes: &[String]) -> Option<AuditError> {
    let broken = |i: usize| -> bool {
        let expected = if i == 0 { GENESIS_PREV } else { hashes[i - 1].as_str() };
        entries[i].prev != expected
    };
    let i = (0..entries.len()).find(|&i| broken(i))?;
    let altered = |k: usize, reason: String| AuditError::Altered {
        path: path.to_path_buf(),
        line: k as u64 + 1,
        seq: entries[k].seq,
        reason,
    };
    if i == 0 {
        return Some(altered(0, "the first entry's prev is not 64 zeros".into()));
    }
    let edited_line_before = |note: &str| {
        altered(
            i - 1,
            format!("its SHA-256 is {} but line {} recorded prev {}{note}", hashes[i - 1], i + 1, entries[i].prev),
        )
    };
    if i + 1 < entries.len() {
        if broken(i + 1) {
            return Some(altered(
                i,
                format!(
                    "its prev does not match line {}, and its own hash does not match the prev line {} recorded for it",
                    i,
                    i + 2
                ),
            ));
        }
        return Some(edited_line_before(&format!(
            " (line {} itself is intact: line {} recorded its hash correctly)",
            i + 1,
            i + 2
        )));
    }
    // The break shows at the last line.
    if entries[i].event == EVENT_CHECKPOINT {
        let keys = lenient_keys(&entries[..i]);
        return Some(match check_seal(&entries[i], &keys) {
            Ok(()) => edited_line_before(" (the last line, a checkpoint, is intact: its seal verifies)"),
            Err(_) => altered(i, "its prev does not match line before it and its seal does not verify".into()),
        });
    }
    Some(edited_line_before(&format!(
        "; or line {} (the last line, which nothing after it protects) had its prev edited",
        i + 1
    )))
}

/// Announced keys from entries that may not have been checked yet; malformed
/// announcements are skipped, pass 3 reports them.
fn lenient_keys(entries: &[Entry]) -> Vec<AnnouncedKey> {
    let mut keys: Vec<AnnouncedKey> = Vec::new();
    for e in entries.iter().filter(|e| e.event == EVENT_KEY_ANNOUNCED) {
        if let Ok(k) = parse_announcement(e) {
            if !keys.iter().any(|old| old.name == k.name) {
                keys.push(k);
            }
        }
    }
    keys
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

fn check_checkpoint(
    entry: &Entry,
    origin: &str,
    tree: &MerkleTree,
    keys: &[AnnouncedKey],
    pinned: &[String],
    earlier: &[Checkpoint],
) -> Result<Checkpoint, String> {
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
        let from = earlier.last().map_or(0, |c| c.size);
        return Err(format!(
            "its Merkle root {} does not match the {} entries before it (root {root_hex}): one of lines {}..={} was altered after it was signed and the hash chain rewritten to hide it",
            hex::encode(body.root),
            entry.seq,
            from + 1,
            entry.seq
        ));
    }
    let note_keys: Vec<NoteKey<'_>> =
        keys.iter().map(|k| NoteKey { name: &k.name, spki_der: &k.spki_der, algorithm: k.algorithm }).collect();
    let verified = checkpoint::verify_note(&note, &note_keys)?;
    if !verified.iter().any(|&k| keys[k].name == key_name) {
        return Err(format!("details.key names {key_name:?} but the note is not signed by that key"));
    }
    if !pinned.is_empty() && !verified.iter().any(|&k| pinned.contains(&keys[k].fingerprint.hex)) {
        let k = &keys[verified[0]];
        return Err(format!(
            "it is signed by audit key {:?} (SPKI SHA-256 {}), which is not among the pinned audit keys: the log may have been rewritten and re-signed with another key",
            k.name, k.fingerprint.hex
        ));
    }
    check_seal(entry, keys)?;
    let expected_output = super::Artifact::of("checkpoint-note", note_text.as_bytes());
    if entry.outputs != [expected_output] || !entry.inputs.is_empty() {
        return Err("its outputs must be exactly the checkpoint-note artifact".into());
    }
    Ok(Checkpoint {
        entry_seq: entry.seq,
        size,
        root_hex,
        note_text: note_text.to_string(),
        fingerprint: Fingerprint::sha256(note_text.as_bytes()),
        key_name: key_name.to_string(),
    })
}

/// Finds the checkpoint the paper log recorded, given as the note, its body,
/// its root in hex or its fingerprint in hex.
fn match_expected(expected: &str, checkpoints: &[Checkpoint]) -> Option<u64> {
    let normalized = expected.replace("\r\n", "\n");
    let want = normalized.trim();
    let lower = want.to_ascii_lowercase();
    let is_hex = lower.len() == 64 && lower.bytes().all(|b| b.is_ascii_hexdigit());
    checkpoints
        .iter()
        .rev()
        .find(|c| {
            if is_hex {
                return c.root_hex == lower || c.fingerprint.hex == lower;
            }
            let note = c.note_text.trim();
            let body = SignedNote::parse(&c.note_text).map(|n| n.text).unwrap_or_default();
            want == note || want == body.trim()
        })
        .map(|c| c.size)
}
