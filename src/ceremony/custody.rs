//! n-of-m custody of the root key, as ceremony steps.
//!
//! At the root ceremony (`[backup]` in the plan): a fresh 256-bit
//! key-encryption key (KEK) wraps the root key (PKCS#11: `backup-key` draws it
//! from the token's RNG and wraps with `CKM_AES_KEY_WRAP_PAD` under a
//! short-lived trusted key; software store: the KEK is the sealing key of the
//! key file), the KEK is split T-of-N with SLIP-0039 and each custodian
//! receives their share alone (`distribute-shares`), with a commitment per
//! share in the log; then, before the ceremony may close, every custodian
//! re-enters their share, each is checked against its commitment, and every
//! quorum (up to a bound) must recombine to the KEK (`restore-drill`). Only
//! then are the shares accepted.
//!
//! At a restore ceremony: the original ceremony's log is verified and its
//! commitments read; each custodian's share is checked alone, so a mistyped
//! word, a share of another set or a duplicate is named at once
//! (`collect-shares`); the recombined KEK unwraps the backup into a fresh
//! token, and the restored public key must equal the root certificate's
//! (`restore-key`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::engine::{display_name, Session};
use super::operator::{CardKind, PaperAnswer};
use super::{CeremonyError, Operator};
use crate::audit::anchor::{QUORUM_LABEL, SUCCESSION_LABEL};
use crate::audit::succession::{QuorumKey, Succession};
use crate::audit::{self, Artifact, Outcome, VerifyOptions};
use crate::config::{RestoreSpec, Step, StepKind};
use crate::files::{self, Mode};
use crate::hsm::backup::{self, RestoreOptions, WrappedKey};
use crate::hsm::keystore::KeyStore;
use crate::hsm::soft::{QuorumKey as QuorumSigner, SealingKey};
use crate::hsm::{HsmError, RandomSource};
use crate::secret::Secret;
use crate::shares::{self, Share};
use crate::words::{self, Fingerprint};

/// The most quorums a drill recombines. Every share is in at least one of
/// them; beyond this the drill stops adding combinations (16-choose-8 is
/// 12,870, each a PBKDF2 run).
const MAX_DRILL_QUORUMS: usize = 256;
/// How often a custodian may re-enter a share before the step fails.
const MAX_ATTEMPTS: u32 = 3;
/// The `purpose` of the backup's share set in a `shares-issued` entry. A
/// root log may hold other sets (activation), so sets are found by purpose.
pub const BACKUP_PURPOSE: &str = "root key backup KEK";

/// What the custody steps have produced so far.
#[derive(Default)]
pub struct State {
    /// The KEK, only between its making and the end of the drill (or, on a
    /// restore, between recombination and the unwrap). Zeroized on drop.
    pub kek: Option<Secret>,
    pub shares: Vec<Share>,
    pub set: Option<ShareSet>,
    pub cards: Vec<PathBuf>,
    pub blob_path: Option<PathBuf>,
    pub restore: Option<RestoreInputs>,
    pub restored_uri: Option<String>,
}

/// The public facts of a share set, as the log records them: enough to
/// check one share alone, nothing that helps recombine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ShareSet {
    pub purpose: String,
    pub set_identifier: u16,
    pub threshold: u8,
    pub count: u8,
    pub members: Vec<Member>,
}

/// One custodian's share, publicly: who holds it and its commitment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub custodian: String,
    /// 1-based, as printed on the card ("share i of N"). Named `number`: the
    /// audit log refuses keys that look like they hold a share.
    pub number: u8,
    pub commitment: String,
}

impl ShareSet {
    /// Finds the member a share claims to be, and checks it against its
    /// commitment. The error names the custodian who typed it.
    pub fn check(&self, ceremony_id: &str, custodian: &str, share: &Share) -> Result<&Member, String> {
        if share.identifier() != self.set_identifier {
            return Err(format!(
                "the share {custodian} entered is from another set (identifier {:05}, this backup's set is {:05}); bring the card of this ceremony",
                share.identifier(),
                self.set_identifier
            ));
        }
        let number = share.member_index() + 1;
        let member = self.members.iter().find(|m| m.number == number).ok_or_else(|| {
            format!("the share {custodian} entered claims to be share {number}, which this set does not have")
        })?;
        let commitment = shares::commitment(ceremony_id, share);
        if aws_lc_rs::constant_time::verify_slices_are_equal(commitment.as_bytes(), member.commitment.as_bytes())
            .is_err()
        {
            return Err(format!(
                "the share {custodian} entered (share {number}) does not match its commitment in the log: a word is wrong although the checksum passed, or the card was altered; re-enter it from the card"
            ));
        }
        Ok(member)
    }
}

