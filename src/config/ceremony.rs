//! Ceremony files: the script of one ceremony, and the plan made from it.
//!
//! A ceremony file says what kind of ceremony it is, who takes part, which
//! key and template it uses, what it writes, and the steps in order. Every
//! step has a kind the runner knows; the plan checks that the steps a kind
//! needs are all there, once, in an order that makes sense, before anything
//! else happens.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use time::OffsetDateTime;

use super::digest::{check_listable, InputBase, PlanDigest, PlanInput};
use super::{read_toml, ConfigError};
use crate::hsm::{KeyAlgorithm, SignatureAlgorithm};
use crate::profile::{CertKind, Profile};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCeremony {
    kind: String,
    id: String,
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    grade: Grade,
    roles: Vec<RawRole>,
    key: Option<RawKey>,
    audit_key: RawKey,
    certificate: Option<RawCertificate>,
    backup: Option<RawBackup>,
    activation: Option<RawActivation>,
    restore: Option<RawRestore>,
    reshare: Option<RawReshare>,
    intermediate: Option<RawIntermediate>,
    revocation: Option<RawRevocation>,
    crl: Option<RawCrl>,
    outputs: RawOutputs,
    steps: Vec<RawStep>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackup {
    threshold: u8,
    shares: u8,
    #[serde(default = "custodian_role")]
    custodian_role: String,
    /// Why the security officer PIN is not split among the custodians; its
    /// absence splits it.
    keep_so_pin: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActivation {
    threshold: u8,
    shares: u8,
    #[serde(default = "custodian_role")]
    custodian_role: String,
    /// Default: true with `[backup]` (unless it keeps the SO PIN), else false.
    so_pin: Option<bool>,
}

fn custodian_role() -> String {
    "custodian".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntermediate {
    request_bundle: String,
    response_bundle: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRevocation {
    serial: String,
    reason: String,
    time: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCrl {
    next_update_days: u32,
    bundle: String,
    issuing_distribution_point: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReshare {
    ceremony_log: String,
    backup_blob: String,
    old_custodian_role: String,
    new_custodian_role: String,
    threshold: u8,
    shares: u8,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestore {
    backup_blob: String,
    root_certificate: Option<String>,
    ceremony_log: String,
    #[serde(default = "custodian_role")]
    custodian_role: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    id: String,
    title: String,
    #[serde(default = "one")]
    min: usize,
}

fn one() -> usize {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    label: String,
    algorithm: String,
    signature: Option<SignatureAlgorithm>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificate {
    template: String,
    not_before: Option<String>,
    #[serde(default)]
    replace_csr_subject: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutputs {
    certificate_pem: Option<String>,
    certificate_der: Option<String>,
    backup_blob: Option<String>,
    audit_log: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    id: String,
    kind: StepKind,
    role: String,
    witness: Option<String>,
    title: String,
    #[serde(default)]
    text: String,
}

/// The kinds of ceremony keyrite runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CeremonyKind {
    /// Generate a root key in a token and self-sign the root certificate;
    /// with `[backup]`, also wrap the key under a KEK split among custodians.
    RootInit,
    /// Bring a quorum of custodians' shares back and restore the root key
    /// from its backup into a fresh token.
    RootRestore,
    /// A quorum of the current custodians makes a new share set (new N, T
    /// or custodians) for the same key-encryption key; the old set is
    /// retired in the log.
    Reshare,
    /// Sign an intermediate CSR that arrived in a transfer bundle.
    SignIntermediate,
    /// Revoke a certificate the root issued (and, usually, publish a CRL).
    Revoke,
    /// Publish the root's CRL.
    Crl,
}

impl CeremonyKind {
    pub fn name(self) -> &'static str {
        match self {
            CeremonyKind::RootInit => "root-init",
            CeremonyKind::RootRestore => "root-restore",
            CeremonyKind::Reshare => "reshare",
            CeremonyKind::SignIntermediate => "sign-intermediate",
            CeremonyKind::Revoke => "revoke",
            CeremonyKind::Crl => "crl",
        }
    }

    /// Ceremonies of the offline CA: they sign with the existing root key,
    /// keep their state and their audit log in the CA directory.
    pub fn uses_ca_dir(self) -> bool {
        matches!(self, CeremonyKind::SignIntermediate | CeremonyKind::Revoke | CeremonyKind::Crl)
    }

    /// The step kinds this ceremony must contain, in the order they must come.
    fn required_steps(self, backup: bool, activation: bool) -> Vec<StepKind> {
        let mut steps = self.required_steps_without_activation(backup);
        // Activation comes last before closing: the token's PINs change only
        // once everything that needed the old ones (the backup's SO login
        // among them) is done.
        if activation {
            let close = steps.len().saturating_sub(1);
            steps.insert(close, StepKind::ActivateToken);
        }
        steps
    }

    fn required_steps_without_activation(self, backup: bool) -> Vec<StepKind> {
        use StepKind::*;
        match (self, backup) {
            (CeremonyKind::RootInit, false) => {
                vec![Attendance, WitnessPlan, OpenToken, GenerateAuditKey, GenerateKey, SignRoot, Close]
            }
            (CeremonyKind::RootInit, true) => vec![
                Attendance,
                WitnessPlan,
                OpenToken,
                GenerateAuditKey,
                GenerateKey,
                SignRoot,
                BackupKey,
                DistributeShares,
                RestoreDrill,
                Close,
            ],
            (CeremonyKind::RootRestore, _) => {
                vec![Attendance, WitnessPlan, OpenToken, GenerateAuditKey, CollectShares, RestoreKey, Close]
            }
            (CeremonyKind::SignIntermediate, _) => vec![
                Attendance,
                WitnessPlan,
                OpenToken,
                UseAuditKey,
                ImportRequest,
                WitnessRequest,
                SignIntermediate,
                Close,
            ],
            (CeremonyKind::Revoke, _) => vec![Attendance, WitnessPlan, OpenToken, UseAuditKey, Revoke, Close],
            (CeremonyKind::Crl, _) => vec![Attendance, WitnessPlan, OpenToken, UseAuditKey, SignCrl, Close],
            (CeremonyKind::Reshare, _) => vec![
                Attendance,
                WitnessPlan,
                OpenToken,
                GenerateAuditKey,
                CollectShares,
                DistributeShares,
                RestoreDrill,
                Close,
            ],
        }
    }
}

/// Whether a plan is for the real ceremony or for rehearsing it.
///
/// A plan that says `grade = "real"` refuses every rehearsal aid (an answers
/// file, `--allow-network`, the software key store, a read-back that echoes
/// the screen) in the preflight. It says so in the ceremony file, whose hash
/// the witness reads back from paper, so the operator's environment file
/// cannot take it away. Rehearsal plans (the default) accept the aids, and
/// the log marks each one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Grade {
    #[default]
    Rehearsal,
    Real,
}

impl Grade {
    pub fn name(self) -> &'static str {
        match self {
            Grade::Rehearsal => "rehearsal",
            Grade::Real => "real",
        }
    }
}

/// What a step does. The runner implements each; a ceremony file chooses
/// and orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    /// Record who is present, by role.
    Attendance,
    /// The performer reads the text aloud and confirms it was done.
    Confirm,
    /// A witness reads back the plan's SHA-256 from the printed script.
    WitnessPlan,
    /// Log in to the token (or unseal the software key store).
    OpenToken,
    /// Generate the dedicated key that signs audit checkpoints.
    GenerateAuditKey,
    /// Generate the CA key inside the token.
    GenerateKey,
    /// Build, lint, sign, verify and write the root certificate.
    SignRoot,
    /// A witness compares the certificate and public-key fingerprints aloud
    /// and reads back the words.
    WitnessRoot,
    /// Sign an audit checkpoint and print it for the paper log.
    Checkpoint,
    /// Draw a key-encryption key, wrap the CA key under it, write the backup.
    BackupKey,
    /// Split the KEK and hand each custodian their share, one at a time.
    DistributeShares,
    /// Every custodian re-enters their share; every quorum must recombine.
    RestoreDrill,
    /// Custodians of a restore enter their shares; each is checked alone.
    CollectShares,
    /// Unwrap the backup into the token and prove it against the root certificate.
    RestoreKey,
    /// Find the audit key an earlier ceremony made, on this token.
    UseAuditKey,
    /// Show the imported request: subject, key, requested extensions, hashes.
    ImportRequest,
    /// A witness reads back the CSR hash from the requester's sheet.
    WitnessRequest,
    /// Build, lint, sign, verify and write the intermediate and its bundle.
    SignIntermediate,
    /// Mark a certificate revoked in the CA directory.
    Revoke,
    /// Build, lint, sign, verify and write a CRL.
    SignCrl,
    /// Make the token's user PIN (and optionally the SO PIN) random, split
    /// its seed among custodians, drill, change the PIN and prove it.
    ActivateToken,
    /// Close the ceremony: final entry and final checkpoint.
    Close,
}

impl StepKind {
    pub fn name(self) -> &'static str {
        match self {
            StepKind::Attendance => "attendance",
            StepKind::Confirm => "confirm",
            StepKind::WitnessPlan => "witness-plan",
            StepKind::OpenToken => "open-token",
            StepKind::GenerateAuditKey => "generate-audit-key",
            StepKind::GenerateKey => "generate-key",
            StepKind::SignRoot => "sign-root",
            StepKind::WitnessRoot => "witness-root",
            StepKind::Checkpoint => "checkpoint",
            StepKind::BackupKey => "backup-key",
            StepKind::DistributeShares => "distribute-shares",
            StepKind::RestoreDrill => "restore-drill",
            StepKind::CollectShares => "collect-shares",
            StepKind::RestoreKey => "restore-key",
            StepKind::UseAuditKey => "use-audit-key",
            StepKind::ImportRequest => "import-request",
            StepKind::WitnessRequest => "witness-request",
            StepKind::SignIntermediate => "sign-intermediate",
            StepKind::Revoke => "revoke",
            StepKind::SignCrl => "sign-crl",
            StepKind::ActivateToken => "activate-token",
            StepKind::Close => "close",
        }
    }

    /// Whether this step needs a witness role named.
    fn needs_witness(self) -> bool {
        matches!(self, StepKind::WitnessPlan | StepKind::WitnessRoot | StepKind::WitnessRequest)
    }
}

/// A role in the ceremony and how many people must fill it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub id: String,
    pub title: String,
    pub min: usize,
}

/// An n-of-m split of a secret among custodians (the key backup's shares,
/// the token's activation cards), checked alike: two custodians at least to
/// reach the secret, at most 16 shares (SLIP-0039's limit), and a custodian
/// role with exactly one custodian a share.
struct Split {
    /// The ceremony file's table, for error messages.
    table: &'static str,
    /// What the shares are called to the operators.
    cards: &'static str,
    /// What one custodian alone must never be able to do.
    never: &'static str,
}

impl Split {
    fn check(
        &self,
        threshold: u8,
        shares: u8,
        custodian_role: &str,
        roles: &[Role],
        path: &Path,
    ) -> Result<(), ConfigError> {
        let table = self.table;
        if threshold < 2 || threshold > shares || shares > 16 {
            return Err(ConfigError::invalid(
                path,
                table,
                format!(
                    "threshold {threshold} of {shares} shares: use 2 <= threshold <= shares <= 16 (one custodian alone must never {})",
                    self.never
                ),
            ));
        }
        match roles.iter().find(|r| r.id == custodian_role) {
            Some(r) if r.min == usize::from(shares) => Ok(()),
            Some(r) => Err(ConfigError::invalid(
                path,
                format!("{table}.shares"),
                format!(
                    "{shares} {} need exactly {shares} custodians: set min = {shares} on role {:?}",
                    self.cards, r.id
                ),
            )),
            None => Err(ConfigError::invalid(
                path,
                format!("{table}.custodian_role"),
                format!("role {custodian_role:?} is not declared in [[roles]]"),
            )),
        }
    }
}

/// One step of the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub number: usize,
    pub id: String,
    pub kind: StepKind,
    pub role: String,
    pub witness: Option<String>,
    pub title: String,
    pub text: String,
}

/// A key the ceremony generates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub label: String,
    pub algorithm: KeyAlgorithm,
    pub signature: SignatureAlgorithm,
}

