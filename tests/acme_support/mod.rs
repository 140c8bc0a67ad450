//! Shared harness for the ACME tests: a throwaway root and intermediate made
//! with `profile::issue` and `SoftKey`s, a server on 127.0.0.1:0 over HTTPS
//! with a certificate it issues itself, a tiny HTTPS client that trusts the
//! test root, and a hand-rolled JWS signer on aws-lc-rs keys.
//!
//! Name resolution: the server is given a static host map (`a.acme.test` and
//! friends → 127.0.0.1) instead of a DNS server, so nothing leaves loopback.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, KeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use keyrite::acme::{self, Issuer, IssuerKeys, RunningServer};
use keyrite::config::acme::{AcmeServeConfig, NamePolicy, TlsSettings, ValidationSettings};
use keyrite::hsm::soft::{SealingKey, SoftKey, SoftStore};
use keyrite::hsm::{HsmError, KeyAlgorithm, RandomSource, Signer};
use keyrite::profile::{self, IssueRequest, Issued, IssuerRef, Profile, San};
use keyrite::secret::Secret;
use serde_json::{json, Value};
use time::OffsetDateTime;

/// The shipped intermediate template constrains names to example.com; the
/// tests issue for `acme.test` and 127.0.0.1, so they use this copy. Its
/// subject is a default: a CSR's subject, when there is one, wins.
pub const TEST_INTERMEDIATE: &str = r#"
kind = "intermediate-ca"
validity = "30d"
max_validity = "2922d"
key_usage = ["digital-signature", "key-cert-sign", "crl-sign"]
path_len = 0
extended_key_usage = ["server-auth", "client-auth"]
allowed_key_algorithms = ["ecdsa-p256", "ecdsa-p384", "rsa-3072", "rsa-4096"]
[subject]
common_name = "keyrite ACME Test Issuing CA"
organization = "keyrite Test"
"#;

pub fn template(name: &str) -> Profile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates").join(name);
    Profile::load(&path).expect("shipped template loads")
}

fn now() -> OffsetDateTime {
    (OffsetDateTime::now_utc() - time::Duration::minutes(5)).replace_nanosecond(0).expect("whole second")
}

fn serial() -> Vec<u8> {
    keyrite::hsm::soft::SystemRng.random_bytes(16).expect("rng")
}

pub struct Pki {
    pub root: Issued,
    pub intermediate: Issued,
    /// The intermediate's key and the host's audit key, sealed in a
    /// software key store, so a restarted server signs with the same keys.
    keys: tempfile::TempDir,
    sealing: [u8; 32],
    /// The audit key's SPKI SHA-256: what an auditor pins.
    pub audit_spki_sha256: String,
}

impl Pki {
    pub fn new() -> Pki {
        let root_key = SoftKey::generate("root", KeyAlgorithm::EcdsaP384).expect("root key");
        let keys = tempfile::tempdir().expect("key store dir");
        let mut sealing = [0u8; 32];
        aws_lc_rs::rand::fill(&mut sealing).expect("rng");
        let store = SoftStore::open(keys.path()).expect("key store");
        let raw = SealingKey::Raw(Secret::new(sealing.to_vec()));
        let int_key = store.generate("int", KeyAlgorithm::EcdsaP256, &raw).expect("int key");
        let audit_key = store.generate("audit", KeyAlgorithm::EcdsaP256, &raw).expect("audit key");
        let root_t = template("root-ca.toml");
        let nb = now();
        let root = profile::issue(
            &IssueRequest {
                profile: &root_t,
                subject: None,
                subject_spki: root_key.spki_der(),
                sans: vec![],
                serial: serial(),
                not_before: nb,
                not_after: root_t.not_after_for(nb),
                issuer: IssuerRef::SelfSigned,
            },
            &root_key,
        )
        .expect("root issues");
        let int_t = Profile::from_toml_str(TEST_INTERMEDIATE, "test-intermediate").expect("test template");
        let intermediate = profile::issue(
            &IssueRequest {
                profile: &int_t,
                subject: None,
                subject_spki: int_key.spki_der(),
                sans: vec![],
                serial: serial(),
                not_before: nb,
                not_after: int_t.not_after_for(nb),
                issuer: IssuerRef::Certificate { der: &root.der },
            },
            &root_key,
        )
        .expect("intermediate issues");
        let audit_spki_sha256 = keyrite::words::sha256_hex(audit_key.spki_der());
        Pki { root, intermediate, keys, sealing, audit_spki_sha256 }
    }

