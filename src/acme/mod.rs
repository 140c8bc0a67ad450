//! The `acme` room: `keyrite acme-serve`, an RFC 8555 ACME server that
//! issues short-lived TLS leaves from keyrite's intermediate.
//!
//! Split by job, like Pebble: [`wfe`] (HTTP handlers and request
//! verification), [`jws`], [`nonce`], [`problem`], [`identifier`] (syntax and
//! policy), [`model`] (state machines), [`store`] (the `Store` trait and its
//! SQLite implementation), [`va`] (validation), [`ari`] (RFC 9773 renewal
//! information) and [`ca`] (CSR checks and the signer thread). [`start`] is
//! the entry point: it binds, issues the server's own TLS certificate if
//! asked, and returns the bound address so tests can listen on port 0.

pub mod ari;
pub mod bench;
pub mod ca;
pub mod caa;
pub mod client;
pub mod crl;
pub mod eab;
pub mod identifier;
pub mod jws;
pub mod launch;
pub mod model;
pub mod nonce;
pub mod problem;
pub mod ratelimit;
pub mod store;
pub mod tls;
pub mod va;
pub mod wfe;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

pub use ca::{Issuer, SignerFactory};
pub use identifier::Policy;
pub use va::ValidationConfig;

use crate::profile::{Profile, San};

/// Where the server's own HTTPS certificate comes from.
pub enum TlsSource {
    /// A certificate chain (leaf first, DER) and its PKCS#8 private key.
    Provided { chain_der: Vec<Vec<u8>>, key_pkcs8_der: Zeroizing<Vec<u8>> },
    /// Issue one at start from the intermediate, with a fresh P-256 key
    /// that never leaves memory, for these names, and renew it (new key)
    /// at two thirds of its lifetime (see [`tls`]).
    IssueAtStart { names: Vec<San> },
}

/// Everything `acme-serve` needs besides the issuer.
pub struct ServerConfig {
    /// Where to listen (port 0 picks a free port; see [`RunningServer::local_addr`]).
    pub listen: SocketAddr,
    /// The base URL clients use (`https://acme.example.net`); `None` means
    /// `https://<bound address>`. Every `url` in a JWS is checked against it.
    pub external_url: Option<String>,
    /// The SQLite database file (created if missing).
    pub database: PathBuf,
    pub tls: TlsSource,
    /// The leaf template (`templates/tls-leaf.toml`).
    pub leaf_profile: Profile,
    pub policy: Policy,
    pub validation: ValidationConfig,
    /// Certificate lifetime when the order names none (24 h).
    pub default_lifetime: Duration,
    /// The longest lifetime an order's notBefore/notAfter may ask for.
    pub max_lifetime: Duration,
    /// How long a pending order (and its authorizations) lives.
    pub order_lifetime: Duration,
    /// How long a valid authorization counts (for revocation by an
    /// authorized account).
    pub authz_valid_lifetime: Duration,
    /// How long a nonce is accepted.
    pub nonce_lifetime: Duration,
    pub terms_of_service: Option<String>,
    pub website: Option<String>,
    /// Refuse new accounts without an External Account Binding (keys from
    /// `keyrite acme eab create`). Bindings are verified, and their policy
    /// applied, whether or not they are required.
    pub require_eab: bool,
    /// ACME profiles (draft-aaron-acme-profiles), by name, advertised in
    /// `meta.profiles`. Empty: no profiles, and an order naming one is refused.
    pub profiles: Vec<(String, Profile)>,
    /// The profile of orders that name none; `None` is `leaf_profile`.
    pub default_profile: Option<String>,
    /// Where the ARI suggested window starts, as a fraction of a
    /// certificate's lifetime (RFC 9773; 2/3 by default).
    pub ari_window_start: f64,
    /// Rate limits (see [`ratelimit`]).
    pub rate_limits: ratelimit::Limits,
    /// The leaves' CRL over plain HTTP; `None` serves none.
    pub crl: Option<crl::CrlConfig>,
    /// How often expired nonces, orders and authorizations are purged.
    pub purge_interval: Duration,
    /// Lifetime of the server's own certificate under
    /// [`TlsSource::IssueAtStart`]; `None` is the leaf template's default.
    pub server_cert_lifetime: Option<Duration>,
}