/// Output file names, relative to the environment's output directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outputs {
    pub certificate_pem: Option<String>,
    pub certificate_der: Option<String>,
    pub backup_blob: Option<String>,
    /// The ceremony's own log; `None` for CA ceremonies, which append to
    /// the CA directory's log.
    pub audit_log: Option<String>,
    /// Transfer bundles (directories) the ceremony writes.
    pub bundles: Vec<String>,
}

impl Outputs {
    /// Every output file name, for the "all absent" preflight check.
    pub fn all(&self) -> Vec<&str> {
        [&self.certificate_pem, &self.certificate_der, &self.backup_blob]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .chain(self.audit_log.as_deref())
            .chain(self.bundles.iter().map(String::as_str))
            .collect()
    }
}

/// The certificate a ceremony signs, from its template.
#[derive(Debug, Clone)]
pub struct CertificateSpec {
    pub template_path: PathBuf,
    pub template: Profile,
    pub not_before: Option<OffsetDateTime>,
    /// sign-intermediate: whether the template's subject may replace a CSR
    /// subject that differs from it. By default a difference is refused, so
    /// what the requester asked for is what is signed, or nothing is.
    pub replace_csr_subject: bool,
}

/// The intermediate a sign-intermediate ceremony signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntermediateSpec {
    /// The request bundle's directory, in the environment's input directory.
    pub request_bundle: String,
    /// The response bundle's directory, in the output directory.
    pub response_bundle: String,
}

