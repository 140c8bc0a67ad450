//! The `ca` room: the offline root's state directory.
//!
//! ```text
//! <dir>/state.json      the index of issued certificates and the CRL counters
//! <dir>/root.der        the root certificate the directory belongs to
//! <dir>/certs/<serial>.der   every certificate the root issued
//! <dir>/crls/crl-<n>.der     every CRL the root signed
//! <dir>/audit.jsonl     the CA's audit log (written by the ceremonies)
//! ```
//!
//! `state.json` only ever changes through [`files::replace`] (temp file,
//! fsync, rename, fsync of the directory), so after a crash it is either the
//! old state or the new one. Every operation that signs is split so that the
//! number it consumes is written down *before* the signature exists and the
//! signed artifact *after*: a crash in between leaves a reserved number that
//! is skipped, never one that is used twice. `docs/ca-state.md` walks through
//! each crash point.
//!
//! [`crl`] builds the CRLs; `records` holds the state against what the
//! audit log and the last CRL say was revoked, so a restored `state.json`
//! cannot quietly undo a revocation.

pub mod crl;
mod records;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use crl::{build_crl, CrlParams, SignedCrl};

use crate::audit::{Artifact, Event};
use crate::files::{self, FileError, Mode};
use crate::hsm::{HsmError, Signer};
use crate::transfer::{BundleKind, BundleWriter, Manifest, TransferError};
use crate::words;

pub const STATE_FILE: &str = "state.json";
pub const ROOT_FILE: &str = "root.der";
pub const CERTS_DIR: &str = "certs";
pub const CRLS_DIR: &str = "crls";
/// The CA's audit log, by convention inside the CA directory; its
/// "crl-signed" entries take part in [`CaDir::next_crl_number`], its
/// "certificate-revoked" entries in [`CaDir::check_revocations`].
pub const AUDIT_LOG: &str = "audit.jsonl";
/// The audit event a ceremony records after each CRL (see [`crl_signed_event`]).
pub const EVENT_CRL_SIGNED: &str = "crl-signed";
/// The audit event a ceremony records after each revocation (see
/// [`certificate_revoked_event`]).
pub const EVENT_CERTIFICATE_REVOKED: &str = "certificate-revoked";
/// The audit event a ceremony records after each certificate it signs;
/// its `details.serial` and `details.not_after` say when an entry may leave
/// the CRL.
pub const EVENT_CERTIFICATE_SIGNED: &str = "certificate-signed";
const STATE_FORMAT: &str = "keyrite-ca-state-v1";
/// A root's state stays small (it issues a handful of intermediates); a
/// state file larger than this is not one keyrite wrote.
const MAX_STATE_BYTES: u64 = 256 * 1024 * 1024;

/// RFC 5280 §5.3.1 CRLReason, by its ASN.1 name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RevocationReason {
    #[serde(rename = "unspecified")]
    Unspecified,
    #[serde(rename = "keyCompromise")]
    KeyCompromise,
    #[serde(rename = "cACompromise")]
    CaCompromise,
    #[serde(rename = "affiliationChanged")]
    AffiliationChanged,
    #[serde(rename = "superseded")]
    Superseded,
    #[serde(rename = "cessationOfOperation")]
    CessationOfOperation,
    #[serde(rename = "certificateHold")]
    CertificateHold,
    #[serde(rename = "removeFromCRL")]
    RemoveFromCrl,
    #[serde(rename = "privilegeWithdrawn")]
    PrivilegeWithdrawn,
    #[serde(rename = "aACompromise")]
    AaCompromise,
}

impl RevocationReason {
    const ALL: [RevocationReason; 10] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::CertificateHold,
        RevocationReason::RemoveFromCrl,
        RevocationReason::PrivilegeWithdrawn,
        RevocationReason::AaCompromise,
    ];

    /// The ENUMERATED value (7 is unused in RFC 5280).
    pub fn code(self) -> u8 {
        match self {
            RevocationReason::Unspecified => 0,
            RevocationReason::KeyCompromise => 1,
            RevocationReason::CaCompromise => 2,
            RevocationReason::AffiliationChanged => 3,
            RevocationReason::Superseded => 4,
            RevocationReason::CessationOfOperation => 5,
            RevocationReason::CertificateHold => 6,
            RevocationReason::RemoveFromCrl => 8,
            RevocationReason::PrivilegeWithdrawn => 9,
            RevocationReason::AaCompromise => 10,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The RFC 5280 ASN.1 name, e.g. "keyCompromise".
    pub fn name(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "keyCompromise",
            RevocationReason::CaCompromise => "cACompromise",
            RevocationReason::AffiliationChanged => "affiliationChanged",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessationOfOperation",
            RevocationReason::CertificateHold => "certificateHold",
            RevocationReason::RemoveFromCrl => "removeFromCRL",
            RevocationReason::PrivilegeWithdrawn => "privilegeWithdrawn",
            RevocationReason::AaCompromise => "aACompromise",
        }
    }

    /// Parses an RFC 5280 name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name().eq_ignore_ascii_case(name))
    }

    /// Whether a root may revoke a CA certificate for this reason.
    ///
    /// Refused: `certificateHold`, because a CA certificate is never
    /// suspended (the CA/B Forum BRs §4.9.13 forbid suspension, and a held
    /// intermediate would make every leaf under it flicker between valid and
    /// revoked); `removeFromCRL`, which only exists to undo a hold on delta
    /// CRLs (RFC 5280 §5.3.1); and `aACompromise`, which concerns attribute
    /// authorities, not X.509 CAs.
    pub fn allowed_for_ca(self) -> Result<(), &'static str> {
        match self {
            RevocationReason::CertificateHold => {
                Err("certificateHold is refused: CA certificates are never suspended (BR §4.9.13); revoke for good with another reason")
            }
            RevocationReason::RemoveFromCrl => {
                Err("removeFromCRL is refused: it only undoes a hold on delta CRLs (RFC 5280 §5.3.1), and revocation is final")
            }
            RevocationReason::AaCompromise => {
                Err("aACompromise is refused: it is for attribute authorities; use cACompromise or keyCompromise")
            }
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a certificate is still good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertStatus {
    Valid,
    Revoked,
}

/// One issued certificate in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuedRecord {
    /// Lower-case hex of the serial's value (no leading zero octet).
    pub serial: String,
    /// RFC 4514.
    pub subject: String,
    /// OpenSSL's `/C=../O=../CN=..` form, for `index.txt`.
    pub subject_openssl: String,
    /// subjectKeyIdentifier, lower-case hex.
    pub ski: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub status: CertStatus,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RevocationReason>,
    /// Relative to the CA directory.
    pub file: String,
    /// SHA-256 of the certificate DER.
    pub sha256: String,
}

