//! `keyrite acme-serve` as a library: load `issuer.toml`, open the key store
//! the environment file names, re-run every install check, build the signer
//! factory, start the server, write the ready file, and stop cleanly.
//!
//! The PIN (or soft-store passphrase) is resolved once, here, and moved into
//! the factory as an in-memory secret: the factory runs on the signer thread
//! and opens its own PKCS#11 session there (a session is not `Sync`), and it
//! must never prompt from a server thread.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use zeroize::Zeroizing;

use super::{AcmeError, Issuer, Policy, RunningServer, ServerConfig, SignerFactory, TlsSource, ValidationConfig};
use crate::config::{Backend, Environment, SecretSource};
use crate::hsm::keystore::KeyStore;
use crate::hsm::{HsmError, KeyAlgorithm, SignatureAlgorithm, Signer};
use crate::intermediate::{self, IntermediateError, IssuerConfig};
use crate::profile::{Profile, San};
use crate::secret::Secret;

/// The leaf template shipped with keyrite, used when none is named.
const SHIPPED_LEAF: &str = include_str!("../../templates/tls-leaf.toml");

/// Where the server's HTTPS certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsOption {
    /// A PEM chain (leaf first) and its PKCS#8 PEM key; `ca` is the bundle
    /// clients must trust, reported in the ready file when given.
    Files { cert: PathBuf, key: PathBuf, ca: Option<PathBuf> },
    /// Issue a certificate at start from the intermediate for these names
    /// (DNS names or IP addresses); clients then trust the issuer's root.
    /// Empty means the listen address.
    Issue { names: Vec<String> },
}

/// Everything `acme-serve` is started with.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// `issuer.toml` as `keyrite intermediate install` wrote it.
    pub issuer: PathBuf,
    /// The environment: which module/token (or software store) and where its
    /// PIN comes from. A `"prompt"` source must be resolved by the caller
    /// first (see [`resolve_prompts`]): a server never prompts.
    pub environment: Environment,
    pub database: PathBuf,
    pub listen: SocketAddr,
    pub external_url: Option<String>,
    pub tls: TlsOption,
    /// The leaf template; `None` is the shipped `templates/tls-leaf.toml`.
    pub leaf_template: Option<PathBuf>,
    pub http01_port: u16,
    pub tls_alpn01_port: u16,
    /// The DNS server for dns-01 and name resolution.
    pub dns: Option<SocketAddr>,
    pub allow_dns_suffixes: Vec<String>,
    pub allow_ip_ranges: Vec<(IpAddr, u8)>,
    /// Lifetime of a certificate whose order names none.
    pub lifetime: Duration,
    pub max_identifiers: usize,
    /// Written (never overwritten) once the server listens.
    pub ready_file: Option<PathBuf>,
    /// Refuse accounts without an External Account Binding.
    pub require_eab: bool,
    /// ACME profiles: name and leaf template.
    pub profiles: Vec<(String, PathBuf)>,
    /// The profile of orders that name none (else the leaf template).
    pub default_profile: Option<String>,
    /// Where the ARI window starts, as a fraction of the lifetime.
    pub ari_window_start: f64,
    /// A rate limits file; `None` keeps the defaults.
    pub rate_limits: Option<PathBuf>,
    /// Serve the leaves' CRL over plain HTTP.
    pub crl: Option<super::crl::CrlConfig>,
    /// How often expired nonces, orders and authorizations are purged.
    pub purge_interval: Duration,
    /// Issuer domain names this CA answers to in CAA records; empty: no CAA check.
    pub caa_identities: Vec<String>,
}