/// What a revoke ceremony revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationSpec {
    /// Lower-case hex, as the CA directory's index and openssl print it.
    pub serial: String,
    pub reason: crate::ca::RevocationReason,
    /// Default: the moment of the revoke step.
    pub time: Option<OffsetDateTime>,
}

/// The CRL a ceremony publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlSpec {
    pub next_update_days: u32,
    /// The CRL bundle's directory, in the output directory.
    pub bundle: String,
    pub issuing_distribution_point: Option<String>,
}

/// n-of-m custody of the root key's backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSpec {
    pub threshold: u8,
    pub shares: u8,
    pub custodian_role: String,
    /// Why the security officer PIN stays whole, when the plan says so; a
    /// root backup otherwise splits it among the custodians (see
    /// [`ActivationSpec`]), because whoever holds both of a token's PINs can
    /// make a trusted key and export the backed-up root under it.
    pub keep_so_pin: Option<String>,
}

/// Activation (dual control of the token's login): each PIN it names
/// becomes a random seed split `threshold`-of-`shares` among the custodians
/// of `custodian_role`, a set of its own per PIN. `[activation]` splits the
/// user PIN (and, with `so_pin`, the security officer's); a root backup
/// without `[activation]` splits the SO PIN alone, among its own custodians.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationSpec {
    pub threshold: u8,
    pub shares: u8,
    pub custodian_role: String,
    pub user_pin: bool,
    pub so_pin: bool,
}

/// What a restore ceremony reads, by file name in the environment's input
/// directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSpec {
    pub backup_blob: String,
    /// The root certificate the restored key must match (a reshare, which
    /// restores nothing, has none).
    pub root_certificate: Option<String>,
    /// The original ceremony's audit log: it holds the share commitments.
    pub ceremony_log: String,
    pub custodian_role: String,
}

/// A validated ceremony: after this, nothing re-checks the input.
#[derive(Debug, Clone)]
pub struct Plan {
    pub path: PathBuf,
    /// The files next to the ceremony file that the plan digest covers: the
    /// ceremony file itself, then its template, each hashed from the very
    /// bytes that were parsed. Files from the input directory are added
    /// when they are read (see [`Plan::digest_with`]).
    pub inputs: Vec<PlanInput>,
    /// The ceremony file's text, kept so `ceremony print` shows what was hashed.
    pub text: String,
    pub kind: CeremonyKind,
    pub id: String,
    pub title: String,
    pub description: String,
    pub grade: Grade,
    pub roles: Vec<Role>,
    /// The CA key a root-init ceremony generates.
    pub key: Option<KeySpec>,
    pub audit_key: KeySpec,
    pub certificate: Option<CertificateSpec>,
    pub backup: Option<BackupSpec>,
    pub activation: Option<ActivationSpec>,
    pub restore: Option<RestoreSpec>,
    pub intermediate: Option<IntermediateSpec>,
    pub revocation: Option<RevocationSpec>,
    pub crl: Option<CrlSpec>,
    pub outputs: Outputs,
    pub steps: Vec<Step>,
}

