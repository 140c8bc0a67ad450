//! acme-serve's configuration: everything the server runs with, in one
//! value, checked once before anything starts.
//!
//! The command line (`keyrite acme-serve`), the rehearsal's sandbox and the
//! tests all build an [`AcmeServeConfig`]; `acme::start` checks it
//! ([`AcmeServeConfig::check`]) and hands each part to the component that
//! uses it (the issuance policy to the registration authority, the
//! validation settings to the validator, the limits to the limiter, the CRL
//! settings to the publisher), so no setting is copied field by field on its
//! way in. Which key signs (the issuer) is not here: that is `issuer.toml`
//! and the environment file, opened by `acme::launch`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use zeroize::Zeroizing;

use super::rate_limits::Limits;
pub use super::values::{check_fraction, ip_in, parse_cidr, parse_fraction, parse_secs};
use crate::profile::{CertKind, Profile, San};

/// The default lifetime of an order, and of the pending authorizations made
/// with it.
pub const DEFAULT_ORDER_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// What is wrong with acme-serve's configuration. Each message names the
/// option (as the command line spells it) or the file, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcmeConfigError {
    /// An option's value is malformed or out of range.
    #[error("{option}: {problem}")]
    Option { option: String, problem: String },
    /// A file the configuration names cannot be read or is not what it should be.
    #[error("{path}: {problem}")]
    File { path: PathBuf, problem: String },
}

fn option_err(option: &str, problem: impl Into<String>) -> AcmeConfigError {
    AcmeConfigError::Option { option: option.into(), problem: problem.into() }
}

/// Everything `acme-serve` runs with besides its issuer.
#[derive(Debug, Clone)]
pub struct AcmeServeConfig {
    /// Where to listen (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The base URL clients use (`https://acme.example.net`); `None` means
    /// `https://<bound address>`. Every `url` in a JWS is checked against it.
    pub external_url: Option<String>,
    /// The SQLite database file (created if missing, owner-only).
    pub database: PathBuf,
    /// The server's own HTTPS certificate.
    pub tls: TlsSettings,
    /// What may be issued, for how long, to whom.
    pub issuance: IssuanceSettings,
    /// How challenges are checked.
    pub validation: ValidationSettings,
    /// Rate limits (see `docs/acme-operations.md`).
    pub rate_limits: Limits,
    /// The leaves' CRL over plain HTTP; `None` serves none.
    pub crl: Option<CrlSettings>,
    /// How often expired nonces, orders and authorizations are purged.
    pub purge_interval: Duration,
    /// How often the issuance log gets a signed checkpoint when it has grown
    /// (it also gets one at start and at a clean shutdown).
    pub checkpoint_interval: Duration,
    /// How long a nonce is accepted.
    pub nonce_lifetime: Duration,
    /// `meta.termsOfService` in the directory; clients must agree to it.
    pub terms_of_service: Option<String>,
    /// `meta.website` in the directory.
    pub website: Option<String>,
}

/// Where the server's own HTTPS certificate comes from.
#[derive(Clone)]
pub enum TlsSettings {
    /// A certificate chain (leaf first, DER) and its PKCS#8 private key,
    /// served as they are.
    Provided { chain_der: Vec<Vec<u8>>, key_pkcs8_der: Zeroizing<Vec<u8>> },
    /// Issue one at start from the intermediate, with a fresh P-256 key
    /// that never leaves memory, for these names, and renew it (new key) at
    /// two thirds of its lifetime. `lifetime: None` is the leaf template's.
    IssueAtStart { names: Vec<San>, lifetime: Option<Duration> },
}

// By hand: the private key must never reach a log line.
impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsSettings::Provided { chain_der, .. } => {
                f.debug_struct("Provided").field("certificates", &chain_der.len()).finish_non_exhaustive()
            }
            TlsSettings::IssueAtStart { names, lifetime } => {
                f.debug_struct("IssueAtStart").field("names", names).field("lifetime", lifetime).finish()
            }
        }
    }
}

