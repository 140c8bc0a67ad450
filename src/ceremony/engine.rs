//! The ceremony engine: preflight, the walk through the steps, and the steps
//! every kind of ceremony shares (attendance, confirmations, witness
//! read-backs, the audit key, checkpoints, closing).
//!
//! The order follows Boulder's `cmd/ceremony` and the IANA KSK scripts:
//! everything that can be checked is checked before a single file is written
//! or a key made (outputs absent, inputs present and sound, network down,
//! token present, PINs right, labels free, mechanisms supported); then the
//! steps run in the script's order, each leaving an audit entry; a failure
//! after the log exists is itself logged, and stops the ceremony.

use std::path::{Path, PathBuf};

use super::aids::{self, Aid};
use super::{activation, airgap, ca, continuity, custody, inputs, root, CeremonyError, Operator, RunOptions};
use crate::audit::anchor::AnchorKind;
use crate::audit::{self, Artifact, AuditLog, Checkpoint, Event, Outcome, REHEARSAL_GRADE};
use crate::config::{Backend, CeremonyKind, Environment, Plan, PlanDigest, SecretSource, Step, StepKind};
use crate::files;
use crate::hsm::keystore::{KeyStore, StoreFacts};
use crate::hsm::soft::SealingKey;
use crate::hsm::RandomSource;
use crate::secret::Secret;
use crate::words::{Fingerprint, ReadBackCheck, READ_BACK_WORDS};

/// What a finished ceremony produced. Fields a kind does not produce are
/// empty.
#[derive(Debug, Clone)]
pub struct Finished {
    pub audit_log: PathBuf,
    pub store: StoreFacts,
    pub final_checkpoint: Checkpoint,
    pub certificate_pem: Option<PathBuf>,
    pub certificate_der: Option<PathBuf>,
    pub certificate_fingerprint: Option<Fingerprint>,
    pub key_uri: Option<String>,
    pub backup_blob: Option<PathBuf>,
    pub share_cards: Vec<PathBuf>,
    /// Activation cards (user and SO PIN sets), apart from the backup's.
    pub activation_cards: Vec<PathBuf>,
    pub share_threshold: Option<u8>,
    pub intermediate_pem: Option<PathBuf>,
    pub response_bundle: Option<PathBuf>,
    pub crl_pem: Option<PathBuf>,
    pub crl_bundle: Option<PathBuf>,
}