    /// The issuer for a server; the keys are unsealed by the factory on the
    /// signer thread. Each call gives the same keys.
    pub fn issuer(&mut self) -> Issuer {
        let (dir, sealing) = (self.keys.path().to_path_buf(), self.sealing);
        Issuer {
            certificate_der: self.intermediate.der.clone(),
            chain_pem: self.intermediate.pem.clone(),
            keys: Box::new(move || -> Result<IssuerKeys, HsmError> {
                let store = SoftStore::open(&dir)?;
                let raw = SealingKey::Raw(Secret::new(sealing.to_vec()));
                Ok(IssuerKeys { ca: Box::new(store.load("int", &raw)?), audit: Box::new(store.load("audit", &raw)?) })
            }),
        }
    }
}

pub struct Harness {
    pub pki: Pki,
    pub server: RunningServer,
    pub dir: tempfile::TempDir,
    pub client: Client,
}

pub fn test_policy() -> NamePolicy {
    NamePolicy {
        allowed_dns_suffixes: vec!["acme.test".into()],
        allowed_ip_ranges: vec![("127.0.0.0".parse().expect("ip"), 8)],
        allow_wildcards: true,
        max_identifiers: 5,
    }
}

pub fn static_hosts() -> HashMap<String, Vec<IpAddr>> {
    let lo: IpAddr = "127.0.0.1".parse().expect("ip");
    ["a.acme.test", "b.acme.test", "acme.test"].iter().map(|n| (n.to_string(), vec![lo])).collect()
}

pub async fn start(http01_port: u16, tls_alpn01_port: u16) -> Harness {
    let mut pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    start_in(&mut pki, dir.path(), http01_port, tls_alpn01_port)
        .await
        .map(|server| {
            let client = Client::new(&pki.root.der, server.local_addr(), server.base_url().to_string());
            Harness { pki, server, dir, client }
        })
        .expect("server starts")
}

pub async fn start_in(
    pki: &mut Pki,
    dir: &Path,
    http01_port: u16,
    tls_alpn01_port: u16,
) -> Result<RunningServer, acme::AcmeError> {
    start_with(pki, dir, http01_port, tls_alpn01_port, None).await
}

/// Like [`start_in`], with the base URL clients see fixed (as behind a load
/// balancer), so several instances can serve one account.
pub async fn start_with(
    pki: &mut Pki,
    dir: &Path,
    http01_port: u16,
    tls_alpn01_port: u16,
    external_url: Option<String>,
) -> Result<RunningServer, acme::AcmeError> {
    start_configured(pki, dir, http01_port, tls_alpn01_port, |c| c.external_url = external_url).await
}

/// Like [`start_in`], with a last say over the configuration.
pub async fn start_configured(
    pki: &mut Pki,
    dir: &Path,
    http01_port: u16,
    tls_alpn01_port: u16,
    configure: impl FnOnce(&mut AcmeServeConfig),
) -> Result<RunningServer, acme::AcmeError> {
    let mut config = AcmeServeConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        dir.join("acme.sqlite"),
        TlsSettings::IssueAtStart { names: vec![San::Ip("127.0.0.1".parse().expect("ip"))], lifetime: None },
        template("tls-leaf.toml"),
        test_policy(),
    );
    config.validation = ValidationSettings {
        static_hosts: static_hosts(),
        http01_port,
        tls_alpn01_port,
        timeout: Duration::from_secs(3),
        attempts: 2,
        backoff: Duration::from_millis(200),
        ..ValidationSettings::default()
    };
    configure(&mut config);
    acme::start(config, pki.issuer()).await
}

/// [`start`] with a last say over the configuration.
pub async fn start_harness(configure: impl FnOnce(&mut AcmeServeConfig)) -> Harness {
    let mut pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_configured(&mut pki, dir.path(), 1, 1, configure).await.expect("server starts");
    let client = Client::new(&pki.root.der, server.local_addr(), server.base_url().to_string());
    Harness { pki, server, dir, client }
}

// ------------------------------------------------------------------ HTTPS client

