//! `keyrite rehearse`: the whole root ceremony on a throwaway token, end to
//! end and unattended, so a team can see what the real day looks like and CI
//! can prove it still works.
//!
//! The ceremony file, template and answers are the ones in the repository,
//! compiled in and copied into the rehearsal directory byte for byte, so the
//! plan hash the rehearsal prints is the hash of `ceremonies/root-init.toml`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{root, CeremonyError, RunOptions, ScriptedOperator};
use crate::audit::{self, VerifyOptions};
use crate::config::{Answers, Backend, Environment, Plan, SecretSource};
use crate::files::{self, Mode};
use crate::hsm::pkcs11::Module;
use crate::hsm::soft::SystemRng;
use crate::hsm::RandomSource;
use crate::secret::Secret;
use crate::words;

const ROOT_INIT: &str = include_str!("../../ceremonies/root-init.toml");
const ROOT_TEMPLATE: &str = include_str!("../../templates/root-ca.toml");
const ANSWERS: &str = include_str!("../../ceremonies/answers/root-init.rehearsal.toml");

/// The token label rehearsals use.
pub const TOKEN_LABEL: &str = "keyrite-rehearsal";

/// Which key store to rehearse on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// SoftHSM when installed, else the software key store.
    Auto,
    SoftHsm,
    Soft,
}

/// `rehearsal.json`: read by scripts outside the project, so its keys are
/// stable; later ceremonies add keys, never rename them.
#[derive(Debug, Clone, Serialize)]
pub struct Rehearsal {
    pub backend: String,
    pub module: Option<String>,
    pub token_label: String,
    pub root_cert: String,
    pub audit_log: String,
}

/// Where SoftHSM's module is on common distributions.
pub fn find_softhsm() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KEYRITE_SOFTHSM_MODULE") {
        return Some(PathBuf::from(p));
    }
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
        "/usr/lib64/pkcs11/libsofthsm2.so",
        "/opt/homebrew/lib/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Runs the rehearsal in `dir` (which must be absent or empty), printing the
/// transcript to `out`.
pub fn run(dir: &Path, choice: BackendChoice, out: Box<dyn std::io::Write>) -> Result<Rehearsal, CeremonyError> {
    prepare_dir(dir)?;
    let module = match choice {
        BackendChoice::Soft => None,
        BackendChoice::SoftHsm => Some(find_softhsm().ok_or_else(|| CeremonyError::Step {
            step: 0,
            message: "SoftHSM is not installed (apt-get install softhsm2), or set KEYRITE_SOFTHSM_MODULE".into(),
        })?),
        BackendChoice::Auto => find_softhsm(),
    };

    // The script, template and answers, exactly as in the repository.
    let plan_path = dir.join("ceremonies/root-init.toml");
    write_file(&plan_path, ROOT_INIT.as_bytes())?;
    write_file(&dir.join("templates/root-ca.toml"), ROOT_TEMPLATE.as_bytes())?;
    let answers_path = dir.join("ceremonies/answers/root-init.rehearsal.toml");
    write_file(&answers_path, ANSWERS.as_bytes())?;
    let plan = Plan::load(&plan_path)?;
    let answers = Answers::from_toml_str(ANSWERS, &answers_path)?;

    let output_dir = dir.join("root");
    files::create_dir(&output_dir, Mode::Public)?;
    let (backend, token_label) = match &module {
        Some(module) => {
            let token = softhsm_token(dir, module)?;
            (
                Backend::Pkcs11 { module: module.clone(), token: token.0, pin: SecretSource::Memory(token.1) },
                TOKEN_LABEL.to_string(),
            )
        }
        None => {
            let passphrase = random_secret()?;
            let store = dir.join("keystore");
            (
                Backend::Soft { dir: store.clone(), passphrase: SecretSource::Memory(passphrase) },
                store.display().to_string(),
            )
        }
    };
    let backend_name = match &backend {
        Backend::Pkcs11 { .. } => "softhsm",
        Backend::Soft { .. } => "soft",
    };
    let env = Environment { backend, output_dir, source: None };

    let mut operator = ScriptedOperator::new(answers, out).echoing_read_backs();
    crate::ceremony::Operator::say(
        &mut operator,
        &match &module {
            Some(m) => {
                format!("Rehearsal on a throwaway SoftHSM token {TOKEN_LABEL:?} ({}) in {}", m.display(), dir.display())
            }
            None => format!("SoftHSM is not installed: rehearsal on the software key store in {}", dir.display()),
        },
    );
    let outcome = root::run(&plan, &env, &mut operator, &RunOptions { allow_network: true })?;

    let report = audit::verify(
        &outcome.audit_log,
        &VerifyOptions {
            pinned_audit_keys: Vec::new(),
            expect_closed: true,
            expected_checkpoint: Some(outcome.final_checkpoint.note_text.clone()),
        },
    )?;
    crate::ceremony::Operator::say(
        &mut operator,
        &format!("\nAudit log verified: {} entries, {} checkpoints.", report.entries, report.checkpoints),
    );

    let rehearsal = Rehearsal {
        backend: backend_name.into(),
        module: module.map(|m| m.display().to_string()),
        token_label,
        root_cert: absolute(&outcome.certificate_pem),
        audit_log: absolute(&outcome.audit_log),
    };
    let json =
        serde_json::to_vec_pretty(&rehearsal).map_err(|e| CeremonyError::Step { step: 0, message: e.to_string() })?;
    files::write_new(&dir.join("rehearsal.json"), &json, Mode::Public)?;
    crate::ceremony::Operator::say(&mut operator, &format!("Wrote {}", dir.join("rehearsal.json").display()));
    Ok(rehearsal)
}