impl Plan {
    /// Reads and validates a ceremony file and the template it names.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (text, raw): (String, RawCeremony) = read_toml(path)?;
        Self::from_raw(raw, text, path)
    }

    fn from_raw(raw: RawCeremony, text: String, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::invalid(path, field, message);
        let kind = match raw.kind.as_str() {
            "root-init" => CeremonyKind::RootInit,
            "root-restore" => CeremonyKind::RootRestore,
            "reshare" => CeremonyKind::Reshare,
            "sign-intermediate" => CeremonyKind::SignIntermediate,
            "revoke" => CeremonyKind::Revoke,
            "crl" => CeremonyKind::Crl,
            other => {
                return Err(invalid(
                    "kind",
                    format!("unknown ceremony kind {other:?}; this version runs: root-init, root-restore, reshare, sign-intermediate, revoke, crl"),
                ))
            }
        };
        check_id(&raw.id).map_err(|m| invalid("id", m))?;
        if raw.title.trim().is_empty() {
            return Err(invalid("title", "must not be empty".into()));
        }

        let mut roles = Vec::new();
        let mut role_ids = BTreeSet::new();
        for (i, r) in raw.roles.into_iter().enumerate() {
            check_id(&r.id).map_err(|m| invalid(&format!("roles[{i}].id"), m))?;
            if !role_ids.insert(r.id.clone()) {
                return Err(invalid(&format!("roles[{i}].id"), format!("role {:?} is declared twice", r.id)));
            }
            if r.min == 0 {
                return Err(invalid(&format!("roles[{i}].min"), "must be at least 1".into()));
            }
            roles.push(Role { id: r.id, title: r.title, min: r.min });
        }
        for needed in ["ceremony-administrator", "internal-witness"] {
            if !role_ids.contains(needed) {
                return Err(invalid(
                    "roles",
                    format!("a ceremony needs a {needed:?} role (dual occupancy: one runs, one witnesses)"),
                ));
            }
        }

        let key = raw.key.map(|k| key_spec(k, "key", path)).transpose()?;
        let audit_key = key_spec(raw.audit_key, "audit_key", path)?;
        if key.as_ref().is_some_and(|k| k.label == audit_key.label) {
            return Err(invalid(
                "audit_key.label",
                "must differ from key.label: checkpoints are never signed by the CA key".into(),
            ));
        }

        let ceremony_name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| ConfigError::Parse {
            path: path.to_path_buf(),
            message: "the ceremony file needs a UTF-8 file name".into(),
        })?;
        check_listable(ceremony_name).map_err(|message| ConfigError::Parse { path: path.to_path_buf(), message })?;
        let mut inputs = vec![PlanInput::of(InputBase::CeremonyDir, ceremony_name, text.as_bytes())];
        let certificate = match raw.certificate {
            Some(c) => {
                let (spec, template) = certificate_spec(c, kind, path)?;
                inputs.push(template);
                Some(spec)
            }
            None => None,
        };
        let intermediate = raw
            .intermediate
            .map(|i| IntermediateSpec { request_bundle: i.request_bundle, response_bundle: i.response_bundle });
        let revocation = match raw.revocation {
            Some(r) => Some(revocation_spec(r, path)?),
            None => None,
        };
        let crl = match raw.crl {
            Some(c) => {
                if c.next_update_days == 0 || c.next_update_days > 366 {
                    return Err(invalid(
                        "crl.next_update_days",
                        "must be 1 to 366: a root's CRL is reissued at least yearly".into(),
                    ));
                }
                if let Some(idp) = &c.issuing_distribution_point {
                    if !idp.starts_with("http://") {
                        return Err(invalid(
                            "crl.issuing_distribution_point",
                            format!(
                                "{idp:?} must be an http:// URL (RFC 5280 relying parties fetch CRLs over plain HTTP)"
                            ),
                        ));
                    }
                }
                Some(CrlSpec {
                    next_update_days: c.next_update_days,
                    bundle: c.bundle,
                    issuing_distribution_point: c.issuing_distribution_point,
                })
            }
            None => None,
        };
        let mut bundles = Vec::new();
        bundles.extend(intermediate.as_ref().map(|i| i.response_bundle.clone()));
        bundles.extend(crl.as_ref().map(|c| c.bundle.clone()));
        if let Some(i) = &intermediate {
            check_file_name(&i.request_bundle).map_err(|m| invalid("intermediate.request_bundle", m))?;
        }
        let outputs = Outputs {
            certificate_pem: raw.outputs.certificate_pem,
            certificate_der: raw.outputs.certificate_der,
            backup_blob: raw.outputs.backup_blob,
            audit_log: raw.outputs.audit_log,
            bundles,
        };
        if kind.uses_ca_dir() == outputs.audit_log.is_some() {
            return Err(invalid(
                "outputs.audit_log",
                if kind.uses_ca_dir() {
                    "a CA ceremony appends to the CA directory's audit log; remove outputs.audit_log".into()
                } else {
                    "name the ceremony's audit log".into()
                },
            ));
        }
        let mut names = BTreeSet::new();
        for name in outputs.all() {
            check_file_name(name).map_err(|m| invalid("outputs", m))?;
            if !names.insert(name.to_string()) {
                return Err(invalid("outputs", format!("{name:?} is used for two outputs")));
            }
        }

        // A reshare reads the current set like a restore does and hands out a
        // new one like a backup does; it is described in those terms.
        let (mut raw_backup, mut raw_restore) = (raw.backup, raw.restore);
        if let Some(r) = raw.reshare {
            if raw_backup.is_some() || raw_restore.is_some() || kind != CeremonyKind::Reshare {
                return Err(invalid("reshare", "a [reshare] table stands alone, in a reshare ceremony".into()));
            }
            if r.old_custodian_role == r.new_custodian_role {
                return Err(invalid("reshare.new_custodian_role", "must differ from old_custodian_role: the old and new custodians are recorded apart, even when the same people hold both".into()));
            }
            raw_backup = Some(RawBackup {
                threshold: r.threshold,
                shares: r.shares,
                custodian_role: r.new_custodian_role,
                keep_so_pin: None,
            });
            raw_restore = Some(RawRestore {
                backup_blob: r.backup_blob,
                root_certificate: None,
                ceremony_log: r.ceremony_log,
                custodian_role: r.old_custodian_role,
            });
        } else if kind == CeremonyKind::Reshare {
            return Err(invalid("reshare", "a reshare ceremony needs a [reshare] table".into()));
        }
        let backup = match raw_backup {
            Some(b) => {
                let split = Split { table: "backup", cards: "shares", never: "hold the key" };
                split.check(b.threshold, b.shares, &b.custodian_role, &roles, path)?;
                if b.keep_so_pin.as_deref().is_some_and(|r| r.trim().is_empty()) {
                    return Err(invalid(
                        "backup.keep_so_pin",
                        "is the reason the security officer PIN is not split among the custodians: say why (who guards the SO PIN instead), or remove it to split the PIN".into(),
                    ));
                }
                Some(BackupSpec {
                    threshold: b.threshold,
                    shares: b.shares,
                    custodian_role: b.custodian_role,
                    keep_so_pin: b.keep_so_pin.map(|r| r.trim().to_string()),
                })
            }
            None => None,
        };
        // A root key backed up under wrap-with-trusted can be exported by
        // whoever holds both of the token's PINs (the SO makes a trusted key,
        // the user wraps); splitting the SO PIN among the custodians is what
        // keeps that from one person. It is the default, and keeping the PIN
        // whole takes a reason the script states and the log records.
        let split_so_pin = kind == CeremonyKind::RootInit && backup.as_ref().is_some_and(|b| b.keep_so_pin.is_none());
        let activation = match raw.activation {
            Some(a) => {
                if kind != CeremonyKind::RootInit {
                    return Err(invalid(
                        "activation",
                        format!("belongs in a root-init ceremony, not a {} ceremony: the token's PINs are split when the token is made", kind.name()),
                    ));
                }
                let split = Split { table: "activation", cards: "activation cards", never: "log in" };
                split.check(a.threshold, a.shares, &a.custodian_role, &roles, path)?;
                if split_so_pin && a.so_pin == Some(false) {
                    return Err(invalid(
                        "activation.so_pin",
                        "with [backup] the security officer PIN is split among the custodians: remove so_pin = false, or keep the PIN whole by saying why in backup.keep_so_pin".into(),
                    ));
                }
                if backup.as_ref().is_some_and(|b| b.keep_so_pin.is_some()) && a.so_pin == Some(true) {
                    return Err(invalid(
                        "activation.so_pin",
                        "splits the security officer PIN that backup.keep_so_pin keeps whole: choose one".into(),
                    ));
                }
                Some(ActivationSpec {
                    threshold: a.threshold,
                    shares: a.shares,
                    custodian_role: a.custodian_role,
                    user_pin: true,
                    so_pin: a.so_pin.unwrap_or(split_so_pin),
                })
            }
            None => backup.as_ref().filter(|_| split_so_pin).map(|b| ActivationSpec {
                threshold: b.threshold,
                shares: b.shares,
                custodian_role: b.custodian_role.clone(),
                user_pin: false,
                so_pin: true,
            }),
        };
        let restore = match raw_restore {
            Some(r) => {
                for (field, name) in [
                    ("restore.backup_blob", Some(&r.backup_blob)),
                    ("restore.root_certificate", r.root_certificate.as_ref()),
                    ("restore.ceremony_log", Some(&r.ceremony_log)),
                ] {
                    if let Some(name) = name {
                        check_file_name(name).map_err(|m| invalid(field, m))?;
                    }
                }
                if !role_ids.contains(&r.custodian_role) {
                    return Err(invalid(
                        "restore.custodian_role",
                        format!("role {:?} is not declared in [[roles]]", r.custodian_role),
                    ));
                }
                Some(RestoreSpec {
                    backup_blob: r.backup_blob,
                    root_certificate: r.root_certificate,
                    ceremony_log: r.ceremony_log,
                    custodian_role: r.custodian_role,
                })
            }
            None => None,
        };

        // What each kind needs, and what it must not have.
        match kind {
            CeremonyKind::RootInit => {
                if key.is_none() {
                    return Err(invalid("key", "a root-init ceremony generates a key: add a [key] table".into()));
                }
                if certificate.is_none() {
                    return Err(invalid(
                        "certificate",
                        "a root-init ceremony signs a certificate: add a [certificate] table".into(),
                    ));
                }
                if outputs.certificate_pem.is_none() || outputs.certificate_der.is_none() {
                    return Err(invalid(
                        "outputs",
                        "a root-init ceremony writes outputs.certificate_pem and outputs.certificate_der".into(),
                    ));
                }
                if backup.is_some() != outputs.backup_blob.is_some() {
                    return Err(invalid("outputs.backup_blob", "is needed exactly when [backup] is present".into()));
                }
                if restore.is_some() {
                    return Err(invalid("restore", "belongs in a root-restore ceremony".into()));
                }
            }
            CeremonyKind::SignIntermediate | CeremonyKind::Revoke | CeremonyKind::Crl => {
                if key.is_none() {
                    return Err(invalid("key", "name the root key on the token: [key] label and algorithm".into()));
                }
                let needs = [
                    ("certificate", certificate.is_some(), kind == CeremonyKind::SignIntermediate),
                    ("intermediate", intermediate.is_some(), kind == CeremonyKind::SignIntermediate),
                    ("revocation", revocation.is_some(), kind == CeremonyKind::Revoke),
                    ("crl", crl.is_some(), kind == CeremonyKind::Crl),
                    ("backup", backup.is_some(), false),
                    ("restore", restore.is_some(), false),
                    ("outputs.certificate_pem", outputs.certificate_pem.is_some(), false),
                    ("outputs.certificate_der", outputs.certificate_der.is_some(), false),
                    ("outputs.backup_blob", outputs.backup_blob.is_some(), false),
                ];
                for (field, present, wanted) in needs {
                    if present != wanted && !(field == "crl" && kind == CeremonyKind::Revoke) {
                        return Err(invalid(
                            field,
                            if wanted {
                                format!("a {} ceremony needs it", kind.name())
                            } else {
                                format!("does not belong in a {} ceremony", kind.name())
                            },
                        ));
                    }
                }
            }
            CeremonyKind::Reshare => {
                for (field, present) in [
                    ("key", key.is_some()),
                    ("certificate", certificate.is_some()),
                    ("outputs.certificate_pem", outputs.certificate_pem.is_some()),
                    ("outputs.certificate_der", outputs.certificate_der.is_some()),
                    ("outputs.backup_blob", outputs.backup_blob.is_some()),
                ] {
                    if present {
                        return Err(invalid(
                            field,
                            "does not belong in a reshare ceremony: it makes new shares, not keys or certificates"
                                .into(),
                        ));
                    }
                }
            }
            CeremonyKind::RootRestore => {
                if restore.as_ref().is_none_or(|r| r.root_certificate.is_none()) {
                    return Err(invalid(
                        "restore",
                        "a root-restore ceremony needs a [restore] table naming its inputs, the root certificate among them".into(),
                    ));
                }
                for (field, present) in [
                    ("key", key.is_some()),
                    ("certificate", certificate.is_some()),
                    ("backup", backup.is_some()),
                    ("outputs.certificate_pem", outputs.certificate_pem.is_some()),
                    ("outputs.certificate_der", outputs.certificate_der.is_some()),
                    ("outputs.backup_blob", outputs.backup_blob.is_some()),
                ] {
                    if present {
                        return Err(invalid(field, "does not belong in a root-restore ceremony: the key and its certificate come from the backup".into()));
                    }
                }
            }
        }

        let steps = steps(raw.steps, &role_ids, kind, backup.is_some(), activation.is_some(), path)?;
        Ok(Plan {
            path: path.to_path_buf(),
            inputs,
            text,
            kind,
            id: raw.id,
            title: raw.title,
            description: raw.description,
            grade: raw.grade,
            roles,
            key,
            audit_key,
            certificate,
            backup,
            activation,
            restore,
            intermediate,
            revocation,
            crl,
            outputs,
            steps,
        })
    }

    pub fn role(&self, id: &str) -> Option<&Role> {
        self.roles.iter().find(|r| r.id == id)
    }

    /// The plan digest over the plan's own files and `from_input_dir`, the
    /// files read from the input directory (in the order the reader lists
    /// them).
    pub fn digest_with(&self, from_input_dir: Vec<PlanInput>) -> PlanDigest {
        PlanDigest::new(self.inputs.iter().cloned().chain(from_input_dir).collect())
    }

    /// Whether the plan reads files from the environment's input directory
    /// (a restore's inputs, a request bundle): the plan digest covers them
    /// too, so they must be at hand to print the script.
    pub fn reads_input_dir(&self) -> bool {
        self.restore.is_some() || self.intermediate.is_some()
    }

    /// What the plan reads from the input directory, for messages: "the
    /// request bundle request/", or a restore's file names.
    pub fn input_dir_description(&self) -> String {
        let mut parts = Vec::new();
        if let Some(r) = &self.restore {
            let names = [Some(&r.backup_blob), Some(&r.ceremony_log), r.root_certificate.as_ref()];
            parts.extend(names.into_iter().flatten().cloned());
        }
        if let Some(i) = &self.intermediate {
            parts.push(format!("the request bundle {}/", i.request_bundle));
        }
        parts.join(", ")
    }

    /// How a root ceremony's backup leaves the token's security officer
    /// PIN, for the log: split (and how), or kept whole and why. `None` for
    /// plans that back nothing up.
    pub fn security_officer_custody(&self) -> Option<String> {
        let backup = self.backup.as_ref().filter(|_| self.kind == CeremonyKind::RootInit)?;
        if let Some(why) = &backup.keep_so_pin {
            return Some(format!("kept whole, not split among custodians: {why}"));
        }
        let a = self.activation.as_ref().filter(|a| a.so_pin)?;
        Some(format!(
            "split {} of {} among the {} role at the activate-token step",
            a.threshold, a.shares, a.custodian_role
        ))
    }

    /// The plan at a glance, as (label, value) rows: shown on screen at the
    /// start of a run and printed at the top of the paper script, so both
    /// say the same thing.
    pub fn summary(&self) -> Vec<(&'static str, String)> {
        let mut rows = vec![
            ("Ceremony", format!("{} ({})", self.id, self.kind.name())),
            (
                "Grade",
                match self.grade {
                    Grade::Real => {
                        "real: answers files, --allow-network, the software key store and echoed read-backs are refused"
                            .into()
                    }
                    Grade::Rehearsal => "rehearsal: rehearsal aids are accepted and marked in the log".into(),
                },
            ),
            ("Script", self.path.display().to_string()),
        ];
        if let Some(c) = &self.certificate {
            rows.push(("Template", c.template_path.display().to_string()));
            if self.kind == CeremonyKind::SignIntermediate {
                let subject = match (c.template.subject(), c.replace_csr_subject) {
                    (None, _) => "the CSR's, as requested".to_string(),
                    (Some(dn), false) => format!("{dn} (a CSR asking for another is refused)"),
                    (Some(dn), true) => format!("{dn} (replaces the CSR's if it differs)"),
                };
                rows.push(("Subject", subject));
            }
        }
        if let Some(k) = &self.key {
            rows.push(("Key", format!("{} ({}, signing {})", k.label, k.algorithm, k.signature)));
        }
        rows.push(("Audit key", format!("{} ({})", self.audit_key.label, self.audit_key.algorithm)));
        if let Some(b) = &self.backup {
            let what = if self.kind == CeremonyKind::Reshare {
                "the backup's key-encryption key re-split"
            } else {
                "backup wrapped under a key split"
            };
            rows.push((
                "Custody",
                format!("{what} {} of {} among the {} role", b.threshold, b.shares, b.custodian_role),
            ));
        }
        if let Some(a) = &self.activation {
            let pins = match (a.user_pin, a.so_pin) {
                (true, true) => "user PIN and SO PIN each",
                (true, false) => "user PIN",
                _ => "SO PIN",
            };
            rows.push((
                "Activation",
                format!("{pins} random, split {} of {} among the {} role", a.threshold, a.shares, a.custodian_role),
            ));
        }
        if let Some(why) = self.backup.as_ref().and_then(|b| b.keep_so_pin.as_ref()) {
            rows.push(("SO PIN", format!("kept whole, not split: {why}")));
        }
        if let Some(r) = &self.restore {
            let inputs: Vec<&str> = [Some(&r.backup_blob), r.root_certificate.as_ref(), Some(&r.ceremony_log)]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect();
            rows.push(("Inputs", inputs.join(", ")));
        }
        rows.push(("Outputs", self.outputs.all().join(", ")));
        rows
    }
}

