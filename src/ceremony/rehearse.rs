//! `keyrite rehearse`: the whole root ceremony on a throwaway token, end to
//! end and unattended, so a team can see what the real day looks like and CI
//! can prove it still works.
//!
//! The ceremony file, template and answers are the ones in the repository,
//! compiled in and copied into the rehearsal directory byte for byte, so the
//! plan hash the rehearsal prints is the hash of `ceremonies/root-init.toml`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{continuity, engine, CeremonyError, RunOptions, ScriptedOperator};
use crate::audit::{self, VerifyOptions};
use crate::config::{Answers, Backend, Environment, Plan, SecretSource};
use crate::files::{self, Mode};
use crate::hsm::pkcs11::Module;
use crate::hsm::soft::SystemRng;
use crate::hsm::RandomSource;
use crate::secret::Secret;

const ROOT_INIT: &str = include_str!("../../ceremonies/root-init.toml");
const ROOT_RESTORE: &str = include_str!("../../ceremonies/root-restore.toml");
const ROOT_TEMPLATE: &str = include_str!("../../templates/root-ca.toml");
const INIT_ANSWERS: &str = include_str!("../../ceremonies/answers/root-init.rehearsal.toml");
const RESTORE_ANSWERS: &str = include_str!("../../ceremonies/answers/root-restore.rehearsal.toml");
const SIGN_INTERMEDIATE: &str = include_str!("../../ceremonies/sign-intermediate.toml");
const CRL: &str = include_str!("../../ceremonies/crl.toml");
const INTERMEDIATE_TEMPLATE: &str = include_str!("../../templates/intermediate-ca.toml");
const SIGN_ANSWERS: &str = include_str!("../../ceremonies/answers/sign-intermediate.rehearsal.toml");
const CRL_ANSWERS: &str = include_str!("../../ceremonies/answers/crl.rehearsal.toml");
/// The intermediate host's token in a rehearsal.
pub const INTERMEDIATE_TOKEN_LABEL: &str = "keyrite-intermediate";

/// The token label rehearsals use.
pub const TOKEN_LABEL: &str = "keyrite-rehearsal";
/// The fresh token the rehearsal restores the root key into.
pub const RESTORE_TOKEN_LABEL: &str = "keyrite-restore";

/// How `keyrite rehearse` runs.
#[derive(Debug, Clone)]
pub struct RehearseOptions {
    pub backend: BackendChoice,
    /// Keep acme-serve running in the foreground after the rehearsal, as a
    /// sandbox clients can be pointed at (until SIGINT or SIGTERM).
    pub serve: bool,
    /// Where acme-serve listens (default: a free port on 127.0.0.1).
    pub listen: Option<std::net::SocketAddr>,
    /// The port http-01 validation connects to (default: a free port, where
    /// the rehearsal's own client answers).
    pub http01_port: Option<u16>,
    /// The port tls-alpn-01 validation connects to.
    pub tlsalpn01_port: Option<u16>,
    /// The resolver for dns-01 and for resolving names to validate.
    pub dns: Option<std::net::SocketAddr>,
    /// acme-serve's rate limits file (`None`: the defaults, as in production).
    pub rate_limits: Option<PathBuf>,
}