/// A serial written down before its certificate was signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservedSerial {
    pub serial: String,
    #[serde(with = "time::serde::rfc3339")]
    pub reserved_at: OffsetDateTime,
}

/// One signed CRL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrlRecord {
    pub number: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub this_update: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub next_update: OffsetDateTime,
    pub entries: usize,
    pub file: String,
    pub sha256: String,
}

/// The CRL counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrlState {
    /// The highest CRL number ever reserved (0: none yet). Signed CRLs carry
    /// numbers up to this one; a reserved number whose CRL was never
    /// recorded is skipped.
    pub last_reserved: u64,
    pub issued: Vec<CrlRecord>,
}

/// `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaState {
    pub format: String,
    /// SHA-256 of `root.der`.
    pub root_sha256: String,
    pub certificates: Vec<IssuedRecord>,
    pub reserved_serials: Vec<ReservedSerial>,
    pub crl: CrlState,
}

/// What [`CaDir::verify`] found: counts, and notes about states a crash or a
/// restore legitimately leaves behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaVerifyReport {
    pub certificates: usize,
    pub revoked: usize,
    pub reserved_serials: usize,
    pub last_crl_number: Option<u64>,
    pub next_crl_number: u64,
    pub notes: Vec<String>,
}

/// Errors of the CA directory and its CRLs. Messages name the directory,
/// file, serial or CRL number and say what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error("{dir}: not an empty directory; a CA directory is initialised once, into a new directory")]
    NotEmpty { dir: PathBuf },
    #[error("{dir}: no {STATE_FILE}: this is not an initialised CA directory (or initialisation was interrupted: remove it and run init again)")]
    NotInitialised { dir: PathBuf },
    #[error("{path}: {problem}; restore the CA directory from its latest backup")]
    BadState { path: PathBuf, problem: String },
    #[error("{dir}: serial {serial} is already {what}; serials are never reused: draw a new random serial")]
    DuplicateSerial { dir: PathBuf, serial: String, what: &'static str },
    #[error("{dir}: no certificate with serial {serial} in the index; check the serial (lower-case hex, as `keyrite ca list` shows it)")]
    UnknownSerial { dir: PathBuf, serial: String },
    #[error("{dir}: serial {serial} was already revoked at {at} ({reason}); revocation is final and is recorded once")]
    AlreadyRevoked { dir: PathBuf, serial: String, at: OffsetDateTime, reason: RevocationReason },
    #[error("{dir}: serial {serial}: {problem}")]
    BadRevocation { dir: PathBuf, serial: String, problem: String },
    #[error("{dir}: serial {serial} was revoked ({anchor}), but state.json {problem}: state.json was restored from an older copy or edited, and a CRL made from it would quietly drop the revocation. Nothing was signed; put back the newest state.json (a `keyrite ca backup` bundle holds one) and check it with `keyrite ca verify`")]
    RevocationLost { dir: PathBuf, serial: String, anchor: String, problem: String },
    #[error("{dir}: certificate refused for the index: {problem}")]
    BadCertificate { dir: PathBuf, problem: String },
    #[error("{path}: {problem}; run `keyrite audit verify` on it, restore it from a backup, and try again")]
    AuditLog { path: PathBuf, problem: String },
    #[error("{dir}: CRL number {number} {problem}")]
    CrlNumber { dir: PathBuf, number: u64, problem: String },
    #[error("CRL issuer certificate refused: {0}")]
    Issuer(String),
    #[error("CRL request refused: {0}")]
    CrlRequest(String),
    #[error("building the CRL failed: {0}")]
    CrlBuild(String),
    #[error("signer {signer} cannot sign this CRL: {problem}")]
    WrongSigner { signer: String, problem: String },
    #[error("signer {signer} failed: {source}")]
    Signer {
        signer: String,
        // Boxed: a PKCS#11 error is large and this enum is returned everywhere.
        #[source]
        source: Box<HsmError>,
    },
    #[error("lint refused CRL number {crl_number}; nothing was signed with the real key:\n  {}", findings.join("\n  "))]
    Lint { crl_number: u64, findings: Vec<String> },
    #[error("post-signing check `{check}` failed: {problem}. The CRL must not be published; check the signer and the audit log")]
    Verify { check: &'static str, problem: String },
}

/// An open CA directory.
#[derive(Debug)]
pub struct CaDir {
    dir: PathBuf,
    state: CaState,
    root_der: Vec<u8>,
    audit_log: PathBuf,
}

impl CaDir {
    /// Creates a CA directory for `root_cert_der` in `dir` (which must not
    /// exist or be empty). `state.json` is written last: a directory
    /// without it was never initialised.
    pub fn init(dir: &Path, root_cert_der: &[u8]) -> Result<CaDir, CaError> {
        match fs::read_dir(dir) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(CaError::NotEmpty { dir: dir.to_path_buf() });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => files::create_dir(dir, Mode::Public)?,
            Err(e) => return Err(FileError::io(dir, "listing", e).into()),
        }
        let summary = crate::profile::certificate_summary(root_cert_der).map_err(|e| CaError::BadCertificate {
            dir: dir.to_path_buf(),
            problem: format!("root certificate: {e}"),
        })?;
        if summary.subject != summary.issuer {
            return Err(CaError::BadCertificate {
                dir: dir.to_path_buf(),
                problem: "the root certificate is not self-issued (subject and issuer differ)".into(),
            });
        }
        files::write_new(&dir.join(ROOT_FILE), root_cert_der, Mode::Public)?;
        files::create_dir(&dir.join(CERTS_DIR), Mode::Public)?;
        files::create_dir(&dir.join(CRLS_DIR), Mode::Public)?;
        let state = CaState {
            format: STATE_FORMAT.into(),
            root_sha256: words::sha256_hex(root_cert_der),
            certificates: Vec::new(),
            reserved_serials: Vec::new(),
            crl: CrlState::default(),
        };
        files::write_new(&dir.join(STATE_FILE), &state_bytes(dir, &state)?, Mode::Public)?;
        Ok(CaDir { dir: dir.to_path_buf(), state, root_der: root_cert_der.to_vec(), audit_log: dir.join(AUDIT_LOG) })
    }

    /// Opens an initialised CA directory.
    pub fn open(dir: &Path) -> Result<CaDir, CaError> {
        let state = read_state(dir)?;
        let root_path = dir.join(ROOT_FILE);
        let root_der = fs::read(&root_path).map_err(|e| FileError::io(&root_path, "reading", e))?;
        if words::sha256_hex(&root_der) != state.root_sha256 {
            return Err(CaError::BadState {
                path: root_path,
                problem: "the root certificate's SHA-256 is not the one state.json records".into(),
            });
        }
        Ok(CaDir { dir: dir.to_path_buf(), state, root_der, audit_log: dir.join(AUDIT_LOG) })
    }

    /// Uses an audit log kept outside the CA directory.
    pub fn with_audit_log(mut self, path: &Path) -> CaDir {
        self.audit_log = path.to_path_buf();
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn state(&self) -> &CaState {
        &self.state
    }
    pub fn root_cert_der(&self) -> &[u8] {
        &self.root_der
    }
    pub fn certificates(&self) -> &[IssuedRecord] {
        &self.state.certificates
    }
    pub fn audit_log_path(&self) -> &Path {
        &self.audit_log
    }

    fn save(&self) -> Result<(), CaError> {
        files::replace(&self.dir.join(STATE_FILE), &state_bytes(&self.dir, &self.state)?, Mode::Public)?;
        Ok(())
    }

    /// Step 1 of issuing: writes `serial` (the value as issued, e.g. from
    /// `Issued::serial_hex`) into the state before anything is signed, so
    /// that it can never be handed out twice, even if the signing crashes.
    pub fn reserve_serial(&mut self, serial: &[u8]) -> Result<String, CaError> {
        let hexed = serial_hex(serial);
        self.refuse_known_serial(&hexed)?;
        self.state
            .reserved_serials
            .push(ReservedSerial { serial: hexed.clone(), reserved_at: OffsetDateTime::now_utc() });
        self.save()?;
        Ok(hexed)
    }

    fn refuse_known_serial(&self, hexed: &str) -> Result<(), CaError> {
        let what = if self.state.certificates.iter().any(|c| c.serial == hexed) {
            "issued"
        } else if self.state.reserved_serials.iter().any(|r| r.serial == hexed) {
            "reserved"
        } else {
            return Ok(());
        };
        Err(CaError::DuplicateSerial { dir: self.dir.clone(), serial: hexed.to_string(), what })
    }

    /// Step 2 of issuing: stores the signed certificate in `certs/` and then
    /// adds it to the index. A reserved serial moves from reserved to issued;
    /// an unreserved one is accepted too, but only a reservation protects the
    /// serial across a crash during signing.
    pub fn record_issued(&mut self, cert_der: &[u8]) -> Result<IssuedRecord, CaError> {
        let record = self.record_for(cert_der)?;
        if self.state.certificates.iter().any(|c| c.serial == record.serial) {
            return Err(CaError::DuplicateSerial { dir: self.dir.clone(), serial: record.serial, what: "issued" });
        }
        write_once(&self.dir.join(&record.file), cert_der)?;
        self.state.reserved_serials.retain(|r| r.serial != record.serial);
        self.state.certificates.push(record.clone());
        self.save()?;
        Ok(record)
    }

    fn record_for(&self, cert_der: &[u8]) -> Result<IssuedRecord, CaError> {
        use der::{Decode, Encode};
        use x509_cert::ext::pkix::SubjectKeyIdentifier;
        let refuse = |problem: String| CaError::BadCertificate { dir: self.dir.clone(), problem };
        let summary = crate::profile::certificate_summary(cert_der).map_err(|e| refuse(e.to_string()))?;
        let cert = x509_cert::Certificate::from_der(cert_der).map_err(|e| refuse(e.to_string()))?;
        let root = x509_cert::Certificate::from_der(&self.root_der).map_err(|e| refuse(e.to_string()))?;
        let tbs = cert.tbs_certificate();
        let issuer = tbs.issuer().to_der().map_err(|e| refuse(e.to_string()))?;
        let root_subject = root.tbs_certificate().subject().to_der().map_err(|e| refuse(e.to_string()))?;
        if issuer != root_subject {
            return Err(refuse(format!(
                "serial {}: its issuer {} is not this CA's root {}",
                summary.serial_hex,
                summary.issuer,
                root.tbs_certificate().subject()
            )));
        }
        // Same name is not enough (another root can share it): the root's
        // key must have signed the certificate.
        let root_spki = root.tbs_certificate().subject_public_key_info().to_der().map_err(|e| refuse(e.to_string()))?;
        if !signed_by(cert_der, &root_spki) {
            return Err(refuse(format!(
                "serial {}: its signature does not verify under this CA's root key; it was issued by another root",
                summary.serial_hex
            )));
        }
        let ski = tbs
            .get_extension::<SubjectKeyIdentifier>()
            .map_err(|e| refuse(e.to_string()))?
            .map(|(_, s)| hex::encode(s.0.as_bytes()))
            .unwrap_or_default();
        let serial = serial_hex(&hex::decode(&summary.serial_hex).map_err(|e| refuse(e.to_string()))?);
        Ok(IssuedRecord {
            file: format!("{CERTS_DIR}/{serial}.der"),
            serial,
            subject: summary.subject,
            subject_openssl: openssl_dn(tbs.subject()),
            ski,
            not_before: summary.not_before,
            not_after: summary.not_after,
            status: CertStatus::Valid,
            revoked_at: None,
            reason: None,
            sha256: summary.fingerprint.hex,
        })
    }

    /// Marks a certificate revoked. Refuses unknown serials, a second
    /// revocation, reasons not allowed for CA certificates (see
    /// [`RevocationReason::allowed_for_ca`]) and times before the
    /// certificate's notBefore.
    pub fn revoke(
        &mut self,
        serial: &str,
        reason: RevocationReason,
        time: OffsetDateTime,
    ) -> Result<IssuedRecord, CaError> {
        let wanted = normalize_hex(serial);
        let dir = self.dir.clone();
        let Some(record) = self.state.certificates.iter_mut().find(|c| c.serial == wanted) else {
            return Err(CaError::UnknownSerial { dir, serial: serial.to_string() });
        };
        if let (CertStatus::Revoked, Some(at), Some(r)) = (record.status, record.revoked_at, record.reason) {
            return Err(CaError::AlreadyRevoked { dir, serial: wanted, at, reason: r });
        }
        reason.allowed_for_ca().map_err(|p| CaError::BadRevocation {
            dir: dir.clone(),
            serial: wanted.clone(),
            problem: p.into(),
        })?;
        let time = time.to_offset(time::UtcOffset::UTC);
        let time = time.replace_nanosecond(0).unwrap_or(time);
        if time < record.not_before {
            return Err(CaError::BadRevocation {
                dir,
                serial: wanted,
                problem: format!("revocation time {time} is before the certificate's notBefore {}", record.not_before),
            });
        }
        record.status = CertStatus::Revoked;
        record.revoked_at = Some(time);
        record.reason = Some(reason);
        let out = record.clone();
        self.save()?;
        Ok(out)
    }

    /// The number the next CRL gets:
    ///
    /// one more than the largest of (a) the last number reserved in
    /// `state.json`, (b) any number recorded there as signed, (c) the
    /// number in the name of any `crls/crl-<n>.der`, and (d) any
    /// `details.crl_number` of a "crl-signed" event in the audit log.
    ///
    /// (c) and (d) are what keep the rule true after `state.json` is restored
    /// from an older backup: the CRLs and the log written since still hold
    /// the higher numbers.
    pub fn next_crl_number(&self) -> Result<u64, CaError> {
        self.next_crl_number_with(&records::LogRecords::read(&self.audit_log)?)
    }

    fn next_crl_number_with(&self, log: &records::LogRecords) -> Result<u64, CaError> {
        let mut max = self.state.crl.last_reserved;
        max = max.max(self.state.crl.issued.iter().map(|c| c.number).max().unwrap_or(0));
        max = max.max(crl_files(&self.dir)?.into_iter().map(|(n, _)| n).max().unwrap_or(0));
        max = max.max(log.max_crl_number.unwrap_or(0));
        max.checked_add(1).ok_or_else(|| CaError::CrlNumber {
            dir: self.dir.clone(),
            number: max,
            problem: "is the largest number keyrite can count to; start a new CA".into(),
        })
    }

    /// Step 1 of a CRL: writes the number into `state.json` before anything
    /// is signed.
    pub fn reserve_crl_number(&mut self) -> Result<u64, CaError> {
        self.reserve_crl_number_with(&records::LogRecords::read(&self.audit_log)?)
    }

    fn reserve_crl_number_with(&mut self, log: &records::LogRecords) -> Result<u64, CaError> {
        let n = self.next_crl_number_with(log)?;
        self.state.crl.last_reserved = n;
        self.save()?;
        Ok(n)
    }

    /// The number of the last CRL recorded in the state, if any.
    pub fn last_crl_number(&self) -> Option<u64> {
        self.state.crl.issued.iter().map(|c| c.number).max()
    }

    /// Every revoked certificate as `(serial value, time, reason)`.
    pub fn revoked_entries(&self) -> Vec<(Vec<u8>, OffsetDateTime, RevocationReason)> {
        self.state
            .certificates
            .iter()
            .filter_map(|c| match (c.status, c.revoked_at, c.reason) {
                (CertStatus::Revoked, Some(at), Some(r)) => Some((hex::decode(&c.serial).ok()?, at, r)),
                _ => None,
            })
            .collect()
    }

    /// Step 2 of a CRL: stores the signed CRL as `crls/crl-<n>.der`, then
    /// records it. The number must have been reserved and must be larger
    /// than every CRL recorded so far.
    pub fn record_crl(&mut self, crl: &SignedCrl) -> Result<PathBuf, CaError> {
        let n = crl.crl_number;
        let problem = |p: &str| CaError::CrlNumber { dir: self.dir.clone(), number: n, problem: p.into() };
        if n > self.state.crl.last_reserved {
            return Err(problem("was never reserved; call reserve_crl_number before signing"));
        }
        if self.last_crl_number().is_some_and(|last| n <= last) {
            return Err(problem("is not larger than the last recorded CRL's; CRL numbers only ever grow"));
        }
        let file = format!("{CRLS_DIR}/crl-{n}.der");
        let path = self.dir.join(&file);
        write_once(&path, &crl.der)?;
        self.state.crl.issued.push(CrlRecord {
            number: n,
            this_update: crl.this_update,
            next_update: crl.next_update,
            entries: crl.entries,
            file,
            sha256: crl.fingerprint.hex.clone(),
        });
        self.save()?;
        Ok(path)
    }

    /// Check, reserve, build and sign, record: a complete CRL of every
    /// revoked certificate. Nothing is reserved or signed unless the state
    /// holds every revocation the audit log and the last CRL hold
    /// ([`CaDir::check_revocations`]). The caller then appends
    /// [`crl_signed_event`] to the audit log.
    pub fn issue_crl(
        &mut self,
        signer: &dyn Signer,
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
        issuing_distribution_point: Option<String>,
    ) -> Result<SignedCrl, CaError> {
        let log = records::LogRecords::read(&self.audit_log)?;
        self.check_revocations_with(&log, this_update)?;
        let previous = self.last_crl_number();
        let number = self.reserve_crl_number_with(&log)?;
        let entries = self.revoked_entries();
        let crl = build_crl(
            CrlParams {
                issuer_cert_der: &self.root_der,
                crl_number: number,
                previous_crl_number: previous,
                this_update,
                next_update,
                revoked: entries.iter().map(|(s, t, r)| (s.as_slice(), *t, *r)),
                issuing_distribution_point,
            },
            signer,
        )?;
        self.record_crl(&crl)?;
        Ok(crl)
    }

    /// Checks a CA directory without changing it: the state parses, the
    /// root matches, serials are unique, revocations are complete and hold
    /// every revocation the audit log and the last CRL record
    /// ([`CaDir::check_revocations`]), CRL numbers grow, and every recorded
    /// file that is present has its recorded hash. Leftovers of an
    /// interrupted step are reported as notes, not errors.
    pub fn verify(dir: &Path) -> Result<CaVerifyReport, CaError> {
        let ca = CaDir::open(dir)?;
        let state = &ca.state;
        let bad = |problem: String| CaError::BadState { path: dir.join(STATE_FILE), problem };
        let mut notes = Vec::new();
        let mut serials = std::collections::HashSet::new();
        for c in &state.certificates {
            if c.serial.is_empty() || c.serial != normalize_hex(&c.serial) {
                return Err(bad(format!("serial {:?} is not normalised lower-case hex", c.serial)));
            }
            if !serials.insert(c.serial.as_str()) {
                return Err(bad(format!("serial {} is listed twice", c.serial)));
            }
            match (c.status, c.revoked_at, c.reason) {
                (CertStatus::Valid, None, None) | (CertStatus::Revoked, Some(_), Some(_)) => {}
                _ => return Err(bad(format!("serial {}: status, revocation time and reason disagree", c.serial))),
            }
            if c.file != format!("{CERTS_DIR}/{}.der", c.serial) {
                return Err(bad(format!("serial {}: file {:?} is not where keyrite stores it", c.serial, c.file)));
            }
            check_file(dir, &c.file, &c.sha256, &mut notes)?;
        }
        for r in &state.reserved_serials {
            if !serials.insert(r.serial.as_str()) {
                return Err(bad(format!("serial {} is both issued and reserved, or reserved twice", r.serial)));
            }
            let leftover = dir.join(CERTS_DIR).join(format!("{}.der", r.serial));
            notes.push(if leftover.exists() {
                format!("serial {} was reserved and its certificate written, but not recorded (interrupted); record_issued with that file completes it", r.serial)
            } else {
                format!("serial {} was reserved but never recorded (interrupted issuance); it stays reserved and is never reused", r.serial)
            });
        }
        let mut last = 0u64;
        for c in &state.crl.issued {
            if c.number <= last {
                return Err(bad(format!("CRL number {} follows {last}: CRL numbers must grow", c.number)));
            }
            if c.number > state.crl.last_reserved {
                return Err(bad(format!(
                    "CRL number {} is above the last reserved number {}",
                    c.number, state.crl.last_reserved
                )));
            }
            if c.file != format!("{CRLS_DIR}/crl-{}.der", c.number) {
                return Err(bad(format!("CRL {}: file {:?} is not where keyrite stores it", c.number, c.file)));
            }
            check_file(dir, &c.file, &c.sha256, &mut notes)?;
            last = c.number;
        }
        for (n, _) in crl_files(dir)? {
            if state.crl.issued.iter().any(|c| c.number == n) {
                continue;
            }
            notes.push(if n <= state.crl.last_reserved {
                format!("crls/crl-{n}.der was written but not recorded (interrupted); its number is not reused")
            } else {
                format!("crls/crl-{n}.der is newer than state.json (restored from an older backup?); the next CRL number accounts for it")
            });
        }
        let log = records::LogRecords::read(&ca.audit_log)?;
        notes.extend(ca.check_revocations_with(&log, OffsetDateTime::now_utc())?);
        let next = ca.next_crl_number_with(&log)?;
        Ok(CaVerifyReport {
            certificates: state.certificates.len(),
            revoked: state.certificates.iter().filter(|c| c.status == CertStatus::Revoked).count(),
            reserved_serials: state.reserved_serials.len(),
            last_crl_number: ca.last_crl_number(),
            next_crl_number: next,
            notes,
        })
    }

    /// The index in OpenSSL's `index.txt` format as of `now` (certificates
    /// past notAfter show as expired).
    pub fn index_txt(&self, now: OffsetDateTime) -> String {
        let mut out = String::new();
        for c in &self.state.certificates {
            let status = match c.status {
                CertStatus::Revoked => 'R',
                CertStatus::Valid if c.not_after < now => 'E',
                CertStatus::Valid => 'V',
            };
            let revoked = match (c.revoked_at, c.reason) {
                (Some(at), Some(reason)) => match openssl_reason(reason) {
                    Some(name) => format!("{},{name}", openssl_time(at)),
                    None => openssl_time(at),
                },
                _ => String::new(),
            };
            // OpenSSL writes serials in upper case with an even number of digits.
            let serial = if c.serial.len() % 2 == 1 { format!("0{}", c.serial) } else { c.serial.clone() };
            out.push_str(&format!(
                "{status}\t{}\t{revoked}\t{}\tunknown\t{}\n",
                openssl_time(c.not_after),
                serial.to_ascii_uppercase(),
                c.subject_openssl
            ));
        }
        out
    }
}

/// The CA's index as OpenSSL `index.txt` (status V/R/E, expiry, revocation
/// date and reason, serial, "unknown", DN).
pub fn export_index(dir: &Path) -> Result<String, CaError> {
    Ok(CaDir::open(dir)?.index_txt(OffsetDateTime::now_utc()))
}

/// Writes the CA state (state, root, every certificate and CRL, the audit
/// log if present) into a new "ca-backup" bundle at `out_bundle`.
pub fn backup(dir: &Path, out_bundle: &Path, identity: &str) -> Result<Manifest, CaError> {
    CaDir::verify(dir)?;
    let ca = CaDir::open(dir)?;
    let mut w = BundleWriter::create(out_bundle)?;
    let read = |rel: &str| -> Result<Vec<u8>, CaError> {
        let p = dir.join(rel);
        Ok(fs::read(&p).map_err(|e| FileError::io(&p, "reading for backup", e))?)
    };
    // Bundle names are flat, so `certs/x.der` travels as `cert-x.der`.
    w.add(STATE_FILE, &read(STATE_FILE)?)?;
    w.add(ROOT_FILE, &ca.root_der)?;
    for c in &ca.state.certificates {
        if dir.join(&c.file).exists() {
            w.add(&format!("cert-{}.der", c.serial), &read(&c.file)?)?;
        }
    }
    for (n, name) in crl_files(dir)? {
        w.add(&format!("crl-{n}.der"), &read(&format!("{CRLS_DIR}/{name}"))?)?;
    }
    if ca.audit_log.exists() {
        let log = fs::read(&ca.audit_log).map_err(|e| FileError::io(&ca.audit_log, "reading for backup", e))?;
        w.add(AUDIT_LOG, &log)?;
    }
    let mut extra = serde_json::Map::new();
    extra.insert("root_sha256".into(), ca.state.root_sha256.clone().into());
    extra.insert("next_crl_number".into(), ca.next_crl_number()?.into());
    extra.insert("certificates".into(), ca.state.certificates.len().into());
    Ok(w.finish(BundleKind::CaBackup, identity, extra)?)
}

/// The audit event a ceremony appends after [`CaDir::revoke`], from the
/// record it returned; [`CaDir::check_revocations`] reads back
/// `details.serial`, `details.reason` and `details.revocation_time`.
pub fn certificate_revoked_event(record: &IssuedRecord) -> Event {
    let time = record.revoked_at.map(|t| t.format(&time::format_description::well_known::Rfc3339));
    Event::new("revoke", EVENT_CERTIFICATE_REVOKED)
        .detail("serial", record.serial.as_str())
        .detail("subject", record.subject.as_str())
        .detail("reason", record.reason.map_or("", RevocationReason::name))
        .detail("revocation_time", time.and_then(Result::ok).unwrap_or_default())
}

/// The audit event a ceremony appends after [`CaDir::record_crl`]; its
/// `details.crl_number` is what [`CaDir::next_crl_number`] reads back.
pub fn crl_signed_event(crl: &SignedCrl) -> Event {
    Event::new("crl", EVENT_CRL_SIGNED)
        .output(Artifact::of(format!("crl-{}.der", crl.crl_number), &crl.der))
        .detail("crl_number", crl.crl_number)
        .detail("entries", crl.entries as u64)
        .detail("this_update", crl.this_update.unix_timestamp())
        .detail("next_update", crl.next_update.unix_timestamp())
}

/// Whether the signature of `cert_der` (a certificate or a CRL: both are
/// SEQUENCE { tbs, algorithm, signature }), in one of the schemes keyrite
/// signs with, verifies under `spki`.
pub(crate) fn signed_by(cert_der: &[u8], spki: &[u8]) -> bool {
    use crate::hsm::SignatureAlgorithm::*;
    use der::asn1::BitStringRef;
    use der::{Decode, Reader, SliceReader};
    let Ok(mut reader) = SliceReader::new(cert_der) else { return false };
    let parts = reader.sequence(|seq| {
        let tbs = seq.tlv_bytes()?;
        let alg = seq.tlv_bytes()?;
        let sig = BitStringRef::decode(seq)?;
        Ok::<_, der::Error>((tbs, alg, sig.raw_bytes()))
    });
    let Ok((tbs, alg_tlv, sig)) = parts else { return false };
    [EcdsaSha256, EcdsaSha384, RsaPkcs1Sha256, RsaPkcs1Sha384, RsaPssSha256, RsaPssSha384]
        .into_iter()
        .find(|a| crate::profile::algorithm_identifier(*a) == alg_tlv)
        .is_some_and(|alg| crate::hsm::verify_signature(spki, alg, tbs, sig).is_ok())
}

fn state_bytes(dir: &Path, state: &CaState) -> Result<Vec<u8>, CaError> {
    let mut bytes = serde_json::to_vec_pretty(state)
        .map_err(|e| CaError::BadState { path: dir.join(STATE_FILE), problem: format!("cannot serialise: {e}") })?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn read_state(dir: &Path) -> Result<CaState, CaError> {
    let path = dir.join(STATE_FILE);
    let meta = match fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(CaError::NotInitialised { dir: dir.to_path_buf() })
        }
        Err(e) => return Err(FileError::io(&path, "checking", e).into()),
    };
    if meta.len() > MAX_STATE_BYTES {
        return Err(CaError::BadState {
            path,
            problem: format!("{} bytes is larger than any state keyrite writes", meta.len()),
        });
    }
    let bytes = fs::read(&path).map_err(|e| FileError::io(&path, "reading", e))?;
    let state: CaState = serde_json::from_slice(&bytes)
        .map_err(|e| CaError::BadState { path: path.clone(), problem: format!("does not parse: {e}") })?;
    if state.format != STATE_FORMAT {
        return Err(CaError::BadState { path, problem: format!("format {:?} is not {STATE_FORMAT:?}", state.format) });
    }
    Ok(state)
}

