//! The leaves' revocation list: signed by the intermediate on the signer
//! thread, kept in memory, and served over plain HTTP at the path of the
//! URL the leaf templates put in their cRLDistributionPoints.
//!
//! Plain HTTP on purpose (RFC 5280 §4.2.1.13): a relying party checking a
//! TLS certificate must not need TLS to fetch its CRL, and the CRL is signed.
//!
//! A new CRL is made at start, at once on every revocation through this
//! instance (the revocation answers only after it), whenever the store shows
//! a revocation made by another instance (checked every
//! [`CHECK_EVERY`]), and at least every `refresh`. Each carries a fresh
//! number from the store's shared sequence, so numbers grow across restarts
//! and instances, and its issuingDistributionPoint is the very URL the
//! leaves name, which is what scopes it for OpenSSL and browsers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::ca::{CaError, CrlRequest, SignerHandle};
use super::clock::{span, ClockExt, SharedClock};
use super::store::{blocking, Store, StoreError};
use crate::ca::RevocationReason;
use crate::config::acme::CrlSettings;

/// How often the store is asked whether another instance revoked something.
pub const CHECK_EVERY: Duration = Duration::from_secs(30);

/// Why a CRL was not published. Messages carry their cause's text; no
/// variant has a `#[source]`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrlError {
    /// The store could not list revocations or give a CRL number.
    #[error("CRL: the store failed: {0}")]
    Store(StoreError),
    /// The signer could not build, lint, sign or verify the CRL.
    #[error("CRL: {0}")]
    Signer(CaError),
    /// A stored serial is not hex: the database was edited.
    #[error("CRL: stored serial {0:?} is not hex")]
    BadSerial(String),
    /// The CRL listener could not be bound.
    #[error("cannot listen for the CRL on {addr}: {cause}")]
    Bind { addr: SocketAddr, cause: String },
}

/// One published CRL.
struct Published {
    der: Arc<Vec<u8>>,
    etag: String,
    this_update: OffsetDateTime,
}

/// The revocation mark the last CRL was made from, and when it was made.
type LastGeneration = (Option<(i64, i64)>, Option<Instant>);

/// The CRLs this instance serves, one per distribution-point URL, and
/// what it needs to make new ones (and nothing more).
pub struct CrlPublisher {
    settings: CrlSettings,
    /// URL path → full URL (the issuingDistributionPoint).
    points: BTreeMap<String, String>,
    store: Arc<dyn Store>,
    signer: Arc<SignerHandle>,
    clock: SharedClock,
    current: Mutex<BTreeMap<String, Published>>,
    /// One regeneration at a time; holds the revocation mark it saw and when.
    generation: tokio::sync::Mutex<LastGeneration>,
}

impl CrlPublisher {
    /// `points` maps each URL path to the distribution-point URL the leaf
    /// templates name (`IssuanceSettings::crl_distribution_points`).
    pub fn new(
        settings: CrlSettings,
        points: BTreeMap<String, String>,
        store: Arc<dyn Store>,
        signer: Arc<SignerHandle>,
        clock: SharedClock,
    ) -> Self {
        CrlPublisher {
            settings,
            points,
            store,
            signer,
            clock,
            current: Mutex::new(BTreeMap::new()),
            generation: tokio::sync::Mutex::new((None, None)),
        }
    }

    pub fn urls(&self) -> impl Iterator<Item = &str> {
        self.points.values().map(String::as_str)
    }

    /// Signs and publishes a fresh CRL for every distribution point.
    pub async fn regenerate(&self) -> Result<(), CrlError> {
        let mut gen = self.generation.lock().await;
        self.regenerate_locked(&mut gen).await
    }