impl RehearseOptions {
    pub fn new(backend: BackendChoice) -> Self {
        RehearseOptions {
            backend,
            serve: false,
            listen: None,
            http01_port: None,
            tlsalpn01_port: None,
            dns: None,
            rate_limits: None,
        }
    }
}

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
    /// One card file per custodian, each holding that custodian's words.
    pub share_cards: Vec<String>,
    pub share_threshold: u8,
    pub backup_blob: String,
    /// The note SHA-256 (hex) of the root log's final checkpoint: what the
    /// paper log holds, and what `keyrite audit verify --checkpoint` takes.
    pub audit_log_checkpoint: String,
    /// The restore ceremony's own log, and the token it restored into.
    pub restore_audit_log: String,
    pub restore_audit_log_checkpoint: String,
    pub restore_token_label: String,
    /// The intermediate the offline root signed from a USB request and the
    /// intermediate host installed.
    pub intermediate_cert: String,
    /// The root's CRL, from the crl ceremony.
    pub root_crl: String,
    /// The offline CA's directory (index, CRL numbers, audit log).
    pub ca_dir: String,
    /// The note SHA-256 (hex) of the CA log's last checkpoint (the CRL
    /// ceremony's final one).
    pub ca_audit_log_checkpoint: String,
    /// What `keyrite acme-serve` loads: the intermediate, its chain, its key.
    pub issuer_config: String,
    /// The certificate the rehearsal's own ACME client obtained from
    /// acme-serve at the end (for 127.0.0.1), and verified.
    pub acme_test_cert: String,
    /// With `--serve`: the sandbox's directory URL, and the PEM bundle a
    /// client must trust for its HTTPS. Null without `--serve`.
    pub acme_directory: Option<String>,
    pub acme_tls_ca: Option<String>,
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
/// transcript to `out`: the root ceremony with its backup and restore drill,
/// then a restore of the root key into a fresh token from two of the three
/// custodians' shares.
pub fn run(dir: &Path, options: &RehearseOptions, out: Box<dyn std::io::Write>) -> Result<Rehearsal, CeremonyError> {
    let choice = options.backend;
    prepare_dir(dir)?;
    let module = match choice {
        BackendChoice::Soft => None,
        BackendChoice::SoftHsm => Some(find_softhsm().ok_or_else(|| CeremonyError::Step {
            step: 0,
            message: "SoftHSM is not installed (apt-get install softhsm2), or set KEYRITE_SOFTHSM_MODULE".into(),
        })?),
        BackendChoice::Auto => find_softhsm(),
    };

    // The scripts, template and answers, exactly as in the repository.
    let init_path = dir.join("ceremonies/root-init.toml");
    let restore_path = dir.join("ceremonies/root-restore.toml");
    write_file(&init_path, ROOT_INIT.as_bytes())?;
    write_file(&restore_path, ROOT_RESTORE.as_bytes())?;
    write_file(&dir.join("templates/root-ca.toml"), ROOT_TEMPLATE.as_bytes())?;
    let init_answers_path = dir.join("ceremonies/answers/root-init.rehearsal.toml");
    let restore_answers_path = dir.join("ceremonies/answers/root-restore.rehearsal.toml");
    write_file(&init_answers_path, INIT_ANSWERS.as_bytes())?;
    write_file(&restore_answers_path, RESTORE_ANSWERS.as_bytes())?;
    let init_plan = Plan::load(&init_path)?;
    let restore_plan = Plan::load(&restore_path)?;

    let root_dir = dir.join("root");
    let restore_dir = dir.join("restore");
    let media = dir.join("custodians");
    files::create_dir(&root_dir, Mode::Public)?;
    files::create_dir(&restore_dir, Mode::Public)?;
    let softhsm = match &module {
        Some(module) => Some(SoftHsmDir::create(dir, module)?),
        None => None,
    };
    let backend_for = |label: &str, store: &str| -> Result<Backend, CeremonyError> {
        match (&softhsm, &module) {
            (Some(hsm), Some(module)) => {
                let (selector, so_pin, user_pin) = hsm.init_token(label)?;
                Ok(Backend::Pkcs11 {
                    module: module.clone(),
                    token: selector,
                    pin: SecretSource::Memory(user_pin),
                    so_pin: Some(SecretSource::Memory(so_pin)),
                })
            }
            _ => Ok(Backend::Soft { dir: dir.join(store), passphrase: None, sealing_key: None }),
        }
    };
    let mut transcript = out;
    let say = |t: &mut Box<dyn std::io::Write>, text: &str| {
        let _ = writeln!(t, "{text}");
    };
    say(
        &mut transcript,
        &match &module {
            Some(m) => format!("Rehearsal on throwaway SoftHSM tokens ({}) in {}", m.display(), dir.display()),
            None => format!("SoftHSM is not installed: rehearsal on the software key store in {}", dir.display()),
        },
    );

    // 1. The root ceremony, with backup, shares and drill.
    let first_backend = backend_for(TOKEN_LABEL, "keystore")?;
    let root_backend = softhsm.as_ref().map(|_| first_backend.clone());
    let env = Environment {
        backend: first_backend,
        output_dir: root_dir.clone(),
        input_dir: root_dir.clone(),
        custodian_media: Some(media.clone()),
        ca_dir: None,
        source: None,
    };
    let answers = Answers::from_toml_str(INIT_ANSWERS, &init_answers_path)?;
    let mut operator =
        ScriptedOperator::new(answers, transcript).with_custodian_media(media.clone()).echoing_read_backs();
    let root = engine::run(&init_plan, &env, &mut operator, &RunOptions { allow_network: true })?;
    verify_log(&root.audit_log, &root.final_checkpoint.note_text)?;
    let transcript = operator.into_output();

    // 2. The restore, into a fresh token, from two of the three shares.
    let env = Environment {
        backend: backend_for(RESTORE_TOKEN_LABEL, "keystore-restore")?,
        output_dir: restore_dir.clone(),
        input_dir: root_dir.clone(),
        custodian_media: Some(media.clone()),
        ca_dir: None,
        source: None,
    };
    let answers = Answers::from_toml_str(RESTORE_ANSWERS, &restore_answers_path)?;
    // The restore reads the root ceremony's log; its final checkpoint, which
    // a witness would type from the paper log, the rehearsal knows itself.
    let mut operator = ScriptedOperator::new(answers, transcript)
        .with_custodian_media(media.clone())
        .echoing_read_backs()
        .with_rehearsal_paper(continuity::SOURCE_PAPER_PROMPT, &root.final_checkpoint.fingerprint.words);
    let restored = engine::run(&restore_plan, &env, &mut operator, &RunOptions { allow_network: true })?;
    let report = verify_log(&restored.audit_log, &restored.final_checkpoint.note_text)?;
    let mut transcript = operator.into_output();
    say(
        &mut transcript,
        &format!("\nRestore audit log verified: {} entries, {} checkpoints.", report.entries, report.checkpoints),
    );

    let missing =
        |what: &str| CeremonyError::Step { step: 0, message: format!("the root ceremony produced no {what}") };
    // 3. The offline CA: a CA directory for the root, a USB request from the
    //    intermediate host, the sign-intermediate ceremony, the install on
    //    the host, and the root's first CRL.
    let root_pem = root.certificate_pem.clone().ok_or_else(|| missing("certificate"))?;
    let ca_dir = dir.join("ca");
    let ca = super::ca::init_dir(&ca_dir, &root_pem)?;
    let root_sha256 = ca.state().root_sha256.clone();
    drop(ca);
    let sign_path = dir.join("ceremonies/sign-intermediate.toml");
    let crl_path = dir.join("ceremonies/crl.toml");
    write_file(&sign_path, SIGN_INTERMEDIATE.as_bytes())?;
    write_file(&crl_path, CRL.as_bytes())?;
    write_file(&dir.join("templates/intermediate-ca.toml"), INTERMEDIATE_TEMPLATE.as_bytes())?;
    let sign_answers_path = dir.join("ceremonies/answers/sign-intermediate.rehearsal.toml");
    let crl_answers_path = dir.join("ceremonies/answers/crl.rehearsal.toml");
    write_file(&sign_answers_path, SIGN_ANSWERS.as_bytes())?;
    write_file(&crl_answers_path, CRL_ANSWERS.as_bytes())?;

    let usb = dir.join("usb");
    let issuer_dir = dir.join("intermediate");
    files::create_dir(&usb, Mode::Public)?;
    files::create_dir(&issuer_dir, Mode::Private)?;
    let intermediate_env = Environment {
        backend: match (&softhsm, &module) {
            (Some(_), Some(_)) => backend_for(INTERMEDIATE_TOKEN_LABEL, "")?,
            _ => Backend::Soft {
                dir: dir.join("keystore-intermediate"),
                passphrase: Some(SecretSource::Memory(random_secret()?)),
                sealing_key: None,
            },
        },
        output_dir: issuer_dir.clone(),
        input_dir: usb.clone(),
        custodian_media: None,
        ca_dir: None,
        source: None,
    };
    let no_prompt = |_: &str| -> Result<Secret, crate::intermediate::IntermediateError> {
        Err(crate::intermediate::IntermediateError::Secret {
            what: "rehearsal".into(),
            detail: "no prompts in a rehearsal".into(),
        })
    };
    let host_error =
        |e: crate::intermediate::IntermediateError| CeremonyError::Step { step: 0, message: e.to_string() };
    let requested = {
        let store = crate::intermediate::open_key_store(&intermediate_env, &mut { no_prompt }).map_err(host_error)?;
        let opts = crate::intermediate::RequestOptions {
            label: "issuing-e1".into(),
            algorithm: crate::hsm::KeyAlgorithm::EcdsaP256,
            // The name templates/intermediate-ca.toml gives it: the plan
            // refuses a CSR that asks for another subject.
            subject: crate::profile::DistinguishedName {
                common_name: Some("keyrite Example Issuing CA E1".into()),
                organization: Some("keyrite Example".into()),
                country: Some("DE".into()),
                ..Default::default()
            },
            requester: "Rehearsal intermediate host".into(),
            hostname: None,
        };
        crate::intermediate::request(&store, &opts, &usb.join("request"), &issuer_dir).map_err(host_error)?
    };
    say(
        &mut transcript,
        &format!(
            "\nIntermediate request written to {} (CSR SHA-256 {})",
            requested.bundle_dir.display(),
            requested.csr_sha256.hex
        ),
    );

    // The root signs on its own token (or, without an HSM, its software
    // store, unlocked in each ceremony's preflight by two custodians' backup
    // cards, as `sealing_key = { shares = "<root log>" }` does).
    let root_backend = match root_backend {
        Some(b) => b,
        None => Backend::Soft {
            dir: dir.join("keystore"),
            passphrase: None,
            sealing_key: Some(SecretSource::Shares(root.audit_log.clone())),
        },
    };
    let ca_env = |out: &Path| Environment {
        backend: root_backend.clone(),
        output_dir: out.to_path_buf(),
        input_dir: usb.clone(),
        custodian_media: Some(media.clone()),
        ca_dir: Some(ca_dir.clone()),
        source: None,
    };
    let sign_plan = Plan::load(&sign_path)?;
    let answers = Answers::from_toml_str(SIGN_ANSWERS, &sign_answers_path)?;
    let mut operator =
        ScriptedOperator::new(answers, transcript).with_custodian_media(media.clone()).echoing_read_backs();
    let signed = engine::run(&sign_plan, &ca_env(&usb), &mut operator, &RunOptions { allow_network: true })?;
    let mut transcript = operator.into_output();

    let installed = {
        let store = crate::intermediate::open_key_store(&intermediate_env, &mut { no_prompt }).map_err(host_error)?;
        crate::intermediate::install(&usb.join("response"), &store, &root_sha256, &issuer_dir, None)
            .map_err(host_error)?
    };
    say(&mut transcript, &format!("Intermediate installed: {}", installed.issuer_toml.display()));

    let crl_out = dir.join("crl");
    files::create_dir(&crl_out, Mode::Public)?;
    let crl_plan = Plan::load(&crl_path)?;
    let answers = Answers::from_toml_str(CRL_ANSWERS, &crl_answers_path)?;
    // The CRL ceremony continues the CA's log: the anchor is the
    // sign-intermediate ceremony's final checkpoint, passed in memory.
    let mut operator = ScriptedOperator::new(answers, transcript)
        .with_custodian_media(media.clone())
        .echoing_read_backs()
        .with_rehearsal_paper(continuity::PAPER_PROMPT, &signed.final_checkpoint.fingerprint.words);
    let crl = engine::run(&crl_plan, &ca_env(&crl_out), &mut operator, &RunOptions { allow_network: true })?;
    let mut transcript = operator.into_output();
    verify_log(&ca_dir.join("audit.jsonl"), &crl.final_checkpoint.note_text)?;
    crate::ca::CaDir::verify(&ca_dir)?;
    say(&mut transcript, "CA directory and its audit log verified.");

    let (token_label, restore_token_label) = match &module {
        Some(_) => (TOKEN_LABEL.to_string(), RESTORE_TOKEN_LABEL.to_string()),
        None => (root.store.label(), restored.store.label()),
    };
    let mut rehearsal = Rehearsal {
        backend: if module.is_some() { "softhsm" } else { "soft" }.into(),
        module: module.as_ref().map(|m| m.display().to_string()),
        token_label,
        root_cert: absolute(root.certificate_pem.as_deref().ok_or_else(|| missing("certificate"))?),
        audit_log: absolute(&root.audit_log),
        audit_log_checkpoint: root.final_checkpoint.fingerprint.hex.clone(),
        restore_audit_log_checkpoint: restored.final_checkpoint.fingerprint.hex.clone(),
        ca_audit_log_checkpoint: crl.final_checkpoint.fingerprint.hex.clone(),
        share_cards: root.share_cards.iter().map(|p| absolute(p)).collect(),
        share_threshold: root.share_threshold.ok_or_else(|| missing("share set"))?,
        backup_blob: absolute(root.backup_blob.as_deref().ok_or_else(|| missing("backup"))?),
        restore_audit_log: absolute(&restored.audit_log),
        restore_token_label,
        intermediate_cert: absolute(&installed.config.certificate),
        root_crl: absolute(crl.crl_pem.as_deref().ok_or_else(|| missing("CRL"))?),
        ca_dir: absolute(&ca_dir),
        issuer_config: absolute(&installed.issuer_toml),
        acme_test_cert: String::new(),
        acme_directory: None,
        acme_tls_ca: None,
    };

    // 4. acme-serve on loopback from the installed intermediate; the
    //    rehearsal's own client obtains one certificate and checks it.
    let acme_dir = dir.join("acme");
    files::create_dir(&acme_dir, Mode::Private)?;
    // The sandbox issues for any name its resolver answers, and for the
    // loopback addresses: policy does not stand in the way of a rehearsal.
    let names = crate::config::acme::NamePolicy {
        allowed_dns_suffixes: vec![".".into()],
        allowed_ip_ranges: vec![
            (std::net::IpAddr::from([127, 0, 0, 1]), 32),
            (std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST), 128),
        ],
        ..Default::default()
    };
    let leaf = crate::acme::launch::shipped_leaf_template()
        .map_err(|e| CeremonyError::Step { step: 0, message: e.to_string() })?;
    let mut config = crate::config::acme::AcmeServeConfig::new(
        options.listen.unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        acme_dir.join("acme.db"),
        crate::config::acme::TlsSettings::IssueAtStart {
            names: vec![crate::profile::San::Ip(std::net::IpAddr::from([127, 0, 0, 1]))],
            lifetime: None,
        },
        leaf,
        names,
    );
    config.validation.tls_alpn01_port = options.tlsalpn01_port.unwrap_or(443);
    config.validation.resolver = options.dns;
    if let Some(path) = &options.rate_limits {
        config.rate_limits = crate::config::acme::load_limits(path)
            .map_err(|e| CeremonyError::Step { step: 0, message: e.to_string() })?;
    }
    let serve = options.serve;
    let http01 = options.http01_port;
    let rehearsal_path = dir.join("rehearsal.json");
    let mut transcript = transcript;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CeremonyError::Step { step: 0, message: format!("starting the async runtime: {e}") })?;
    let root_spki_pem = root.certificate_pem.clone().ok_or_else(|| missing("certificate"))?;
    runtime.block_on(async {
        let acme_error = |e: &dyn std::fmt::Display| CeremonyError::Step { step: 0, message: format!("acme-serve rehearsal: {e}") };
        let responder = crate::client::Http01Responder::start(std::net::SocketAddr::from(([127, 0, 0, 1], http01.unwrap_or(0))))
            .await
            .map_err(|e| acme_error(&e))?;
        config.validation.http01_port = responder.addr.port();
        let launch = crate::acme::launch::Launch {
            issuer: installed.issuer_toml.clone(),
            environment: intermediate_env,
            config,
            ready_file: None,
            tls_ca: None,
        };
        let launched = crate::acme::launch::launch(launch).await.map_err(|e| acme_error(&e))?;
        let directory = launched.ready.directory.clone();
        let tls_ca = launched.ready.tls_ca.clone().ok_or_else(|| acme_error(&"the server named no TLS CA bundle"))?;
        say(&mut transcript, &format!("\nacme-serve listening: {directory}"));
        let issued = crate::client::issue_one(&directory, &tls_ca, &["127.0.0.1".to_string()], &responder).await;
        responder.stop();
        let issued = match issued {
            Ok(i) => i,
            Err(e) => {
                launched.server.shutdown().await;
                return Err(acme_error(&e));
            }
        };
        let leaf = check_leaf(&issued.chain_pem, &installed.checked.intermediate_der, &root_spki_pem)?;
        let leaf_path = acme_dir.join("rehearsal-leaf.pem");
        files::write_new(&leaf_path, issued.chain_pem.as_bytes(), Mode::Public)?;
        say(
            &mut transcript,
            &format!(
                "The rehearsal's ACME client obtained a certificate for 127.0.0.1 in {} ms and verified it: {leaf}\n  written to {}",
                issued.timings.total.as_millis(),
                leaf_path.display()
            ),
        );
        rehearsal.acme_test_cert = absolute(&leaf_path);
        if serve {
            rehearsal.acme_directory = Some(directory.clone());
            rehearsal.acme_tls_ca = Some(absolute(&tls_ca));
            write_rehearsal(&rehearsal_path, &rehearsal)?;
            say(
                &mut transcript,
                &format!(
                    "Wrote {}\nSandbox ready: point ACME clients at {directory}\n  trust {} for its HTTPS; http-01 goes to port {}; Ctrl-C stops it.",
                    rehearsal_path.display(),
                    tls_ca.display(),
                    http01.map_or_else(|| "(a free port; pass --http01-port)".to_string(), |p| p.to_string())
                ),
            );
            let stopped = crate::acme::launch::shutdown_signal().await;
            launched.server.shutdown().await;
            stopped.map_err(|e| acme_error(&e))?;
        } else {
            launched.server.shutdown().await;
            write_rehearsal(&rehearsal_path, &rehearsal)?;
            say(&mut transcript, &format!("acme-serve stopped.\nWrote {}", rehearsal_path.display()));
        }
        Ok::<(), CeremonyError>(())
    })?;
    Ok(rehearsal)
}