/// Runs a plan to the end, or stops at the first failure.
pub fn run(
    plan: &Plan,
    env: &Environment,
    operator: &mut dyn Operator,
    options: &RunOptions,
) -> Result<Finished, CeremonyError> {
    let mut preflight = preflight(plan, env, operator, options)?;
    show_plan(plan, &preflight, operator);
    let (log, continued) = match preflight.log.take() {
        Some(LogPlan::Create(path)) => (AuditLog::create(&path, &plan.id)?, None),
        Some(LogPlan::Continue(c)) => {
            let c = *c;
            let event = c.event();
            (c.log, Some((event, c.succession)))
        }
        None => return Err(CeremonyError::Step { step: 0, message: "the plan names no audit log".into() }),
    };
    // Before the first entry: the store records where the log stands as this
    // ceremony starts, so an interruption can be told from lines added later.
    let ca_root = preflight.ca.dir.as_ref().map(|d| d.state().root_sha256.clone());
    let anchor_records = continuity::record_start(&preflight.store, &log, ca_root.as_deref())?;
    let mut s = Session {
        plan,
        digest: preflight.digest,
        log,
        output_dir: preflight.output_dir,
        store: preflight.store,
        user_pin: preflight.user_pin,
        so_pin: preflight.so_pin,
        participants: Vec::new(),
        root: root::State::default(),
        custody: preflight.custody,
        activation: activation::State::default(),
        ca: preflight.ca,
        final_checkpoint: None,
    };
    // The plan digest and every file it covers: an auditor recomputes the
    // digest from these inputs' names and hashes alone.
    let started = s.digest.inputs().iter().fold(Event::new("preflight", "ceremony-started"), |e, i| {
        e.input(Artifact { name: i.name.clone(), sha256: i.sha256.clone() })
    });
    let started = started
        .detail("plan_sha256", s.digest.fingerprint().hex.as_str())
        .detail("kind", plan.kind.name())
        .detail("title", plan.title.as_str())
        .detail("keyrite_version", env!("CARGO_PKG_VERSION"))
        .detail("store", serde_json::to_value(s.store.facts()).unwrap_or_default())
        .detail("network_interfaces_up", preflight.interfaces_up.clone())
        .detail("network_allowed", options.allow_network)
        .detail("operator_interactive", operator.is_interactive())
        .detail("grade", plan.grade.name())
        .detail(REHEARSAL_GRADE, aids::reasons(&preflight.aids))
        .detail("anchor_records", anchor_records);
    let started = match plan.security_officer_custody() {
        Some(custody) => started.detail("security_officer_custody", custody),
        None => started,
    };
    s.log.append(started)?;
    // Who opened the token with their activation cards: recorded first, as
    // the login itself happened in the preflight.
    for activated in &preflight.activated {
        s.log.append(activated.event())?;
    }
    // What vouched for the logs this ceremony relies on, and for the one it
    // continues.
    for event in std::mem::take(&mut preflight.checked) {
        s.log.append(event)?;
    }
    if let Some((event, succession)) = continued {
        s.log.append(event)?;
        if let Some(succession) = succession {
            s.log.record_succession(&succession)?;
        }
    }

    for step in &plan.steps {
        operator.say(&format!("\n== Step {} of {}: {} ==", step.number, plan.steps.len(), step.title));
        if !step.text.trim().is_empty() {
            operator.say(step.text.trim());
        }
        if let Err(e) = run_step(step, &mut s, operator) {
            let aborted = Event::new(&step.id, "ceremony-aborted")
                .role(step.role.as_str())
                .result(Outcome::Failed)
                .detail("error", e.to_string());
            // The failure itself is evidence: record it, sign it with an
            // abort checkpoint (so the log ends as a closed one does and the
            // next ceremony can continue it), then stop. If any of that
            // fails, the original error is the one to report.
            match abort_checkpoint(&mut s, aborted) {
                Ok(Some((cp, key))) => {
                    print_checkpoint(
                        operator,
                        "ABORT audit checkpoint: the ceremony stopped; copy this into the paper log with the reason",
                        &cp,
                    );
                    let ca_root = s.ca.dir.as_ref().map(|d| d.state().root_sha256.clone());
                    if let Err(e2) =
                        continuity::record_end(&s.store, &s.log, AnchorKind::Aborted, &cp, &key, ca_root.as_deref())
                    {
                        operator.say(&format!("WARNING: the key store did not record the abort checkpoint: {e2}"));
                    }
                }
                Ok(None) => operator.say(
                    "The ceremony stopped before its audit key existed: the log ends with the abort entry, unsigned.",
                ),
                Err(e2) => operator.say(&format!("WARNING: the abort checkpoint could not be signed: {e2}")),
            }
            return Err(e);
        }
    }

    let final_checkpoint = s
        .final_checkpoint
        .take()
        .ok_or_else(|| CeremonyError::Step { step: 0, message: "the plan did not close".into() })?;
    Ok(Finished {
        audit_log: s.log.path().to_path_buf(),
        store: s.store.facts(),
        final_checkpoint,
        certificate_pem: s.root.certificate_pem,
        certificate_der: s.root.certificate_der,
        certificate_fingerprint: s.root.issued.map(|i| i.fingerprint),
        key_uri: s.root.key_uri.or(s.custody.restored_uri.clone()),
        backup_blob: s.custody.blob_path.clone(),
        share_cards: s.custody.cards.clone(),
        activation_cards: s.activation.cards.clone(),
        share_threshold: plan.backup.as_ref().map(|b| b.threshold),
        intermediate_pem: s.ca.intermediate_pem.clone(),
        response_bundle: s.ca.response_bundle.clone(),
        crl_pem: s.ca.crl_pem.clone(),
        crl_bundle: s.ca.crl_bundle.clone(),
    })
}

/// One ceremony in progress: the plan, the open log and key store, and what
/// the steps have produced so far.
pub struct Session<'p> {
    pub plan: &'p Plan,
    /// The plan digest over the plan's files and its inputs, as read in the
    /// preflight: what the witness reads back.
    pub digest: PlanDigest,
    pub log: AuditLog,
    pub output_dir: PathBuf,
    pub store: KeyStore,
    /// Kept for the custody steps: a PKCS#11 backup logs the session out to
    /// let the security officer in, and back in as user after.
    pub user_pin: Option<Secret>,
    pub so_pin: Option<Secret>,
    /// (role id, name), in the order recorded.
    pub participants: Vec<(String, String)>,
    pub root: root::State,
    pub custody: custody::State,
    pub activation: activation::State,
    pub ca: ca::State,
    pub final_checkpoint: Option<Checkpoint>,
}

