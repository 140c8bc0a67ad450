//! Starting and stopping acme-serve: the one place that wires the rooms
//! together. Each component gets its part of the configuration and the
//! handles it needs, nothing more: the registration authority its issuance
//! policy, the CRL publisher the store, the signer and the clock, the
//! certificate renewal task the issuance engine, housekeeping the store and
//! the limiter, the issuance keeper the engine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use super::ca::{CaError, Issuer, SignerHandle};
use super::clock::{self, secs, ClockExt, SharedClock};
use super::crl::{self, CrlError, CrlPublisher};
use super::issuance_log::LogHead;
use super::nonce::{NonceError, NonceService};
use super::ra::issuance::{IssuanceEngine, IssuanceError, Recovered};
use super::ra::validity::IssuerWindow;
use super::ra::{Ra, RaDeps};
use super::ratelimit::Limiter;
use super::store::sqlite::SqliteStore;
use super::store::{blocking, Purged, Store, StoreError};
use super::tls::{self, TlsError};
use super::va::Validator;
use super::wfe::{self, ClientIp, DirectoryMeta, Wfe};
use crate::config::acme::{AcmeConfigError, AcmeServeConfig, TlsSettings};

/// How often interrupted issuances past their deadline are looked for.
pub const RECOVER_EVERY: Duration = Duration::from_secs(5);

/// Why the server did not start (or a maintenance pass failed). Messages
/// carry their cause's text; no variant has a `#[source]`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcmeError {
    /// The configuration breaks a rule; nothing was started or created.
    #[error("configuration: {0}")]
    Config(AcmeConfigError),
    /// The address is in use or not ours.
    #[error("cannot listen on {addr}: {cause}")]
    Bind { addr: SocketAddr, cause: String },
    /// The database could not be opened or used.
    #[error("store: {0}")]
    Store(StoreError),
    /// The signer could not be started (a wrong PIN, a missing key, an audit
    /// key that is the CA key).
    #[error("CA: {0}")]
    Ca(CaError),
    /// The server's own certificate could not be set up.
    #[error("{0}")]
    Tls(TlsError),
    /// The first CRL could not be published.
    #[error("{0}")]
    Crl(CrlError),
    /// The nonce service could not be made.
    #[error("nonce service: {0}")]
    Nonce(NonceError),
    /// The issuing certificate is not usable (no subjectKeyIdentifier, does
    /// not parse).
    #[error("the issuing certificate cannot be used: {0}")]
    Issuer(String),
    /// The issuance log could not be checkpointed, or an interrupted
    /// issuance resolved.
    #[error("{0}")]
    Issuance(IssuanceError),
    /// A background task failed to run.
    #[error("{what} task: {cause}")]
    Task { what: &'static str, cause: String },
}

/// A started server. Dropping it does not stop it; call [`shutdown`](Self::shutdown).
pub struct RunningServer {
    local_addr: SocketAddr,
    base_url: String,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    crl_addr: Option<SocketAddr>,
    tls_cert: Arc<tls::CurrentCert>,
    signer: Arc<SignerHandle>,
    issuance: Arc<IssuanceEngine>,
    housekeeping: Housekeeping,
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
    pub async fn purge_now(&self) -> Result<Purged, AcmeError> {
        self.housekeeping.run().await
    }

    /// Resolves interrupted issuances past their deadline now (it also
    /// runs every [`RECOVER_EVERY`]).
    pub async fn recover_now(&self) -> Result<Recovered, AcmeError> {
        self.issuance.recover().await.map_err(AcmeError::Store)
    }

    /// Signs an issuance log checkpoint now if the log grew since the last
    /// one (it also runs on its schedule and at shutdown).
    pub async fn checkpoint_now(&self) -> Result<Option<LogHead>, AcmeError> {
        self.issuance.checkpoint().await.map_err(AcmeError::Issuance)
    }

    /// Stops accepting, closes open connections, signs a last checkpoint
    /// over what this run logged, and stops the signer thread after the
    /// jobs it already has.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        if let Err(e) = self.issuance.checkpoint().await {
            tracing::error!(error = %e, "no final issuance log checkpoint; the next start signs one");
        }
        let signer = self.signer.clone();
        let _ = tokio::task::spawn_blocking(move || signer.stop()).await;
    }
}

