//! `keyrite acme-serve` as a library: the configuration is checked, then
//! `issuer.toml` is loaded, the key store the environment file names is
//! opened and every install check re-run (the issuing key and the audit
//! key), the signer factory built, the server started and the ready file
//! written; it stops cleanly on a signal.
//!
//! The PIN (or soft-store passphrase) is resolved once, here, and moved into
//! the factory as an in-memory secret: the factory runs on the signer thread
//! and opens its own PKCS#11 session there (a session is not `Sync`), and it
//! must never prompt from a server thread.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::Serialize;
use zeroize::Zeroizing;

use super::ca::{Issuer, IssuerKeys, SignerFactory};
use super::server::{self, AcmeError, RunningServer};
use crate::config::acme::{AcmeConfigError, AcmeServeConfig, TlsSettings};
use crate::config::{Backend, Environment, SecretSource};
use crate::hsm::keystore::KeyStore;
use crate::hsm::{HsmError, KeyAlgorithm, SignatureAlgorithm, Signer};
use crate::intermediate::{self, IntermediateError, IssuerConfig};
use crate::profile::{Profile, San};
use crate::secret::Secret;

/// The leaf template shipped with keyrite, used when none is named.
const SHIPPED_LEAF: &str = include_str!("../../templates/tls-leaf.toml");

/// The shipped leaf template (`templates/tls-leaf.toml`).
pub fn shipped_leaf_template() -> Result<Profile, AcmeConfigError> {
    Profile::from_toml_str(SHIPPED_LEAF, "templates/tls-leaf.toml")
        .map_err(|e| AcmeConfigError::Option { option: "shipped leaf template".into(), problem: e.to_string() })
}

/// What `acme-serve` is started with: the configuration, and where the
/// issuer and its keys are.
pub struct Launch {
    /// `issuer.toml` as `keyrite intermediate install` wrote it.
    pub issuer: PathBuf,
    /// The environment: which module/token (or software store) and where its
    /// PIN comes from. A `"prompt"` source must be resolved by the caller
    /// first (see [`resolve_prompts`]): a server never prompts.
    pub environment: Environment,
    pub config: AcmeServeConfig,
    /// Written (never overwritten) once the server listens.
    pub ready_file: Option<PathBuf>,
    /// With a provided certificate: the bundle clients must trust, reported
    /// in the ready file. An issued certificate reports the issuer's root.
    pub tls_ca: Option<PathBuf>,
}

/// What the ready file says, and what [`serve_blocking`]'s callback gets.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReadyInfo {
    /// The directory URL clients are given.
    pub directory: String,
    /// The PEM bundle clients must trust for the server's HTTPS, when known.
    pub tls_ca: Option<PathBuf>,
    /// The address the server is bound to.
    pub listen: SocketAddr,
}

/// Why acme-serve did not start or stopped. Messages carry their cause's
/// text; no variant has a `#[source]`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// `issuer.toml`, the key store or a key failed the install checks.
    #[error("issuer refused: {0}")]
    Issuer(IntermediateError),
    /// The server could not start.
    #[error("{0}")]
    Acme(AcmeError),
    /// An option or a file it names is wrong.
    #[error("{0}")]
    Config(AcmeConfigError),
    /// A file could not be read or written.
    #[error("{path}: {problem}")]
    File { path: PathBuf, problem: String },
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(String),
    /// Signal handlers could not be installed.
    #[error("cannot listen for signals: {0}")]
    Signals(String),
}

/// A started server and what the ready file says about it.
pub struct Launched {
    pub server: RunningServer,
    pub ready: ReadyInfo,
}

/// Replaces every `"prompt"` secret source the server needs with the answer
/// of `prompt`, so the server itself never prompts.
pub fn resolve_prompts(
    environment: &mut Environment,
    prompt: &mut dyn FnMut(&str) -> Result<Secret, IntermediateError>,
) -> Result<(), IntermediateError> {
    let (source, question) = match &mut environment.backend {
        Backend::Pkcs11 { token, pin, .. } => (pin, format!("User PIN for token {:?}", token.label)),
        Backend::Soft { passphrase: Some(p), .. } => (p, "Passphrase for the software key store".to_string()),
        Backend::Soft { passphrase: None, .. } => return Ok(()),
    };
    if matches!(source, SecretSource::Prompt) {
        *source = SecretSource::Memory(prompt(&question)?);
    }
    Ok(())
}