impl ServerConfig {
    /// Defaults for everything but the essentials.
    pub fn new(listen: SocketAddr, database: PathBuf, tls: TlsSource, leaf_profile: Profile, policy: Policy) -> Self {
        ServerConfig {
            listen,
            external_url: None,
            database,
            tls,
            leaf_profile,
            policy,
            validation: ValidationConfig::default(),
            default_lifetime: Duration::from_secs(24 * 3600),
            max_lifetime: Duration::from_secs(7 * 24 * 3600),
            order_lifetime: Duration::from_secs(24 * 3600),
            authz_valid_lifetime: Duration::from_secs(7 * 24 * 3600),
            nonce_lifetime: Duration::from_secs(3600),
            terms_of_service: None,
            website: None,
            require_eab: false,
            profiles: Vec::new(),
            default_profile: None,
            ari_window_start: ari::DEFAULT_WINDOW_START,
            rate_limits: ratelimit::Limits::default(),
            crl: None,
            purge_interval: Duration::from_secs(300),
            server_cert_lifetime: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcmeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(store::StoreError),
    #[error("CA: {0}")]
    Ca(ca::CaError),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("nonce service: {0}")]
    Nonce(nonce::NonceError),
    #[error("configuration: {0}")]
    Config(String),
}

/// A started server. Dropping it does not stop it; call [`shutdown`](Self::shutdown).
pub struct RunningServer {
    local_addr: SocketAddr,
    base_url: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    crl_task: Option<JoinHandle<()>>,
    crl_addr: Option<SocketAddr>,
    tls_task: Option<JoinHandle<()>>,
    tls_cert: Arc<tls::CurrentCert>,
    state: wfe::Shared,
}

impl RunningServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn directory_url(&self) -> String {
        format!("{}/acme/directory", self.base_url)
    }

    /// The server's own TLS leaf being served now (DER).
    pub fn tls_leaf_der(&self) -> Option<Vec<u8>> {
        self.tls_cert.leaf_der()
    }

    /// Where the plain-HTTP CRL listener is bound, if there is one.
    pub fn crl_addr(&self) -> Option<SocketAddr> {
        self.crl_addr
    }

    /// Runs one housekeeping pass now (it also runs on its schedule).
    pub async fn purge_now(&self) -> Result<store::Purged, AcmeError> {
        housekeeping(&self.state).await
    }

    /// Stops accepting, closes open connections, and stops the signer
    /// thread after the jobs it already has.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        for t in [self.crl_task, self.tls_task].into_iter().flatten() {
            let _ = t.await;
        }
        let state = self.state.clone();
        let _ = tokio::task::spawn_blocking(move || state.signer.stop()).await;
    }
}

/// Seconds in `30s`, `15m`, `3h` or `7d` (the durations of acme-serve's
/// options and of the rate limits file).
pub fn parse_secs(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a duration like 30s, 15m, 3h or 7d");
    let (num, unit) = text.split_at(text.len().saturating_sub(1));
    let n: u64 = num.parse().map_err(|_| bad())?;
    match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(bad)
}

pub(crate) fn to_time(d: Duration) -> time::Duration {
    time::Duration::seconds(i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2))
}

