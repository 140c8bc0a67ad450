//! The root key ceremony: generate the root key in a token and self-sign the
//! root certificate, witnessed and logged.
//!
//! The order follows Boulder's `cmd/ceremony` and the IANA KSK scripts:
//! everything that can be checked is checked before a single file is written
//! or a key made (outputs absent, network down, token present, PIN right,
//! labels free, mechanisms supported); then the steps run in the script's
//! order, each leaving an audit entry; the certificate is linted before the
//! real signature and verified after; and the log closes with a signed
//! checkpoint that is printed for the paper record.

use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::operator::same_words;
use super::{airgap, CeremonyError, Operator, RunOptions};
use crate::audit::{Artifact, AuditLog, Checkpoint, Event, Outcome};
use crate::config::{Backend, Environment, Plan, SecretSource, Step, StepKind};
use crate::files::{self, Mode};
use crate::hsm::keystore::{GeneratedKey, KeyStore, StoreFacts};
use crate::hsm::soft::SealingKey;
use crate::hsm::RandomSource;
use crate::profile::{self, IssueRequest, IssuerRef};
use crate::secret::Secret;
use crate::words::{self, Fingerprint};

/// Words a witness reads back: three words are 30 bits, enough to catch a
/// wrong page or a substituted file, short enough to say aloud.
const READ_BACK_WORDS: usize = 3;

/// What a finished root ceremony produced.
#[derive(Debug, Clone)]
pub struct RootOutcome {
    pub certificate_pem: PathBuf,
    pub certificate_der: PathBuf,
    pub audit_log: PathBuf,
    pub certificate_fingerprint: Fingerprint,
    pub key_uri: String,
    pub store: StoreFacts,
    pub final_checkpoint: Checkpoint,
}

/// Runs a root-init plan to the end, or stops at the first failure.
pub fn run(
    plan: &Plan,
    env: &Environment,
    operator: &mut dyn Operator,
    options: &RunOptions,
) -> Result<RootOutcome, CeremonyError> {
    let preflight = preflight(plan, env, operator, options)?;
    show_plan(plan, &preflight, operator);

    let mut log = AuditLog::create(&preflight.paths.audit_log, &plan.id)?;
    let mut state = State {
        log: &mut log,
        preflight: &preflight,
        audit_key: None,
        root_key: None,
        issued: None,
        participants: Vec::new(),
        final_checkpoint: None,
    };
    let started = Event::new("preflight", "ceremony-started")
        .input(Artifact::of(display_name(&plan.path), plan.text.as_bytes()))
        .input(Artifact { name: display_name(&plan.template_path), sha256: plan.template_fingerprint.hex.clone() })
        .detail("kind", plan.kind.name())
        .detail("title", plan.title.as_str())
        .detail("keyrite_version", env!("CARGO_PKG_VERSION"))
        .detail("store", serde_json::to_value(preflight.store.facts()).unwrap_or_default())
        .detail("network_interfaces_up", preflight.interfaces_up.clone())
        .detail("network_allowed", options.allow_network)
        .detail("operator_interactive", operator.is_interactive());
    state.log.append(started)?;

    for step in &plan.steps {
        operator.say(&format!("\n== Step {} of {}: {} ==", step.number, plan.steps.len(), step.title));
        if !step.text.trim().is_empty() {
            operator.say(step.text.trim());
        }
        if let Err(e) = run_step(plan, step, &mut state, operator) {
            let aborted = Event::new(&step.id, "ceremony-aborted")
                .role(step.role.as_str())
                .result(Outcome::Failed)
                .detail("error", e.to_string());
            // The failure itself is evidence: record it, then stop. If even
            // that fails, the original error is the one to report.
            let _ = state.log.append(aborted);
            return Err(e);
        }
    }

    let issued = state
        .issued
        .take()
        .ok_or_else(|| CeremonyError::Step { step: 0, message: "the plan signed no certificate".into() })?;
    let final_checkpoint = state
        .final_checkpoint
        .take()
        .ok_or_else(|| CeremonyError::Step { step: 0, message: "the plan did not close".into() })?;
    Ok(RootOutcome {
        certificate_pem: preflight.paths.certificate_pem.clone(),
        certificate_der: preflight.paths.certificate_der.clone(),
        audit_log: preflight.paths.audit_log.clone(),
        certificate_fingerprint: issued.fingerprint,
        key_uri: state.root_key.map(|k| k.uri).unwrap_or_default(),
        store: preflight.store.facts(),
        final_checkpoint,
    })
}