/// Everything a restore reads, checked before a PIN is asked for.
pub struct RestoreInputs {
    pub backup: Backup,
    /// The custodians' quorum key the source log announces (trusted from
    /// the paper checkpoint), if its ceremony made one.
    pub quorum_key: Option<QuorumKey>,
    /// The root certificate's key and fingerprint (a restore has one).
    pub root: Option<(Vec<u8>, Fingerprint)>,
    /// The original ceremony's id: the share commitments are bound to it.
    pub source_ceremony: String,
    pub set: ShareSet,
    artifacts: Vec<Artifact>,
    log_path: PathBuf,
}

/// A root key backup, by backend.
pub enum Backup {
    /// PKCS#11: the key wrapped under the KEK.
    Wrapped(WrappedKey),
    /// Software store: the key file, sealed under the KEK.
    Sealed { label: String, spki: Vec<u8>, bytes: Vec<u8> },
}

impl RestoreInputs {
    pub fn key_label(&self) -> String {
        match &self.backup {
            Backup::Wrapped(w) => w.key_label.clone(),
            Backup::Sealed { label, .. } => label.clone(),
        }
    }

    pub fn artifacts(&self) -> Vec<Artifact> {
        self.artifacts.clone()
    }
}

/// Reads and checks a restore's inputs: the backup, the root certificate
/// (whose key must be the backup's), and the original ceremony's log (which
/// must verify, end with the checkpoint the witness typed from the paper
/// log, and record the share set). Returns the entry that records the
/// log's check.
pub fn read_restore_inputs(spec: &RestoreSpec, input_dir: &Path) -> Result<RestoreInputs, CeremonyError> {
    let read = |name: &str, cap: u64| -> Result<(PathBuf, Vec<u8>), CeremonyError> {
        let path = input_dir.join(name);
        let meta = std::fs::metadata(&path).map_err(|e| files::FileError::io(&path, "reading restore input", e))?;
        if meta.len() > cap {
            return Err(CeremonyError::Input {
                what: path.display().to_string(),
                detail: format!("larger than {cap} bytes"),
            });
        }
        let bytes = std::fs::read(&path).map_err(|e| files::FileError::io(&path, "reading restore input", e))?;
        Ok((path, bytes))
    };
    let (blob_path, blob_bytes) = read(&spec.backup_blob, 1 << 20)?;
    let (log_path, log_bytes) = read(&spec.ceremony_log, 256 << 20)?;
    let backup = parse_backup(&blob_path, &blob_bytes)?;
    let mut artifacts =
        vec![Artifact::of(display_name(&blob_path), &blob_bytes), Artifact::of(display_name(&log_path), &log_bytes)];
    let root = match &spec.root_certificate {
        Some(name) => {
            let (cert_path, cert_bytes) = read(name, 1 << 20)?;
            let cert_der = certificate_der(&cert_path, &cert_bytes)?;
            let root_spki = certificate_spki(&cert_path, &cert_der)?;
            let backup_spki = match &backup {
                Backup::Wrapped(w) => &w.public_key_spki,
                Backup::Sealed { spki, .. } => spki,
            };
            if *backup_spki != root_spki {
                return Err(CeremonyError::Input {
                    what: blob_path.display().to_string(),
                    detail: format!(
                        "this backup holds a different key than the root certificate {}; bring the backup of this root",
                        cert_path.display()
                    ),
                });
            }
            artifacts.push(Artifact::of(display_name(&cert_path), &cert_bytes));
            Some((root_spki, Fingerprint::sha256(&cert_der)))
        }
        None => None,
    };

    // The log's own consistency here (this also serves `ceremony print`);
    // what the paper says of it is checked in the preflight
    // ([`RestoreInputs::check_source_log`]).
    audit::verify(&log_path, &VerifyOptions { expect_closed: true, ..VerifyOptions::unpinned() })?;
    let (source_ceremony, set) = share_set_from_log(&log_path, &log_bytes)?;
    Ok(RestoreInputs { backup, quorum_key: None, root, source_ceremony, set, artifacts, log_path })
}

impl RestoreInputs {
    /// Checks the source log against its final checkpoint as the witness
    /// typed it from the paper log, and takes the custodians' quorum key it
    /// announces (trusted through that checkpoint). Returns the entry that
    /// records the check.
    pub fn check_source_log(&mut self, paper: &PaperAnswer) -> Result<audit::Event, CeremonyError> {
        let report = audit::verify(
            &self.log_path,
            &VerifyOptions {
                paper_checkpoints: vec![paper.text.clone()],
                expect_closed: true,
                ..VerifyOptions::default()
            },
        )?;
        let last = report.last_checkpoint.as_ref().map_or(0, |c| c.size);
        if report.trust.paper_matched.first() != Some(&last) {
            return Err(CeremonyError::Continuity {
                log: self.log_path.clone(),
                message: format!(
                    "the paper checkpoint is not this log's final checkpoint (over {last} entries): type the FINAL checkpoint of {} from its paper log",
                    display_name(&self.log_path)
                ),
            });
        }
        self.quorum_key =
            report.quorum_keys.iter().find(|q| report.trust.quorum_keys.contains(&q.public_key_sha256)).cloned();
        super::continuity::paper_checked_event(&self.log_path, &report, paper)
    }
}