fn write_rehearsal(path: &Path, rehearsal: &Rehearsal) -> Result<(), CeremonyError> {
    let json =
        serde_json::to_vec_pretty(rehearsal).map_err(|e| CeremonyError::Step { step: 0, message: e.to_string() })?;
    Ok(files::write_new(path, &json, Mode::Public)?)
}

/// Checks the certificate acme-serve issued: leaf first, signed by the
/// intermediate, which the root signed; an IP SAN of 127.0.0.1. Returns a
/// one-line summary.
fn check_leaf(chain_pem: &str, intermediate_der: &[u8], root_pem: &Path) -> Result<String, CeremonyError> {
    let bad =
        |m: String| CeremonyError::Step { step: 0, message: format!("the rehearsal's certificate is wrong: {m}") };
    let mut ders = Vec::new();
    for block in chain_pem.split_inclusive("-----END CERTIFICATE-----").filter(|b| b.contains("BEGIN")) {
        let (_, der) = pem_rfc7468::decode_vec(block.trim_start().as_bytes()).map_err(|e| bad(e.to_string()))?;
        ders.push(der);
    }
    let leaf = ders.first().ok_or_else(|| bad("the chain is empty".into()))?;
    if ders.get(1).map(Vec::as_slice) != Some(intermediate_der) {
        return Err(bad("the chain's second certificate is not the installed intermediate".into()));
    }
    let int_spki = super::custody::certificate_spki(Path::new("intermediate"), intermediate_der)?;
    if !crate::ca::signed_by(leaf, &int_spki) {
        return Err(bad("the leaf's signature does not verify under the intermediate's key".into()));
    }
    let root_bytes = std::fs::read(root_pem).map_err(|e| files::FileError::io(root_pem, "reading", e))?;
    let (_, root_der) = pem_rfc7468::decode_vec(&root_bytes).map_err(|e| bad(e.to_string()))?;
    let root_spki = super::custody::certificate_spki(root_pem, &root_der)?;
    if !crate::ca::signed_by(intermediate_der, &root_spki) {
        return Err(bad("the intermediate's signature does not verify under the root's key".into()));
    }
    let summary = crate::profile::certificate_summary(leaf).map_err(|e| bad(e.to_string()))?;
    let now = time::OffsetDateTime::now_utc();
    if summary.not_before > now || summary.not_after < now {
        return Err(bad("it is not valid now".into()));
    }
    Ok(format!("serial {}, valid until {}, chains to the root", summary.serial_hex, summary.not_after))
}