/// Output paths, resolved against the environment's output directory.
struct Paths {
    certificate_pem: PathBuf,
    certificate_der: PathBuf,
    audit_log: PathBuf,
}

/// What the preflight established; nothing has been written yet.
struct Preflight {
    paths: Paths,
    store: KeyStore,
    interfaces_up: Vec<String>,
}

/// Checks everything that can fail before a file is written or a key made.
fn preflight(
    plan: &Plan,
    env: &Environment,
    operator: &mut dyn Operator,
    options: &RunOptions,
) -> Result<Preflight, CeremonyError> {
    let out = &env.output_dir;
    let paths = Paths {
        certificate_pem: out.join(&plan.outputs.certificate_pem),
        certificate_der: out.join(&plan.outputs.certificate_der),
        audit_log: out.join(&plan.outputs.audit_log),
    };
    for path in [&paths.certificate_pem, &paths.certificate_der, &paths.audit_log] {
        files::ensure_absent(path)?;
    }
    if !out.is_dir() {
        return Err(CeremonyError::Step {
            step: 0,
            message: format!("output directory {} does not exist; create it (the USB medium) first", out.display()),
        });
    }

    let interfaces_up = airgap::interfaces_up();
    if !interfaces_up.is_empty() && !options.allow_network {
        return Err(CeremonyError::NetworkUp { interfaces: interfaces_up.join(", ") });
    }

    let store = match &env.backend {
        Backend::Pkcs11 { module, token, pin } => {
            let pin = resolve_secret(pin, operator, "token-pin", &format!("User PIN for token {:?}", token.label))?;
            KeyStore::open_pkcs11(module, token, &pin)?
        }
        Backend::Soft { dir, passphrase } => {
            let pass =
                resolve_secret(passphrase, operator, "store-passphrase", "Passphrase for the software key store")?;
            KeyStore::open_soft(dir, SealingKey::Passphrase(pass))?
        }
    };
    for key in [&plan.audit_key, &plan.key] {
        store.check_new_key(&key.label, key.algorithm, key.signature)?;
    }
    if let Some(nb) = plan.not_before {
        let na = plan.template.not_after_for(nb);
        if na <= OffsetDateTime::now_utc() {
            return Err(CeremonyError::Step {
                step: 0,
                message: format!("certificate.not_before {nb} plus the template's validity has already passed"),
            });
        }
    }
    Ok(Preflight { paths, store, interfaces_up })
}

/// Reads a PIN or passphrase from where the environment file says.
pub fn resolve_secret(
    source: &SecretSource,
    operator: &mut dyn Operator,
    key: &str,
    question: &str,
) -> Result<Secret, CeremonyError> {
    match source {
        SecretSource::Prompt => operator.secret(key, question),
        SecretSource::Memory(s) => Ok(s.clone()),
        SecretSource::Env(var) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Secret::from_string(v)),
            _ => Err(CeremonyError::Input {
                what: format!("environment variable {var}"),
                detail: "it is not set or empty".into(),
            }),
        },
        SecretSource::File(path) => read_secret_file(path),
    }
}

fn read_secret_file(path: &Path) -> Result<Secret, CeremonyError> {
    use std::os::unix::fs::PermissionsExt;
    let what = || format!("secret file {}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| CeremonyError::Input { what: what(), detail: e.to_string() })?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(CeremonyError::Input {
            what: what(),
            detail: "it is readable by group or others; chmod 600 it".into(),
        });
    }
    let mut bytes = std::fs::read(path).map_err(|e| CeremonyError::Input { what: what(), detail: e.to_string() })?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    Ok(Secret::new(bytes))
}

