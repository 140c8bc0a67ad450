//! Rehearsal-grade evidence in a log.
//!
//! A rehearsal may lean on aids a real ceremony must not: an answers file
//! instead of people at the terminal, `--allow-network` instead of an
//! air-gapped laptop, the software key store instead of an HSM, read-backs
//! that echo the screen instead of a witness reading paper. A ceremony
//! records each aid it used as a reason, in a list of strings under
//! `details.rehearsal_grade`: on its `ceremony-started` entry (an empty list
//! there says it used none), and again on each entry where an aid did its
//! work (the read-back it answered, the software store it opened). A log
//! holding any reason is rehearsal-grade: fit for practice, but no evidence
//! that the people in the room did what the script says.
//!
//! The reasons are written inside entries the chain and the checkpoints
//! protect, so taking one out of a log is tampering that `verify` reports.

use serde_json::Value;

use super::entry::Entry;

/// The `details` key under which an entry lists the rehearsal aids it
/// records.
pub const REHEARSAL_GRADE: &str = "rehearsal_grade";

/// One reason a log is rehearsal-grade: an aid one ceremony used, and the
/// entries that record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RehearsalReason {
    pub ceremony_id: String,
    pub reason: String,
    /// The `seq` of every entry that records it, in order.
    pub seqs: Vec<u64>,
}

/// Every rehearsal aid the entries record, one [`RehearsalReason`] per
/// ceremony and reason, in order of first appearance. A malformed list is
/// refused with the index of its entry: it is not what keyrite writes.
#[cfg(test)]
pub(crate) fn rehearsal_reasons(entries: &[Entry]) -> Result<Vec<RehearsalReason>, (usize, String)> {
    let mut out: Vec<RehearsalReason> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        add_reasons(&mut out, entry).map_err(|reason| (i, reason))?;
    }
    Ok(out)
}

/// Adds the rehearsal aids one entry records to `out` (the streaming
/// verifier calls this for each line it reads).
pub(crate) fn add_reasons(out: &mut Vec<RehearsalReason>, entry: &Entry) -> Result<(), String> {
    let Some(value) = entry.details.get(REHEARSAL_GRADE) else { return Ok(()) };
    let reasons = value
        .as_array()
        .filter(|list| list.iter().all(|r| r.as_str().is_some_and(|s| !s.trim().is_empty())))
        .ok_or_else(|| format!("details.{REHEARSAL_GRADE} is not a list of reasons (non-empty strings)"))?;
    for reason in reasons.iter().filter_map(Value::as_str) {
        match out.iter_mut().find(|r| r.ceremony_id == entry.ceremony_id && r.reason == reason) {
            Some(known) => known.seqs.push(entry.seq),
            None => out.push(RehearsalReason {
                ceremony_id: entry.ceremony_id.clone(),
                reason: reason.to_string(),
                seqs: vec![entry.seq],
            }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::entry::{FORMAT_VERSION, GENESIS_PREV};
    use crate::audit::Outcome;

    fn entry(seq: u64, ceremony: &str, grade: Option<Value>) -> Entry {
        let mut details = serde_json::Map::new();
        if let Some(g) = grade {
            details.insert(REHEARSAL_GRADE.into(), g);
        }
        Entry {
            v: FORMAT_VERSION,
            seq,
            ts: "2025-01-01T00:00:00Z".into(),
            ceremony_id: ceremony.into(),
            step: "s".into(),
            role: None,
            actor: None,
            event: "e".into(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            result: Outcome::Ok,
            details,
            prev: GENESIS_PREV.into(),
        }
    }

    #[test]
    fn reasons_are_grouped_by_ceremony_and_an_empty_list_is_no_reason() {
        let entries = [
            entry(0, "root", Some(serde_json::json!(["answers file", "echo"]))),
            entry(1, "root", None),
            entry(2, "root", Some(serde_json::json!(["echo"]))),
            entry(3, "crl", Some(serde_json::json!([]))),
            entry(4, "crl", Some(serde_json::json!(["echo"]))),
        ];
        let reasons = rehearsal_reasons(&entries).expect("well formed");
        let flat: Vec<(&str, &str, &[u64])> =
            reasons.iter().map(|r| (r.ceremony_id.as_str(), r.reason.as_str(), r.seqs.as_slice())).collect();
        assert_eq!(flat, [("root", "answers file", &[0][..]), ("root", "echo", &[0, 2]), ("crl", "echo", &[4])]);
        assert!(rehearsal_reasons(&[entry(0, "real", Some(serde_json::json!([])))]).expect("ok").is_empty());
    }

    #[test]
    fn a_malformed_list_names_its_entry() {
        for bad in [serde_json::json!("echo"), serde_json::json!([1]), serde_json::json!([" "])] {
            let entries = [entry(0, "root", None), entry(1, "root", Some(bad))];
            let (index, reason) = rehearsal_reasons(&entries).expect_err("malformed");
            assert_eq!(index, 1);
            assert!(reason.contains(REHEARSAL_GRADE), "{reason}");
        }
    }
}