/// The certificate to sign, and its template as a plan input (hashed from
/// the bytes that were parsed, so what is hashed is what is used).
fn certificate_spec(
    raw: RawCertificate,
    kind: CeremonyKind,
    path: &Path,
) -> Result<(CertificateSpec, PlanInput), ConfigError> {
    check_listable(&raw.template).map_err(|m| ConfigError::invalid(path, "certificate.template", m))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let template_path = base.join(&raw.template);
    let template_bytes =
        std::fs::read(&template_path).map_err(|source| ConfigError::Read { path: template_path.clone(), source })?;
    let template_text = std::str::from_utf8(&template_bytes)
        .map_err(|_| ConfigError::Template { path: template_path.clone(), message: "not UTF-8 text".into() })?;
    let template = Profile::from_toml_str(template_text, &template_path.display().to_string())
        .map_err(|e| ConfigError::Template { path: template_path.clone(), message: e.to_string() })?;
    let wanted = match kind {
        CeremonyKind::SignIntermediate => CertKind::IntermediateCa,
        _ => CertKind::RootCa,
    };
    if template.kind() != wanted || !matches!(kind, CeremonyKind::RootInit | CeremonyKind::SignIntermediate) {
        return Err(ConfigError::invalid(
            path,
            "certificate.template",
            format!(
                "{} is a {:?} template; a {} ceremony needs a {wanted:?} template",
                template_path.display(),
                template.kind(),
                kind.name()
            ),
        ));
    }
    let not_before = match raw.not_before {
        Some(s) => Some(OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339).map_err(|e| {
            ConfigError::invalid(path, "certificate.not_before", format!("{s:?} is not an RFC 3339 time ({e})"))
        })?),
        None => None,
    };
    if raw.replace_csr_subject && kind != CeremonyKind::SignIntermediate {
        return Err(ConfigError::invalid(
            path,
            "certificate.replace_csr_subject",
            format!("a {} ceremony signs no CSR: remove replace_csr_subject", kind.name()),
        ));
    }
    let input = PlanInput::of(InputBase::CeremonyDir, raw.template, &template_bytes);
    let spec = CertificateSpec { template_path, template, not_before, replace_csr_subject: raw.replace_csr_subject };
    Ok((spec, input))
}