/// Writes an artifact that must never change; if a crash left the very same
/// bytes there already, that counts as written.
fn write_once(path: &Path, bytes: &[u8]) -> Result<(), CaError> {
    match files::write_new(path, bytes, Mode::Public) {
        Err(FileError::Exists { .. }) if fs::read(path).ok().as_deref() == Some(bytes) => Ok(()),
        other => Ok(other?),
    }
}

fn check_file(dir: &Path, rel: &str, sha256: &str, notes: &mut Vec<String>) -> Result<(), CaError> {
    let path = dir.join(rel);
    match fs::read(&path) {
        Ok(bytes) if words::sha256_hex(&bytes) == sha256 => Ok(()),
        Ok(_) => Err(CaError::BadState {
            path,
            problem: "its SHA-256 is not the one state.json records: the file was changed".into(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            notes.push(format!("{rel} is recorded but missing"));
            Ok(())
        }
        Err(e) => Err(FileError::io(&path, "reading", e).into()),
    }
}

/// `(number, file name)` of every `crls/crl-<n>.der`.
fn crl_files(dir: &Path) -> Result<Vec<(u64, String)>, CaError> {
    let crls = dir.join(CRLS_DIR);
    let entries = match fs::read_dir(&crls) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(FileError::io(&crls, "listing", e).into()),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| FileError::io(&crls, "listing", e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let number = name.strip_prefix("crl-").and_then(|s| s.strip_suffix(".der")).and_then(|s| s.parse::<u64>().ok());
        if let Some(n) = number {
            out.push((n, name));
        }
    }
    out.sort();
    Ok(out)
}

/// Lower-case hex of the value, without leading zero octets.
fn serial_hex(bytes: &[u8]) -> String {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len().saturating_sub(1));
    hex::encode(&bytes[start..])
}

fn normalize_hex(text: &str) -> String {
    let t = text.trim().trim_start_matches("0x").to_ascii_lowercase().replace(':', "");
    let t = if t.len() % 2 == 1 { format!("0{t}") } else { t };
    match hex::decode(&t) {
        Ok(b) if !b.is_empty() => serial_hex(&b),
        _ => t,
    }
}

/// OpenSSL's one-line DN: `/C=DE/O=Example/CN=Name`, in the certificate's
/// order.
fn openssl_dn(name: &x509_cert::name::Name) -> String {
    let mut out = String::new();
    for rdn in name.iter_rdn() {
        for atv in rdn.iter() {
            let key = match atv.oid.to_string().as_str() {
                "2.5.4.6" => "C".to_string(),
                "2.5.4.8" => "ST".to_string(),
                "2.5.4.7" => "L".to_string(),
                "2.5.4.10" => "O".to_string(),
                "2.5.4.11" => "OU".to_string(),
                "2.5.4.3" => "CN".to_string(),
                "1.2.840.113549.1.9.1" => "emailAddress".to_string(),
                other => other.to_string(),
            };
            let value = String::from_utf8_lossy(atv.value.value());
            out.push('/');
            out.push_str(&key);
            out.push('=');
            // OpenSSL escapes nothing; a '/' in a value would split it, so
            // it is written the way `openssl x509 -subject` would show it.
            out.push_str(&value.replace('/', "\\/"));
        }
    }
    out
}

/// YYMMDDHHMMSSZ through 2049, YYYYMMDDHHMMSSZ from 2050 (as OpenSSL writes).
fn openssl_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let tail = format!("{:02}{:02}{:02}{:02}{:02}Z", u8::from(t.month()), t.day(), t.hour(), t.minute(), t.second());
    if (1950..2050).contains(&t.year()) {
        format!("{:02}{tail}", t.year() % 100)
    } else {
        format!("{:04}{tail}", t.year())
    }
}