/// The issuance policy: templates, lifetimes, names, bindings. The
/// registration authority (`acme::ra`) is the one reader.
#[derive(Debug, Clone)]
pub struct IssuanceSettings {
    /// The leaf template (`templates/tls-leaf.toml`).
    pub leaf_profile: Profile,
    /// ACME profiles (draft-aaron-acme-profiles), by name, advertised in
    /// `meta.profiles`. Empty: no profiles, and an order naming one is refused.
    pub profiles: Vec<(String, Profile)>,
    /// The profile of orders that name none; `None` is `leaf_profile`.
    pub default_profile: Option<String>,
    /// Certificate lifetime when the order names none.
    pub default_lifetime: Duration,
    /// The longest lifetime an order's notBefore/notAfter may ask for.
    pub max_lifetime: Duration,
    /// How long a pending order (and its authorizations) lives.
    pub order_lifetime: Duration,
    /// How long a valid authorization counts.
    pub authz_valid_lifetime: Duration,
    /// Which names and addresses this CA issues for.
    pub names: NamePolicy,
    /// Refuse new accounts without an External Account Binding (keys from
    /// `keyrite acme eab create`). Bindings are verified, and their policy
    /// applied, whether or not they are required.
    pub require_eab: bool,
    /// Where the ARI suggested window starts, as a fraction of a
    /// certificate's lifetime (RFC 9773; 2/3 by default).
    pub ari_window_start: f64,
    /// How long a finalize may wait for its signature. The signer refuses a
    /// job past it, so an issuance still unfinished after it can be resolved
    /// by any instance (see `acme::ra::issuance`).
    pub finalize_deadline: Duration,
}

/// What this server is willing to issue for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePolicy {
    /// DNS names must equal or end in `.` + one of these; empty allows
    /// none; `""` (or `.`) allows every name (the rehearsal's sandbox).
    pub allowed_dns_suffixes: Vec<String>,
    /// IP identifiers must lie in one of these (network, prefix length);
    /// empty allows none.
    pub allowed_ip_ranges: Vec<(IpAddr, u8)>,
    pub allow_wildcards: bool,
    /// At most this many identifiers per order (Boulder: 100).
    pub max_identifiers: usize,
}

impl Default for NamePolicy {
    fn default() -> Self {
        NamePolicy {
            allowed_dns_suffixes: Vec::new(),
            allowed_ip_ranges: Vec::new(),
            allow_wildcards: true,
            max_identifiers: 100,
        }
    }
}

/// How challenges are checked.
#[derive(Debug, Clone)]
pub struct ValidationSettings {
    /// The DNS server for dns-01 and for resolving names; `None` uses the
    /// operating system's resolver for A/AAAA (dns-01 then fails: TXT
    /// answers must come from a resolver the operator chose).
    pub resolver: Option<SocketAddr>,
    /// Names answered without DNS (tests, split horizon). Checked first.
    pub static_hosts: HashMap<String, Vec<IpAddr>>,
    /// Port for http-01 (80 in production; tests point it elsewhere, like
    /// Pebble's `-httpPort`).
    pub http01_port: u16,
    /// Port for tls-alpn-01 (443 in production).
    pub tls_alpn01_port: u16,
    /// Timeout of each network step.
    pub timeout: Duration,
    /// Attempts before a challenge turns invalid (at least 1).
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each further one.
    pub backoff: Duration,
    /// Validations in flight at once.
    pub max_concurrent: usize,
    /// The issuer domain names this CA answers to in CAA records (RFC
    /// 8659); empty: CAA is not checked.
    pub caa_identities: Vec<String>,
}

impl Default for ValidationSettings {
    fn default() -> Self {
        ValidationSettings {
            resolver: None,
            static_hosts: HashMap::new(),
            http01_port: 80,
            tls_alpn01_port: 443,
            timeout: Duration::from_secs(10),
            attempts: 3,
            backoff: Duration::from_secs(2),
            max_concurrent: 16,
            caa_identities: Vec::new(),
        }
    }
}

/// Where and how often the leaves' CRL is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlSettings {
    /// Plain-HTTP listener (port 0 picks one).
    pub listen: SocketAddr,
    /// A new CRL at least this often, revoked or not.
    pub refresh: Duration,
    /// nextUpdate − thisUpdate; longer than `refresh`, so a relying party
    /// always holds an unexpired CRL while the server runs.
    pub validity: Duration,
}

impl CrlSettings {
    pub fn new(listen: SocketAddr) -> Self {
        CrlSettings { listen, refresh: Duration::from_secs(3600), validity: Duration::from_secs(24 * 3600) }
    }
}