impl Session<'_> {
    /// The people recorded for a role, joined, for the log's `actor`.
    pub fn actor_of(&self, role: &str) -> String {
        self.names_of(role).join(", ")
    }

    pub fn names_of(&self, role: &str) -> Vec<String> {
        self.participants.iter().filter(|(r, _)| r == role).map(|(_, n)| n.clone()).collect()
    }

    pub fn output(&self, name: &str) -> PathBuf {
        self.output_dir.join(name)
    }

    /// An event for `step`, with its role and performers filled in.
    pub fn event(&self, step: &Step, event: &str) -> Event {
        Event::new(&step.id, event).role(step.role.as_str()).actor(self.actor_of(&step.role))
    }

    pub fn role_title(&self, role: &str) -> String {
        self.plan.role(role).map_or_else(|| role.to_string(), |r| r.title.clone())
    }
}

/// The log a ceremony writes: a new file, or the CA's log, checked and
/// opened for appending.
enum LogPlan {
    Create(PathBuf),
    Continue(Box<continuity::Continued>),
}

/// What the preflight established; nothing has been written yet.
struct Preflight {
    /// The rehearsal aids this run uses (none, for a real plan).
    aids: Vec<Aid>,
    output_dir: PathBuf,
    store: KeyStore,
    user_pin: Option<Secret>,
    so_pin: Option<Secret>,
    interfaces_up: Vec<String>,
    digest: PlanDigest,
    custody: custody::State,
    ca: ca::State,
    /// Tokens opened with custodians' activation cards, for the log.
    activated: Vec<activation::Activated>,
    /// How the logs this ceremony reads were checked, for the log.
    checked: Vec<Event>,
    log: Option<LogPlan>,
}

