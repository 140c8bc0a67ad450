//! The `client` room: keyrite's own ACME client, kept apart from the server
//! it talks to. One complete issuance (account, order, http-01 answered by
//! its own responder, finalize, download) against any RFC 8555 directory:
//! the rehearsal ends with it, the tests drive acme-serve with it, and the
//! load generator ([`bench`], `keyrite acme bench`) runs many at once.
//!
//! The protocol side is `instant-acme` (a maintained client, on the same
//! aws-lc-rs provider as the rest of keyrite); this module adds the http-01
//! responder and the timing of each step.

pub mod bench;

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
    issue_with(&HttpsPool::new(tls_ca_pem)?, directory_url, names, responder).await
}

/// [`issue_one`] over `http`'s connections, which flows share: the load
/// generator's clients reuse kept-alive connections instead of paying a TLS
/// handshake each (as ACME clients that renew many names do).
pub async fn issue_with(
    http: &HttpsPool,
    directory_url: &str,
    names: &[String],
    responder: &Http01Responder,
) -> Result<Issued, ClientError> {
    let started = Instant::now();
    let mut timings = Timings::default();
    let (account, _credentials) = Account::builder_with_http(Box::new(http.clone()))
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
    // A first look after 20 ms, then 1.5× longer waits: validation on
    // loopback under load takes tens of milliseconds, and every early poll
    // is a signed request the server must verify (5 ms cost a loaded
    // acme-serve a fifth more CPU per flow), while the former 50 ms plus a
    // second fixed 50 ms before the download made the generator's own
    // sleeps most of a flow. A server's Retry-After still wins.
    let retry =
        RetryPolicy::new().initial_delay(Duration::from_millis(20)).backoff(1.5).timeout(Duration::from_secs(60));
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
    // A server that issues within the finalize request (acme-serve does)
    // answers with the order already valid: download at once instead of
    // polling an order that cannot change any more.
    let chain_pem = if order.state().status == OrderStatus::Valid {
        order.certificate().await.and_then(|c| c.ok_or(instant_acme::Error::Str("the valid order has no certificate")))
    } else {
        order.poll_certificate(&retry).await
    }
    .map_err(|e| ClientError::Protocol(format!("certificate: {e}")))?;
    timings.download = step.elapsed();
    timings.total = started.elapsed();
    Ok(Issued { chain_pem, key_pem, timings })
}

/// Errors of the built-in client; the server's problem document is in the
/// message as the client library reports it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server refused a step or answered unexpectedly; the text names
    /// the step and carries the server's problem document.
    #[error("ACME client: {0}")]
    Protocol(String),
    /// The http-01 responder could not listen.
    #[error("http-01 responder: {0}")]
    Responder(String),
}

/// HTTP/1.1-over-TLS connections to ACME servers, kept alive and shared by
/// every flow that holds a clone. A connection serves one request at a
/// time: it is taken from the idle list for a request and put back once
/// the response body has been read.
#[derive(Clone)]
pub struct HttpsPool {
    tls: tokio_rustls::TlsConnector,
    idle: Arc<Mutex<Vec<PooledConnection>>>,
}

struct PooledConnection {
    /// `host:port`, as in the request URLs.
    authority: String,
    sender: hyper::client::conn::http1::SendRequest<instant_acme::BodyWrapper<hyper::body::Bytes>>,
}

impl HttpsPool {
    /// Trusts the certificates in the PEM file `ca_pem` and nothing else.
    pub fn new(ca_pem: &Path) -> Result<Self, ClientError> {
        use rustls::pki_types::pem::PemObject;
        let setup =
            |e: &dyn std::fmt::Display| ClientError::Protocol(format!("client set-up with {}: {e}", ca_pem.display()));
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca_pem).map_err(|e| setup(&e))? {
            roots.add(cert.map_err(|e| setup(&e))?).map_err(|e| setup(&e))?;
        }
        if roots.is_empty() {
            return Err(setup(&"no certificate in the file; give the PEM bundle the server's TLS chains to"));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| setup(&e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(HttpsPool { tls: tokio_rustls::TlsConnector::from(Arc::new(config)), idle: Arc::default() })
    }

    fn take_idle(&self, authority: &str) -> Option<PooledConnection> {
        let mut idle = self.idle.lock().ok()?;
        // Connections the server closed are dropped on the way.
        idle.retain(|c| !c.sender.is_closed());
        let at = idle.iter().rposition(|c| c.authority == authority)?;
        Some(idle.swap_remove(at))
    }

    fn put_back(&self, conn: PooledConnection) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
    }

    async fn connect(&self, uri: &axum::http::Uri) -> Result<PooledConnection, instant_acme::Error> {
        let other = |e: String| instant_acme::Error::Other(e.into());
        if uri.scheme_str() != Some("https") {
            return Err(other(format!("{uri}: ACME needs https")));
        }
        let host = uri.host().ok_or_else(|| other(format!("{uri}: no host")))?;
        let port = uri.port_u16().unwrap_or(443);
        let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| other(format!("connection to {host}:{port}: {e}")))?;
        // Requests are small and answered at once: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
            .map_err(|e| other(format!("{host}: {e}")))?;
        let tls =
            self.tls.connect(name, tcp).await.map_err(|e| other(format!("TLS connection to {host}:{port}: {e}")))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(instant_acme::Error::Hyper)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(PooledConnection { authority: format!("{host}:{port}"), sender })
    }

    async fn send(
        self,
        req: axum::http::Request<instant_acme::BodyWrapper<hyper::body::Bytes>>,
    ) -> Result<instant_acme::BytesResponse, instant_acme::Error> {
        use http_body_util::BodyExt;
        let (mut parts, body) = req.into_parts();
        let authority = parts
            .uri
            .authority()
            .map(|a| format!("{}:{}", a.host(), a.port_u16().unwrap_or(443)))
            .ok_or_else(|| instant_acme::Error::Other(format!("{}: no host", parts.uri).into()))?;
        let mut conn = match self.take_idle(&authority) {
            Some(c) => c,
            None => self.connect(&parts.uri).await?,
        };
        // HTTP/1.1 on a connection of its own: origin-form target, Host header.
        if !parts.headers.contains_key(axum::http::header::HOST) {
            if let Some(a) = parts.uri.authority() {
                let host =
                    axum::http::HeaderValue::from_str(a.as_str()).map_err(|e| instant_acme::Error::Http(e.into()))?;
                parts.headers.insert(axum::http::header::HOST, host);
            }
        }
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = target.parse().map_err(instant_acme::Error::InvalidUri)?;
        conn.sender.ready().await.map_err(instant_acme::Error::Hyper)?;
        let response = conn
            .sender
            .send_request(axum::http::Request::from_parts(parts, body))
            .await
            .map_err(instant_acme::Error::Hyper)?;
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.map_err(instant_acme::Error::Hyper)?.to_bytes();
        // The body is read: the connection can take the next request.
        if !conn.sender.is_closed() {
            self.put_back(conn);
        }
        Ok(instant_acme::BytesResponse { parts, body: Box::new(bytes) })
    }
}

impl instant_acme::HttpClient for HttpsPool {
    fn request(
        &self,
        req: axum::http::Request<instant_acme::BodyWrapper<hyper::body::Bytes>>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<instant_acme::BytesResponse, instant_acme::Error>> + Send>,
    > {
        Box::pin(self.clone().send(req))
    }
}