fn parse_backup(path: &Path, bytes: &[u8]) -> Result<Backup, CeremonyError> {
    #[derive(Deserialize)]
    struct Head {
        format: String,
        label: Option<String>,
        public_key: Option<String>,
    }
    let head: Head = serde_json::from_slice(bytes).map_err(|e| CeremonyError::Input {
        what: path.display().to_string(),
        detail: format!("not a keyrite backup: {e}"),
    })?;
    match head.format.as_str() {
        backup::FORMAT => Ok(Backup::Wrapped(WrappedKey::parse(bytes, path).map_err(HsmError::from)?)),
        "keyrite-sealed-key-v1" => {
            use base64::Engine;
            let spki = head
                .public_key
                .and_then(|k| base64::engine::general_purpose::STANDARD.decode(k).ok())
                .ok_or_else(|| CeremonyError::Input {
                    what: path.display().to_string(),
                    detail: "field public_key is missing or not base64".into(),
                })?;
            let label = head.label.ok_or_else(|| CeremonyError::Input {
                what: path.display().to_string(),
                detail: "field label is missing".into(),
            })?;
            Ok(Backup::Sealed { label, spki, bytes: bytes.to_vec() })
        }
        other => Err(CeremonyError::Input {
            what: path.display().to_string(),
            detail: format!("format {other:?} is not a keyrite backup"),
        }),
    }
}

fn certificate_der(path: &Path, bytes: &[u8]) -> Result<Vec<u8>, CeremonyError> {
    if bytes.starts_with(b"-----BEGIN") {
        let (label, der) = pem_rfc7468::decode_vec(bytes)
            .map_err(|e| CeremonyError::Input { what: path.display().to_string(), detail: format!("not PEM: {e}") })?;
        if label != "CERTIFICATE" {
            return Err(CeremonyError::Input {
                what: path.display().to_string(),
                detail: format!("PEM label is {label:?}, not CERTIFICATE"),
            });
        }
        Ok(der)
    } else {
        Ok(bytes.to_vec())
    }
}

/// The DER SubjectPublicKeyInfo of a certificate.
pub fn certificate_spki(path: &Path, der: &[u8]) -> Result<Vec<u8>, CeremonyError> {
    use der::{Decode, Encode};
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| CeremonyError::Input {
        what: path.display().to_string(),
        detail: format!("not an X.509 certificate: {e}"),
    })?;
    cert.tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|e| CeremonyError::Input { what: path.display().to_string(), detail: e.to_string() })
}

/// The backup's share set recorded in a (verified) ceremony log.
fn share_set_from_log(path: &Path, bytes: &[u8]) -> Result<(String, ShareSet), CeremonyError> {
    match share_set_by_purpose(path, bytes, BACKUP_PURPOSE)? {
        Some((ceremony, set, _)) => Ok((ceremony, set)),
        None => Err(CeremonyError::Input {
            what: path.display().to_string(),
            detail: "this log records no backup share set (no shares-issued entry); it is not the log of a ceremony with a backup"
                .into(),
        }),
    }
}

/// The first share set of `purpose` in a (verified) ceremony log: the id of
/// the ceremony that issued it (its commitments are bound to it), the set,
/// and the entry's other details. Entries without a purpose-bearing set are
/// skipped, so logs written before sets had other purposes still read.
pub(super) fn share_set_by_purpose(
    path: &Path,
    bytes: &[u8],
    purpose: &str,
) -> Result<Option<(String, ShareSet, serde_json::Value)>, CeremonyError> {
    let text = String::from_utf8_lossy(bytes);
    for line in text.lines() {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if entry["event"] == "shares-issued" && entry["details"]["set"]["purpose"] == purpose {
            let ceremony = entry["ceremony_id"].as_str().unwrap_or_default().to_string();
            let set: ShareSet =
                serde_json::from_value(entry["details"]["set"].clone()).map_err(|e| CeremonyError::Input {
                    what: path.display().to_string(),
                    detail: format!("the shares-issued entry ({purpose}) is unreadable: {e}"),
                })?;
            return Ok(Some((ceremony, set, entry["details"].clone())));
        }
    }
    Ok(None)
}