/// The environment with its PIN resolved into memory (read once: an env
/// variable or file changed later does not matter to a running server).
fn pin_in_memory(env: &Environment) -> Result<Environment, IntermediateError> {
    let mut env = env.clone();
    let mut no_prompt = |what: &str| -> Result<Secret, IntermediateError> {
        Err(IntermediateError::Secret {
            what: what.to_string(),
            detail: "acme-serve does not prompt from a server thread: use { env = \"VAR\" } or { file = \"/path\" }"
                .into(),
        })
    };
    match &mut env.backend {
        Backend::Pkcs11 { pin, so_pin, .. } => {
            let resolved = intermediate::resolve_secret(pin, "the token's user PIN", &mut no_prompt)?;
            *pin = SecretSource::Memory(resolved);
            // The server never needs the SO PIN; do not carry it around.
            *so_pin = None;
        }
        Backend::Soft { passphrase: Some(p), .. } => {
            let resolved = intermediate::resolve_secret(p, "the software key store passphrase", &mut no_prompt)?;
            *p = SecretSource::Memory(resolved);
        }
        Backend::Soft { passphrase: None, .. } => {}
    }
    Ok(env)
}

/// A key in the store the signer thread opened. It looks the key up for
/// each signature: a PKCS#11 key handle borrows its session, and a lookup is
/// cheap next to a signature in an HSM. The issuing key and the audit key
/// share one store (one session).
struct StoreKey {
    store: Rc<KeyStore>,
    label: String,
    algorithm: KeyAlgorithm,
    signature: SignatureAlgorithm,
    spki: Vec<u8>,
    description: String,
}

impl StoreKey {
    /// Finds `label` and checks it is still the key the start-up check saw.
    fn find(store: &Rc<KeyStore>, label: &str, expected_spki: &[u8]) -> Result<StoreKey, HsmError> {
        let (algorithm, signature, spki, description) = {
            let key = store.find(label, None)?;
            let s = &key.signer;
            (s.key_algorithm(), s.signature_algorithm(), s.spki_der().to_vec(), s.describe())
        };
        if spki != expected_spki {
            return Err(HsmError::BadPublicKey(format!(
                "key {label:?} changed since the start-up check: its public key is not the one checked"
            )));
        }
        Ok(StoreKey { store: store.clone(), label: label.to_string(), algorithm, signature, spki, description })
    }
}

impl Signer for StoreKey {
    fn key_algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }
    fn signature_algorithm(&self) -> SignatureAlgorithm {
        self.signature
    }
    fn spki_der(&self) -> &[u8] {
        &self.spki
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        self.store.find(&self.label, Some(self.signature))?.signer.sign(message)
    }
    fn describe(&self) -> String {
        self.description.clone()
    }
}

/// How the signer thread opens the key store: the environment's backend
/// with its secret already in memory (zeroized on drop).
enum StoreOpener {
    Pkcs11 { module: PathBuf, token: crate::hsm::pkcs11::TokenSelector, pin: Secret },
    Soft { dir: PathBuf, passphrase: Secret },
}

impl StoreOpener {
    fn from_env(env: &Environment) -> Result<StoreOpener, IntermediateError> {
        let memory = |s: &SecretSource| match s {
            SecretSource::Memory(secret) => Ok(secret.clone()),
            _ => Err(IntermediateError::Secret {
                what: "environment".into(),
                detail: "the PIN was not resolved at start".into(),
            }),
        };
        match &env.backend {
            Backend::Pkcs11 { module, token, pin, .. } => {
                Ok(StoreOpener::Pkcs11 { module: module.clone(), token: token.clone(), pin: memory(pin)? })
            }
            Backend::Soft { dir, passphrase: Some(p), .. } => {
                Ok(StoreOpener::Soft { dir: dir.clone(), passphrase: memory(p)? })
            }
            Backend::Soft { passphrase: None, .. } => Err(IntermediateError::Secret {
                what: "environment file [soft]".into(),
                detail: "the software key store needs passphrase = { env = \"VAR\" } or { file = \"/path\" }".into(),
            }),
        }
    }

    fn open(&self) -> Result<KeyStore, HsmError> {
        match self {
            StoreOpener::Pkcs11 { module, token, pin } => KeyStore::open_pkcs11(module, token, pin),
            StoreOpener::Soft { dir, passphrase } => {
                KeyStore::open_soft(dir, crate::hsm::soft::SealingKey::Passphrase(passphrase.clone()))
            }
        }
    }
}

/// The issuer as the signer thread will open it.
struct Prepared {
    issuer: Issuer,
    tls_ca: Option<PathBuf>,
}