/// Starts the server and returns once it listens.
pub async fn start(config: ServerConfig, issuer: Issuer) -> Result<RunningServer, AcmeError> {
    let store: Arc<dyn store::Store> = Arc::new(store::sqlite::SqliteStore::open(&config.database)?);
    let nonce_key = {
        use aws_lc_rs::rand::{SecureRandom, SystemRandom};
        let mut fresh = Zeroizing::new([0u8; 32]);
        SystemRandom::new().fill(fresh.as_mut()).map_err(|_| AcmeError::Nonce(nonce::NonceError::Rng))?;
        // Shared by every instance on this store; made once.
        Zeroizing::new(store.meta_get_or_init("nonce-hmac-key", fresh.as_ref())?)
    };
    let nonces = nonce::NonceService::new(&nonce_key, config.nonce_lifetime.as_secs())?;
    if let Some(d) = &config.default_profile {
        if !config.profiles.iter().any(|(n, _)| n == d) {
            return Err(AcmeError::Config(format!("the default profile {d:?} is not one of the profiles")));
        }
    }
    for (name, p) in &config.profiles {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
            return Err(AcmeError::Config(format!("profile name {name:?}: use letters, digits, - _ .")));
        }
        if p.kind() != crate::profile::CertKind::Leaf {
            return Err(AcmeError::Config(format!("profile {name:?}: {} is not a leaf template", p.source())));
        }
    }

    ari::check_fraction(config.ari_window_start).map_err(AcmeError::Config)?;
    if !config.validation.caa_identities.is_empty() && config.validation.resolver.is_none() {
        return Err(AcmeError::Config("CAA checking (--caa-identity) needs a DNS resolver (--dns)".into()));
    }
    if config.purge_interval.is_zero() {
        return Err(AcmeError::Config("the purge interval must be positive".into()));
    }

    let Issuer { certificate_der, chain_pem, signer } = issuer;
    // A leaf whose AKI is not this key was issued by a previous
    // intermediate: ARI tells its holder to renew now.
    let issuer_key_id =
        ari::subject_key_id(&certificate_der).map_err(|e| AcmeError::Config(format!("the issuer certificate: {e}")))?;
    // An order may not ask for a certificate that outlives its issuer.
    let issuer_not_after = crate::profile::certificate_summary(&certificate_der)
        .map_err(|e| AcmeError::Config(format!("the issuer certificate: {e}")))?
        .not_after
        .unix_timestamp();
    let signer_handle = {
        let profile = config.leaf_profile.clone();
        tokio::task::spawn_blocking(move || ca::SignerHandle::start(certificate_der, profile, signer))
            .await
            .map_err(|e| AcmeError::Config(format!("signer start task: {e}")))??
    };

    let (tls_cert, reissue) = match config.tls {
        TlsSource::Provided { chain_der, key_pkcs8_der } => (tls::from_files(chain_der, key_pkcs8_der)?, None),
        TlsSource::IssueAtStart { names } => {
            let (current, reissue) = tls::issue_at_start(
                &signer_handle,
                &config.leaf_profile,
                names,
                &chain_pem,
                config.server_cert_lifetime,
            )
            .await?;
            (current, Some(reissue))
        }
    };
    let tls_config = tls::server_config(tls_cert.clone())?;

    let templates = || std::iter::once(&config.leaf_profile).chain(config.profiles.iter().map(|(_, p)| p));
    let crl = match &config.crl {
        Some(cc) => {
            let points = crl::distribution_points(templates())?;
            let publisher = Arc::new(crl::CrlPublisher::new(cc.clone(), points)?);
            // The first CRL exists before any client can ask for it.
            publisher.regenerate(&store, &signer_handle).await?;
            Some((publisher, crl::bind(cc).await?))
        }
        None => {
            if let Some(url) = templates().flat_map(|p| p.crl_distribution_points()).next() {
                tracing::warn!(%url, "the leaf templates name a CRL URL but --crl-listen is not set; publish it elsewhere");
            }
            None
        }
    };
    let listener =
        TcpListener::bind(config.listen).await.map_err(|source| AcmeError::Bind { addr: config.listen, source })?;
    let local_addr = listener.local_addr().map_err(|source| AcmeError::Bind { addr: config.listen, source })?;
    let base_url = config.external_url.clone().unwrap_or_else(|| format!("https://{local_addr}"));
    let base_url = base_url.trim_end_matches('/').to_string();

    let state = Arc::new(wfe::AppState {
        base: base_url.clone(),
        store,
        nonces,
        policy: config.policy,
        default_lifetime: to_time(config.default_lifetime),
        max_lifetime: to_time(config.max_lifetime),
        order_lifetime: to_time(config.order_lifetime),
        authz_valid_lifetime: to_time(config.authz_valid_lifetime),
        validator: Arc::new(va::Validator::new(config.validation)),
        signer: signer_handle,
        chain_pem,
        leaf_profile: config.leaf_profile,
        terms_of_service: config.terms_of_service,
        website: config.website,
        require_eab: config.require_eab,
        issuer_not_after,
        profiles: config.profiles,
        default_profile: config.default_profile,
        issuer_key_id,
        ari_window_start: config.ari_window_start,
        limiter: ratelimit::Limiter::new(config.rate_limits),
        crl: crl.as_ref().map(|(p, _)| p.clone()),
        // At least an order's lifetime: an authorization reused by a live
        // order then outlives it (see Store::purge_expired).
        purge_grace_secs: config.order_lifetime.as_secs().try_into().unwrap_or(i64::MAX),
    });
    let app = router(state.clone());
    let (stop, stop_rx) = watch::channel(false);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config));
    let (crl_task, crl_addr) = match crl {
        Some((publisher, listener)) => {
            let addr = listener.local_addr().map_err(|source| AcmeError::Bind { addr: local_addr, source })?;
            let task = tokio::spawn(crl::run(publisher, listener, state.store.clone(), state.clone(), stop_rx.clone()));
            tracing::info!(%addr, "leaf CRL served over plain HTTP");
            (Some(task), Some(addr))
        }
        None => (None, None),
    };
    let tls_task =
        reissue.map(|r| tokio::spawn(tls::keep_renewed(tls_cert.clone(), r, state.clone(), stop_rx.clone())));
    let task = tokio::spawn(accept_loop(listener, acceptor, app, stop_rx, state.clone(), config.purge_interval));
    tracing::info!(%local_addr, base = %base_url, "ACME server listening");
    Ok(RunningServer { local_addr, base_url, stop, task, crl_task, crl_addr, tls_task, tls_cert, state })
}

