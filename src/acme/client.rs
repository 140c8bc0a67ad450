//! keyrite's own ACME client: one complete issuance (account, order,
//! http-01 answered by its own responder, finalize, download) against any
//! RFC 8555 directory. The rehearsal ends with it, and the load generator
//! drives many of them at once.
//!
//! The protocol side is `instant-acme` (a maintained client, on the same
//! aws-lc-rs provider as the rest of keyrite); this module adds the http-01
//! responder and the timing of each step.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};

/// Tokens the responder serves: token → key authorization.
#[derive(Clone, Default)]
pub struct Http01Tokens(Arc<Mutex<HashMap<String, String>>>);

impl Http01Tokens {
    fn insert(&self, token: String, key_authorization: String) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(token, key_authorization);
        }
    }

    fn remove(&self, token: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(token);
        }
    }

    fn get(&self, token: &str) -> Option<String> {
        self.0.lock().ok().and_then(|map| map.get(token).cloned())
    }
}

/// An http-01 responder on `bind` (a loopback address in tests and
/// rehearsals), serving `/.well-known/acme-challenge/<token>`.
pub struct Http01Responder {
    pub tokens: Http01Tokens,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Http01Responder {
    pub async fn start(bind: SocketAddr) -> Result<Self, ClientError> {
        let tokens = Http01Tokens::default();
        let app = Router::new().route("/.well-known/acme-challenge/{token}", get(answer)).with_state(tokens.clone());
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|e| ClientError::Responder(format!("cannot listen on {bind}: {e}")))?;
        let addr = listener.local_addr().map_err(|e| ClientError::Responder(e.to_string()))?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Http01Responder { tokens, addr, task })
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

async fn answer(State(tokens): State<Http01Tokens>, UrlPath(token): UrlPath<String>) -> (StatusCode, String) {
    match tokens.get(&token) {
        Some(ka) => (StatusCode::OK, ka),
        None => (StatusCode::NOT_FOUND, String::new()),
    }
}

/// How long each step of one issuance took.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub account: Duration,
    pub order: Duration,
    pub challenges: Duration,
    pub finalize: Duration,
    pub download: Duration,
    pub total: Duration,
}

/// One issued certificate: the chain as served (leaf first) and the leaf
/// key, PEM.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
    pub timings: Timings,
}

/// Runs one complete issuance for `names` against `directory_url`,
/// trusting `tls_ca_pem` (a PEM file) for the server's HTTPS.
pub async fn issue_one(
    directory_url: &str,
    tls_ca_pem: &Path,
    names: &[String],
    responder: &Http01Responder,
) -> Result<Issued, ClientError> {
    let started = Instant::now();
    let mut timings = Timings::default();
    let (account, _credentials) = Account::builder_with_root(tls_ca_pem)
        .map_err(|e| ClientError::Protocol(format!("client set-up with {}: {e}", tls_ca_pem.display())))?
        .create(
            &NewAccount { contact: &[], terms_of_service_agreed: true, only_return_existing: false },
            directory_url.to_string(),
            None,
        )
        .await
        .map_err(|e| ClientError::Protocol(format!("newAccount: {e}")))?;
    timings.account = started.elapsed();

    let step = Instant::now();
    // An address is ordered as an "ip" identifier (RFC 8738), a name as "dns".
    let ids: Vec<Identifier> = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Identifier::Ip(ip),
            Err(_) => Identifier::Dns(n.clone()),
        })
        .collect();
    let mut order =
        account.new_order(&NewOrder::new(&ids)).await.map_err(|e| ClientError::Protocol(format!("newOrder: {e}")))?;
    timings.order = step.elapsed();

    let step = Instant::now();
    let mut tokens = Vec::new();
    let mut authzs = order.authorizations();
    while let Some(result) = authzs.next().await {
        let mut authz = result.map_err(|e| ClientError::Protocol(format!("authorization: {e}")))?;
        if authz.status != AuthorizationStatus::Pending {
            continue;
        }
        let mut challenge = authz
            .challenge(ChallengeType::Http01)
            .ok_or_else(|| ClientError::Protocol("the server offers no http-01 challenge".into()))?;
        responder.tokens.insert(challenge.token.clone(), challenge.key_authorization().as_str().to_string());
        tokens.push(challenge.token.clone());
        challenge.set_ready().await.map_err(|e| ClientError::Protocol(format!("challenge: {e}")))?;
    }
    let retry = RetryPolicy::new().initial_delay(Duration::from_millis(50)).timeout(Duration::from_secs(60));
    let status = order.poll_ready(&retry).await.map_err(|e| ClientError::Protocol(format!("order: {e}")))?;
    for t in &tokens {
        responder.tokens.remove(t);
    }
    if status != OrderStatus::Ready {
        return Err(ClientError::Protocol(format!("the order ended {status:?}, not ready")));
    }
    timings.challenges = step.elapsed();

    let step = Instant::now();
    let key_pem = order.finalize().await.map_err(|e| ClientError::Protocol(format!("finalize: {e}")))?;
    timings.finalize = step.elapsed();
    let step = Instant::now();
    let chain_pem =
        order.poll_certificate(&retry).await.map_err(|e| ClientError::Protocol(format!("certificate: {e}")))?;
    timings.download = step.elapsed();
    timings.total = started.elapsed();
    Ok(Issued { chain_pem, key_pem, timings })
}

/// Errors of the built-in client; the server's problem document is in the
/// message as the client library reports it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("ACME client: {0}")]
    Protocol(String),
    #[error("http-01 responder: {0}")]
    Responder(String),
}