/// Starts the server on the system clock and returns once it listens.
pub async fn start(config: AcmeServeConfig, issuer: Issuer) -> Result<RunningServer, AcmeError> {
    start_with_clock(config, issuer, clock::system()).await
}

/// Starts the server reading time from `clock` (tests may run it ahead).
pub async fn start_with_clock(
    config: AcmeServeConfig,
    issuer: Issuer,
    clock: SharedClock,
) -> Result<RunningServer, AcmeError> {
    config.check().map_err(AcmeError::Config)?;
    let AcmeServeConfig {
        listen,
        external_url,
        database,
        tls: tls_settings,
        issuance: settings,
        validation,
        rate_limits,
        crl: crl_settings,
        purge_interval,
        checkpoint_interval,
        nonce_lifetime,
        terms_of_service,
        website,
    } = config;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&database).map_err(AcmeError::Store)?);
    let nonce_key = {
        let mut fresh = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(fresh.as_mut()).map_err(|_| AcmeError::Nonce(NonceError::Rng))?;
        // Shared by every instance on this store; made once.
        Zeroizing::new(store.meta_get_or_init("nonce-hmac-key", fresh.as_ref()).map_err(AcmeError::Store)?)
    };
    let nonces = NonceService::new(&nonce_key, nonce_lifetime.as_secs()).map_err(AcmeError::Nonce)?;

    let Issuer { certificate_der, chain_pem, keys } = issuer;
    // A leaf whose AKI is not this key was issued by a previous
    // intermediate: ARI tells its holder to renew now.
    let issuer_key_id = super::ari::subject_key_id(&certificate_der).map_err(|e| AcmeError::Issuer(e.to_string()))?;
    let summary =
        crate::profile::certificate_summary(&certificate_der).map_err(|e| AcmeError::Issuer(e.to_string()))?;
    let window = IssuerWindow { not_before: summary.not_before, not_after: summary.not_after };
    let signer = {
        let profile = settings.leaf_profile.clone();
        tokio::task::spawn_blocking(move || SignerHandle::start(certificate_der, profile, keys))
            .await
            .map_err(|e| AcmeError::Task { what: "signer start", cause: e.to_string() })?
            .map_err(AcmeError::Ca)?
    };
    let signer = Arc::new(signer);
    let issuance = Arc::new(IssuanceEngine::new(
        store.clone(),
        signer.clone(),
        clock.clone(),
        chain_pem.clone(),
        settings.finalize_deadline,
        window,
    ));
    // What an earlier run left unfinished is resolved before anything new,
    // and this run's audit key is announced and checkpointed at once.
    issuance.recover().await.map_err(AcmeError::Store)?;
    issuance.checkpoint().await.map_err(AcmeError::Issuance)?;

    let (tls_cert, reissue) = match tls_settings {
        TlsSettings::Provided { chain_der, key_pkcs8_der } => {
            (tls::from_files(chain_der, key_pkcs8_der).map_err(AcmeError::Tls)?, None)
        }
        TlsSettings::IssueAtStart { names, lifetime } => {
            let (current, reissue) = tls::issue_at_start(
                issuance.clone(),
                clock.clone(),
                &settings.leaf_profile,
                names,
                &chain_pem,
                lifetime,
            )
            .await
            .map_err(AcmeError::Tls)?;
            (current, Some(reissue))
        }
    };
    let tls_config = tls::server_config(tls_cert.clone()).map_err(AcmeError::Tls)?;

    let points = settings.crl_distribution_points().map_err(AcmeError::Config)?;
    let crl = match &crl_settings {
        Some(cs) => {
            let publisher =
                Arc::new(CrlPublisher::new(cs.clone(), points, store.clone(), signer.clone(), clock.clone()));
            // The first CRL exists before any client can ask for it.
            publisher.regenerate().await.map_err(AcmeError::Crl)?;
            Some((publisher, crl::bind(cs).await.map_err(AcmeError::Crl)?))
        }
        None => {
            if let Some(url) = points.values().next() {
                tracing::warn!(%url, "the leaf templates name a CRL URL but --crl-listen is not set; publish it elsewhere");
            }
            None
        }
    };
    let listener =
        TcpListener::bind(listen).await.map_err(|e| AcmeError::Bind { addr: listen, cause: e.to_string() })?;
    let local_addr = listener.local_addr().map_err(|e| AcmeError::Bind { addr: listen, cause: e.to_string() })?;
    let base_url = external_url.unwrap_or_else(|| format!("https://{local_addr}"));
    let base_url = base_url.trim_end_matches('/').to_string();

    let limiter = Arc::new(Limiter::new(rate_limits));
    let housekeeping = Housekeeping {
        store: store.clone(),
        limiter: limiter.clone(),
        clock: clock.clone(),
        // At least an order's lifetime: an authorization reused by a live
        // order then outlives it (see Store::purge_expired).
        grace_secs: secs(settings.order_lifetime),
    };
    let ra = Ra::new(
        settings,
        RaDeps {
            store: store.clone(),
            clock: clock.clone(),
            limiter,
            issuance: issuance.clone(),
            validator: Arc::new(Validator::new(validation)),
            crl: crl.as_ref().map(|(p, _)| p.clone()),
            issuer_key_id,
        },
    );
    let meta = DirectoryMeta { terms_of_service, website };
    let app = wfe::router(Arc::new(Wfe::new(base_url.clone(), nonces, store, ra, clock, meta)));

    let (stop, stop_rx) = watch::channel(false);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config));
    let mut tasks = Vec::new();
    let crl_addr = match crl {
        Some((publisher, listener)) => {
            let addr = listener.local_addr().map_err(|e| AcmeError::Bind { addr: local_addr, cause: e.to_string() })?;
            tasks.push(tokio::spawn(crl::run(publisher, listener, stop_rx.clone())));
            tracing::info!(%addr, "leaf CRL served over plain HTTP");
            Some(addr)
        }
        None => None,
    };
    if let Some(r) = reissue {
        tasks.push(tokio::spawn(tls::keep_renewed(tls_cert.clone(), r, stop_rx.clone())));
    }
    tasks.push(tokio::spawn(housekeeping.clone().every(purge_interval, stop_rx.clone())));
    tasks.push(tokio::spawn(keep_issuance(issuance.clone(), checkpoint_interval, stop_rx.clone())));
    tasks.push(tokio::spawn(accept_loop(listener, acceptor, app, stop_rx)));
    tracing::info!(%local_addr, base = %base_url, "ACME server listening");
    Ok(RunningServer { local_addr, base_url, stop, tasks, crl_addr, tls_cert, signer, issuance, housekeeping })
}