/// OpenSSL's `index.txt` reason names; OpenSSL has none for
/// privilegeWithdrawn, which is written without a reason (and so appears
/// on OpenSSL-made CRLs as unspecified).
fn openssl_reason(r: RevocationReason) -> Option<&'static str> {
    Some(match r {
        RevocationReason::Unspecified => "unspecified",
        RevocationReason::KeyCompromise => "keyCompromise",
        RevocationReason::CaCompromise => "CACompromise",
        RevocationReason::AffiliationChanged => "affiliationChanged",
        RevocationReason::Superseded => "superseded",
        RevocationReason::CessationOfOperation => "cessationOfOperation",
        RevocationReason::CertificateHold => "certificateHold",
        RevocationReason::RemoveFromCrl => "removeFromCRL",
        RevocationReason::PrivilegeWithdrawn | RevocationReason::AaCompromise => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_and_ca_rules() {
        for r in RevocationReason::ALL {
            assert_eq!(RevocationReason::from_code(r.code()), Some(r));
            assert_eq!(RevocationReason::from_name(r.name()), Some(r));
        }
        assert!(RevocationReason::CertificateHold.allowed_for_ca().is_err());
        assert!(RevocationReason::RemoveFromCrl.allowed_for_ca().is_err());
        assert!(RevocationReason::KeyCompromise.allowed_for_ca().is_ok());
        assert_eq!(RevocationReason::from_code(7), None);
    }

    #[test]
    fn serial_hex_is_normalised() {
        assert_eq!(serial_hex(&[0, 0x7f, 1]), "7f01");
        assert_eq!(normalize_hex("0x007F01"), "7f01");
        assert_eq!(normalize_hex("7F:01"), "7f01");
        assert_eq!(normalize_hex("f01"), "0f01");
    }

    #[test]
    fn openssl_times() {
        assert_eq!(openssl_time(time::macros::datetime!(2031-02-03 04:05:06 UTC)), "310203040506Z");
        assert_eq!(openssl_time(time::macros::datetime!(2051-02-03 04:05:06 UTC)), "20510203040506Z");
    }
}