fn revocation_spec(r: RawRevocation, path: &Path) -> Result<RevocationSpec, ConfigError> {
    let serial = r.serial.to_ascii_lowercase().replace(':', "");
    if serial.is_empty() || serial.len() > 40 || !serial.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ConfigError::invalid(
            path,
            "revocation.serial",
            format!("{:?} is not a serial number in hex (as `openssl x509 -serial` prints it)", r.serial),
        ));
    }
    let reason = crate::ca::RevocationReason::from_name(&r.reason).ok_or_else(|| {
        ConfigError::invalid(path, "revocation.reason", format!("{:?} is not an RFC 5280 reason name (keyCompromise, cACompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn, unspecified)", r.reason))
    })?;
    reason.allowed_for_ca().map_err(|why| ConfigError::invalid(path, "revocation.reason", why.to_string()))?;
    let time = match r.time {
        Some(t) => Some(OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).map_err(|e| {
            ConfigError::invalid(path, "revocation.time", format!("{t:?} is not an RFC 3339 time ({e})"))
        })?),
        None => None,
    };
    Ok(RevocationSpec { serial, reason, time })
}

fn check_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('/') || name.contains('\\') || name.starts_with('.') {
        return Err(format!("{name:?} must be a plain file name; the environment file says which directory"));
    }
    check_listable(name)
}