/// Checks everything that can fail before a file is written or a key made.
fn preflight(
    plan: &Plan,
    env: &Environment,
    operator: &mut dyn Operator,
    options: &RunOptions,
) -> Result<Preflight, CeremonyError> {
    let aids = aids::in_use(env, operator, options);
    aids::refuse_for_real(plan, &aids)?;
    let out = &env.output_dir;
    if !out.is_dir() {
        return Err(CeremonyError::Step {
            step: 0,
            message: format!("output directory {} does not exist; create it (the USB medium) first", out.display()),
        });
    }
    for name in plan.outputs.all() {
        files::ensure_absent(&out.join(name))?;
    }

    let interfaces_up = match airgap::interfaces_up() {
        Ok(up) => up,
        Err(reason) if !options.allow_network => return Err(CeremonyError::NetworkUnknown { reason }),
        Err(reason) => vec![format!("unknown: {reason}")],
    };
    if !interfaces_up.is_empty() && !options.allow_network {
        return Err(CeremonyError::NetworkUp { interfaces: interfaces_up.join(", ") });
    }

    // Inputs (a restore's, a request bundle) are read and checked before any
    // PIN is asked for, and the plan digest is taken from the bytes read.
    let mut input_files = inputs::read(plan, &env.input_dir)?;
    let digest = input_files.digest(plan);
    // The log of the ceremony that issued a restore's shares, against its
    // final checkpoint as the witness types it from the paper log.
    let mut checked = Vec::new();
    if let (Some(spec), Some(restore)) = (&plan.restore, input_files.restore.as_mut()) {
        let paper = continuity::ask_paper(
            plan,
            operator,
            continuity::SOURCE_PAPER_PROMPT,
            &format!("final checkpoint of {} (the ceremony that issued the shares)", spec.ceremony_log),
        )?;
        checked.push(restore.check_source_log(&paper)?);
    }
    // Logs of root ceremonies whose custodians' cards open the store: each
    // is checked against the store once it is open.
    let mut card_logs: Vec<PathBuf> = Vec::new();

    // Only the root ceremony wraps a key for backup; a reshare hands out
    // new shares of the key-encryption key it recombines.
    let backup = plan.backup.is_some() && plan.kind == CeremonyKind::RootInit;
    let mut user_pin = None;
    let mut so_pin = None;
    let mut custody = custody::State::default();
    let mut activated = Vec::new();
    let so_needed = backup || plan.activation.as_ref().is_some_and(|a| a.so_pin);
    let store = match &env.backend {
        Backend::Pkcs11 { module, token, pin, so_pin: so_source } => {
            let pin = match pin {
                SecretSource::Shares(log) => {
                    let (pin, who) = activation::pin_from_cards(log, activation::Which::User, operator)?;
                    activated.push(who);
                    card_logs.push(log.clone());
                    pin
                }
                other => {
                    resolve_secret(other, operator, "token-pin", &format!("User PIN for token {:?}", token.label))?
                }
            };
            if so_needed {
                let source = so_source.as_ref().ok_or_else(|| CeremonyError::Step {
                    step: 0,
                    message: format!("this ceremony {}, which needs the token's security officer: add so_pin (\"prompt\", {{ env = \"VAR\" }}, {{ file = \"/path\" }} or {{ shares = \"root log\" }}) to [pkcs11] in the environment file", if backup { "makes a backup" } else { "splits the SO PIN among custodians" }),
                })?;
                so_pin = Some(match source {
                    SecretSource::Shares(log) => {
                        let (pin, who) = activation::pin_from_cards(log, activation::Which::So, operator)?;
                        activated.push(who);
                        card_logs.push(log.clone());
                        pin
                    }
                    other => resolve_secret(
                        other,
                        operator,
                        "token-so-pin",
                        &format!("Security officer PIN for token {:?}", token.label),
                    )?,
                });
            }
            let store = KeyStore::open_pkcs11(module, token, &pin)?;
            user_pin = Some(pin);
            store
        }
        Backend::Soft { .. } if plan.activation.as_ref().is_some_and(|a| a.user_pin) => {
            return Err(CeremonyError::Step {
                step: 0,
                message: "[activation] splits a PKCS#11 token's PINs among custodians; the software key store has no PIN: run this ceremony on a token, or remove [activation]".into(),
            });
        }
        Backend::Soft { dir, passphrase, sealing_key } => {
            let sealing = if let Some(SecretSource::Shares(log)) = sealing_key {
                // A software root under custody: two or more custodians'
                // backup cards rebuild the KEK that seals the store.
                let (kek, who) = activation::secret_from_cards(log, activation::Which::StoreSealingKey, operator)?;
                activated.push(who);
                card_logs.push(log.clone());
                SealingKey::Raw(kek)
            } else if let Some(source) = sealing_key {
                SealingKey::Raw(raw_sealing_key(&resolve_secret(
                    source,
                    operator,
                    "store-sealing-key",
                    "Sealing key of the software key store (64 hex characters)",
                )?)?)
            } else if backup {
                // Under custody the sealing key is the backup KEK itself: 256
                // bits from the system RNG, to be split among the custodians.
                let kek = Secret::new(crate::hsm::soft::SystemRng.random_bytes(32)?);
                custody.kek = Some(kek.clone());
                SealingKey::Raw(kek)
            } else if plan.restore.is_some() {
                // The restored key stays sealed under the key the custodians'
                // shares rebuild; keys this ceremony makes (its audit key) are
                // sealed under a fresh random key that is never kept: they
                // sign this ceremony's checkpoints and nothing after.
                SealingKey::Raw(Secret::new(crate::hsm::soft::SystemRng.random_bytes(32)?))
            } else {
                let source = passphrase.as_ref().ok_or_else(|| CeremonyError::Step {
                    step: 0,
                    message:
                        "the software key store needs a passphrase source in [soft] (or a [backup] in the ceremony)"
                            .into(),
                })?;
                SealingKey::Passphrase(resolve_secret(
                    source,
                    operator,
                    "store-passphrase",
                    "Passphrase for the software key store",
                )?)
            };
            KeyStore::open_soft(dir, sealing)?
        }
    };
    // The CA's log is continued only as far as the paper and the store
    // vouch for it, and a CA directory never starts a second log. Checked
    // before anything reads the CA's records (its revocations, its CRL
    // numbers) from that log.
    let ca_dir = match (&env.ca_dir, plan.kind.uses_ca_dir()) {
        (Some(dir), true) => Some(crate::ca::CaDir::open(dir)?),
        _ => None,
    };
    let ca_log = match ca_dir.as_ref() {
        // The offline CA keeps one log across its ceremonies: verified, then
        // continued, so CRL numbers and issued serials have one history.
        Some(dir) if dir.audit_log_path().exists() => {
            Some(LogPlan::Continue(Box::new(continuity::continue_log(plan, &store, dir.audit_log_path(), operator)?)))
        }
        Some(dir) => {
            continuity::check_new_log(
                &store,
                dir.audit_log_path(),
                &audit::origin_for(&plan.id),
                Some(&dir.state().root_sha256),
            )?;
            Some(LogPlan::Create(dir.audit_log_path().to_path_buf()))
        }
        None => None,
    };
    let ca_state = if plan.kind.uses_ca_dir() {
        let state = ca::preflight(plan, env, input_files.request)?;
        // The root key and the audit key exist already; the root key must be
        // the CA's root certificate's key.
        let key = plan
            .key
            .as_ref()
            .ok_or_else(|| CeremonyError::Step { step: 0, message: "the plan names no root [key]".into() })?;
        let root_spki = store.find(&key.label, Some(key.signature))?.signer.spki_der().to_vec();
        let ca_root = state.dir.as_ref().map(|d| d.root_cert_der().to_vec()).unwrap_or_default();
        if custody::certificate_spki(Path::new("root.der"), &ca_root)? != root_spki {
            return Err(CeremonyError::Step {
                step: 0,
                message: format!(
                    "key {:?} on this token is not the CA directory's root key; check the token and the ca_dir",
                    key.label
                ),
            });
        }
        store.find(&plan.audit_key.label, Some(plan.audit_key.signature))?;
        state
    } else {
        let mut new_keys = vec![&plan.audit_key];
        new_keys.extend(plan.key.as_ref());
        for key in new_keys {
            store.check_new_key(&key.label, key.algorithm, key.signature)?;
        }
        ca::State::default()
    };
    // A ceremony's own log must not take the name of one the store holds a
    // signed record of.
    let log = match (&plan.outputs.audit_log, ca_log) {
        (Some(name), _) => {
            let path = out.join(name);
            continuity::check_new_log(&store, &path, &audit::origin_for(&plan.id), None)?;
            Some(LogPlan::Create(path))
        }
        (None, ca_log) => ca_log,
    };
    if let Some(r) = input_files.restore {
        if plan.kind == CeremonyKind::RootRestore {
            store.check_restore_label(&r.key_label())?;
        }
        custody.restore = Some(r);
    }
    if let (Some(c), Some(nb)) = (&plan.certificate, plan.certificate.as_ref().and_then(|c| c.not_before)) {
        if c.template.not_after_for(nb) <= time::OffsetDateTime::now_utc() {
            return Err(CeremonyError::Step {
                step: 0,
                message: format!("certificate.not_before {nb} plus the template's validity has already passed"),
            });
        }
    }
    // The root log the cards came from: pinned by the audit key on the
    // store they opened, and by the store's records of it.
    card_logs.dedup();
    for log in &card_logs {
        checked.push(continuity::check_with_store(plan, &store, log)?);
    }
    Ok(Preflight {
        aids,
        output_dir: out.clone(),
        store,
        user_pin,
        so_pin,
        interfaces_up,
        digest,
        custody,
        ca: ca_state,
        activated,
        checked,
        log,
    })
}

