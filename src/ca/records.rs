//! What the CA's other records say: its audit log and the last CRL it
//! signed, held against `state.json`.
//!
//! `state.json` is the working index, and the one record an insider can roll
//! back without a trace: it is replaced whole at every step, so putting
//! yesterday's copy back (from a backup, or a file kept aside) forgets every
//! revocation since, and the next CRL would simply not list them. Two
//! records do not roll back unnoticed: the audit log, hash-chained and
//! covered by checkpoints the token's audit key signed (its final checkpoint
//! is on paper), and each CRL, signed by the root key itself. So before a
//! CRL is built, and whenever the directory is verified, every revocation
//! the log records and every unexpired entry of the last CRL must still be
//! in `state.json` with the same reason and time; otherwise keyrite stops
//! and names the serial.
//!
//! The log is read here for facts only (lines as JSON, events by name); its
//! chain and checkpoints are the audit verifier's job, which every ceremony
//! runs before it continues the log.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;

use der::Decode;
use time::OffsetDateTime;

use super::{
    crl_files, normalize_hex, serial_hex, signed_by, CaDir, CaError, CertStatus, IssuedRecord, RevocationReason,
    CRLS_DIR, EVENT_CERTIFICATE_REVOKED, EVENT_CERTIFICATE_SIGNED, EVENT_CRL_SIGNED,
};
use crate::files::FileError;

/// A revocation that a record outside `state.json` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchoredRevocation {
    /// Lower-case hex of the serial's value, as the index keeps it.
    pub serial: String,
    pub reason: RevocationReason,
    /// Whole seconds, UTC.
    pub time: OffsetDateTime,
    /// Where it was found, for messages: the log line or the CRL file.
    pub anchor: String,
}

/// The facts the CA directory takes from its audit log.
#[derive(Debug, Default)]
pub(super) struct LogRecords {
    /// Whether the log exists at all (a CA directory starts without one).
    pub present: bool,
    /// The largest `details.crl_number` of a "crl-signed" event.
    pub max_crl_number: Option<u64>,
    /// Every "certificate-revoked" event, in log order.
    pub revocations: Vec<AnchoredRevocation>,
    /// notAfter of each certificate a "certificate-signed" event records.
    pub not_after: HashMap<String, OffsetDateTime>,
}

impl LogRecords {
    /// Reads the log at `path` in one pass. A missing log has no records. A
    /// last line without its newline is a torn append and is skipped; any
    /// other unreadable line, and a revocation or CRL event without its
    /// facts, is an error, because it could hide a number or a revocation.
    pub fn read(path: &Path) -> Result<LogRecords, CaError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LogRecords::default()),
            Err(e) => return Err(FileError::io(path, "reading audit log", e).into()),
        };
        let mut records = LogRecords { present: true, ..LogRecords::default() };
        let complete = bytes.ends_with(b"\n");
        let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
        for (i, line) in lines.iter().enumerate() {
            let n = i + 1;
            let bad = |problem: String| CaError::AuditLog {
                path: path.to_path_buf(),
                problem: format!("line {n}: {problem}"),
            };
            let value: serde_json::Value = match serde_json::from_slice(line) {
                Ok(v) => v,
                Err(_) if !complete && n == lines.len() => continue,
                Err(e) => return Err(bad(format!("not JSON: {e}"))),
            };
            let detail = |key: &str| value.pointer(&format!("/details/{key}"));
            let text = |key: &str| detail(key).and_then(serde_json::Value::as_str);
            match value.get("event").and_then(serde_json::Value::as_str) {
                Some(EVENT_CRL_SIGNED) => {
                    let number = detail("crl_number")
                        .and_then(|n| n.as_u64().or_else(|| n.as_str().and_then(|s| s.parse().ok())))
                        .ok_or_else(|| bad("a crl-signed event without a numeric details.crl_number".into()))?;
                    records.max_crl_number = records.max_crl_number.max(Some(number));
                }
                Some(EVENT_CERTIFICATE_REVOKED) => {
                    let serial = text("serial").and_then(normalised_serial);
                    let reason = text("reason").and_then(RevocationReason::from_name);
                    let time = text("revocation_time").and_then(parse_rfc3339);
                    let (Some(serial), Some(reason), Some(time)) = (serial, reason, time) else {
                        return Err(bad(
                            "a certificate-revoked event without a hex details.serial, an RFC 5280 details.reason and an RFC 3339 details.revocation_time".into(),
                        ));
                    };
                    let seq = value.get("seq").and_then(serde_json::Value::as_u64).unwrap_or(i as u64);
                    records.revocations.push(AnchoredRevocation {
                        serial,
                        reason,
                        time,
                        anchor: format!("audit log {} line {n}, seq {seq}", path.display()),
                    });
                }
                Some(EVENT_CERTIFICATE_SIGNED) => {
                    // Only ever used to let an expired certificate's entry
                    // leave the CRL; a fact missing here keeps it on.
                    if let (Some(serial), Some(t)) =
                        (text("serial").and_then(normalised_serial), text("not_after").and_then(parse_rfc3339))
                    {
                        records.not_after.insert(serial, t);
                    }
                }
                _ => {}
            }
        }
        Ok(records)
    }
}