/// Everything checked before the server binds; blocking (token I/O).
fn prepare(launch: &Launch) -> Result<Prepared, LaunchError> {
    let issuer_config =
        IssuerConfig::load(&launch.issuer).map_err(|e| LaunchError::Issuer(IntermediateError::IssuerConfig(e)))?;
    let env = pin_in_memory(&launch.environment).map_err(LaunchError::Issuer)?;
    let checked = {
        let mut no_prompt = |what: &str| -> Result<Secret, IntermediateError> {
            Err(IntermediateError::Secret { what: what.into(), detail: "not in memory".into() })
        };
        let store = intermediate::open_key_store(&env, &mut no_prompt).map_err(LaunchError::Issuer)?;
        let now = super::clock::Clock::now(&super::clock::SystemClock);
        let checked = intermediate::check_issuer(&issuer_config, &store, now).map_err(LaunchError::Issuer)?;
        // The store (and its PKCS#11 module) closes here, before the signer
        // thread loads the module again.
        drop(store);
        checked
    };
    let Some(audit) = checked.audit_key.clone() else {
        return Err(LaunchError::Issuer(IntermediateError::Config {
            path: launch.issuer.clone(),
            field: "audit_key".into(),
            problem: "names no audit key, so the issuance log could not be checkpointed: request and install a new \
                      intermediate with this keyrite (`keyrite intermediate request` makes the audit key)"
                .into(),
        }));
    };
    tracing::info!(
        intermediate = %checked.intermediate.subject,
        not_after = %checked.intermediate.not_after,
        root_sha256 = %checked.root.fingerprint.hex,
        key = %checked.key_uri,
        audit_key = %audit.uri,
        audit_key_sha256 = %audit.spki_sha256,
        "issuer checked"
    );
    let chain_pem = std::fs::read_to_string(&issuer_config.certificate)
        .map_err(|e| LaunchError::File { path: issuer_config.certificate.clone(), problem: e.to_string() })?;
    let tls_ca = match &launch.config.tls {
        TlsSettings::Provided { .. } => launch.tls_ca.clone(),
        TlsSettings::IssueAtStart { .. } => Some(absolute(&issuer_config.root)),
    };

    let (label, audit_label, audit_sha256) =
        (checked.key_label.clone(), audit.label.clone(), audit.spki_sha256.clone());
    let spki = spki_of(&checked.intermediate_der)?;
    // The factory owns the environment with the PIN in memory (a zeroizing
    // `Secret`); it is dropped, and the PIN wiped, once the keys are open.
    let opener = StoreOpener::from_env(&env).map_err(LaunchError::Issuer)?;
    drop(env);
    let keys: SignerFactory = Box::new(move || {
        let opener = opener;
        let store = Rc::new(opener.open()?);
        let ca = StoreKey::find(&store, &label, &spki)?;
        let audit_spki: Vec<u8> = store.find(audit_label.as_str(), None)?.signer.spki_der().to_vec();
        if crate::words::sha256_hex(&audit_spki) != audit_sha256 {
            let why = format!("audit key {:?} changed since the start-up check", audit_label);
            return Err(HsmError::BadPublicKey(why));
        }
        let audit = StoreKey::find(&store, audit_label.as_str(), &audit_spki)?;
        Ok(IssuerKeys { ca: Box::new(ca), audit: Box::new(audit) })
    });
    let issuer = Issuer { certificate_der: checked.intermediate_der.clone(), chain_pem, keys };
    Ok(Prepared { issuer, tls_ca })
}