fn show_plan(plan: &Plan, preflight: &Preflight, operator: &mut dyn Operator) {
    let facts = preflight.store.facts();
    let store = match &facts {
        StoreFacts::Pkcs11(t) => format!(
            "PKCS#11 token {:?} serial {} ({} {}, firmware {}) via {}",
            t.label, t.serial, t.manufacturer, t.model, t.firmware, t.module
        ),
        StoreFacts::Soft { dir } => format!("software key store {dir} (no HSM)"),
    };
    operator.say(&format!(
        "keyrite {} ceremony {:?}: {}\n\
         ceremony file  {}\n\
         plan SHA-256   {}\n\
         plan words     {}\n\
         template       {} (SHA-256 {})\n\
         key            {} {} signing {}\n\
         audit key      {} {}\n\
         key store      {}\n\
         outputs        {}, {}, {}",
        plan.kind.name(),
        plan.id,
        plan.title,
        plan.path.display(),
        plan.fingerprint.hex,
        plan.fingerprint.words,
        plan.template_path.display(),
        plan.template_fingerprint.hex,
        plan.key.label,
        plan.key.algorithm,
        plan.key.signature,
        plan.audit_key.label,
        plan.audit_key.algorithm,
        store,
        preflight.paths.certificate_pem.display(),
        preflight.paths.certificate_der.display(),
        preflight.paths.audit_log.display(),
    ));
    if !preflight.interfaces_up.is_empty() {
        operator.say(&format!(
            "WARNING: network interfaces are up ({}); allowed for this run and logged",
            preflight.interfaces_up.join(", ")
        ));
    }
}

/// What the steps build up as the ceremony goes.
struct State<'a> {
    log: &'a mut AuditLog,
    preflight: &'a Preflight,
    audit_key: Option<GeneratedKey<'a>>,
    root_key: Option<GeneratedKey<'a>>,
    issued: Option<profile::Issued>,
    participants: Vec<(String, String)>,
    final_checkpoint: Option<Checkpoint>,
}

fn run_step<'a>(
    plan: &Plan,
    step: &Step,
    state: &mut State<'a>,
    operator: &mut dyn Operator,
) -> Result<(), CeremonyError> {
    let performer = state.actor_of(&step.role);
    let base = || Event::new(&step.id, "").role(step.role.as_str()).actor(performer.clone());
    match step.kind {
        StepKind::Attendance => {
            for role in &plan.roles {
                let names = operator.participants(&format!("{}.{}", step.id, role.id), role)?;
                let names: Vec<String> =
                    names.into_iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect();
                if names.len() < role.min {
                    return Err(CeremonyError::TooFewParticipants {
                        step: step.number,
                        role: role.id.clone(),
                        min: role.min,
                        got: names.len(),
                    });
                }
                for name in &names {
                    state.participants.push((role.id.clone(), name.clone()));
                }
                state.log.append(
                    Event::new(&step.id, "participants-recorded")
                        .role(role.id.as_str())
                        .detail("role_title", role.title.as_str())
                        .detail("names", names.clone()),
                )?;
            }
        }
        StepKind::Confirm => {
            let question = format!("{}: {} confirms this step is done", step.title, role_title(plan, &step.role));
            if !operator.confirm(&step.id, &question)? {
                return Err(declined(plan, step, &question));
            }
            state.log.append(base().named("step-confirmed").detail("title", step.title.as_str()))?;
        }
        StepKind::WitnessPlan => {
            witness_read_back(plan, step, state, operator, "plan SHA-256", &plan.fingerprint)?;
        }
        StepKind::OpenToken => {
            // The login happened in the preflight, so that a wrong PIN stopped
            // the ceremony before anything was written; this records it.
            let facts = state.preflight.store.facts();
            state.log.append(
                base().named("token-opened").detail("store", serde_json::to_value(&facts).unwrap_or_default()),
            )?;
        }
        StepKind::GenerateAuditKey => {
            let spec = &plan.audit_key;
            let key = state.preflight.store.generate(&spec.label, spec.algorithm, spec.signature)?;
            let spki = key.signer.spki_der().to_vec();
            let fp = Fingerprint::sha256(&spki);
            state.log.append(key_event(base().named("key-generated"), "audit", spec, &key, &fp))?;
            state.log.announce_key(&spec.label, &spki, key.signer.signature_algorithm())?;
            operator.say(&format!(
                "Audit key {:?} generated. Public key SHA-256:\n  {}\n  {}",
                spec.label, fp.hex, fp.words
            ));
            state.audit_key = Some(key);
        }
        StepKind::GenerateKey => {
            let spec = &plan.key;
            let key = state.preflight.store.generate(&spec.label, spec.algorithm, spec.signature)?;
            let fp = Fingerprint::sha256(key.signer.spki_der());
            state.log.append(key_event(base().named("key-generated"), "root", spec, &key, &fp))?;
            operator.say(&format!(
                "Root key {:?} generated in {}. Public key SHA-256:\n  {}\n  {}",
                spec.label,
                state.preflight.store.facts().label(),
                fp.hex,
                fp.words
            ));
            state.root_key = Some(key);
        }
        StepKind::SignRoot => {
            let issued = sign_root(plan, step, state)?;
            operator.say(&format!(
                "Root certificate signed, linted and verified.\n  serial      {}\n  SHA-256     {}\n  words       {}\n  written to  {} and {}",
                issued.serial_hex,
                issued.fingerprint.hex,
                issued.fingerprint.words,
                state.preflight.paths.certificate_pem.display(),
                state.preflight.paths.certificate_der.display()
            ));
            state.issued = Some(issued);
        }
        StepKind::WitnessRoot => {
            let fp = state.issued.as_ref().map(|i| i.fingerprint.clone()).ok_or_else(|| CeremonyError::Step {
                step: step.number,
                message: "no certificate has been signed yet".into(),
            })?;
            witness_read_back(plan, step, state, operator, "root certificate SHA-256", &fp)?;
        }
        StepKind::Checkpoint => {
            let cp = checkpoint(state, plan)?;
            print_checkpoint(operator, "Audit checkpoint", &cp);
        }
        StepKind::Close => {
            let outputs: Vec<Artifact> =
                [&state.preflight.paths.certificate_pem, &state.preflight.paths.certificate_der]
                    .into_iter()
                    .filter_map(|p| std::fs::read(p).ok().map(|b| Artifact::of(display_name(p), &b)))
                    .collect();
            let mut closed = base().named("ceremony-closed").detail(
                "participants",
                state.participants.iter().map(|(r, n)| format!("{r}: {n}")).collect::<Vec<_>>(),
            );
            for o in outputs {
                closed = closed.output(o);
            }
            state.log.append(closed)?;
            let cp = checkpoint(state, plan)?;
            print_checkpoint(operator, "FINAL audit checkpoint: copy this into the paper log and sign it", &cp);
            state.final_checkpoint = Some(cp);
        }
    }
    Ok(())
}