impl AcmeServeConfig {
    /// Defaults for everything but the essentials.
    pub fn new(
        listen: SocketAddr,
        database: PathBuf,
        tls: TlsSettings,
        leaf_profile: Profile,
        names: NamePolicy,
    ) -> Self {
        AcmeServeConfig {
            listen,
            external_url: None,
            database,
            tls,
            issuance: IssuanceSettings {
                leaf_profile,
                profiles: Vec::new(),
                default_profile: None,
                default_lifetime: Duration::from_secs(24 * 3600),
                max_lifetime: Duration::from_secs(7 * 24 * 3600),
                order_lifetime: DEFAULT_ORDER_LIFETIME,
                authz_valid_lifetime: Duration::from_secs(7 * 24 * 3600),
                names,
                require_eab: false,
                ari_window_start: DEFAULT_ARI_WINDOW_START,
                finalize_deadline: Duration::from_secs(10),
            },
            validation: ValidationSettings::default(),
            rate_limits: Limits::default(),
            crl: None,
            purge_interval: Duration::from_secs(300),
            checkpoint_interval: Duration::from_secs(300),
            nonce_lifetime: Duration::from_secs(3600),
            terms_of_service: None,
            website: None,
        }
    }

    /// Every cross-field rule, checked before the server touches its
    /// database or signer: what passes here does not fail at request time
    /// for a configuration reason.
    pub fn check(&self) -> Result<(), AcmeConfigError> {
        let iss = &self.issuance;
        if iss.names.allowed_dns_suffixes.is_empty() && iss.names.allowed_ip_ranges.is_empty() {
            return Err(option_err(
                "--allow-dns-suffix/--allow-ip-range",
                "nothing may be issued: name at least one --allow-dns-suffix or --allow-ip-range",
            ));
        }
        if iss.names.max_identifiers == 0 {
            return Err(option_err("--max-identifiers", "must be at least 1"));
        }
        for (name, p) in &iss.profiles {
            if name.is_empty()
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            {
                return Err(option_err("--profile", format!("profile name {name:?}: use letters, digits, - _ .")));
            }
            if p.kind() != CertKind::Leaf {
                return Err(option_err(
                    "--profile",
                    format!("profile {name:?}: {} is not a leaf template", p.source()),
                ));
            }
        }
        if let Some(d) = &iss.default_profile {
            if !iss.profiles.iter().any(|(n, _)| n == d) {
                return Err(option_err("--default-profile", format!("{d:?} is not one of the --profile names")));
            }
        }
        check_fraction(iss.ari_window_start).map_err(|p| option_err("--ari-window-start", p))?;
        if iss.default_lifetime.is_zero() || iss.default_lifetime > iss.max_lifetime {
            return Err(option_err(
                "--lifetime",
                format!(
                    "{} s must be positive and at most the longest lifetime an order may ask for ({} s)",
                    iss.default_lifetime.as_secs(),
                    iss.max_lifetime.as_secs()
                ),
            ));
        }
        if iss.finalize_deadline < Duration::from_secs(1) {
            return Err(option_err("finalize deadline", "must be at least a second"));
        }
        if !self.validation.caa_identities.is_empty() && self.validation.resolver.is_none() {
            return Err(option_err("--caa-identity", "CAA checking needs a DNS resolver (--dns)"));
        }
        for (what, d) in [
            ("--purge-interval", self.purge_interval),
            ("checkpoint interval", self.checkpoint_interval),
            ("nonce lifetime", self.nonce_lifetime),
        ] {
            if d.is_zero() {
                return Err(option_err(what, "must be positive"));
            }
        }
        match &self.crl {
            Some(crl) => {
                if crl.validity <= crl.refresh {
                    return Err(option_err(
                        "--crl-validity",
                        format!(
                            "the CRL validity ({} s) must be longer than its refresh interval ({} s)",
                            crl.validity.as_secs(),
                            crl.refresh.as_secs()
                        ),
                    ));
                }
                if iss.crl_distribution_points()?.is_empty() {
                    return Err(option_err(
                        "--crl-listen",
                        "is set but no leaf template names a crl_distribution_points URL to serve",
                    ));
                }
            }
            None => {
                iss.crl_distribution_points()?;
            }
        }
        if let TlsSettings::IssueAtStart { names, .. } = &self.tls {
            if names.is_empty() {
                return Err(option_err("--tls-name", "the server certificate needs at least one name"));
            }
        }
        Ok(())
    }
}