/// Reads a PIN or passphrase from where the environment file says.
pub fn resolve_secret(
    source: &SecretSource,
    operator: &mut dyn Operator,
    key: &str,
    question: &str,
) -> Result<Secret, CeremonyError> {
    let unattended = source.read_unattended().map_err(|e| CeremonyError::Input { what: e.what, detail: e.detail })?;
    match (unattended, source) {
        (Some(secret), _) => Ok(secret),
        (None, SecretSource::Shares(log)) => Err(CeremonyError::Input {
            // Cards are read in the preflight, before anything else asks.
            what: format!("{key} from custodians' cards ({})", log.display()),
            detail: "only a PKCS#11 token's pin or so_pin, or a software store's sealing_key, can come from cards"
                .into(),
        }),
        (None, _) => operator.secret(key, question),
    }
}

/// A sealing key given as 64 hex characters, as 32 bytes.
fn raw_sealing_key(text: &Secret) -> Result<Secret, CeremonyError> {
    let bad = || CeremonyError::Input {
        what: "the software store's sealing key".into(),
        detail: "it must be 64 hexadecimal characters (256 bits)".into(),
    };
    let hex_text = text.expose_str().ok_or_else(bad)?.trim();
    if hex_text.len() != 64 {
        return Err(bad());
    }
    Ok(Secret::new(hex::decode(hex_text).map_err(|_| bad())?))
}