pub fn run_step(step: &Step, s: &mut Session<'_>, operator: &mut dyn Operator) -> Result<(), CeremonyError> {
    match step.kind {
        StepKind::BackupKey => backup_key(step, s, operator),
        StepKind::DistributeShares => distribute(step, s, operator),
        StepKind::RestoreDrill => drill(step, s, operator),
        StepKind::CollectShares => collect(step, s, operator),
        StepKind::RestoreKey => restore(step, s, operator),
        other => {
            Err(CeremonyError::Step { step: step.number, message: format!("{} is not a custody step", other.name()) })
        }
    }
}

fn step_error(step: &Step, message: impl Into<String>) -> CeremonyError {
    CeremonyError::Step { step: step.number, message: message.into() }
}

fn backup_key(step: &Step, s: &mut Session<'_>, operator: &mut dyn Operator) -> Result<(), CeremonyError> {
    let key = s.plan.key.clone().ok_or_else(|| step_error(step, "the plan names no [key] to back up"))?;
    let blob_name =
        s.plan.outputs.backup_blob.clone().ok_or_else(|| step_error(step, "the plan names no outputs.backup_blob"))?;
    let blob_path = s.output(&blob_name);
    let (bytes, how) = match &mut s.store {
        KeyStore::Pkcs11 { token, .. } => {
            let kek = Secret::new(token.random_bytes(backup::KEK_LEN)?);
            let user_pin = s.user_pin.clone().ok_or_else(|| step_error(step, "no user PIN in memory"))?;
            let so_pin = s.so_pin.clone().ok_or_else(|| step_error(step, "no security officer PIN in memory"))?;
            let wrapped = backup::backup_key(token, &user_pin, &so_pin, &key.label, &kek)?;
            s.custody.kek = Some(kek);
            (
                wrapped.to_file_bytes(),
                "CKM_AES_KEY_WRAP_PAD under a trusted KEK from the token's RNG, a session object destroyed on the token after",
            )
        }
        KeyStore::Soft { .. } => {
            let path = s.store.soft_key_path(&key.label).ok_or_else(|| step_error(step, "no soft key path"))?;
            let bytes =
                std::fs::read(&path).map_err(|e| files::FileError::io(&path, "reading the sealed root key", e))?;
            if s.custody.kek.is_none() {
                return Err(step_error(step, "the software key store was not opened under a custody key"));
            }
            (bytes, "the sealed key file, AES-256-GCM under a KEK from the system RNG")
        }
    };
    files::write_new(&blob_path, &bytes, Mode::Public)?;
    let event = s
        .event(step, "key-backed-up")
        .output(Artifact::of(display_name(&blob_path), &bytes))
        .detail("label", key.label.as_str())
        .detail("method", how)
        .detail("kek_bits", 256);
    s.log.append(match s.plan.security_officer_custody() {
        Some(custody) => event.detail("security_officer_custody", custody),
        None => event,
    })?;
    operator.say(&format!(
        "Root key wrapped for backup: {}\n  SHA-256 {}",
        blob_path.display(),
        words::sha256_hex(&bytes)
    ));
    s.custody.blob_path = Some(blob_path);
    Ok(())
}

fn distribute(step: &Step, s: &mut Session<'_>, operator: &mut dyn Operator) -> Result<(), CeremonyError> {
    let spec = s.plan.backup.clone().ok_or_else(|| step_error(step, "the plan has no [backup]"))?;
    let kek = s
        .custody
        .kek
        .clone()
        .ok_or_else(|| step_error(step, "no key-encryption key: the backup-key step comes first"))?;
    let custodians = s.names_of(&spec.custodian_role);
    if custodians.len() != usize::from(spec.shares) {
        return Err(step_error(
            step,
            format!("{} shares need {} custodians; {} were recorded", spec.shares, spec.shares, custodians.len()),
        ));
    }
    let shares = shares::split(&kek, spec.threshold, spec.shares, b"", 0, &s.store)
        .map_err(|e| step_error(step, e.to_string()))?;
    let set = hand_out_set(
        step,
        s,
        operator,
        HandOut {
            cards: &shares,
            custodians: &custodians,
            kind: CardKind::Backup,
            purpose: BACKUP_PURPOSE,
            key_prefix: &step.id,
            event: "share-handed-out",
        },
        &|id: &str, custodian: &str, share: &Share| shares::render_card(id, custodian, share, spec.shares),
    )?;
    s.log
        .append(s.event(step, "shares-issued").detail("set", serde_json::to_value(&set).unwrap_or_default()).detail(
        "format",
        "SLIP-0039, one group, extendable, iteration exponent 0, empty passphrase; commitments per shares::commitment",
    ))?;
    if let Some(old) = s.custody.restore.as_ref().map(|r| (r.set.set_identifier, r.source_ceremony.clone())) {
        s.log.append(
            s.event(step, "share-set-retired")
                .detail("set_identifier", u64::from(old.0))
                .detail("issued_by_ceremony", old.1)
                .detail("replaced_by", u64::from(set.set_identifier))
                .detail("reason", "reshare: the old cards no longer count; custodians destroy them"),
        )?;
    }
    announce_quorum_key(s, &kek, set.set_identifier)?;
    s.custody.shares = shares;
    s.custody.set = Some(set);
    Ok(())
}