impl IssuanceSettings {
    /// Every template an order can be issued with: the leaf template and
    /// the profiles'.
    pub fn templates(&self) -> impl Iterator<Item = &Profile> {
        std::iter::once(&self.leaf_profile).chain(self.profiles.iter().map(|(_, p)| p))
    }

    /// A profile by name.
    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.iter().find(|(n, _)| n == name).map(|(_, p)| p)
    }

    /// The distinct cRLDistributionPoints URLs of the templates, by URL
    /// path (where the CRL listener serves each). Two URLs sharing a path
    /// are refused: one listener could not tell their CRLs apart.
    pub fn crl_distribution_points(&self) -> Result<BTreeMap<String, String>, AcmeConfigError> {
        let mut points = BTreeMap::new();
        for p in self.templates() {
            for url in p.crl_distribution_points() {
                // A template admits http:// URIs only (profile::check_http_uri).
                let rest = url.strip_prefix("http://").unwrap_or(url);
                let path = rest.find('/').map_or("/", |i| &rest[i..]).to_string();
                match points.get(&path) {
                    Some(other) if other != url => {
                        return Err(option_err(
                            "crl_distribution_points",
                            format!(
                                "{other:?} and {url:?} share the path {path:?}; give each CRL its own path in the templates"
                            ),
                        ))
                    }
                    _ => {
                        points.insert(path, url.clone());
                    }
                }
            }
        }
        Ok(points)
    }
}

/// Where the ARI window starts by default: two thirds of the lifetime.
pub const DEFAULT_ARI_WINDOW_START: f64 = 2.0 / 3.0;

/// Parses `90s`, `30m`, `24h` or `7d`, at least a minute, for `option`.
pub fn parse_duration(option: &str, text: &str) -> Result<Duration, AcmeConfigError> {
    let secs = parse_secs(text).map_err(|p| option_err(option, p))?;
    if secs < 60 {
        return Err(option_err(option, "must be at least a minute"));
    }
    Ok(Duration::from_secs(secs))
}

/// Parses `NAME=PATH` (`--profile`).
pub fn parse_profile_arg(text: &str) -> Result<(String, PathBuf), AcmeConfigError> {
    match text.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => Ok((name.to_string(), PathBuf::from(path))),
        _ => Err(option_err("--profile", format!("{text:?} is not NAME=TEMPLATE, e.g. mtls=templates/leaf-mtls.toml"))),
    }
}

/// Loads a leaf template, naming the file on failure.
pub fn load_template(path: &Path) -> Result<Profile, AcmeConfigError> {
    Profile::load(path).map_err(|e| AcmeConfigError::File { path: path.to_path_buf(), problem: e.to_string() })
}

/// Loads a rate limits file, naming the file on failure.
pub fn load_limits(path: &Path) -> Result<Limits, AcmeConfigError> {
    Limits::load(path).map_err(|e| AcmeConfigError::File { path: path.to_path_buf(), problem: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_durations_and_fractions() {
        assert!(matches!(parse_cidr("127.0.0.0/8"), Ok((_, 8))));
        assert!(matches!(parse_cidr("::1"), Ok((_, 128))));
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("nope").is_err());
        assert_eq!(parse_duration("--lifetime", "24h").ok(), Some(Duration::from_secs(86400)));
        assert_eq!(parse_duration("--lifetime", "90m").ok(), Some(Duration::from_secs(5400)));
        assert!(parse_duration("--lifetime", "5s").is_err());
        assert!(parse_duration("--lifetime", "1y").is_err());
        assert!((parse_fraction("2/3").unwrap_or(0.0) - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(parse_fraction("0.5"), Ok(0.5));
        assert!(parse_fraction("1").is_err());
        assert!(parse_fraction("0").is_err());
        assert!(parse_fraction("x").is_err());
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(ip_in(&ip("10.1.2.3"), &ip("10.0.0.0"), 8));
        assert!(!ip_in(&ip("11.1.2.3"), &ip("10.0.0.0"), 8));
        assert!(!ip_in(&ip("::1"), &ip("10.0.0.0"), 8));
    }
}