fn key_spec(raw: RawKey, field: &str, path: &Path) -> Result<KeySpec, ConfigError> {
    let algorithm = KeyAlgorithm::from_name(&raw.algorithm)
        .map_err(|e| ConfigError::invalid(path, format!("{field}.algorithm"), e.to_string()))?;
    let signature = raw.signature.unwrap_or(algorithm.default_signature());
    if !signature.fits(algorithm) {
        return Err(ConfigError::invalid(
            path,
            format!("{field}.signature"),
            format!("{signature} cannot be made with a {algorithm} key"),
        ));
    }
    if raw.label.is_empty()
        || raw.label.len() > 64
        || !raw.label.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ConfigError::invalid(path, format!("{field}.label"), "use 1-64 characters from A-Z a-z 0-9 - _ ."));
    }
    Ok(KeySpec { label: raw.label, algorithm, signature })
}

fn steps(
    raw: Vec<RawStep>,
    roles: &BTreeSet<String>,
    kind: CeremonyKind,
    backup: bool,
    activation: bool,
    path: &Path,
) -> Result<Vec<Step>, ConfigError> {
    let mut ids = BTreeSet::new();
    let mut out = Vec::new();
    for (i, s) in raw.into_iter().enumerate() {
        let field = |f: &str| format!("steps[{i}].{f}");
        check_id(&s.id).map_err(|m| ConfigError::invalid(path, field("id"), m))?;
        if !ids.insert(s.id.clone()) {
            return Err(ConfigError::invalid(path, field("id"), format!("step id {:?} is used twice", s.id)));
        }
        if !roles.contains(&s.role) {
            return Err(ConfigError::invalid(
                path,
                field("role"),
                format!("role {:?} is not declared in [[roles]]", s.role),
            ));
        }
        match (&s.witness, s.kind.needs_witness()) {
            (Some(w), _) if !roles.contains(w) => {
                return Err(ConfigError::invalid(
                    path,
                    field("witness"),
                    format!("role {w:?} is not declared in [[roles]]"),
                ))
            }
            (Some(w), _) if *w == s.role => {
                return Err(ConfigError::invalid(
                    path,
                    field("witness"),
                    "the witness must be another role than the performer".to_string(),
                ))
            }
            (None, true) => {
                return Err(ConfigError::invalid(
                    path,
                    field("witness"),
                    format!("a {} step needs a witness role", s.kind.name()),
                ))
            }
            _ => {}
        }
        out.push(Step {
            number: i + 1,
            id: s.id,
            kind: s.kind,
            role: s.role,
            witness: s.witness,
            title: s.title,
            text: s.text,
        });
    }
    let required = kind.required_steps(backup, activation);
    for s in &out {
        // Steps any ceremony may add; every other kind belongs to the
        // ceremonies that require it (and a root's fingerprint read-back to
        // those that sign a root, a CRL to a revocation).
        let generic = matches!(
            s.kind,
            StepKind::Attendance
                | StepKind::Confirm
                | StepKind::WitnessPlan
                | StepKind::OpenToken
                | StepKind::Checkpoint
                | StepKind::Close
        );
        let allowed = generic
            || required.contains(&s.kind)
            || s.kind == StepKind::WitnessRoot && required.contains(&StepKind::SignRoot)
            || s.kind == StepKind::SignCrl && kind == CeremonyKind::Revoke;
        if !allowed {
            return Err(ConfigError::invalid(
                path,
                format!("steps[{}]", s.number - 1),
                format!(
                    "a {} step has no place in a {} ceremony{}",
                    s.kind.name(),
                    kind.name(),
                    match s.kind {
                        StepKind::ActivateToken => " without [activation]",
                        _ if !backup => " without [backup]",
                        _ => "",
                    }
                ),
            ));
        }
    }
    let mut last_position = None;
    for need in &required {
        let positions: Vec<usize> = out.iter().filter(|s| s.kind == *need).map(|s| s.number).collect();
        let position = match positions.as_slice() {
            [one] => *one,
            [] => {
                return Err(ConfigError::invalid(
                    path,
                    "steps",
                    format!(
                        "a {} ceremony needs a {} step{}",
                        kind.name(),
                        need.name(),
                        if *need == StepKind::ActivateToken {
                            " before close: it splits the token's PINs among the custodians ([activation], and with [backup] the security officer PIN unless backup.keep_so_pin says why not)"
                        } else {
                            ""
                        }
                    ),
                ))
            }
            _ => {
                return Err(ConfigError::invalid(
                    path,
                    "steps",
                    format!("the {} step may appear only once", need.name()),
                ))
            }
        };
        if let Some((prev_pos, prev)) = last_position {
            if position < prev_pos {
                return Err(ConfigError::invalid(
                    path,
                    "steps",
                    format!("step {position} ({}) must come after the {} step", need.name(), StepKind::name(prev)),
                ));
            }
        }
        last_position = Some((position, *need));
    }
    let position_of = |k: StepKind| out.iter().find(|s| s.kind == k).map_or(0, |s| s.number);
    if out.first().map(|s| s.kind) != Some(StepKind::Attendance) {
        return Err(ConfigError::invalid(
            path,
            "steps",
            "the first step must be attendance: the log records who is present before anything else",
        ));
    }
    if out.last().map(|s| s.kind) != Some(StepKind::Close) {
        return Err(ConfigError::invalid(path, "steps", "the last step must be close"));
    }
    for s in &out {
        let too_early = match s.kind {
            StepKind::WitnessRoot => s.number < position_of(StepKind::SignRoot),
            StepKind::Checkpoint => s.number < position_of(StepKind::GenerateAuditKey),
            _ => false,
        };
        if too_early {
            return Err(ConfigError::invalid(
                path,
                format!("steps[{}]", s.number - 1),
                format!("a {} step cannot come before what it checks", s.kind.name()),
            ));
        }
    }
    Ok(out)
}

fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !id.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("{id:?} must be 1-64 characters of a-z, 0-9 and '-'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
    }

    /// Loads `ceremonies/<plan>` edited by `edit`, from a copy whose
    /// template path points back into the repository.
    fn load_plan(plan: &str, edit: impl Fn(String) -> String) -> Result<Plan, ConfigError> {
        let text = std::fs::read_to_string(repo(&format!("ceremonies/{plan}"))).expect("plan");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plan.toml");
        let template = repo("templates/root-ca.toml");
        std::fs::write(&path, edit(text).replace("../templates/root-ca.toml", &template.display().to_string()))
            .expect("write");
        Plan::load(&path)
    }

    fn load_edited(edit: impl Fn(String) -> String) -> Result<Plan, ConfigError> {
        load_plan("root-init-activation.toml", edit)
    }

    #[test]
    fn replace_csr_subject_belongs_to_a_signing_plan() {
        let load = |plan: &str, template: &str, edit: &dyn Fn(String) -> String| {
            let dir = tempfile::tempdir().expect("tempdir");
            let text = std::fs::read_to_string(repo(plan)).expect("plan");
            let t = std::fs::read_to_string(repo(template)).expect("template");
            let name = Path::new(template).file_name().expect("name").to_string_lossy().into_owned();
            std::fs::write(dir.path().join(&name), edit(t)).expect("write");
            let text = text.replace(&format!("../{template}"), &name);
            let path = dir.path().join("plan.toml");
            std::fs::write(&path, text.replace("replace_csr_subject = false", "replace_csr_subject = true"))
                .expect("write");
            Plan::load(&path)
        };
        let same = |t: String| t;
        let plan = load("ceremonies/sign-intermediate.toml", "templates/intermediate-ca.toml", &same).expect("plan");
        assert!(plan.certificate.as_ref().is_some_and(|c| c.replace_csr_subject));
        // A root signs no CSR.
        let err = load_edited(|t| t.replace("[certificate]\n", "[certificate]\nreplace_csr_subject = true\n"))
            .expect_err("root");
        assert!(err.to_string().contains("a root-init ceremony signs no CSR"), "{err}");
    }

    #[test]
    fn the_plan_inputs_are_the_ceremony_file_then_its_template_as_written() {
        let plan = load_edited(|t| t).expect("plan");
        let names: Vec<&str> = plan.inputs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["plan.toml", repo("templates/root-ca.toml").to_str().expect("utf8")]);
        assert_eq!(plan.inputs[0].sha256, crate::words::sha256_hex(plan.text.as_bytes()));
        let err =
            load_edited(|t| t.replace("../templates/root-ca.toml", "..\\templates\\root-ca.toml")).expect_err("bs");
        assert!(err.to_string().contains("backslash"), "{err}");
    }

    #[test]
    fn activation_needs_its_step_before_close_and_the_step_needs_the_table() {
        let plan = load_edited(|t| t).expect("bundled activation plan");
        let a = plan.activation.as_ref().expect("activation");
        assert_eq!(
            (a.threshold, a.shares, a.custodian_role.as_str(), a.user_pin, a.so_pin),
            (2, 3, "custodian", true, true),
            "with [backup], [activation] splits the SO PIN too"
        );
        let kinds: Vec<StepKind> = plan.steps.iter().map(|s| s.kind).collect();
        assert_eq!(&kinds[kinds.len() - 2..], &[StepKind::ActivateToken, StepKind::Close]);

        let no_step = load_edited(|t| t.replace("kind = \"activate-token\"", "kind = \"confirm\""));
        assert!(no_step.expect_err("missing step").to_string().contains("needs a activate-token step"));
        let without_backup_or_table =
            load_plan("root-init-hsm-only.toml", |t| t.replace("kind = \"checkpoint\"", "kind = \"activate-token\""));
        assert!(without_backup_or_table.expect_err("no table").to_string().contains("without [activation]"));
        let too_low = load_edited(|t| t.replace("[activation]\nthreshold = 2", "[activation]\nthreshold = 1"));
        assert!(too_low.expect_err("1-of-3").to_string().contains("one custodian alone must never log in"));
        let so_pin_off = load_edited(|t| {
            t.replace(
                "custodian_role = \"custodian\"\n# The security",
                "custodian_role = \"custodian\"\nso_pin = false\n# The security",
            )
        });
        assert!(so_pin_off.expect_err("so_pin = false").to_string().contains("keep the PIN whole by saying why"));
    }

    #[test]
    fn a_backed_up_root_splits_the_so_pin_unless_the_plan_says_why_not() {
        let plan = load_plan("root-init.toml", |t| t).expect("bundled root plan");
        let a = plan.activation.as_ref().expect("the SO PIN split");
        assert_eq!((a.threshold, a.shares, a.user_pin, a.so_pin), (2, 3, false, true));
        assert!(plan.security_officer_custody().expect("custody").contains("split 2 of 3 among the custodian role"));

        // Without the step that splits it, the plan is refused and says how to opt out.
        let no_step = load_plan("root-init.toml", |t| t.replace("kind = \"activate-token\"", "kind = \"confirm\""));
        let err = no_step.expect_err("no activate-token step").to_string();
        assert!(err.contains("needs a activate-token step") && err.contains("backup.keep_so_pin"), "{err}");

        // Opting out takes a reason, which the plan then states.
        let keep = |reason: &str| {
            let reason = reason.to_string();
            load_plan("root-init.toml", move |t| {
                t.replace("kind = \"activate-token\"", "kind = \"confirm\"")
                    .replace("# keep_so_pin = \"The HSM", &format!("keep_so_pin = \"{reason}\"\n# \"The HSM"))
            })
        };
        let kept = keep("The SO PIN is sealed in the bank vault under two locks").expect("opt-out with a reason");
        assert!(kept.activation.is_none());
        let custody = kept.security_officer_custody().expect("custody");
        assert!(custody.contains("kept whole") && custody.contains("bank vault"), "{custody}");
        assert!(kept.summary().iter().any(|(k, v)| *k == "SO PIN" && v.contains("bank vault")));
        let err = keep("   ").expect_err("a blank reason").to_string();
        assert!(err.contains("backup.keep_so_pin") && err.contains("say why"), "{err}");
    }

    #[test]
    fn a_plan_declares_its_grade_in_the_witnessed_file() {
        let rehearsal = load_plan("root-init.toml", |t| t).expect("default");
        assert_eq!(rehearsal.grade, Grade::Rehearsal);
        let real = load_plan("root-init.toml", |t| t.replace("# grade = \"real\"", "grade = \"real\"")).expect("real");
        assert_eq!(real.grade, Grade::Real);
        assert!(real.summary().iter().any(|(k, v)| *k == "Grade" && v.starts_with("real")));
        let bogus = load_plan("root-init.toml", |t| t.replace("# grade = \"real\"", "grade = \"production\""));
        assert!(bogus.expect_err("unknown grade").to_string().contains("production"));
    }
}