/// Derives the custodians' quorum key from the KEK, announces it in this
/// log and leaves it in the key store, so the CA's log can trust it and a
/// restore can sign a successor to a lost audit key
/// (`audit::succession`).
fn announce_quorum_key(s: &mut Session<'_>, kek: &Secret, set_identifier: u16) -> Result<(), CeremonyError> {
    let derived = QuorumSigner::derive(kek)?;
    let quorum = QuorumKey::new(derived.spki_der(), &s.plan.id, set_identifier);
    let known = super::continuity::quorum_key(&s.store)?;
    if let Some(k) = &known {
        if k.public_key_sha256 != quorum.public_key_sha256 {
            return Err(CeremonyError::Input {
                what: "the custodians' quorum key".into(),
                detail: format!(
                    "the key store already holds quorum key {}, another backup's; this ceremony's is {}",
                    k.public_key_sha256, quorum.public_key_sha256
                ),
            });
        }
    }
    s.log.announce_quorum_key(&quorum)?;
    if known.is_none() {
        let bytes = quorum
            .to_bytes()
            .map_err(|detail| CeremonyError::Input { what: "the quorum key record".into(), detail })?;
        super::continuity::add_record(&s.store, QUORUM_LABEL, &bytes)?;
    }
    Ok(())
}

fn drill(step: &Step, s: &mut Session<'_>, operator: &mut dyn Operator) -> Result<(), CeremonyError> {
    let set = s.custody.set.clone().ok_or_else(|| step_error(step, "no shares were handed out"))?;
    let kek = s.custody.kek.clone().ok_or_else(|| step_error(step, "no key-encryption key to drill against"))?;
    let (entered, quorums) = drill_cards(step, s, operator, &set, &kek, CardKind::Backup, "the key-encryption key")?;
    s.log.append(
        s.event(step, "restore-drill-passed")
            .detail("cards_verified", entered.len() as u64)
            .detail("quorums_recombined", quorums as u64)
            .detail("threshold", u64::from(set.threshold)),
    )?;
    operator.say(&format!(
        "Restore drill passed: {} shares checked against their commitments, {quorums} quorums of {} rebuilt the key.",
        entered.len(),
        set.threshold
    ));
    // The KEK has done its work: only the custodians hold it now.
    s.custody.kek = None;
    s.custody.shares.clear();
    Ok(())
}

/// The drill itself, for any set this ceremony issued: every custodian
/// re-enters their card (each checked alone against its commitment), then
/// every quorum (up to a bound) must rebuild `secret`. Returns the shares
/// entered, in member order, and how many quorums were recombined.
#[allow(clippy::too_many_arguments)]
pub(super) fn drill_cards(
    step: &Step,
    s: &mut Session<'_>,
    operator: &mut dyn Operator,
    set: &ShareSet,
    secret: &Secret,
    kind: CardKind,
    what: &str,
) -> Result<(Vec<Share>, usize), CeremonyError> {
    let ceremony_id = s.plan.id.clone();
    let mut entered: Vec<Share> = Vec::new();
    for member in &set.members {
        let share = take_checked_share(
            step,
            s,
            operator,
            &ceremony_id,
            set,
            &member.custodian,
            Some(member.number),
            &entered,
            kind,
        )?;
        s.log.append(
            s.event(step, "share-verified")
                .actor(member.custodian.as_str())
                .detail("custodian", member.custodian.as_str())
                .detail("number", u64::from(member.number))
                .detail("set_identifier", u64::from(set.set_identifier))
                .detail("commitment", member.commitment.as_str()),
        )?;
        entered.push(share);
    }
    let quorums = quorums(entered.len(), usize::from(set.threshold));
    for q in &quorums {
        let subset: Vec<Share> = q.iter().map(|i| entered[*i].clone()).collect();
        let ok = shares::combine(&subset, b"").map(|rebuilt| rebuilt.ct_eq(secret)).unwrap_or(false);
        if !ok {
            let who: Vec<&str> = q.iter().map(|i| set.members[*i].custodian.as_str()).collect();
            s.log.append(
                s.event(step, "deviation")
                    .result(Outcome::Failed)
                    .detail("drill", format!("the {} cards of {} do not rebuild {what}", kind.title(), who.join(", "))),
            )?;
            return Err(step_error(step, format!("drill failed: the {} cards of {} do not rebuild {what}. The cards are NOT accepted; the ceremony stops", kind.title(), who.join(", "))));
        }
    }
    Ok((entered, quorums.len()))
}