/// Runs until `shutdown` completes.
pub async fn serve(
    config: AcmeServeConfig,
    issuer: Issuer,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), AcmeError> {
    let server = start(config, issuer).await?;
    shutdown.await;
    server.shutdown().await;
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
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
                    let client = ClientIp(peer.ip());
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

/// Housekeeping's handles: the store's expired rows, the limiter's full
/// keys.
#[derive(Clone)]
struct Housekeeping {
    store: Arc<dyn Store>,
    limiter: Arc<Limiter>,
    clock: SharedClock,
    grace_secs: i64,
}

impl Housekeeping {
    /// One pass: the store's expired rows, then the rate-limit keys whose
    /// allowance is full again.
    async fn run(&self) -> Result<Purged, AcmeError> {
        let (now, grace) = (self.clock.unix(), self.grace_secs);
        let purged = blocking(&self.store, move |st| st.purge_expired(now, grace)).await.map_err(AcmeError::Store)?;
        let keys = self.limiter.prune(self.clock.unix_ms());
        if purged != Purged::default() || keys > 0 {
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

    async fn every(self, interval: Duration, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => {
                    if let Err(e) = self.run().await {
                        tracing::error!(error = %e, "housekeeping failed; it runs again on schedule");
                    }
                }
            }
        }
    }
}

/// The issuance engine's schedule: interrupted issuances resolved every
/// [`RECOVER_EVERY`], the log checkpointed every `checkpoint_interval`.
async fn keep_issuance(engine: Arc<IssuanceEngine>, checkpoint_interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut recover = tokio::time::interval(RECOVER_EVERY);
    recover.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut checkpoint = tokio::time::interval(checkpoint_interval);
    checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The start has just done both.
    recover.tick().await;
    checkpoint.tick().await;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = recover.tick() => {
                if let Err(e) = engine.recover().await {
                    tracing::error!(error = %e, "resolving interrupted issuances failed; retrying");
                }
            }
            _ = checkpoint.tick() => {
                if let Err(e) = engine.checkpoint().await {
                    tracing::error!(error = %e, "issuance log checkpoint failed; retrying on schedule");
                }
            }
        }
    }
}