fn spki_of(cert_der: &[u8]) -> Result<Vec<u8>, LaunchError> {
    use der::{Decode, Encode};
    let bad = |e: der::Error| LaunchError::File { path: "intermediate certificate".into(), problem: e.to_string() };
    let cert = x509_cert::Certificate::from_der(cert_der).map_err(bad)?;
    cert.tbs_certificate().subject_public_key_info().to_der().map_err(bad)
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The names of the server's own certificate (`--tls-name`): DNS names or
/// IP addresses; none means the listen address, which must then be a
/// specific one.
pub fn tls_names(names: &[String], listen: SocketAddr) -> Result<Vec<San>, AcmeConfigError> {
    let option = |problem: String| AcmeConfigError::Option { option: "--tls-name".into(), problem };
    if names.is_empty() {
        if listen.ip().is_unspecified() {
            return Err(option(
                "the server listens on every address; name the certificate's names with --tls-name".into(),
            ));
        }
        return Ok(vec![San::Ip(listen.ip())]);
    }
    names
        .iter()
        .map(|name| {
            if let Ok(ip) = name.parse::<IpAddr>() {
                return Ok(San::Ip(ip));
            }
            let lower = name.to_ascii_lowercase();
            let id = super::identifier::Identifier { kind: "dns".into(), value: lower.clone() };
            super::identifier::check_syntax(&id).map_err(|e| option(e.to_string()))?;
            Ok(San::Dns(lower))
        })
        .collect()
}

/// A provided certificate (`--tls-cert`, `--tls-key`): the PEM chain (leaf
/// first) and the unencrypted PKCS#8 key.
pub fn tls_from_files(cert: &Path, key: &Path) -> Result<TlsSettings, LaunchError> {
    let text =
        std::fs::read_to_string(cert).map_err(|e| LaunchError::File { path: cert.into(), problem: e.to_string() })?;
    let chain_der =
        super::tls::pem_certificates(&text).map_err(|problem| LaunchError::File { path: cert.into(), problem })?;
    if chain_der.is_empty() {
        return Err(LaunchError::File { path: cert.into(), problem: "holds no CERTIFICATE block".into() });
    }
    // The error never quotes the file: it holds a private key.
    let bad = |problem: &str| LaunchError::File { path: key.into(), problem: problem.into() };
    let text = Zeroizing::new(std::fs::read(key).map_err(|e| bad(&e.to_string()))?);
    let (label, der) = pem_rfc7468::decode_vec(&text).map_err(|_| bad("is not a single PEM block"))?;
    let key_pkcs8_der = Zeroizing::new(der);
    if label != "PRIVATE KEY" {
        return Err(bad("must be an unencrypted PKCS#8 key (-----BEGIN PRIVATE KEY-----)"));
    }
    Ok(TlsSettings::Provided { chain_der, key_pkcs8_der })
}

/// Checks everything, starts the server and writes the ready file.
pub async fn launch(launch: Launch) -> Result<Launched, LaunchError> {
    // Configuration first: a wrong option is named before any token is used.
    launch.config.check().map_err(LaunchError::Config)?;
    let ready_file = launch.ready_file.clone();
    let (prepared, config) = tokio::task::spawn_blocking(move || prepare(&launch).map(|p| (p, launch.config)))
        .await
        .map_err(|e| LaunchError::Runtime(format!("start-up checks: {e}")))??;
    let server = server::start(config, prepared.issuer).await.map_err(LaunchError::Acme)?;
    let ready = ReadyInfo { directory: server.directory_url(), tls_ca: prepared.tls_ca, listen: server.local_addr() };
    if let Some(path) = &ready_file {
        let json = serde_json::to_vec_pretty(&ready)
            .map_err(|e| LaunchError::File { path: path.clone(), problem: e.to_string() })?;
        if let Err(e) = crate::files::write_new(path, &json, crate::files::Mode::Public) {
            server.shutdown().await;
            return Err(LaunchError::File { path: path.clone(), problem: e.to_string() });
        }
    }
    tracing::info!(directory = %ready.directory, "acme-serve ready");
    Ok(Launched { server, ready })
}

/// Runs the server until `shutdown` completes, then stops it cleanly.
pub async fn run(options: Launch, shutdown: impl Future<Output = ()> + Send) -> Result<ReadyInfo, LaunchError> {
    let launched = launch(options).await?;
    shutdown.await;
    tracing::info!("shutting down");
    launched.server.shutdown().await;
    Ok(launched.ready)
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() -> Result<(), LaunchError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| LaunchError::Signals(e.to_string()))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| LaunchError::Signals(e.to_string()))?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
    Ok(())
}

/// Blocking entry point (for `keyrite acme-serve` and `keyrite rehearse
/// --serve`): builds a runtime, starts the server, calls `ready` once it
/// listens, and returns after SIGINT or SIGTERM and a clean shutdown.
pub fn serve_blocking(options: Launch, ready: impl FnOnce(&ReadyInfo)) -> Result<(), LaunchError> {
    install_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| LaunchError::Runtime(e.to_string()))?;
    runtime.block_on(async move {
        // Signal handlers first, so a signal during start-up is not lost.
        let stop = shutdown_signal();
        tokio::pin!(stop);
        let launched = tokio::select! {
            l = launch(options) => l?,
            r = &mut stop => { r?; return Ok(()); }
        };
        ready(&launched.ready);
        let result = stop.await;
        tracing::info!("shutting down");
        launched.server.shutdown().await;
        result
    })
}

/// Logs to stderr; `KEYRITE_LOG` sets the filter (default `info`). Nothing
/// secret is ever logged. A second call does nothing.
pub fn install_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYRITE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_names_default_to_a_specific_listen_address() {
        let lo: SocketAddr = "127.0.0.1:443".parse().expect("addr");
        assert_eq!(tls_names(&[], lo).ok(), Some(vec![San::Ip(lo.ip())]));
        assert!(tls_names(&[], "0.0.0.0:443".parse().expect("addr")).is_err());
        let names = tls_names(&["ACME.Example.net".into(), "::1".into()], lo).expect("names");
        assert_eq!(names, vec![San::Dns("acme.example.net".into()), San::Ip("::1".parse().expect("ip"))]);
        assert!(tls_names(&["bad_name!".into()], lo).is_err());
    }
}