/// What [`hand_out_set`] hands out, and how it names it.
pub(crate) struct HandOut<'a> {
    pub cards: &'a [Share],
    pub custodians: &'a [String],
    pub kind: CardKind,
    pub purpose: &'a str,
    pub key_prefix: &'a str,
    pub event: &'a str,
}

/// Hands each custodian their card of a freshly split set, alone, logging
/// one commitment per card, and returns the set's public record. Card files
/// written go to the kind's list in the session.
pub(crate) fn hand_out_set(
    step: &Step,
    s: &mut Session<'_>,
    operator: &mut dyn Operator,
    h: HandOut<'_>,
    render: &dyn Fn(&str, &str, &Share) -> Secret,
) -> Result<ShareSet, CeremonyError> {
    let count = u8::try_from(h.cards.len()).map_err(|_| step_error(step, "more than 255 cards"))?;
    let mut members = Vec::new();
    for (share, custodian) in h.cards.iter().zip(h.custodians) {
        let card = render(&s.plan.id, custodian, share);
        let commitment = shares::commitment(&s.plan.id, share);
        let number = share.member_index() + 1;
        let handout =
            operator.hand_out_card(&format!("{}.{number}", h.key_prefix), custodian, number, &card, h.kind)?;
        s.log.append(
            s.event(step, h.event)
                .actor(custodian.as_str())
                .detail("opens", h.purpose)
                .detail("custodian", custodian.as_str())
                .detail("number", u64::from(number))
                .detail("of", u64::from(count))
                .detail("threshold", u64::from(share.member_threshold()))
                .detail("set_identifier", u64::from(share.identifier()))
                .detail("commitment", commitment.as_str())
                .detail("medium", handout.as_ref().map_or("shown on screen".to_string(), |p| p.display().to_string())),
        )?;
        if let Some(path) = handout {
            match h.kind {
                CardKind::Backup => s.custody.cards.push(path),
                _ => s.activation.cards.push(path),
            }
        }
        members.push(Member { custodian: custodian.clone(), number, commitment });
    }
    Ok(ShareSet {
        purpose: h.purpose.into(),
        set_identifier: h.cards.first().map(Share::identifier).unwrap_or_default(),
        threshold: h.cards.first().map(Share::member_threshold).unwrap_or_default(),
        count,
        members,
    })
}

/// Asks `custodian` for their share until it parses, belongs to `set`,
/// matches its commitment and is not a duplicate, or attempts run out.
#[allow(clippy::too_many_arguments)]
fn take_checked_share(
    step: &Step,
    s: &mut Session<'_>,
    operator: &mut dyn Operator,
    ceremony_id: &str,
    set: &ShareSet,
    custodian: &str,
    expected: Option<u8>,
    already: &[Share],
    kind: CardKind,
) -> Result<Share, CeremonyError> {
    let mut last = String::new();
    for attempt in 1..=MAX_ATTEMPTS {
        let words = operator.take_card(&format!("{}.{}", step.id, slug(custodian)), custodian, attempt, kind)?;
        let problem = match Share::parse(words.expose_str().unwrap_or_default()) {
            Err(e) => format!("the share {custodian} entered is not valid: {e}"),
            Ok(share) => match set.check(ceremony_id, custodian, &share) {
                Err(e) => e,
                Ok(member) if expected.is_some_and(|n| n != member.number) => format!(
                    "{custodian} entered share {} but holds share {}; each custodian enters their own card",
                    member.number,
                    expected.unwrap_or_default()
                ),
                Ok(member) => match already.iter().position(|o| o.member_index() == share.member_index()) {
                    Some(_) => {
                        format!("{custodian} entered share {}, which was already entered: a duplicate", member.number)
                    }
                    None => return Ok(share),
                },
            },
        };
        s.log.append(
            s.event(step, "share-rejected")
                .result(Outcome::Failed)
                .actor(custodian)
                .detail("custodian", custodian)
                .detail("attempt", u64::from(attempt))
                .detail("reason", problem.as_str()),
        )?;
        operator.say(&format!("REJECTED: {problem}"));
        last = problem;
        if !operator.is_interactive() {
            break;
        }
    }
    Err(step_error(step, last))
}

/// The quorums a drill recombines: a window starting at every share (so each
/// share is used), then the rest in order, up to [`MAX_DRILL_QUORUMS`].
fn quorums(n: usize, t: usize) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    for start in 0..n {
        let mut q: Vec<usize> = (0..t).map(|k| (start + k) % n).collect();
        q.sort_unstable();
        if !out.contains(&q) {
            out.push(q);
        }
    }
    let mut q: Vec<usize> = (0..t).collect();
    while out.len() < MAX_DRILL_QUORUMS {
        if !out.contains(&q) {
            out.push(q.clone());
        }
        // Next combination in lexicographic order.
        let Some(i) = (0..t).rev().find(|&i| q[i] < n - t + i) else { break };
        q[i] += 1;
        for j in i + 1..t {
            q[j] = q[j - 1] + 1;
        }
    }
    out
}