/// The entries of the last CRL in `crls/` (the highest number), checked to
/// be signed by the root; none before the first CRL.
fn last_crl(dir: &Path, root_der: &[u8]) -> Result<Vec<AnchoredRevocation>, CaError> {
    use der::Encode;
    let Some((number, name)) = crl_files(dir)?.pop() else { return Ok(Vec::new()) };
    let rel = format!("{CRLS_DIR}/{name}");
    let path = dir.join(&rel);
    let bad = |problem: String| CaError::BadState { path: path.clone(), problem };
    let der_bytes = fs::read(&path).map_err(|e| FileError::io(&path, "reading", e))?;
    let root = x509_cert::Certificate::from_der(root_der).map_err(|e| bad(format!("the root certificate: {e}")))?;
    let root_spki =
        root.tbs_certificate().subject_public_key_info().to_der().map_err(|e| bad(format!("the root's key: {e}")))?;
    // A file that is not the root's own CRL is no evidence of anything; it
    // stops the ceremony rather than being skipped, or replacing the last
    // CRL with junk would be a way to make its entries optional.
    if !signed_by(&der_bytes, &root_spki) {
        return Err(bad("it is not a CRL signed by this CA's root key (the file was replaced or damaged)".into()));
    }
    let crl = x509_cert::crl::CertificateList::from_der(&der_bytes)
        .map_err(|e| bad(format!("it does not parse as a CRL: {e}")))?;
    let mut entries = Vec::new();
    for (i, e) in crl.tbs_cert_list.revoked_certificates.iter().flatten().enumerate() {
        let reason = entry_reason(e).ok_or_else(|| bad(format!("entry {i} has an unreadable reasonCode")))?;
        let seconds = i64::try_from(e.revocation_date.to_unix_duration().as_secs())
            .map_err(|_| bad(format!("entry {i}: revocation date out of range")))?;
        let time = OffsetDateTime::from_unix_timestamp(seconds)
            .map_err(|_| bad(format!("entry {i}: revocation date out of range")))?;
        entries.push(AnchoredRevocation {
            serial: serial_hex(e.serial_number.as_bytes()),
            reason,
            time,
            anchor: format!("CRL number {number}, {rel}"),
        });
    }
    Ok(entries)
}

/// The entry's reasonCode; its absence means `unspecified` (RFC 5280 §5.3.1).
fn entry_reason(entry: &x509_cert::crl::RevokedCert) -> Option<RevocationReason> {
    use x509_cert::ext::pkix::CrlReason;
    let ext =
        entry.crl_entry_extensions.iter().flatten().find(|x| x.extn_id == const_oid::db::rfc5280::ID_CE_CRL_REASONS);
    let Some(ext) = ext else { return Some(RevocationReason::Unspecified) };
    let code = CrlReason::from_der(ext.extn_value.as_bytes()).ok()? as u32;
    RevocationReason::from_code(u8::try_from(code).ok()?)
}

impl CaDir {
    /// Checks that `state.json` still holds every revocation recorded
    /// outside it: every "certificate-revoked" entry of the CA's audit log,
    /// and every entry of the last CRL whose certificate has not expired at
    /// `at`, each revoked in the index with the same reason and time. The
    /// first one missing is named in [`CaError::RevocationLost`]. Returns
    /// notes for what an interrupted ceremony legitimately leaves: a
    /// revocation saved in the state whose log entry was never written.
    pub fn check_revocations(&self, at: OffsetDateTime) -> Result<Vec<String>, CaError> {
        self.check_revocations_with(&LogRecords::read(&self.audit_log)?, at)
    }

    pub(super) fn check_revocations_with(&self, log: &LogRecords, at: OffsetDateTime) -> Result<Vec<String>, CaError> {
        let state: HashMap<&str, &IssuedRecord> =
            self.state.certificates.iter().map(|c| (c.serial.as_str(), c)).collect();
        let not_after =
            |serial: &str| state.get(serial).map(|c| c.not_after).or_else(|| log.not_after.get(serial).copied());
        let last = last_crl(&self.dir, &self.root_der)?;
        // An expired certificate's entry may leave the CRL (RFC 5280 §3.3);
        // one whose expiry nothing records stays.
        let from_crl = last.iter().filter(|r| not_after(&r.serial).is_none_or(|t| t >= at));
        for r in log.revocations.iter().chain(from_crl) {
            let lost = |problem: String| CaError::RevocationLost {
                dir: self.dir.clone(),
                serial: r.serial.clone(),
                anchor: format!("{}: {} at {}", r.anchor, r.reason, rfc3339(r.time)),
                problem,
            };
            let Some(c) = state.get(r.serial.as_str()) else {
                return Err(lost("does not list the certificate at all".into()));
            };
            match (c.status, c.reason, c.revoked_at) {
                (CertStatus::Revoked, Some(reason), Some(at)) if reason == r.reason && whole(at) == whole(r.time) => {}
                (CertStatus::Revoked, reason, at) => {
                    return Err(lost(format!(
                        "records it revoked for {} at {}",
                        reason.map_or("no reason".into(), |x| x.to_string()),
                        at.map_or("no time".into(), rfc3339)
                    )))
                }
                (CertStatus::Valid, _, _) => return Err(lost("shows it valid".into())),
            }
        }
        let mut notes = Vec::new();
        if log.present {
            let logged: HashSet<&str> = log.revocations.iter().map(|r| r.serial.as_str()).collect();
            for c in self.state.certificates.iter().filter(|c| c.status == CertStatus::Revoked) {
                if !logged.contains(c.serial.as_str()) {
                    notes.push(format!(
                        "serial {} is revoked in state.json but the audit log has no certificate-revoked entry for it (a revoke ceremony stopped after saving the state); its next CRL lists it",
                        c.serial
                    ));
                }
            }
        }
        Ok(notes)
    }
}

fn whole(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
}

fn parse_rfc3339(text: &str) -> Option<OffsetDateTime> {
    let t = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    t.replace_nanosecond(0).ok()
}

fn normalised_serial(text: &str) -> Option<String> {
    Some(normalize_hex(text)).filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()))
}