fn sign_root(plan: &Plan, step: &Step, state: &mut State<'_>) -> Result<profile::Issued, CeremonyError> {
    let key = state.root_key.as_ref().ok_or_else(|| CeremonyError::Step {
        step: step.number,
        message: "no root key has been generated yet".into(),
    })?;
    // Serial: 20 bytes from the token's RNG; the profile makes it positive
    // and at most 20 octets, keeping well over the 64 bits the BRs require.
    let serial = state.preflight.store.random_bytes(20)?;
    let not_before = match plan.not_before {
        Some(t) => t,
        None => OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .map_err(|e| CeremonyError::Step { step: step.number, message: e.to_string() })?,
    };
    let not_after = plan.template.not_after_for(not_before);
    let request = IssueRequest {
        profile: &plan.template,
        subject: None,
        subject_spki: key.signer.spki_der(),
        sans: Vec::new(),
        serial,
        not_before,
        not_after,
        issuer: IssuerRef::SelfSigned,
    };
    let issued = profile::issue(&request, key.signer.as_ref())?;
    let paths = &state.preflight.paths;
    files::write_new(&paths.certificate_der, &issued.der, Mode::Public)?;
    files::write_new(&paths.certificate_pem, issued.pem.as_bytes(), Mode::Public)?;
    let performer = state.actor_of(&step.role);
    let warnings: Vec<String> = issued.findings.iter().map(|f| f.to_string()).collect();
    state.log.append(
        Event::new(&step.id, "certificate-signed")
            .role(step.role.as_str())
            .actor(performer)
            .input(Artifact {
                name: format!("public key {}", plan.key.label),
                sha256: words::sha256_hex(key.signer.spki_der()),
            })
            .output(Artifact::of(display_name(&paths.certificate_der), &issued.der))
            .output(Artifact::of(display_name(&paths.certificate_pem), issued.pem.as_bytes()))
            .detail("serial", issued.serial_hex.as_str())
            .detail("not_before", rfc3339(not_before))
            .detail("not_after", rfc3339(not_after))
            .detail("tbs_sha256", issued.tbs_sha256_hex.as_str())
            .detail("signed_by", key.uri.as_str())
            .detail("lint", "passed")
            .detail("lint_warnings", warnings),
    )?;
    Ok(issued)
}