fn collect(step: &Step, s: &mut Session<'_>, operator: &mut dyn Operator) -> Result<(), CeremonyError> {
    let (set, source) = {
        let r = s.custody.restore.as_ref().ok_or_else(|| step_error(step, "no restore inputs"))?;
        (r.set.clone(), r.source_ceremony.clone())
    };
    let role = s.plan.restore.as_ref().map(|r| r.custodian_role.clone()).unwrap_or_default();
    let present = s.names_of(&role);
    if present.len() < usize::from(set.threshold) {
        return Err(step_error(
            step,
            format!(
                "{} custodians are present, and this backup needs {} of its {} shares",
                present.len(),
                set.threshold,
                set.count
            ),
        ));
    }
    let mut entered: Vec<Share> = Vec::new();
    for custodian in present.iter().take(usize::from(set.threshold)) {
        let share = take_checked_share(step, s, operator, &source, &set, custodian, None, &entered, CardKind::Backup)?;
        s.log.append(
            s.event(step, "share-verified")
                .actor(custodian.as_str())
                .detail("custodian", custodian.as_str())
                .detail("number", u64::from(share.member_index() + 1)),
        )?;
        entered.push(share);
    }
    let kek =
        shares::combine(&entered, b"").map_err(|e| step_error(step, format!("the shares do not combine: {e}")))?;
    // The recombined key must open this backup before anything is done with
    // it: a wrong quorum is told apart from a damaged backup here.
    if let Some(r) = &s.custody.restore {
        let fits = match &r.backup {
            Backup::Wrapped(w) => backup::kek_check(&kek).map(|c| c == w.kek_check).unwrap_or(false),
            Backup::Sealed { label, bytes, .. } => {
                crate::hsm::soft::unseal_bytes(label, bytes, &SealingKey::Raw(kek.clone())).is_ok()
            }
        };
        if !fits {
            return Err(step_error(
                step,
                "the shares combine, but not to the key that protects this backup: they are shares of another backup; check each card's ceremony and set",
            ));
        }
    }
    s.log.append(
        s.event(step, "shares-combined")
            .detail("cards", entered.len() as u64)
            .detail("set_identifier", u64::from(set.set_identifier)),
    )?;
    s.custody.kek = Some(kek);
    Ok(())
}

fn restore(step: &Step, s: &mut Session<'_>, operator: &mut dyn Operator) -> Result<(), CeremonyError> {
    let kek = s
        .custody
        .kek
        .take()
        .ok_or_else(|| step_error(step, "no key-encryption key: the collect-shares step comes first"))?;
    let inputs = s.custody.restore.take().ok_or_else(|| step_error(step, "no restore inputs"))?;
    let quorum = QuorumSigner::derive(&kek)?;
    let (uri, spki) = match (&inputs.backup, &mut s.store) {
        (Backup::Wrapped(wrapped), KeyStore::Pkcs11 { token, .. }) => {
            let key = backup::restore_key(token, wrapped, &kek, &RestoreOptions::default())?;
            (key.uri(), crate::hsm::Signer::spki_der(&key).to_vec())
        }
        (Backup::Sealed { label, bytes, .. }, store @ KeyStore::Soft { .. }) => {
            let key = store.adopt_sealed(label, bytes, &SealingKey::Raw(kek.clone()))?;
            (key.uri.clone(), key.signer.spki_der().to_vec())
        }
        _ => return Err(step_error(
            step,
            "this backup was made for the other kind of key store (PKCS#11 vs software); restore it onto the same kind",
        )),
    };
    drop(kek);
    let (root_spki, root_fingerprint) = inputs
        .root
        .as_ref()
        .ok_or_else(|| step_error(step, "the plan names no root certificate to prove the restore against"))?;
    if spki != *root_spki {
        return Err(step_error(
            step,
            "the restored public key differs from the root certificate's; the restore is not accepted",
        ));
    }
    let fp = Fingerprint::sha256(&spki);
    s.log.append(
        s.event(step, "key-restored")
            .detail("label", inputs.key_label())
            .detail("uri", uri.as_str())
            .detail("public_key_sha256", fp.hex.as_str())
            .detail("matches_root_certificate", root_fingerprint.hex.as_str()),
    )?;
    succeed_audit_key(step, s, operator, &quorum, inputs.quorum_key.as_ref(), inputs.set.set_identifier)?;
    operator.say(&format!(
        "Root key restored into {} and proven: its public key equals the root certificate's.\n  public key SHA-256 {}\n  {}",
        s.store.facts().label(),
        fp.hex,
        fp.words
    ));
    s.custody.restored_uri = Some(uri);
    Ok(())
}

