//! `keyrite acme-serve` and `keyrite acme …`: the command line of the ACME
//! server (read once into its configuration), EAB key management, the
//! issuance log export, and the load generator's arguments.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use super::terminal_pin_prompt;
use crate::audit;
use crate::config::acme::{AcmeServeConfig, CrlSettings, NamePolicy, TlsSettings, ValidationSettings};
use crate::config::Environment;

#[derive(Subcommand)]
pub(super) enum AcmeCommand {
    /// External Account Binding keys (RFC 8555 §7.3.4), each with an issuance policy
    #[command(subcommand)]
    Eab(EabCommand),
    /// acme-serve's issuance log: every certificate and revocation, in keyrite's audit format
    #[command(subcommand)]
    IssuanceLog(IssuanceLogCommand),
    /// Load-test any RFC 8555 server: C concurrent clients through complete http-01 flows
    Bench(super::bench::AcmeBenchArgs),
}

#[derive(Subcommand)]
pub(super) enum IssuanceLogCommand {
    /// Write the log through its latest signed checkpoint to a new file, for `keyrite audit verify`
    Export {
        /// The acme-serve SQLite database (it may be in use by a running server)
        #[arg(long)]
        db: PathBuf,
        /// The file to write (must not exist)
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
pub(super) enum EabCommand {
    /// Mint a key; its HMAC is printed once (base64url) and never again
    Create {
        /// The acme-serve SQLite database (created if missing)
        #[arg(long)]
        db: PathBuf,
        /// The audit log to record the event in (created if missing)
        #[arg(long)]
        audit_log: PathBuf,
        /// Names allowed: `team-a.example` (it and below) or `*.team-a.example` (below only); repeatable
        #[arg(long, num_args = 1..)]
        dns_suffix: Vec<String>,
        /// IP addresses allowed, e.g. 10.1.0.0/16; repeatable
        #[arg(long, num_args = 1..)]
        ip_range: Vec<String>,
        /// Refuse wildcard names for accounts bound with this key
        #[arg(long)]
        no_wildcards: bool,
        /// Profiles the accounts may order (default: all); repeatable
        #[arg(long, num_args = 1..)]
        profile: Vec<String>,
        /// Longest certificate lifetime (e.g. 24h, 7d)
        #[arg(long)]
        max_lifetime: Option<String>,
        /// The key binds no account after this long (e.g. 30d)
        #[arg(long)]
        expires_in: Option<String>,
        /// Let the key bind several accounts (default: one)
        #[arg(long)]
        multi_use: bool,
        /// A label for the operator (team, ticket)
        #[arg(long, default_value = "")]
        note: String,
        /// Who is doing this, for the audit log
        #[arg(long)]
        actor: Option<String>,
    },
    /// List keys (never their HMACs)
    List {
        #[arg(long)]
        db: PathBuf,
    },
    /// Revoke a key: it binds no new account, and its accounts get no more certificates
    Revoke {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        audit_log: PathBuf,
        /// Who is doing this, for the audit log
        #[arg(long)]
        actor: Option<String>,
        kid: String,
    },
}

#[derive(clap::Args)]
pub(super) struct AcmeServeArgs {
    /// The issuer configuration (issuer.toml) from `keyrite intermediate install`
    #[arg(long)]
    issuer: PathBuf,
    /// Environment file: which token (or software store) holds the issuing key, where its PIN comes from
    #[arg(long)]
    env: PathBuf,
    /// The SQLite database (created if missing)
    #[arg(long)]
    db: PathBuf,
    /// Address and port to listen on (HTTPS)
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// The base URL clients use, when it differs from https://<listen address>
    #[arg(long)]
    external_url: Option<String>,
    /// The server's own certificate chain (PEM, leaf first)
    #[arg(long, requires = "tls_key", conflicts_with = "tls_name")]
    tls_cert: Option<PathBuf>,
    /// The private key for --tls-cert (unencrypted PKCS#8 PEM)
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// With --tls-cert: the CA bundle clients trust, reported in the ready file
    #[arg(long, requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// Issue the server's certificate from the intermediate at start for these names (default: the listen address)
    #[arg(long, num_args = 1..)]
    tls_name: Vec<String>,
    /// A leaf template instead of the shipped templates/tls-leaf.toml
    #[arg(long)]
    leaf_template: Option<PathBuf>,
    /// Port the http-01 validation connects to
    #[arg(long, default_value_t = 80)]
    http01_port: u16,
    /// Port the tls-alpn-01 validation connects to
    #[arg(long, default_value_t = 443)]
    tlsalpn01_port: u16,
    /// DNS server (ADDR:PORT) for name resolution and dns-01 (default: the system resolver; no dns-01)
    #[arg(long)]
    dns: Option<std::net::SocketAddr>,
    /// Issue for names equal to or under this suffix (repeatable)
    #[arg(long, num_args = 1..)]
    allow_dns_suffix: Vec<String>,
    /// Issue for IP addresses in this range, e.g. 10.0.0.0/8 (repeatable)
    #[arg(long, num_args = 1..)]
    allow_ip_range: Vec<String>,
    /// Lifetime of certificates whose order names none (e.g. 24h, 90m, 7d)
    #[arg(long, default_value = "24h")]
    lifetime: String,
    /// Most identifiers in one order
    #[arg(long, default_value_t = 100)]
    max_identifiers: usize,
    /// Write {directory, tls_ca, listen} as JSON here once listening (must not exist)
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Refuse new accounts without an External Account Binding (keys from `keyrite acme eab create`)
    #[arg(long)]
    require_eab: bool,
    /// An ACME profile: NAME=TEMPLATE, e.g. mtls=templates/leaf-mtls.toml (repeatable)
    #[arg(long = "profile", num_args = 1..)]
    profiles: Vec<String>,
    /// The profile of orders that name none (default: the --leaf-template)
    #[arg(long)]
    default_profile: Option<String>,
    /// Where the ARI renewal window starts, as a fraction of a certificate's lifetime (e.g. 2/3, 0.75)
    #[arg(long, default_value = "2/3", value_parser = crate::config::acme::parse_fraction)]
    ari_window_start: f64,
    /// Rate limits and their overrides (TOML; see docs/acme-operations.md); default limits without it
    #[arg(long)]
    rate_limits: Option<PathBuf>,
    /// Serve the leaves' CRL over plain HTTP here (ADDR:PORT), at the path of the templates' CRL URL
    #[arg(long)]
    crl_listen: Option<std::net::SocketAddr>,
    /// Sign a new CRL at least this often (revocations publish one at once)
    #[arg(long, default_value = "1h", requires = "crl_listen")]
    crl_refresh: String,
    /// How long each CRL is valid (nextUpdate - thisUpdate); longer than --crl-refresh
    #[arg(long, default_value = "24h", requires = "crl_listen")]
    crl_validity: String,
    /// How often expired nonces, orders and authorizations are purged
    #[arg(long, default_value = "5m")]
    purge_interval: String,
    /// How often the issuance log gets a signed checkpoint while it grows (also at start and at a clean stop)
    #[arg(long, default_value = "5m")]
    checkpoint_interval: String,
    /// How long a finalize may wait for its signature; an issuance interrupted by a crash is resolved after it
    #[arg(long, default_value = "10s")]
    finalize_deadline: String,
    /// Check CAA (RFC 8659, with RFC 8657 accounturi/validationmethods): this CA's issuer domain name in CAA records (repeatable; needs --dns)
    #[arg(long, num_args = 1..)]
    caa_identity: Vec<String>,
}

/// `keyrite acme-serve`: resolves a prompted PIN here (the only place with a
/// terminal), then hands everything to `acme::launch`.
pub(super) fn run_acme_serve(args: AcmeServeArgs) -> Result<()> {
    use crate::acme::launch::{self, Launch};
    launch::install_tracing();
    let mut environment = Environment::load(&args.env)?;
    launch::resolve_prompts(&mut environment, &mut terminal_pin_prompt)?;
    let (issuer, ready_file, tls_ca) = (args.issuer.clone(), args.ready_file.clone(), args.tls_ca.clone());
    let config = args.into_config()?;
    launch::serve_blocking(Launch { issuer, environment, config, ready_file, tls_ca }, |ready| {
        println!("ACME directory   {}", ready.directory);
        if let Some(ca) = &ready.tls_ca {
            println!("TLS trust anchor {}", ca.display());
        }
        println!("listening on     {}", ready.listen);
    })
    .context("acme-serve stopped")?;
    println!("acme-serve stopped cleanly");
    Ok(())
}

impl AcmeServeArgs {
    /// The command line, read once into acme-serve's configuration (every
    /// cross-field rule is then checked by `AcmeServeConfig::check`).
    fn into_config(self) -> Result<AcmeServeConfig> {
        use crate::acme::launch;
        use crate::config::acme as cfg;
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => launch::tls_from_files(cert, key)?,
            _ => TlsSettings::IssueAtStart { names: launch::tls_names(&self.tls_name, self.listen)?, lifetime: None },
        };
        let leaf = match &self.leaf_template {
            Some(path) => cfg::load_template(path)?,
            None => launch::shipped_leaf_template()?,
        };
        let names = NamePolicy {
            allowed_dns_suffixes: self
                .allow_dns_suffix
                .iter()
                .map(|s| s.trim_start_matches('.').trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            allowed_ip_ranges: self
                .allow_ip_range
                .iter()
                .map(|r| cfg::parse_cidr(r).map_err(|p| anyhow::anyhow!("--allow-ip-range: {p}")))
                .collect::<Result<Vec<_>>>()?,
            max_identifiers: self.max_identifiers,
            ..NamePolicy::default()
        };
        let mut config = AcmeServeConfig::new(self.listen, self.db, tls, leaf, names);
        config.external_url = self.external_url;
        let iss = &mut config.issuance;
        iss.default_lifetime = cfg::parse_duration("--lifetime", &self.lifetime)?;
        iss.max_lifetime = iss.max_lifetime.max(iss.default_lifetime);
        iss.require_eab = self.require_eab;
        for arg in &self.profiles {
            let (name, path) = cfg::parse_profile_arg(arg)?;
            iss.profiles.push((name, cfg::load_template(&path)?));
        }
        iss.default_profile = self.default_profile;
        iss.ari_window_start = self.ari_window_start;
        let deadline =
            cfg::parse_secs(&self.finalize_deadline).map_err(|p| anyhow::anyhow!("--finalize-deadline: {p}"))?;
        iss.finalize_deadline = std::time::Duration::from_secs(deadline);
        if let Some(path) = &self.rate_limits {
            config.rate_limits = cfg::load_limits(path)?;
        }
        if let Some(listen) = self.crl_listen {
            let mut crl = CrlSettings::new(listen);
            crl.refresh = cfg::parse_duration("--crl-refresh", &self.crl_refresh)?;
            crl.validity = cfg::parse_duration("--crl-validity", &self.crl_validity)?;
            config.crl = Some(crl);
        }
        config.purge_interval = cfg::parse_duration("--purge-interval", &self.purge_interval)?;
        config.checkpoint_interval = cfg::parse_duration("--checkpoint-interval", &self.checkpoint_interval)?;
        config.validation = ValidationSettings {
            resolver: self.dns,
            http01_port: self.http01_port,
            tls_alpn01_port: self.tlsalpn01_port,
            caa_identities: self.caa_identity.iter().map(|i| i.trim_end_matches('.').to_ascii_lowercase()).collect(),
            ..ValidationSettings::default()
        };
        Ok(config)
    }
}

/// The audit log for EAB key management: appended to if it exists.
fn eab_audit_log(path: &Path) -> Result<audit::AuditLog> {
    const CEREMONY: &str = "acme-eab";
    // This log has no audit key and no checkpoint yet, so nothing can pin
    // it: it is continued on its own consistency, explicitly.
    let log = if path.exists() {
        audit::AuditLog::open_append(path, CEREMONY, &audit::VerifyOptions::unpinned()).map(|(log, _)| log)
    } else {
        audit::AuditLog::create(path, CEREMONY)
    };
    log.with_context(|| format!("audit log {}", path.display()))
}

/// `keyrite acme …`.
pub(super) fn run(cmd: AcmeCommand) -> Result<ExitCode> {
    match cmd {
        AcmeCommand::Eab(cmd) => run_eab(cmd)?,
        AcmeCommand::IssuanceLog(IssuanceLogCommand::Export { db, out }) => export_issuance_log(&db, &out)?,
        AcmeCommand::Bench(args) => return super::bench::run_bench(args),
    }
    Ok(ExitCode::SUCCESS)
}

/// `keyrite acme issuance-log export`.
fn export_issuance_log(db: &Path, out: &Path) -> Result<()> {
    use crate::acme::store::{export_issuance_log, sqlite::SqliteStore};
    let store = SqliteStore::open(db).with_context(|| format!("database {}", db.display()))?;
    let done = export_issuance_log(&store, out).with_context(|| format!("exporting to {}", out.display()))?;
    println!("{}: {} entries, through the latest checkpoint", out.display(), done.entries);
    if done.after_checkpoint > 0 {
        println!("{} newer entries wait for the next checkpoint and the next export", done.after_checkpoint);
    }
    for key in &done.audit_keys {
        println!("audit key        {key}");
    }
    println!(
        "Check it with: keyrite audit verify {} --audit-key-sha256 <the audit key's SHA-256> --allow-open",
        out.display()
    );
    Ok(())
}

/// `keyrite acme eab …`: the same database file acme-serve uses.
fn run_eab(cmd: EabCommand) -> Result<()> {
    use crate::acme::eab::EabPolicy;
    use crate::acme::store::{create_eab_key, sqlite::SqliteStore, Store};
    use crate::config::acme as cfg;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    match cmd {
        EabCommand::Create {
            db,
            audit_log,
            dns_suffix,
            ip_range,
            no_wildcards,
            profile,
            max_lifetime,
            expires_in,
            multi_use,
            note,
            actor,
        } => {
            let policy = EabPolicy {
                dns_suffixes: dns_suffix.iter().map(|s| crate::acme::eab::normalize_suffix(s)).collect(),
                ip_ranges: ip_range
                    .iter()
                    .map(|r| cfg::parse_cidr(r).map_err(|p| anyhow::anyhow!("--ip-range: {p}")))
                    .collect::<Result<Vec<_>>>()?,
                wildcards: !no_wildcards,
                profiles: profile,
                max_lifetime_secs: max_lifetime
                    .map(|l| cfg::parse_duration("--max-lifetime", &l).map(secs))
                    .transpose()?,
            };
            let expires_at = expires_in
                .map(|e| cfg::parse_duration("--expires-in", &e).map(|d| now.saturating_add(secs(d))))
                .transpose()?;
            // The log first: a key that exists must have been recorded.
            let mut log = eab_audit_log(&audit_log)?;
            let store = SqliteStore::open(&db).with_context(|| format!("database {}", db.display()))?;
            let (key, mac) = create_eab_key(&store, policy, expires_at, multi_use, note, now)?;
            let mut event = audit::Event::new("eab", "eab-key-created")
                .detail("kid", key.kid.clone())
                .detail("policy", serde_json::to_value(&key.policy)?)
                .detail("multi_use", key.multi_use)
                .detail("note", key.note.clone());
            if let Some(e) = key.expires_at {
                event = event.detail("expires", crate::acme::model::rfc3339(e));
            }
            if let Some(a) = actor {
                event = event.actor(a);
            }
            log.append(event)?;
            println!("kid  {}", key.kid);
            println!("hmac {}", crate::acme::jws::b64_encode(mac.expose()));
            eprintln!("The HMAC is shown only now; hand it over on a channel you trust.");
        }
        EabCommand::List { db } => {
            let store = SqliteStore::open(&db).with_context(|| format!("database {}", db.display()))?;
            for k in store.eab_keys()? {
                let state = match (k.revoked_at, k.expires_at) {
                    (Some(_), _) => "revoked",
                    (None, Some(e)) if e <= now => "expired",
                    _ => "active",
                };
                let expires = k.expires_at.map(crate::acme::model::rfc3339).unwrap_or_else(|| "never".into());
                let uses = if k.multi_use { "multi-use" } else { "single-use" };
                println!(
                    "{}  {state}  {uses}  accounts={}  expires={expires}  {}  {}",
                    k.kid,
                    k.bound_accounts,
                    k.policy.describe(),
                    k.note
                );
            }
        }
        EabCommand::Revoke { db, audit_log, actor, kid } => {
            let mut log = eab_audit_log(&audit_log)?;
            let store = SqliteStore::open(&db).with_context(|| format!("database {}", db.display()))?;
            if !store.revoke_eab_key(&kid, now)? {
                bail!("no active EAB key {kid:?}");
            }
            let mut event = audit::Event::new("eab", "eab-key-revoked").detail("kid", kid.clone());
            if let Some(a) = actor {
                event = event.actor(a);
            }
            log.append(event)?;
            println!("revoked {kid}");
        }
    }
    Ok(())
}
