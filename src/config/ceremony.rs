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

use super::{read_toml, ConfigError};
use crate::hsm::{KeyAlgorithm, SignatureAlgorithm};
use crate::profile::{CertKind, Profile};
use crate::words::Fingerprint;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCeremony {
    kind: String,
    id: String,
    title: String,
    #[serde(default)]
    description: String,
    roles: Vec<RawRole>,
    key: RawKey,
    audit_key: RawKey,
    certificate: RawCertificate,
    outputs: RawOutputs,
    steps: Vec<RawStep>,
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
    template: PathBuf,
    not_before: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutputs {
    certificate_pem: String,
    certificate_der: String,
    audit_log: String,
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
    /// Generate a root key in a token and self-sign the root certificate.
    RootInit,
}

impl CeremonyKind {
    pub fn name(self) -> &'static str {
        match self {
            CeremonyKind::RootInit => "root-init",
        }
    }

    /// The step kinds this ceremony must contain, in the order they must come.
    fn required_steps(self) -> &'static [StepKind] {
        match self {
            CeremonyKind::RootInit => &[
                StepKind::Attendance,
                StepKind::WitnessPlan,
                StepKind::OpenToken,
                StepKind::GenerateAuditKey,
                StepKind::GenerateKey,
                StepKind::SignRoot,
                StepKind::Close,
            ],
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
            StepKind::Close => "close",
        }
    }

    /// Whether this step needs a witness role named.
    fn needs_witness(self) -> bool {
        matches!(self, StepKind::WitnessPlan | StepKind::WitnessRoot)
    }
}

/// A role in the ceremony and how many people must fill it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub id: String,
    pub title: String,
    pub min: usize,
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
    pub certificate_pem: String,
    pub certificate_der: String,
    pub audit_log: String,
}

/// A validated ceremony: after this, nothing re-checks the input.
#[derive(Debug, Clone)]
pub struct Plan {
    pub path: PathBuf,
    /// SHA-256 of the ceremony file's bytes, the value witnesses read back.
    pub fingerprint: Fingerprint,
    /// The ceremony file's text, kept so `ceremony print` shows what was hashed.
    pub text: String,
    pub kind: CeremonyKind,
    pub id: String,
    pub title: String,
    pub description: String,
    pub roles: Vec<Role>,
    pub key: KeySpec,
    pub audit_key: KeySpec,
    pub template_path: PathBuf,
    pub template_fingerprint: Fingerprint,
    pub template: Profile,
    pub not_before: Option<OffsetDateTime>,
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
            other => {
                return Err(invalid("kind", format!("unknown ceremony kind {other:?}; this version runs: root-init")))
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

        let key = key_spec(raw.key, "key", path)?;
        let audit_key = key_spec(raw.audit_key, "audit_key", path)?;
        if key.label == audit_key.label {
            return Err(invalid(
                "audit_key.label",
                "must differ from key.label: checkpoints are never signed by the CA key".into(),
            ));
        }

        let base = path.parent().unwrap_or(Path::new("."));
        let template_path = base.join(&raw.certificate.template);
        let template_bytes = std::fs::read(&template_path)
            .map_err(|source| ConfigError::Read { path: template_path.clone(), source })?;
        let template = Profile::load(&template_path)
            .map_err(|e| ConfigError::Template { path: template_path.clone(), message: e.to_string() })?;
        let wanted = match kind {
            CeremonyKind::RootInit => CertKind::RootCa,
        };
        if template.kind() != wanted {
            return Err(invalid(
                "certificate.template",
                format!(
                    "{} is a {:?} template; a {} ceremony needs a {wanted:?} template",
                    template_path.display(),
                    template.kind(),
                    kind.name()
                ),
            ));
        }
        let not_before = match raw.certificate.not_before {
            Some(s) => Some(
                OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| invalid("certificate.not_before", format!("{s:?} is not an RFC 3339 time ({e})")))?,
            ),
            None => None,
        };

        let outputs = Outputs {
            certificate_pem: raw.outputs.certificate_pem,
            certificate_der: raw.outputs.certificate_der,
            audit_log: raw.outputs.audit_log,
        };
        let mut names = BTreeSet::new();
        for (field, name) in [
            ("outputs.certificate_pem", &outputs.certificate_pem),
            ("outputs.certificate_der", &outputs.certificate_der),
            ("outputs.audit_log", &outputs.audit_log),
        ] {
            if name.is_empty() || name.contains('/') || name.contains('\\') || name.starts_with('.') {
                return Err(invalid(
                    field,
                    format!("{name:?} must be a plain file name; the environment file says which directory"),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(invalid(field, format!("{name:?} is used for two outputs")));
            }
        }

        let steps = steps(raw.steps, &role_ids, kind, path)?;
        Ok(Plan {
            path: path.to_path_buf(),
            fingerprint: Fingerprint::sha256(text.as_bytes()),
            text,
            kind,
            id: raw.id,
            title: raw.title,
            description: raw.description,
            roles,
            key,
            audit_key,
            template_path,
            template_fingerprint: Fingerprint::sha256(&template_bytes),
            template,
            not_before,
            outputs,
            steps,
        })
    }

    pub fn role(&self, id: &str) -> Option<&Role> {
        self.roles.iter().find(|r| r.id == id)
    }
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
    let required = kind.required_steps();
    let mut last_position = None;
    for need in required {
        let positions: Vec<usize> = out.iter().filter(|s| s.kind == *need).map(|s| s.number).collect();
        let position = match positions.as_slice() {
            [one] => *one,
            [] => {
                return Err(ConfigError::invalid(
                    path,
                    "steps",
                    format!("a {} ceremony needs a {} step", kind.name(), need.name()),
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