/// Runs until `shutdown` completes.
pub async fn serve(
    config: ServerConfig,
    issuer: Issuer,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AcmeError> {
    let server = start(config, issuer).await?;
    shutdown.await;
    server.shutdown().await;
    Ok(())
}

fn router(state: wfe::Shared) -> Router {
    use axum::routing::MethodRouter;
    let p = |m: MethodRouter<wfe::Shared>| m.fallback(wfe::method_not_allowed);
    Router::new()
        .route("/acme/directory", p(get(wfe::directory)))
        // The bare path too: clients are often configured by hand, and
        // `https://host/directory` is what Pebble and step-ca users type.
        .route("/directory", p(get(wfe::directory)))
        .route("/acme/new-nonce", p(get(wfe::new_nonce).head(wfe::new_nonce)))
        .route("/acme/new-account", p(post(wfe::new_account)))
        .route("/acme/acct/{id}", p(post(wfe::account)))
        .route("/acme/acct/{id}/orders", p(post(wfe::account_orders)))
        .route("/acme/key-change", p(post(wfe::key_change)))
        .route("/acme/new-order", p(post(wfe::new_order)))
        .route("/acme/order/{id}", p(post(wfe::order)))
        .route("/acme/order/{id}/finalize", p(post(wfe::finalize)))
        .route("/acme/authz/{id}", p(post(wfe::authz)))
        .route("/acme/chall/{authz}/{chall}", p(post(wfe::challenge)))
        .route("/acme/cert/{id}", p(post(wfe::certificate)))
        .route("/acme/revoke-cert", p(post(wfe::revoke_cert)))
        .route("/acme/renewal-info/{id}", p(get(wfe::renewal_info)))
        .fallback(wfe::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), wfe::limit_requests))
        .layer(axum::middleware::from_fn_with_state(state.clone(), wfe::response_headers))
        .with_state(state)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    mut stop: watch::Receiver<bool>,
    state: wfe::Shared,
    purge_interval: Duration,
) {
    let mut conns = tokio::task::JoinSet::new();
    let mut purge = tokio::time::interval(purge_interval);
    purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = purge.tick() => {
                if let Err(e) = housekeeping(&state).await {
                    tracing::error!(error = %e, "housekeeping failed; it runs again on schedule");
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let Ok((tcp, peer)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let app = app.clone();
                conns.spawn(async move {
                    let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await else {
                        return;
                    };
                    // The peer's address rides along for the per-IP limits.
                    let client = wfe::ClientIp(peer.ip());
                    let app = tower::ServiceBuilder::new()
                        .map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                            req.extensions_mut().insert(client);
                            req
                        })
                        .service(app);
                    let svc = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10))
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        }
    }
    conns.shutdown().await;
}

/// One housekeeping pass: the store's expired rows, then the rate-limit
/// keys whose allowance is full again.
async fn housekeeping(state: &wfe::Shared) -> Result<store::Purged, AcmeError> {
    let st = state.store.clone();
    let grace = state.purge_grace_secs;
    let purged = tokio::task::spawn_blocking(move || st.purge_expired(model::now(), grace))
        .await
        .map_err(|e| AcmeError::Config(format!("housekeeping task: {e}")))??;
    let keys = state.limiter.prune(ratelimit::now_ms());
    if purged != store::Purged::default() || keys > 0 {
        tracing::info!(
            nonces = purged.nonces,
            orders = purged.orders,
            authzs = purged.authzs,
            rate_limit_keys = keys,
            "housekeeping"
        );
    }
    Ok(purged)
}

/// The DER of each CERTIFICATE block in a PEM bundle.
fn pem_blocks(pem: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let tail = &rest[start..];
        let Some(end) = tail.find("-----END CERTIFICATE-----") else { break };
        let block = &tail[..end + "-----END CERTIFICATE-----".len()];
        if let Ok((_, der)) = pem_rfc7468::decode_vec(block.as_bytes()) {
            out.push(der);
        }
        rest = &tail[end + 1..];
    }
    out
}

// Not `#[from]`: the message already carries the cause, and a `source` as
// well would print it twice in an error chain.
impl From<store::StoreError> for AcmeError {
    fn from(e: store::StoreError) -> Self {
        AcmeError::Store(e)
    }
}

// Not `#[from]`: the message already carries the cause, and a `source` as
// well would print it twice in an error chain.
impl From<ca::CaError> for AcmeError {
    fn from(e: ca::CaError) -> Self {
        AcmeError::Ca(e)
    }
}

// Not `#[from]`: the message already carries the cause, and a `source` as
// well would print it twice in an error chain.
impl From<nonce::NonceError> for AcmeError {
    fn from(e: nonce::NonceError) -> Self {
        AcmeError::Nonce(e)
    }
}