fn witness_read_back(
    plan: &Plan,
    step: &Step,
    state: &mut State<'_>,
    operator: &mut dyn Operator,
    what: &str,
    fp: &Fingerprint,
) -> Result<(), CeremonyError> {
    let witness = step.witness.clone().unwrap_or_default();
    operator.say(&format!("{what} on screen:\n  {}\n  {}", fp.hex, fp.words));
    let expected = fp.first_words(READ_BACK_WORDS);
    let question = format!(
        "{}: read the first {READ_BACK_WORDS} words of the {what} from the printed record",
        role_title(plan, &witness)
    );
    let read = operator.read_back(&step.id, &question, &expected)?;
    let got = read.text;
    let matched = same_words(&got, &expected);
    let event = Event::new(&step.id, if matched { "witness-confirmed" } else { "deviation" })
        .role(witness.as_str())
        .actor(state.actor_of(&witness))
        .result(if matched { Outcome::Ok } else { Outcome::Failed })
        .detail("compared", what)
        .detail("value_sha256", fp.hex.as_str())
        .detail("read_back", got.as_str())
        .detail(
            "answered_by",
            match (operator.is_interactive(), read.echoed) {
                (true, _) => "person",
                (false, false) => "answers file",
                (false, true) => "answers file, echoing the screen (rehearsal: not a real comparison)",
            },
        );
    state.log.append(event)?;
    if !matched {
        return Err(CeremonyError::ReadBackMismatch { step: step.number, title: step.title.clone(), expected, got });
    }
    Ok(())
}

fn checkpoint(state: &mut State<'_>, plan: &Plan) -> Result<Checkpoint, CeremonyError> {
    let key = state.audit_key.as_ref().ok_or_else(|| CeremonyError::Step {
        step: 0,
        message: "a checkpoint needs the audit key, which is generated in the generate-audit-key step".into(),
    })?;
    Ok(state.log.checkpoint(key.signer.as_ref(), &plan.audit_key.label)?)
}

fn print_checkpoint(operator: &mut dyn Operator, title: &str, cp: &Checkpoint) {
    operator.say(&format!(
        "{title}\n  entries     {}\n  tree root   {}\n  note SHA-256 {}\n  words       {}\n{}",
        cp.size,
        cp.root_hex,
        cp.fingerprint.hex,
        cp.fingerprint.words,
        indent(&cp.note_text)
    ));
}

fn key_event(
    event: Event,
    purpose: &str,
    spec: &crate::config::ceremony::KeySpec,
    key: &GeneratedKey<'_>,
    fp: &Fingerprint,
) -> Event {
    event
        .detail("purpose", purpose)
        .detail("label", spec.label.as_str())
        .detail("algorithm", spec.algorithm.name())
        .detail("signature", spec.signature.name())
        .detail("uri", key.uri.as_str())
        .detail("public_key_sha256", fp.hex.as_str())
        .detail("public_key_words", fp.words.as_str())
        .detail(
            "protection",
            "generated in the store; private key sensitive and never extractable (read back and checked)",
        )
}

fn declined(plan: &Plan, step: &Step, question: &str) -> CeremonyError {
    CeremonyError::Declined {
        step: step.number,
        title: step.title.clone(),
        role: role_title(plan, &step.role),
        question: question.into(),
    }
}

fn role_title(plan: &Plan, role: &str) -> String {
    plan.role(role).map_or_else(|| role.to_string(), |r| r.title.clone())
}

impl State<'_> {
    /// The people recorded for a role, joined, for the log's `actor`.
    fn actor_of(&self, role: &str) -> String {
        let names: Vec<&str> = self.participants.iter().filter(|(r, _)| r == role).map(|(_, n)| n.as_str()).collect();
        names.join(", ")
    }
}

trait Named {
    fn named(self, event: &str) -> Self;
}

impl Named for Event {
    fn named(mut self, event: &str) -> Self {
        self.event = event.to_string();
        self
    }
}

fn display_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}