/// The software root's sealing key, rebuilt from the first two custodians'
/// cards (as two custodians would at a real ceremony), in hex.
fn verify_log(path: &Path, final_note: &str) -> Result<audit::VerifyReport, CeremonyError> {
    Ok(audit::verify(
        path,
        &VerifyOptions {
            paper_checkpoints: vec![final_note.to_string()],
            expect_closed: true,
            ..VerifyOptions::default()
        },
    )?)
}

/// Makes a new, empty directory `keyrite-rehearsal-<UTC time>-<random>` in
/// `parent`, so a rehearsal run without `--dir` never meets an earlier one's
/// outputs (a rehearsal never overwrites) and can be run again and again.
pub fn fresh_dir(parent: &Path) -> Result<PathBuf, CeremonyError> {
    use std::os::unix::fs::DirBuilderExt;
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!("[year][month][day]-[hour][minute][second]"))
        .unwrap_or_default();
    for _ in 0..16 {
        let suffix = hex::encode(SystemRng.random_bytes(3)?);
        let dir = parent.join(format!("keyrite-rehearsal-{stamp}-{suffix}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(files::FileError::io(&dir, "creating the rehearsal directory", e).into()),
        }
    }
    Err(CeremonyError::Step { step: 0, message: format!("no free rehearsal directory name in {}", parent.display()) })
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

/// A SoftHSM token directory inside the rehearsal, with its own
/// configuration file.
struct SoftHsmDir {
    module: PathBuf,
}

impl SoftHsmDir {
    fn create(dir: &Path, module: &Path) -> Result<Self, CeremonyError> {
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
        Ok(SoftHsmDir { module: module.to_path_buf() })
    }

    /// Initialises a token with random SO and user PINs that live only in
    /// memory.
    fn init_token(&self, label: &str) -> Result<(crate::hsm::pkcs11::TokenSelector, Secret, Secret), CeremonyError> {
        let so_pin = random_secret()?;
        let user_pin = random_secret()?;
        let module = Module::load(&self.module)?;
        let selector = module.init_token(label, &so_pin, &user_pin)?;
        Ok((selector, so_pin, user_pin))
    }
}

/// A throwaway PIN: 24 hex characters from the system RNG.
fn random_secret() -> Result<Secret, CeremonyError> {
    let bytes = SystemRng.random_bytes(12)?;
    Ok(Secret::new(hex::encode(bytes).into_bytes()))
}

fn absolute(path: &Path) -> String {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string()
}