fn show_plan(plan: &Plan, preflight: &Preflight, operator: &mut dyn Operator) {
    let store = match preflight.store.facts() {
        StoreFacts::Pkcs11(t) => format!(
            "PKCS#11 token {:?} serial {} ({} {}, firmware {}) via {}",
            t.label, t.serial, t.manufacturer, t.model, t.firmware, t.module
        ),
        StoreFacts::Soft { dir } => format!("software key store {dir} (no HSM)"),
    };
    let mut text = format!("keyrite ceremony: {}\n", plan.title);
    for (k, v) in plan.summary() {
        text.push_str(&format!("  {k:<13} {v}\n"));
    }
    text.push_str(&format!("  {:<13} {}\n", "Plan SHA-256", preflight.digest.fingerprint().hex));
    text.push_str(&format!("  {:<13} {}\n", "Plan read-back", preflight.digest.fingerprint().read_back_grouped()));
    for input in preflight.digest.inputs() {
        text.push_str(&format!("    {}", input.sha256sum_line()));
    }
    text.push_str(&format!("  {:<13} {store}\n  {:<13} {}", "Key store", "Output dir", preflight.output_dir.display()));
    operator.say(&text);
    if !preflight.interfaces_up.is_empty() {
        operator.say(&format!(
            "WARNING: network interfaces are up ({}); allowed for this run and logged",
            preflight.interfaces_up.join(", ")
        ));
    }
}

fn run_step(step: &Step, s: &mut Session<'_>, operator: &mut dyn Operator) -> Result<(), CeremonyError> {
    match step.kind {
        StepKind::Attendance => attendance(step, s, operator),
        StepKind::Confirm => {
            let question = format!("{}: {} confirms this step is done", step.title, s.role_title(&step.role));
            if !operator.confirm(&step.id, &question)? {
                return Err(CeremonyError::Declined {
                    step: step.number,
                    title: step.title.clone(),
                    role: s.role_title(&step.role),
                    question,
                });
            }
            s.log.append(s.event(step, "step-confirmed").detail("title", step.title.as_str()))?;
            Ok(())
        }
        StepKind::WitnessPlan => {
            let fp = s.digest.fingerprint().clone();
            witness_read_back(step, s, operator, "plan SHA-256", &fp)
        }
        StepKind::OpenToken => {
            // The login happened in the preflight, so that a wrong PIN stopped
            // the ceremony before anything was written; this records it.
            let facts = s.store.facts();
            let opened =
                s.event(step, "token-opened").detail("store", serde_json::to_value(&facts).unwrap_or_default());
            let opened = match facts {
                StoreFacts::Soft { .. } => opened.detail(REHEARSAL_GRADE, aids::reasons(&[Aid::SoftwareKeyStore])),
                StoreFacts::Pkcs11(_) => opened,
            };
            s.log.append(opened)?;
            Ok(())
        }
        StepKind::GenerateAuditKey => {
            let spec = s.plan.audit_key.clone();
            let (spki, uri, sig) = {
                let key = s.store.generate(&spec.label, spec.algorithm, spec.signature)?;
                (key.signer.spki_der().to_vec(), key.uri.clone(), key.signer.signature_algorithm())
            };
            let fp = Fingerprint::sha256(&spki);
            s.log.append(key_event(s.event(step, "key-generated"), "audit", &spec, &uri, &fp))?;
            s.log.announce_key(&spec.label, &spki, sig)?;
            operator.say(&format!(
                "Audit key {:?} generated. Public key SHA-256:\n  {}\n  {}",
                spec.label, fp.hex, fp.words
            ));
            Ok(())
        }
        StepKind::Checkpoint => {
            let (cp, _) = checkpoint(s)?;
            print_checkpoint(operator, "Audit checkpoint", &cp);
            Ok(())
        }
        StepKind::Close => close(step, s, operator),
        StepKind::GenerateKey | StepKind::SignRoot | StepKind::WitnessRoot => root::run_step(step, s, operator),
        StepKind::BackupKey
        | StepKind::DistributeShares
        | StepKind::RestoreDrill
        | StepKind::CollectShares
        | StepKind::RestoreKey => custody::run_step(step, s, operator),
        StepKind::UseAuditKey => use_audit_key(step, s, operator),
        StepKind::ActivateToken => activation::run_step(step, s, operator),
        StepKind::ImportRequest
        | StepKind::WitnessRequest
        | StepKind::SignIntermediate
        | StepKind::Revoke
        | StepKind::SignCrl => ca::run_step(step, s, operator),
    }
}

/// The audit key an earlier ceremony made on this token: announced in this
/// log unless it already is, so the log itself names its checkpoint key.
fn use_audit_key(step: &Step, s: &mut Session<'_>, operator: &mut dyn Operator) -> Result<(), CeremonyError> {
    let spec = s.plan.audit_key.clone();
    let (spki, sig) = {
        let key = s.store.find(&spec.label, Some(spec.signature))?;
        (key.signer.spki_der().to_vec(), key.signer.signature_algorithm())
    };
    let fp = Fingerprint::sha256(&spki);
    if !s.log.audit_keys().iter().any(|k| k.spki_der == spki) {
        s.log.announce_key(&spec.label, &spki, sig)?;
    }
    // The custodians' quorum key the root ceremony left on this store: the
    // CA's log trusts it from here on, covered by this key's checkpoints, so
    // a restore can name a successor if this token is lost.
    if let Some(quorum) = continuity::quorum_key(&s.store)? {
        s.log.announce_quorum_key(&quorum)?;
    }
    s.log.append(
        s.event(step, "audit-key-in-use")
            .detail("label", spec.label.as_str())
            .detail("public_key_sha256", fp.hex.as_str()),
    )?;
    operator.say(&format!("Audit key {:?} in use. Public key SHA-256:\n  {}\n  {}", spec.label, fp.hex, fp.words));
    Ok(())
}