pub struct Response {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }
    /// Asserts an RFC 7807 problem of `kind` and `status`, with a fresh nonce.
    pub fn assert_problem(&self, kind: &str, status: u16) {
        let body = self.json();
        assert_eq!(
            (self.status, body["type"].as_str()),
            (status, Some(format!("urn:ietf:params:acme:error:{kind}").as_str())),
            "body: {body}"
        );
        assert_eq!(self.header("content-type").as_deref(), Some("application/problem+json"));
        assert_eq!(body["status"].as_u64(), Some(u64::from(status)));
        let nonce = self.header("replay-nonce").expect("every response carries a Replay-Nonce");
        assert_eq!(nonce.len(), 48);
    }
}

pub struct Client {
    tls: tokio_rustls::TlsConnector,
    addr: SocketAddr,
    pub base: String,
}

impl Client {
    pub fn new(root_der: &[u8], addr: SocketAddr, base: String) -> Client {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from(root_der.to_vec())).expect("root");
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Client { tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)), addr, base }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Response {
        self.try_request(method, path, headers, body).await.unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// [`Self::request`], reporting a connection the server dropped (it
    /// crashed) instead of failing the test.
    pub async fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Response, String> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.map_err(|e| format!("connect: {e}"))?;
        let name = rustls::pki_types::ServerName::IpAddress(self.addr.ip().into());
        let tls = self.tls.connect(name, tcp).await.map_err(|e| format!("TLS handshake: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| format!("http: {e}"))?;
        let driver = tokio::spawn(conn);
        let mut req = hyper::Request::builder().method(method).uri(path).header("host", self.addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(http_body_util::Full::new(axum::body::Bytes::from(body))).expect("request");
        let resp = sender.send_request(req).await.map_err(|e| format!("response: {e}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes().to_vec();
        driver.abort();
        Ok(Response { status, headers, body })
    }

    pub async fn nonce(&self) -> String {
        let r = self.request("HEAD", "/acme/new-nonce", &[], vec![]).await;
        r.header("replay-nonce").expect("nonce")
    }

    /// POSTs a JWS with the right content type.
    pub async fn post(&self, path: &str, body: &Value) -> Response {
        let bytes = serde_json::to_vec(body).expect("json");
        self.request("POST", path, &[("content-type", "application/jose+json")], bytes).await
    }
}

// ------------------------------------------------------------------ JWS

pub enum Key {
    Es256(sig::EcdsaKeyPair),
    Es384(sig::EcdsaKeyPair),
    Rs256(aws_lc_rs::rsa::KeyPair),
    Ed(sig::Ed25519KeyPair),
}

impl Key {
    pub fn es256() -> Key {
        Key::Es256(sig::EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_FIXED_SIGNING).expect("p256"))
    }
    pub fn es384() -> Key {
        Key::Es384(sig::EcdsaKeyPair::generate(&sig::ECDSA_P384_SHA384_FIXED_SIGNING).expect("p384"))
    }
    pub fn rs256(size: aws_lc_rs::rsa::KeySize) -> Key {
        Key::Rs256(aws_lc_rs::rsa::KeyPair::generate(size).expect("rsa"))
    }
    pub fn ed25519() -> Key {
        Key::Ed(sig::Ed25519KeyPair::generate().expect("ed25519"))
    }

    pub fn alg(&self) -> &'static str {
        match self {
            Key::Es256(_) => "ES256",
            Key::Es384(_) => "ES384",
            Key::Rs256(_) => "RS256",
            Key::Ed(_) => "EdDSA",
        }
    }

    pub fn jwk(&self) -> Value {
        match self {
            Key::Es256(k) | Key::Es384(k) => {
                let p = k.public_key().as_ref();
                let n = (p.len() - 1) / 2;
                let crv = if n == 32 { "P-256" } else { "P-384" };
                json!({"kty": "EC", "crv": crv, "x": B64.encode(&p[1..1 + n]), "y": B64.encode(&p[1 + n..])})
            }
            Key::Rs256(k) => {
                let spki = k.public_key().as_der().expect("spki");
                let jwk = keyrite::acme::jws::Jwk::from_spki_der(spki.as_ref()).expect("jwk");
                jwk.to_value()
            }
            Key::Ed(k) => json!({"kty": "OKP", "crv": "Ed25519", "x": B64.encode(k.public_key().as_ref())}),
        }
    }

    pub fn thumbprint(&self) -> String {
        keyrite::acme::jws::Jwk::from_json(&self.jwk()).expect("jwk").thumbprint()
    }

    pub fn sign(&self, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Key::Es256(k) | Key::Es384(k) => k.sign(&rng, input).expect("sign").as_ref().to_vec(),
            Key::Rs256(k) => {
                let mut out = vec![0u8; k.public_modulus_len()];
                k.sign(&sig::RSA_PKCS1_SHA256, &rng, input, &mut out).expect("sign");
                out
            }
            Key::Ed(k) => k.sign(input).as_ref().to_vec(),
        }
    }
}

/// Builds a flattened JWS from an explicit protected header.
pub fn jws_with_header(key: &Key, header: &Value, payload: &[u8]) -> Value {
    let protected = B64.encode(serde_json::to_vec(header).expect("header"));
    let payload = B64.encode(payload);
    let sig = key.sign(format!("{protected}.{payload}").as_bytes());
    json!({"protected": protected, "payload": payload, "signature": B64.encode(sig)})
}

/// A JWS with `jwk` (kid = None) or `kid`.
pub fn jws(key: &Key, kid: Option<&str>, nonce: &str, url: &str, payload: &[u8]) -> Value {
    let mut header = json!({"alg": key.alg(), "nonce": nonce, "url": url});
    match kid {
        Some(k) => header["kid"] = json!(k),
        None => header["jwk"] = key.jwk(),
    }
    jws_with_header(key, &header, payload)
}

/// An account on the server, for tests that go past newAccount.
pub struct Account {
    pub key: Key,
    pub kid: String,
}

/// The test's client, through the harness (`h.new_account(…)`).
impl std::ops::Deref for Harness {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Harness {
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

impl Client {
    pub async fn new_account(&self, key: Key) -> Account {
        let c = self;
        let url = c.url("/acme/new-account");
        let body = jws(&key, None, &c.nonce().await, &url, br#"{"termsOfServiceAgreed":true}"#);
        let r = c.post("/acme/new-account", &body).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        Account { kid: r.header("location").expect("location"), key }
    }

    /// POSTs `payload` signed by `account` to `path`.
    pub async fn post_as(&self, account: &Account, path: &str, payload: &[u8]) -> Response {
        let c = self;
        let body = jws(&account.key, Some(&account.kid), &c.nonce().await, &c.url(path), payload);
        c.post(path, &body).await
    }

    pub fn path_of(&self, url: &str) -> String {
        url.strip_prefix(&self.base).expect("server URL").to_string()
    }

    pub async fn new_order(&self, account: &Account, names: &[&str]) -> (String, Value) {
        let ids: Vec<Value> = names
            .iter()
            .map(|n| {
                let kind = if n.parse::<IpAddr>().is_ok() { "ip" } else { "dns" };
                json!({"type": kind, "value": n})
            })
            .collect();
        let r = self.post_as(account, "/acme/new-order", json!({"identifiers": ids}).to_string().as_bytes()).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        (r.header("location").expect("location"), r.json())
    }
}

// ------------------------------------------------------------------ http-01 responder

pub type Tokens = Arc<std::sync::Mutex<HashMap<String, String>>>;

/// The http-01 responder the VA is pointed at (Pebble's `-httpPort`).
pub async fn responder() -> (u16, Tokens, tokio::task::JoinHandle<()>) {
    use axum::extract::{Path as P, State};
    let tokens: Tokens = Arc::default();
    async fn answer(State(t): State<Tokens>, P(token): P<String>) -> Result<String, axum::http::StatusCode> {
        t.lock().expect("lock").get(&token).cloned().ok_or(axum::http::StatusCode::NOT_FOUND)
    }
    let app = axum::Router::new()
        .route("/.well-known/acme-challenge/{token}", axum::routing::get(answer))
        .with_state(tokens.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind responder");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, tokens, task)
}

impl Client {
    /// Orders `names`, answers every http-01 through `tokens`, waits until
    /// the order is ready. Returns the order URL and body.
    pub async fn ready_order(&self, account: &Account, tokens: &Tokens, names: &[&str]) -> (String, Value) {
        let (order_url, order) = self.new_order(account, names).await;
        for authz_url in order["authorizations"].as_array().expect("authzs") {
            let authz = self.post_as(account, &self.path_of(authz_url.as_str().expect("url")), b"").await.json();
            let ch = authz["challenges"]
                .as_array()
                .expect("challenges")
                .iter()
                .find(|c| c["type"] == "http-01")
                .expect("http-01")
                .clone();
            let token = ch["token"].as_str().expect("token").to_string();
            tokens.lock().expect("lock").insert(token.clone(), format!("{token}.{}", account.key.thumbprint()));
            let r = self.post_as(account, &self.path_of(ch["url"].as_str().expect("url")), b"{}").await;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        }
        let path = self.path_of(&order_url);
        for _ in 0..100 {
            let o = self.post_as(account, &path, b"").await.json();
            if o["status"] == "ready" {
                return (order_url, o);
            }
            assert_ne!(o["status"], "invalid", "{o}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("order never became ready");
    }
}

/// A PKCS#8 P-256 key, its PEM for openssl, and a `Key` for JWS.
pub fn p256_with_pem() -> (Key, String) {
    let rng = SystemRandom::new();
    let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("pkcs8");
    let pem = pem_rfc7468::encode_string("PRIVATE KEY", pem_rfc7468::LineEnding::LF, pkcs8.as_ref()).expect("pem");
    let pair = sig::EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).expect("key");
    (Key::Es256(pair), pem)
}

/// Makes a DER CSR with openssl (`extra` are further `req` arguments).
pub fn openssl_csr(dir: &Path, key_pem: &str, extra: &[&str]) -> Vec<u8> {
    let key = dir.join(format!("k{}.pem", rand_suffix()));
    let out = dir.join(format!("c{}.der", rand_suffix()));
    std::fs::write(&key, key_pem).expect("write key");
    let mut args = vec!["req", "-new", "-key", key.to_str().expect("utf-8"), "-outform", "DER", "-out"];
    args.push(out.to_str().expect("utf-8"));
    args.extend_from_slice(extra);
    let o = std::process::Command::new("openssl").args(&args).output().expect("openssl is required");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(&out).expect("csr")
}

fn rand_suffix() -> String {
    hex::encode(keyrite::hsm::soft::SystemRng.random_bytes(6).expect("rng"))
}

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

// ------------------------------------------------------------------ loopback DNS

/// A DNS server on 127.0.0.1 (UDP) answering A 127.0.0.1 for `zone` and
/// every name under it, TXT from a directory when given one (for dns-01),
/// NOERROR with no answer for other types there, and REFUSED elsewhere. `static_hosts` matches whole names only, so tests that
/// order fresh random names (the load generator) point the server's
/// `resolver` here instead. Stops on drop.
/// CAA answers by owner name (lowercase, no trailing dot).
pub type CaaZone = Arc<std::sync::Mutex<HashMap<String, Vec<hickory_resolver::proto::rr::rdata::CAA>>>>;

pub struct LoopbackDns {
    pub addr: SocketAddr,
    /// CAA records served (none unless a test adds some).
    pub caa: CaaZone,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LoopbackDns {
    pub fn start(zone: &str) -> LoopbackDns {
        LoopbackDns::start_with_txt(zone, None)
    }

    /// Like `start`, and TXT answers read from `txt_dir`: one file per owner
    /// name (lowercase, no trailing dot), one value a line, written by a
    /// client's dns-01 hook.
    pub fn start_with_txt(zone: &str, txt_dir: Option<std::path::PathBuf>) -> LoopbackDns {
        use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
        use hickory_resolver::proto::rr::rdata::{A, TXT};
        use hickory_resolver::proto::rr::{RData, Record, RecordType};
        use std::sync::atomic::{AtomicBool, Ordering};

        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind dns");
        // Wakes the loop now and then so a drop is noticed.
        socket.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        let addr = socket.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let caa: CaaZone = Arc::default();
        let caa_served = caa.clone();
        let (zone, s) = (zone.trim_matches('.').to_ascii_lowercase(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else { continue };
                let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
                let mut resp = query.clone();
                resp.metadata.message_type = MessageType::Response;
                resp.metadata.authoritative = true;
                resp.metadata.recursion_available = false;
                resp.answers.clear();
                resp.authorities.clear();
                resp.additionals.clear();
                resp.metadata.response_code = ResponseCode::NoError;
                for q in &query.queries {
                    let name = q.name.to_ascii().trim_end_matches('.').to_ascii_lowercase();
                    if name != zone && !name.ends_with(&format!(".{zone}")) {
                        resp.metadata.response_code = ResponseCode::Refused;
                        continue;
                    }
                    match (q.query_type, &txt_dir) {
                        (RecordType::A, _) => {
                            let a = RData::A(A(std::net::Ipv4Addr::LOCALHOST));
                            resp.answers.push(Record::from_rdata(q.name.clone(), 5, a));
                        }
                        (RecordType::CAA, _) => {
                            let records = caa_served.lock().expect("caa").get(&name).cloned().unwrap_or_default();
                            for r in records {
                                resp.answers.push(Record::from_rdata(q.name.clone(), 5, RData::CAA(r)));
                            }
                        }
                        (RecordType::TXT, Some(dir)) => {
                            let values = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
                            for v in values.lines().map(str::to_string) {
                                let txt = RData::TXT(TXT::new(vec![v]));
                                resp.answers.push(Record::from_rdata(q.name.clone(), 5, txt));
                            }
                        }
                        _ => {}
                    }
                }
                if let Ok(bytes) = resp.to_vec() {
                    let _ = socket.send_to(&bytes, peer);
                }
            }
        });
        LoopbackDns { addr, caa, stop, thread: Some(thread) }
    }
}

impl Drop for LoopbackDns {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A loopback port free right now (bound, read, released): for a listener
/// whose port must be known before it starts, like the bench's responder.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

// ------------------------------------------------------------------ whole issuances

/// Orders `names`, answers http-01, finalizes; returns the leaf's DER.
pub async fn issue(h: &Harness, a: &Account, tokens: &Tokens, names: &[&str], extra: serde_json::Value) -> Vec<u8> {
    let (order_url, order) = if extra.is_null() {
        h.ready_order(a, tokens, names).await
    } else {
        ready_order_with(h, a, tokens, names, extra).await
    };
    let r = finalize_with_csr(h, h.dir.path(), a, &order, names).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    download(h, a, &order_url).await
}

/// Finalizes a ready `order` with a fresh key's CSR for `names` (made by
/// openssl in `dir`).
pub async fn finalize_with_csr(c: &Client, dir: &Path, a: &Account, order: &Value, names: &[&str]) -> Response {
    let (_, pem) = p256_with_pem();
    let san: Vec<String> = names
        .iter()
        .map(|n| if n.parse::<IpAddr>().is_ok() { format!("IP:{n}") } else { format!("DNS:{n}") })
        .collect();
    let csr = openssl_csr(dir, &pem, &["-subj", "/", "-addext", &format!("subjectAltName={}", san.join(","))]);
    let fin = c.path_of(order["finalize"].as_str().expect("finalize"));
    c.post_as(a, &fin, json!({"csr": b64(&csr)}).to_string().as_bytes()).await
}

/// The leaf of a valid order's certificate, DER.
pub async fn download(c: &Client, a: &Account, order_url: &str) -> Vec<u8> {
    let done = c.post_as(a, &c.path_of(order_url), b"").await.json();
    let cert_url = done["certificate"].as_str().expect("certificate").to_string();
    let chain = c.post_as(a, &c.path_of(&cert_url), b"").await.body;
    let (_, der) = pem_rfc7468::decode_vec(&chain[..leaf_end(&chain)]).expect("leaf pem");
    der
}

pub fn leaf_end(chain: &[u8]) -> usize {
    let end = b"-----END CERTIFICATE-----";
    chain.windows(end.len()).position(|w| w == end).expect("a certificate") + end.len()
}

/// `ready_order` with extra newOrder fields (`replaces`).
pub async fn ready_order_with(
    h: &Harness,
    a: &Account,
    tokens: &Tokens,
    names: &[&str],
    extra: serde_json::Value,
) -> (String, serde_json::Value) {
    let r = order_replacing(h, a, names, extra).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let order_url = r.header("location").expect("location");
    let order = r.json();
    for authz_url in order["authorizations"].as_array().expect("authzs") {
        let authz = h.post_as(a, &h.path_of(authz_url.as_str().expect("url")), b"").await.json();
        if authz["status"] == "valid" {
            continue;
        }
        let ch = authz["challenges"].as_array().expect("challenges").iter().find(|c| c["type"] == "http-01").cloned();
        let ch = ch.expect("http-01");
        let token = ch["token"].as_str().expect("token").to_string();
        tokens.lock().expect("lock").insert(token.clone(), format!("{token}.{}", a.key.thumbprint()));
        h.post_as(a, &h.path_of(ch["url"].as_str().expect("url")), b"{}").await;
    }
    let path = h.path_of(&order_url);
    for _ in 0..100 {
        let o = h.post_as(a, &path, b"").await.json();
        if o["status"] == "ready" {
            return (order_url, o);
        }
        assert_ne!(o["status"], "invalid", "{o}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("order never became ready");
}

pub async fn order_replacing(h: &Harness, a: &Account, names: &[&str], extra: serde_json::Value) -> Response {
    let ids: Vec<_> = names.iter().map(|n| json!({"type": "dns", "value": n})).collect();
    let mut payload = json!({ "identifiers": ids });
    for (k, v) in extra.as_object().expect("object") {
        payload[k] = v.clone();
    }
    h.post_as(a, "/acme/new-order", payload.to_string().as_bytes()).await
}

pub fn cert_id(der: &[u8]) -> String {
    keyrite::acme::ari::CertId::of_certificate(der).expect("leaf has an AKI").encode()
}

// ------------------------------------------------------------------ acme-serve as a child process

/// Sends SIGTERM to `child` and expects a clean exit within 20 s; `log` is
/// shown when it does not.
pub fn terminate(child: &mut std::process::Child, what: &str, log: &Path) {
    let log = || std::fs::read_to_string(log).unwrap_or_default();
    let k = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(k.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "{what} exit {status}:\n{}", log());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{what} did not stop on SIGTERM:\n{}", log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// For `Drop`: a child a failed test left running is killed and reaped.
pub fn kill_if_running(child: &mut std::process::Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `keyrite acme-serve` as a child process, from its ready file on: the
/// directory URL, the TLS trust bundle, the log. Killed on drop.
pub struct AcmeServeProcess {
    pub child: std::process::Child,
    pub log: std::path::PathBuf,
    pub directory: String,
    pub tls_ca: std::path::PathBuf,
    pub listen: SocketAddr,
}

impl AcmeServeProcess {
    /// Spawns `cmd` (keyrite with its environment, `acme-serve` and its
    /// arguments, among them `--ready-file ready`), stderr to `log`, and
    /// waits up to 20 s for the ready file. `Err` with the log if the
    /// server exited first.
    pub fn spawn(mut cmd: std::process::Command, ready: &Path, log: &Path) -> Result<AcmeServeProcess, String> {
        let child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).expect("log file"))
            .spawn()
            .expect("spawn keyrite acme-serve");
        let mut server = AcmeServeProcess {
            child,
            log: log.to_path_buf(),
            directory: String::new(),
            tls_ca: Default::default(),
            listen: "0.0.0.0:0".parse().expect("addr"),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = std::fs::read_to_string(ready) {
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    server.directory = v["directory"].as_str().expect("directory").to_string();
                    server.tls_ca = v["tls_ca"].as_str().expect("tls_ca").into();
                    server.listen = v["listen"].as_str().expect("listen").parse().expect("listen address");
                    return Ok(server);
                }
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("acme-serve exited with {status} before it was ready:\n{}", server.log()));
            }
            assert!(
                std::time::Instant::now() < deadline,
                "acme-serve not ready after 20 s (ready file: {:?}):\n{}",
                std::fs::read_to_string(ready),
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the server with SIGTERM and expects a clean exit.
    pub fn stop(&mut self) {
        terminate(&mut self.child, "acme-serve", &self.log);
    }

    /// `kill -9`: no shutdown of any kind.
    pub fn kill(&mut self) {
        let k =
            std::process::Command::new("kill").args(["-KILL", &self.child.id().to_string()]).status().expect("kill");
        assert!(k.success());
        let _ = self.child.wait();
    }

    /// Waits for the process to end by itself (a crash point), up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "acme-serve still running:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for AcmeServeProcess {
    fn drop(&mut self) {
        kill_if_running(&mut self.child);
    }
}