/// The custodians, present with the KEK rebuilt, authorise this
/// ceremony's audit key as the successor of the lost one: the quorum key
/// signs a succession statement, which goes into this log and the key store,
/// where the next CA ceremony on this token finds it. Without a quorum key
/// in the root ceremony's log (one made before keyrite derived them) there
/// is nothing to succeed from, and the log says so.
fn succeed_audit_key(
    step: &Step,
    s: &mut Session<'_>,
    operator: &mut dyn Operator,
    derived: &QuorumSigner,
    announced: Option<&QuorumKey>,
    set_identifier: u16,
) -> Result<(), CeremonyError> {
    let quorum = QuorumKey::new(derived.spki_der(), &s.plan.id, set_identifier);
    let Some(announced) = announced else {
        s.log.append(s.event(step, "audit-key-succession-skipped").detail(
            "reason",
            "the log of the ceremony that issued the shares announces no custodians' quorum key; the CA's log cannot trust this ceremony's audit key by succession",
        ))?;
        return Ok(());
    };
    if announced.public_key_sha256 != quorum.public_key_sha256 {
        return Err(step_error(
            step,
            format!(
                "the quorum key rebuilt from the shares (SHA-256 {}) is not the one the source log announced ({}); the shares and the log are of different backups",
                quorum.public_key_sha256, announced.public_key_sha256
            ),
        ));
    }
    let spec = s.plan.audit_key.clone();
    let audit_key = words::sha256_hex(s.store.find(&spec.label, Some(spec.signature))?.signer.spki_der());
    let statement = Succession::statement(&quorum.public_key_sha256, &audit_key, &s.plan.id);
    let succession =
        Succession::new(&quorum.public_key_sha256, &audit_key, &s.plan.id, &derived.sign(statement.as_bytes()));
    s.log.announce_quorum_key(announced)?;
    s.log.record_succession(&succession)?;
    let bad = |detail: String| CeremonyError::Input { what: "the succession record".into(), detail };
    if super::continuity::quorum_key(&s.store)?.is_none() {
        super::continuity::add_record(&s.store, QUORUM_LABEL, &announced.to_bytes().map_err(bad)?)?;
    }
    let kept = super::continuity::add_record(&s.store, SUCCESSION_LABEL, &succession.to_bytes().map_err(bad)?)?;
    operator.say(&format!(
        "The custodians' quorum key authorised audit key {:?} (SHA-256 {audit_key}) as the successor for the CA's log; recorded in this log and the key store ({}).",
        spec.label,
        kept.describe()
    ));
    Ok(())
}

/// `keyrite shares verify`: checks one share alone, offline, against the
/// commitments in the log of the ceremony that issued it (verified with the
/// pins the caller gives), and says whose share it is.
pub fn verify_share(log: &Path, words: &Secret, options: &VerifyOptions) -> Result<String, CeremonyError> {
    audit::verify(log, &VerifyOptions { expect_closed: true, ..options.clone() })?;
    let bytes = std::fs::read(log).map_err(|e| files::FileError::io(log, "reading", e))?;
    let (ceremony, set) = share_set_from_log(log, &bytes)?;
    let share = Share::parse(words.expose_str().unwrap_or_default())
        .map_err(|e| CeremonyError::Input { what: "the share".into(), detail: e.to_string() })?;
    let member = set
        .check(&ceremony, "the custodian", &share)
        .map_err(|detail| CeremonyError::Input { what: "the share".into(), detail })?;
    Ok(format!(
        "share {} of {} (threshold {}), set {:05}, held by {}: matches its commitment in ceremony {:?}",
        member.number, set.count, set.threshold, set.set_identifier, member.custodian, ceremony
    ))
}

/// A custodian's name as a file name: lowercase letters, digits and '-'.
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drill_quorums_use_every_share_and_stay_bounded() {
        let q = quorums(3, 2);
        assert_eq!(q.len(), 3, "all three pairs of 2-of-3");
        let q = quorums(16, 5);
        assert_eq!(q.len(), MAX_DRILL_QUORUMS);
        for share in 0..16 {
            assert!(q.iter().any(|c| c.contains(&share)), "share {share} drilled");
        }
        assert!(q.iter().all(|c| c.len() == 5 && c.windows(2).all(|w| w[0] < w[1])));
        let all = quorums(5, 3);
        assert_eq!(all.len(), 10, "5 choose 3, every one");
    }

    #[test]
    fn custodian_names_become_safe_file_names() {
        assert_eq!(slug("Ada Lovelace"), "ada-lovelace");
        assert_eq!(slug("../../etc/passwd"), "etc-passwd");
        assert_eq!(slug("  Zoë  O'Neil "), "zo-o-neil");
    }
}