    async fn regenerate_locked(&self, gen: &mut LastGeneration) -> Result<(), CrlError> {
        let now = self.clock.now_second();
        let now_secs = now.unix_timestamp();
        let (mark, revoked) = blocking(&self.store, move |st| {
            // The mark first: a revocation landing between the two reads
            // then shows as a changed mark on the next check.
            let mark = st.revocation_mark()?;
            Ok((mark, st.revoked_unexpired(now_secs)?))
        })
        .await
        .map_err(CrlError::Store)?;
        let mut entries = Vec::with_capacity(revoked.len());
        for r in &revoked {
            let serial = hex::decode(&r.serial_hex).map_err(|_| CrlError::BadSerial(r.serial_hex.clone()))?;
            let at = OffsetDateTime::from_unix_timestamp(r.revoked_at).unwrap_or(now);
            let reason = RevocationReason::from_code(r.reason).unwrap_or(RevocationReason::Unspecified);
            entries.push((serial, at, reason));
        }
        let validity = span(self.settings.validity);
        let mut fresh = BTreeMap::new();
        for (path, url) in &self.points {
            let number =
                blocking(&self.store, |st| st.next_sequence("leaf-crl-number")).await.map_err(CrlError::Store)?;
            let signed = self
                .signer
                .sign_crl(CrlRequest {
                    crl_number: number,
                    this_update: now,
                    next_update: now + validity,
                    entries: entries.clone(),
                    distribution_point: url.clone(),
                })
                .await
                .map_err(CrlError::Signer)?;
            let etag = format!("\"{}\"", signed.fingerprint.hex.get(..32).unwrap_or(&signed.fingerprint.hex));
            tracing::info!(url = %url, number, entries = signed.entries, "leaf CRL published");
            fresh.insert(path.clone(), Published { der: Arc::new(signed.der), etag, this_update: now });
        }
        if let Ok(mut current) = self.current.lock() {
            *current = fresh;
        }
        *gen = (Some(mark), Some(Instant::now()));
        Ok(())
    }

    /// Regenerates if the store shows a revocation this CRL lacks, or the
    /// CRL is older than the refresh interval.
    async fn refresh_if_due(&self) -> Result<(), CrlError> {
        let mut gen = self.generation.lock().await;
        let mark = blocking(&self.store, |st| st.revocation_mark()).await.map_err(CrlError::Store)?;
        let stale = gen.1.is_none_or(|at| at.elapsed() >= self.settings.refresh);
        if stale || gen.0 != Some(mark) {
            self.regenerate_locked(&mut gen).await?;
        }
        Ok(())
    }

    fn respond(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Response {
        if method != Method::GET && method != Method::HEAD {
            return (StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n").into_response();
        }
        let current = match self.current.lock() {
            Ok(c) => c,
            Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        };
        let Some(p) = current.get(uri.path()) else {
            return (StatusCode::NOT_FOUND, "no CRL at this path\n").into_response();
        };
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&p.etag) {
            h.insert(header::ETAG, v);
        }
        if let Some(v) = http_date(p.this_update).and_then(|d| HeaderValue::from_str(&d).ok()) {
            h.insert(header::LAST_MODIFIED, v);
        }
        // Short: a revocation must reach relying parties within minutes,
        // and the CRL is cheap to fetch again.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=60"));
        if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(p.etag.as_str()) {
            return (StatusCode::NOT_MODIFIED, h).into_response();
        }
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/pkix-crl"));
        let body = if method == Method::HEAD { Body::empty() } else { Body::from(p.der.as_ref().clone()) };
        if method == Method::HEAD {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(p.der.len()));
        }
        (StatusCode::OK, h, body).into_response()
    }
}

/// RFC 9110 §5.6.7 IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(t: OffsetDateTime) -> Option<String> {
    let f = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.to_offset(time::UtcOffset::UTC).format(&f).ok()
}

/// Binds the CRL listener.
pub async fn bind(settings: &CrlSettings) -> Result<TcpListener, CrlError> {
    TcpListener::bind(settings.listen).await.map_err(|e| CrlError::Bind { addr: settings.listen, cause: e.to_string() })
}

/// Serves the CRLs and keeps them fresh until `stop` turns true.
pub async fn run(publisher: Arc<CrlPublisher>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let handler = {
        let publisher = publisher.clone();
        move |method: Method, uri: Uri, headers: HeaderMap| {
            let publisher = publisher.clone();
            async move { publisher.respond(&method, &uri, &headers) }
        }
    };
    let app = axum::Router::new().fallback(handler);
    let mut stop_serving = stop.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop_serving.changed().await;
    });
    let refresher = async move {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = tick.tick() => {
                    if let Err(e) = publisher.refresh_if_due().await {
                        tracing::error!(error = %e, "leaf CRL not refreshed; the previous one is still served");
                    }
                }
            }
        }
    };
    let (served, ()) = tokio::join!(server, refresher);
    if let Err(e) = served {
        tracing::error!(error = %e, "CRL listener stopped");
    }
}