fn attendance(step: &Step, s: &mut Session<'_>, operator: &mut dyn Operator) -> Result<(), CeremonyError> {
    for role in &s.plan.roles {
        let names = operator.participants(&format!("{}.{}", step.id, role.id), role)?;
        let names: Vec<String> = names.into_iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect();
        if names.len() < role.min {
            return Err(CeremonyError::TooFewParticipants {
                step: step.number,
                role: role.id.clone(),
                min: role.min,
                got: names.len(),
            });
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        if unique.len() != names.len() {
            return Err(CeremonyError::Step {
                step: step.number,
                message: format!("role {:?} lists a name twice; every participant is a different person", role.id),
            });
        }
        for name in &names {
            s.participants.push((role.id.clone(), name.clone()));
        }
        s.log.append(
            Event::new(&step.id, "participants-recorded")
                .role(role.id.as_str())
                .detail("role_title", role.title.as_str())
                .detail("names", names.clone()),
        )?;
    }
    Ok(())
}

/// A witness reads `fp` back from paper, at full strength (13 words or 32
/// hex digits, see [`crate::words::READ_BACK_BITS`]); a mismatch, or a
/// read-back too short to be a real check, is logged as a deviation and
/// stops the ceremony.
pub fn witness_read_back(
    step: &Step,
    s: &mut Session<'_>,
    operator: &mut dyn Operator,
    what: &str,
    fp: &Fingerprint,
) -> Result<(), CeremonyError> {
    let witness = step.witness.clone().unwrap_or_default();
    operator.say(&format!("{what} on screen:\n  {}\n  read-back: {}", fp.hex, fp.read_back_grouped()));
    let expected = fp.read_back_words();
    let question = format!(
        "{}: read the {READ_BACK_WORDS} read-back words of the {what} from the paper (or its first 32 hex digits)",
        s.role_title(&witness)
    );
    let read = operator.read_back(&step.id, &question, &expected)?;
    let check = fp.check_read_back(&read.text);
    let matched = matches!(check, ReadBackCheck::Confirmed { .. });
    let bits = match check {
        ReadBackCheck::Confirmed { bits } | ReadBackCheck::TooShort { bits } => bits,
        ReadBackCheck::Mismatch => 0,
    };
    let aid = match (read.echoed, operator.is_interactive()) {
        (true, _) => Some(Aid::EchoedReadBacks),
        (false, false) => Some(Aid::AnswersFile),
        (false, true) => None,
    };
    let event = Event::new(&step.id, if matched { "witness-confirmed" } else { "deviation" })
        .role(witness.as_str())
        .actor(s.actor_of(&witness))
        .result(if matched { Outcome::Ok } else { Outcome::Failed })
        .detail("compared", what)
        .detail("value_sha256", fp.hex.as_str())
        .detail("read_back", read.text.as_str())
        .detail(
            "read_back_result",
            match check {
                ReadBackCheck::Confirmed { .. } => "confirmed",
                ReadBackCheck::TooShort { .. } => "too short: fewer than 128 bits read",
                ReadBackCheck::Mismatch => "differs from the value on screen",
            },
        )
        .detail("bits_confirmed", bits)
        .detail(
            "answered_by",
            match (operator.is_interactive(), read.echoed) {
                (true, _) => "person",
                (false, false) => "answers file",
                (false, true) => "answers file, echoing the screen (rehearsal: not a real comparison)",
            },
        );
    let event = match aid {
        Some(aid) => event.detail(REHEARSAL_GRADE, aids::reasons(&[aid])),
        None => event,
    };
    s.log.append(event)?;
    match check {
        ReadBackCheck::Confirmed { .. } => Ok(()),
        ReadBackCheck::TooShort { bits } => Err(CeremonyError::ReadBackTooShort {
            step: step.number,
            title: step.title.clone(),
            expected,
            got: read.text,
            bits,
        }),
        ReadBackCheck::Mismatch => Err(CeremonyError::ReadBackMismatch {
            step: step.number,
            title: step.title.clone(),
            expected,
            got: read.text,
        }),
    }
}

/// Signs a checkpoint with the audit key (found afresh: a backup may have
/// logged the token out and back in since it was made), under the name the
/// log announced it by. Returns the checkpoint and the key's SHA-256.
pub fn checkpoint(s: &mut Session<'_>) -> Result<(Checkpoint, String), CeremonyError> {
    let spec = &s.plan.audit_key;
    let key = s.store.find(&spec.label, Some(spec.signature))?;
    let spki = key.signer.spki_der();
    let name = s.log.audit_keys().iter().find(|k| k.spki_der == spki).map_or(spec.label.clone(), |k| k.name.clone());
    let cp = s.log.checkpoint(key.signer.as_ref(), &name)?;
    Ok((cp, crate::words::sha256_hex(spki)))
}

/// After a failure: records `aborted` and signs the log with the audit key
/// if it exists yet (announced first if this log has not announced it), so
/// an aborted ceremony ends, like a closed one, with its closing entry and
/// a checkpoint. `None` before the key exists: the abort entry stays
/// unsigned.
fn abort_checkpoint(s: &mut Session<'_>, aborted: Event) -> Result<Option<(Checkpoint, String)>, CeremonyError> {
    let spec = s.plan.audit_key.clone();
    let key = match s.store.find(&spec.label, Some(spec.signature)) {
        Ok(key) => Some((key.signer.spki_der().to_vec(), key.signer.signature_algorithm())),
        Err(_) => None,
    };
    if let Some((spki, sig)) = &key {
        if !s.log.audit_keys().iter().any(|k| k.spki_der == *spki) {
            s.log.announce_key(&spec.label, spki, *sig)?;
        }
    }
    s.log.append(aborted)?;
    match key {
        Some(_) => checkpoint(s).map(Some),
        None => Ok(None),
    }
}

fn close(step: &Step, s: &mut Session<'_>, operator: &mut dyn Operator) -> Result<(), CeremonyError> {
    let mut closed = s
        .event(step, "ceremony-closed")
        .detail("participants", s.participants.iter().map(|(r, n)| format!("{r}: {n}")).collect::<Vec<_>>());
    for name in s.plan.outputs.all() {
        let path = s.output(name);
        if Some(name) == s.plan.outputs.audit_log.as_deref() {
            continue;
        }
        if let Ok(bytes) = std::fs::read(&path) {
            closed = closed.output(Artifact::of(name, &bytes));
        }
    }
    s.log.append(closed)?;
    let (cp, key) = checkpoint(s)?;
    print_checkpoint(operator, "FINAL audit checkpoint: copy this into the paper log and sign it", &cp);
    // The store's record of the end comes after the log's: a crash between
    // the two leaves the log ahead of the store, which the paper covers.
    let ca_root = s.ca.dir.as_ref().map(|d| d.state().root_sha256.clone());
    let kept = continuity::record_end(&s.store, &s.log, AnchorKind::Closed, &cp, &key, ca_root.as_deref())?;
    operator.say(&format!("Final checkpoint recorded in the key store ({kept})."));
    s.final_checkpoint = Some(cp);
    Ok(())
}

fn print_checkpoint(operator: &mut dyn Operator, title: &str, cp: &Checkpoint) {
    let note = cp.note_text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n");
    operator.say(&format!(
        "{title}\n  entries     {}\n  tree root   {}\n  note SHA-256 {}\n  words       {}\n{note}",
        cp.size, cp.root_hex, cp.fingerprint.hex, cp.fingerprint.words
    ));
}

/// The audit entry for a key just generated.
pub fn key_event(
    event: Event,
    purpose: &str,
    spec: &crate::config::ceremony::KeySpec,
    uri: &str,
    fp: &Fingerprint,
) -> Event {
    event
        .detail("purpose", purpose)
        .detail("label", spec.label.as_str())
        .detail("algorithm", spec.algorithm.name())
        .detail("signature", spec.signature.name())
        .detail("uri", uri)
        .detail("public_key_sha256", fp.hex.as_str())
        .detail("public_key_words", fp.words.as_str())
}

/// The current time in whole seconds: certificates, CRLs and the log carry
/// no fractions, so what is signed is what is recorded.
pub fn now_seconds(step: &Step) -> Result<time::OffsetDateTime, CeremonyError> {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .map_err(|e| CeremonyError::Step { step: step.number, message: e.to_string() })
}

pub fn display_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