fn prepare_dir(dir: &Path) -> Result<(), CeremonyError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(CeremonyError::Step {
                    step: 0,
                    message: format!(
                        "{} is not empty; a rehearsal never overwrites: give a new or empty directory",
                        dir.display()
                    ),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(files::create_dir(dir, Mode::Private)?),
        Err(e) => Err(files::FileError::io(dir, "reading", e).into()),
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), CeremonyError> {
    if let Some(parent) = path.parent() {
        files::create_dir(parent, Mode::Public)?;
    }
    Ok(files::write_new(path, bytes, Mode::Public)?)
}

/// Makes a SoftHSM token directory inside the rehearsal and initialises a
/// token there with random PINs that live only in memory.
fn softhsm_token(dir: &Path, module: &Path) -> Result<(crate::hsm::pkcs11::TokenSelector, Secret), CeremonyError> {
    let tokens = dir.join("softhsm/tokens");
    files::create_dir(&tokens, Mode::Private)?;
    let conf = dir.join("softhsm/softhsm2.conf");
    let text = format!(
        "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
        absolute(&tokens)
    );
    files::write_new(&conf, text.as_bytes(), Mode::Private)?;
    // SoftHSM reads its configuration from this variable when the module
    // initialises; the rehearsal is the only user of the module in-process.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let so_pin = random_secret()?;
    let user_pin = random_secret()?;
    let module = Module::load(module)?;
    let selector = module.init_token(TOKEN_LABEL, &so_pin, &user_pin)?;
    drop(module);
    Ok((selector, user_pin))
}

/// A throwaway PIN: 24 hex characters from the system RNG.
fn random_secret() -> Result<Secret, CeremonyError> {
    let bytes = SystemRng.random_bytes(12)?;
    Ok(Secret::new(hex::encode(bytes).into_bytes()))
}

fn absolute(path: &Path) -> String {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string()
}

/// The plan hash of the bundled root ceremony, for the README and tests.
pub fn bundled_plan_sha256() -> String {
    words::sha256_hex(ROOT_INIT.as_bytes())
}