impl LaunchOptions {
    /// The defaults of `keyrite acme-serve` for everything but the essentials.
    pub fn new(issuer: PathBuf, environment: Environment, database: PathBuf, listen: SocketAddr) -> Self {
        LaunchOptions {
            issuer,
            environment,
            database,
            listen,
            external_url: None,
            tls: TlsOption::Issue { names: Vec::new() },
            leaf_template: None,
            http01_port: 80,
            tls_alpn01_port: 443,
            dns: None,
            allow_dns_suffixes: Vec::new(),
            allow_ip_ranges: Vec::new(),
            lifetime: Duration::from_secs(24 * 3600),
            max_identifiers: 100,
            ready_file: None,
            require_eab: false,
            profiles: Vec::new(),
            default_profile: None,
            ari_window_start: crate::acme::ari::DEFAULT_WINDOW_START,
            rate_limits: None,
            crl: None,
            purge_interval: Duration::from_secs(300),
            caa_identities: Vec::new(),
        }
    }
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

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    #[error("issuer refused: {0}")]
    Issuer(IntermediateError),
    #[error("{0}")]
    Acme(AcmeError),
    #[error("{what}: {problem}")]
    Option { what: String, problem: String },
    #[error("{path}: {problem}")]
    File { path: PathBuf, problem: String },
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot listen for signals: {0}")]
    Signals(#[source] std::io::Error),
}

fn option_err(what: &str, problem: impl Into<String>) -> LaunchError {
    LaunchError::Option { what: what.into(), problem: problem.into() }
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

/// The issuing key, owning its key store (and so its session). It looks the
/// key up for each signature: a PKCS#11 key handle borrows its session, and a
/// lookup is cheap next to a signature in an HSM.
struct StoreKey {
    store: KeyStore,
    label: String,
    algorithm: KeyAlgorithm,
    signature: SignatureAlgorithm,
    spki: Vec<u8>,
    description: String,
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
    fn from_env(env: &Environment) -> Result<StoreOpener, LaunchError> {
        let memory = |s: &SecretSource| match s {
            SecretSource::Memory(secret) => Ok(secret.clone()),
            _ => Err(option_err("environment", "the PIN was not resolved at start")),
        };
        match &env.backend {
            Backend::Pkcs11 { module, token, pin, .. } => {
                Ok(StoreOpener::Pkcs11 { module: module.clone(), token: token.clone(), pin: memory(pin)? })
            }
            Backend::Soft { dir, passphrase: Some(p), .. } => {
                Ok(StoreOpener::Soft { dir: dir.clone(), passphrase: memory(p)? })
            }
            Backend::Soft { passphrase: None, .. } => Err(option_err(
                "environment file [soft]",
                "the software key store needs passphrase = { env = \"VAR\" } or { file = \"/path\" }",
            )),
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

/// Opens the store on the calling (signer) thread and finds the key; it must
/// still be the key the intermediate certificate names.
fn open_signer(opener: &StoreOpener, label: &str, expected_spki: &[u8]) -> Result<Box<dyn Signer>, HsmError> {
    let store = opener.open()?;
    let (algorithm, signature, spki, description) = {
        let key = store.find(label, None)?;
        let s = &key.signer;
        (s.key_algorithm(), s.signature_algorithm(), s.spki_der().to_vec(), s.describe())
    };
    if spki != expected_spki {
        return Err(HsmError::BadPublicKey(format!(
            "key {label:?} changed since the start-up check: its public key is no longer the intermediate's"
        )));
    }
    Ok(Box::new(StoreKey { store, label: label.to_string(), algorithm, signature, spki, description }))
}

/// Everything checked before the server binds; blocking (token I/O).
struct Prepared {
    config: ServerConfig,
    issuer: Issuer,
    tls_ca: Option<PathBuf>,
}

fn prepare(options: &LaunchOptions) -> Result<Prepared, LaunchError> {
    let issuer_config = IssuerConfig::load(&options.issuer)?;
    let env = pin_in_memory(&options.environment)?;
    let checked = {
        let mut no_prompt = |what: &str| -> Result<Secret, IntermediateError> {
            Err(IntermediateError::Secret { what: what.into(), detail: "not in memory".into() })
        };
        let store = intermediate::open_key_store(&env, &mut no_prompt)?;
        let checked = issuer_config.check(&store, time::OffsetDateTime::now_utc())?;
        // The store (and its PKCS#11 module) closes here, before the signer
        // thread loads the module again.
        drop(store);
        checked
    };
    tracing::info!(
        intermediate = %checked.intermediate.subject,
        not_after = %checked.intermediate.not_after,
        root_sha256 = %checked.root.fingerprint.hex,
        key = %checked.key_uri,
        "issuer checked"
    );
    let chain_pem = std::fs::read_to_string(&issuer_config.certificate)
        .map_err(|e| LaunchError::File { path: issuer_config.certificate.clone(), problem: e.to_string() })?;

    let leaf_profile = match &options.leaf_template {
        Some(path) => {
            Profile::load(path).map_err(|e| LaunchError::File { path: path.clone(), problem: e.to_string() })?
        }
        None => Profile::from_toml_str(SHIPPED_LEAF, "templates/tls-leaf.toml")
            .map_err(|e| option_err("shipped leaf template", e.to_string()))?,
    };

    let (tls, tls_ca) = match &options.tls {
        TlsOption::Files { cert, key, ca } => {
            (TlsSource::Provided { chain_der: read_chain(cert)?, key_pkcs8_der: read_key(key)? }, ca.clone())
        }
        TlsOption::Issue { names } => {
            let sans = if names.is_empty() {
                if options.listen.ip().is_unspecified() {
                    return Err(option_err(
                        "--tls-name",
                        "the server listens on every address; name the certificate's names with --tls-name",
                    ));
                }
                vec![San::Ip(options.listen.ip())]
            } else {
                names.iter().map(|n| parse_san(n)).collect::<Result<Vec<_>, _>>()?
            };
            (TlsSource::IssueAtStart { names: sans }, Some(absolute(&issuer_config.root)))
        }
    };

    let mut policy = Policy {
        allowed_dns_suffixes: options
            .allow_dns_suffixes
            .iter()
            .map(|s| s.trim_start_matches('.').trim_end_matches('.').to_ascii_lowercase())
            .collect(),
        allowed_ip_ranges: options.allow_ip_ranges.clone(),
        ..Policy::default()
    };
    if options.max_identifiers == 0 {
        return Err(option_err("--max-identifiers", "must be at least 1"));
    }
    policy.max_identifiers = options.max_identifiers;
    if policy.allowed_dns_suffixes.is_empty() && policy.allowed_ip_ranges.is_empty() {
        return Err(option_err(
            "policy",
            "nothing may be issued: name at least one --allow-dns-suffix or --allow-ip-range",
        ));
    }

    let mut config = ServerConfig::new(options.listen, options.database.clone(), tls, leaf_profile, policy);
    config.external_url = options.external_url.clone();
    config.default_lifetime = options.lifetime;
    config.require_eab = options.require_eab;
    for (name, path) in &options.profiles {
        let p = Profile::load(path).map_err(|e| LaunchError::File { path: path.clone(), problem: e.to_string() })?;
        config.profiles.push((name.clone(), p));
    }
    config.default_profile = options.default_profile.clone();
    crate::acme::ari::check_fraction(options.ari_window_start).map_err(|e| option_err("--ari-window-start", e))?;
    config.ari_window_start = options.ari_window_start;
    if let Some(path) = &options.rate_limits {
        config.rate_limits = super::ratelimit::Limits::load(path)
            .map_err(|e| LaunchError::File { path: path.clone(), problem: e.to_string() })?;
    }
    config.crl = options.crl.clone();
    config.purge_interval = options.purge_interval;
    config.max_lifetime = config.max_lifetime.max(options.lifetime);
    config.validation = ValidationConfig {
        resolver: options.dns,
        http01_port: options.http01_port,
        tls_alpn01_port: options.tls_alpn01_port,
        caa_identities: options.caa_identities.iter().map(|i| i.trim_end_matches('.').to_ascii_lowercase()).collect(),
        ..ValidationConfig::default()
    };

    let label = checked.key_label.clone();
    let spki = checked_spki(&checked.intermediate_der)?;
    // The factory owns the environment with the PIN in memory (a zeroizing
    // `Secret`); it is dropped, and the PIN wiped, once the signer is open.
    let opener = StoreOpener::from_env(&env)?;
    drop(env);
    let factory: SignerFactory = Box::new(move || {
        let opener = opener;
        open_signer(&opener, &label, &spki)
    });
    let issuer = Issuer { certificate_der: checked.intermediate_der.clone(), chain_pem, signer: factory };
    Ok(Prepared { config, issuer, tls_ca })
}

fn checked_spki(cert_der: &[u8]) -> Result<Vec<u8>, LaunchError> {
    use der::{Decode, Encode};
    let cert = x509_cert::Certificate::from_der(cert_der)
        .map_err(|e| option_err("intermediate certificate", e.to_string()))?;
    cert.tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|e| option_err("intermediate certificate", e.to_string()))
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn parse_san(name: &str) -> Result<San, LaunchError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(San::Ip(ip));
    }
    let lower = name.to_ascii_lowercase();
    let id = super::identifier::Identifier { kind: "dns".into(), value: lower.clone() };
    super::identifier::check_syntax(&id).map_err(|e| option_err("--tls-name", e.to_string()))?;
    Ok(San::Dns(lower))
}

fn read_chain(path: &Path) -> Result<Vec<Vec<u8>>, LaunchError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| LaunchError::File { path: path.into(), problem: e.to_string() })?;
    let chain = super::pem_blocks(&text);
    if chain.is_empty() {
        return Err(LaunchError::File { path: path.into(), problem: "holds no CERTIFICATE block".into() });
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<Zeroizing<Vec<u8>>, LaunchError> {
    // The error never quotes the file: it holds a private key.
    let bad = |problem: &str| LaunchError::File { path: path.into(), problem: problem.into() };
    let text = Zeroizing::new(std::fs::read(path).map_err(|e| bad(&e.to_string()))?);
    let (label, der) = pem_rfc7468::decode_vec(&text).map_err(|_| bad("is not a single PEM block"))?;
    let der = Zeroizing::new(der);
    if label != "PRIVATE KEY" {
        return Err(bad("must be an unencrypted PKCS#8 key (-----BEGIN PRIVATE KEY-----)"));
    }
    Ok(der)
}

/// Parses `10.0.0.0/8` or a single address (a /32 or /128).
pub fn parse_cidr(text: &str) -> Result<(IpAddr, u8), LaunchError> {
    super::identifier::parse_cidr(text).map_err(|p| option_err("--allow-ip-range", p))
}

/// Parses `NAME=PATH` (`--profile`).
pub fn parse_profile_arg(text: &str) -> Result<(String, PathBuf), LaunchError> {
    match text.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => Ok((name.to_string(), PathBuf::from(path))),
        _ => Err(option_err("--profile", format!("{text:?} is not NAME=TEMPLATE, e.g. mtls=templates/leaf-mtls.toml"))),
    }
}

/// Parses `90s`, `30m`, `24h` or `7d` (`--lifetime`).
pub fn parse_lifetime(text: &str) -> Result<Duration, LaunchError> {
    parse_duration("--lifetime", text)
}

/// Parses `90s`, `30m`, `24h` or `7d`, at least a minute, for option `what`.
pub fn parse_duration(what: &str, text: &str) -> Result<Duration, LaunchError> {
    let secs = super::parse_secs(text).map_err(|p| option_err(what, p))?;
    if secs < 60 {
        return Err(option_err(what, "must be at least a minute"));
    }
    Ok(Duration::from_secs(secs))
}

/// Checks everything, starts the server and writes the ready file.
pub async fn launch(options: LaunchOptions) -> Result<Launched, LaunchError> {
    let opts = options.clone();
    let prepared = tokio::task::spawn_blocking(move || prepare(&opts))
        .await
        .map_err(|e| option_err("start-up checks", e.to_string()))??;
    let server = super::start(prepared.config, prepared.issuer).await?;
    let ready = ReadyInfo { directory: server.directory_url(), tls_ca: prepared.tls_ca, listen: server.local_addr() };
    if let Some(path) = &options.ready_file {
        let json = serde_json::to_vec_pretty(&ready).map_err(|e| option_err("ready file", e.to_string()))?;
        if let Err(e) = crate::files::write_new(path, &json, crate::files::Mode::Public) {
            server.shutdown().await;
            return Err(LaunchError::File { path: path.clone(), problem: e.to_string() });
        }
    }
    tracing::info!(directory = %ready.directory, "acme-serve ready");
    Ok(Launched { server, ready })
}

/// Runs the server until `shutdown` completes, then stops it cleanly.
pub async fn run(options: LaunchOptions, shutdown: impl Future<Output = ()> + Send) -> Result<ReadyInfo, LaunchError> {
    let launched = launch(options).await?;
    shutdown.await;
    tracing::info!("shutting down");
    launched.server.shutdown().await;
    Ok(launched.ready)
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() -> Result<(), LaunchError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(LaunchError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(LaunchError::Signals)?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
    Ok(())
}

/// Blocking entry point (for `keyrite acme-serve` and `keyrite rehearse
/// --serve`): builds a runtime, starts the server, calls `ready` once it
/// listens, and returns after SIGINT or SIGTERM and a clean shutdown.
pub fn serve_blocking(options: LaunchOptions, ready: impl FnOnce(&ReadyInfo)) -> Result<(), LaunchError> {
    install_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(LaunchError::Runtime)?;
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

// Not `#[from]`: the message already carries the cause, and a `source` as
// well would print it twice in an error chain.
impl From<IntermediateError> for LaunchError {
    fn from(e: IntermediateError) -> Self {
        LaunchError::Issuer(e)
    }
}

// Not `#[from]`: the message already carries the cause, and a `source` as
// well would print it twice in an error chain.
impl From<AcmeError> for LaunchError {
    fn from(e: AcmeError) -> Self {
        LaunchError::Acme(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_lifetimes() {
        assert!(matches!(parse_cidr("127.0.0.0/8"), Ok((_, 8))));
        assert!(matches!(parse_cidr("::1"), Ok((_, 128))));
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("nope").is_err());
        assert_eq!(parse_lifetime("24h").ok(), Some(Duration::from_secs(86400)));
        assert_eq!(parse_lifetime("90m").ok(), Some(Duration::from_secs(5400)));
        assert!(parse_lifetime("5s").is_err());
        assert!(parse_lifetime("1y").is_err());
    }
}
