//! More lines of the protocol-hardening checklist
//! (`shared/research/acme-anchors.md` §b): the directory link (3), 405 with
//! `Allow` (4), notBefore/notAfter (27), expired orders (30), CSR common
//! names (32), http-01 redirects and body size (35), validation timeouts
//! (38), and a server certificate given as files.
//!
//! Same harness as `acme_hardening.rs`: a real server on loopback, hand-made
//! JWS requests, exact problem types and statuses with a fresh nonce.

mod acme_support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use acme_support::*;
use keyrite::acme;
use keyrite::config::acme::{AcmeServeConfig, TlsSettings, ValidationSettings};
use keyrite::profile::San;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

// ------------------------------------------------------------------ helpers

/// Like `acme_support::start`, with the configuration adjusted by `tweak`.
async fn start_cfg(http01_port: u16, tweak: impl FnOnce(&mut AcmeServeConfig)) -> Harness {
    let mut pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = AcmeServeConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        dir.path().join("acme.sqlite"),
        TlsSettings::IssueAtStart { names: vec![San::Ip("127.0.0.1".parse().expect("ip"))], lifetime: None },
        template("tls-leaf.toml"),
        test_policy(),
    );
    config.validation = ValidationSettings {
        static_hosts: static_hosts(),
        http01_port,
        tls_alpn01_port: 1,
        timeout: Duration::from_secs(3),
        attempts: 2,
        backoff: Duration::from_millis(200),
        ..ValidationSettings::default()
    };
    tweak(&mut config);
    let server = acme::start(config, pki.issuer()).await.expect("server starts");
    let client = Client::new(&pki.root.der, server.local_addr(), server.base_url().to_string());
    Harness { pki, server, dir, client }
}

fn leaf_of(chain: &[u8]) -> Vec<u8> {
    let chain = std::str::from_utf8(chain).expect("pem");
    let first = chain.split_inclusive("-----END CERTIFICATE-----\n").next().expect("leaf");
    pem_rfc7468::decode_vec(first.as_bytes()).expect("pem").1
}

fn csr_body(der: &[u8]) -> String {
    json!({"csr": b64(der)}).to_string()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).expect("format")
}

fn whole_seconds_from_now(secs: i64) -> OffsetDateTime {
    (OffsetDateTime::now_utc() + time::Duration::seconds(secs)).replace_nanosecond(0).expect("whole second")
}

/// Finalizes a ready order with a fresh key and `sans`; returns the
/// finalize response.
async fn finalize(h: &Harness, acct: &Account, order_url: &str, sans: &str) -> Response {
    let (_, leaf_pem) = p256_with_pem();
    let csr = openssl_csr(h.dir.path(), &leaf_pem, &["-subj", "/", "-addext", &format!("subjectAltName={sans}")]);
    h.post_as(acct, &format!("{}/finalize", h.path_of(order_url)), csr_body(&csr).as_bytes()).await
}

/// Polls a challenge (POST-as-GET) until it is valid or invalid.
async fn settle(h: &Harness, acct: &Account, chall_url: &str, limit: Duration) -> Value {
    let started = Instant::now();
    loop {
        let c = h.post_as(acct, &h.path_of(chall_url), b"").await.json();
        if c["status"] == "valid" || c["status"] == "invalid" {
            return c;
        }
        assert!(started.elapsed() < limit, "challenge still {} after {limit:?}: {c}", c["status"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Orders `name`, returns (http-01 challenge URL, token).
async fn http01_challenge(h: &Harness, acct: &Account, name: &str) -> (String, String) {
    let (_, order) = h.new_order(acct, &[name]).await;
    let authz = h.post_as(acct, &h.path_of(order["authorizations"][0].as_str().expect("authz")), b"").await.json();
    let ch = authz["challenges"].as_array().expect("list").iter().find(|c| c["type"] == "http-01").expect("http-01");
    (ch["url"].as_str().expect("url").to_string(), ch["token"].as_str().expect("token").to_string())
}

fn assert_challenge_problem(c: &Value, kind: &str, detail_contains: &str) {
    assert_eq!(c["status"], "invalid", "{c}");
    assert_eq!(c["error"]["type"], format!("urn:ietf:params:acme:error:{kind}"), "{c}");
    assert_eq!(c["error"]["status"], 400, "{c}");
    let detail = c["error"]["detail"].as_str().unwrap_or("");
    assert!(detail.contains(detail_contains), "detail {detail:?} should mention {detail_contains:?}");
}

// ------------------------------------------------------------------ a scripted http-01 responder

#[derive(Clone)]
enum Script {
    /// Answer `body` with 200.
    Body(Vec<u8>),
    /// Redirect `n` times (relative paths), then answer the key authorization.
    Redirects(usize),
    /// Redirect once to this absolute URL (`{token}` is replaced).
    RedirectTo(String),
}

#[derive(Default)]
struct ScriptState {
    /// token → (script, key authorization)
    scripts: HashMap<String, (Script, String)>,
    /// token → requests seen
    hits: HashMap<String, usize>,
}

type Scripts = Arc<Mutex<ScriptState>>;

/// A responder on 127.0.0.1 that serves `/.well-known/acme-challenge/{token}`
/// and `/hop/{n}/{token}` as scripted per token.
async fn scripted_responder() -> (u16, Scripts, tokio::task::JoinHandle<()>) {
    use axum::http::{header, StatusCode};
    use axum::response::{IntoResponse, Response as AxResponse};
    let state: Scripts = Arc::default();
    async fn answer(axum::extract::State(s): axum::extract::State<Scripts>, uri: axum::http::Uri) -> AxResponse {
        let path = uri.path().to_string();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (token, remaining) = match parts.as_slice() {
            [".well-known", "acme-challenge", token] => (token.to_string(), None),
            ["hop", n, token] => (token.to_string(), n.parse::<usize>().ok()),
            _ => return StatusCode::NOT_FOUND.into_response(),
        };
        let mut st = s.lock().expect("lock");
        *st.hits.entry(token.clone()).or_default() += 1;
        let Some((script, key_auth)) = st.scripts.get(&token).cloned() else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let redirect = |to: String| (StatusCode::FOUND, [(header::LOCATION, to)]).into_response();
        if remaining == Some(0) {
            // The end of every redirect chain answers correctly.
            return (StatusCode::OK, key_auth).into_response();
        }
        match script {
            Script::Body(b) => (StatusCode::OK, b).into_response(),
            Script::Redirects(n) => {
                let left = remaining.unwrap_or(n);
                if left == 0 {
                    (StatusCode::OK, key_auth).into_response()
                } else {
                    redirect(format!("/hop/{}/{token}", left - 1))
                }
            }
            Script::RedirectTo(url) => redirect(url.replace("{token}", &token)),
        }
    }
    let app = axum::Router::new().fallback(answer).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind responder");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, state, task)
}

// ------------------------------------------------------------------ 3. Link rel="index"

#[tokio::test]
async fn link_index_on_every_non_directory_resource() {
    let (port, tokens, task) = responder().await;
    let h = start(port, 1).await;
    let index = format!("<{}/acme/directory>;rel=\"index\"", h.client.base);
    let has_index = |r: &Response, what: &str| {
        let links: Vec<String> =
            r.headers.get_all("link").iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect();
        assert!(links.contains(&index), "{what}: Link headers {links:?} lack {index}");
        assert_eq!(r.header("replay-nonce").map(|n| n.len()), Some(48), "{what}: fresh nonce");
    };
    for method in ["HEAD", "GET"] {
        has_index(&h.client.request(method, "/acme/new-nonce", &[], vec![]).await, "newNonce");
    }
    let acct = h.new_account(Key::es256()).await;
    has_index(&h.post_as(&acct, &h.path_of(&acct.kid), b"").await, "account");
    let (order_url, order) = h.new_order(&acct, &["a.acme.test"]).await;
    let authz_url = order["authorizations"][0].as_str().expect("authz").to_string();
    let r = h.post_as(&acct, &h.path_of(&authz_url), b"").await;
    has_index(&r, "authz");
    let chall_url = r.json()["challenges"][0]["url"].as_str().expect("chall").to_string();
    let r = h.post_as(&acct, &h.path_of(&chall_url), b"").await;
    has_index(&r, "challenge");
    // The challenge keeps its own `up` link next to the index.
    assert!(r.headers.get_all("link").iter().any(|v| v.to_str().is_ok_and(|l| l.contains("rel=\"up\""))));
    has_index(&h.post_as(&acct, &h.path_of(&order_url), b"").await, "order");
    let (order_url, _) = h.ready_order(&acct, &tokens, &["a.acme.test"]).await;
    let r = finalize(&h, &acct, &order_url, "DNS:a.acme.test").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    has_index(&r, "finalize");
    let cert_url = r.json()["certificate"].as_str().expect("certificate").to_string();
    let r = h.post_as(&acct, &h.path_of(&cert_url), b"").await;
    assert_eq!(r.status, 200);
    has_index(&r, "certificate");
    // Errors carry it too.
    let r = h.post_as(&acct, "/acme/new-order", b"[]").await;
    r.assert_problem("malformed", 400);
    has_index(&r, "a problem");
    // The directory itself does not point at itself.
    let d = h.client.request("GET", "/acme/directory", &[], vec![]).await;
    assert_eq!(d.status, 200);
    assert!(d.header("link").is_none(), "{:?}", d.header("link"));
    h.shutdown().await;
    task.abort();
}

// ------------------------------------------------------------------ 4. 405 + Allow

#[tokio::test]
async fn wrong_method_is_405_with_allow() {
    let h = start(1, 1).await;
    let cases: &[(&str, &str, &str)] = &[
        ("GET", "/acme/new-account", "POST"),
        ("PUT", "/acme/new-order", "POST"),
        ("GET", "/acme/acct/x", "POST"),
        ("GET", "/acme/order/x", "POST"),
        ("DELETE", "/acme/authz/x", "POST"),
        ("GET", "/acme/chall/x/y", "POST"),
        ("GET", "/acme/cert/x", "POST"),
        ("GET", "/acme/revoke-cert", "POST"),
        ("POST", "/acme/directory", "GET"),
        ("POST", "/acme/new-nonce", "GET"),
    ];
    for (method, path, must_allow) in cases {
        let r = h.client.request(method, path, &[], vec![]).await;
        r.assert_problem("malformed", 405);
        let allow = r.header("allow").unwrap_or_else(|| panic!("{method} {path}: 405 without an Allow header"));
        let allowed: Vec<&str> = allow.split(',').map(str::trim).collect();
        assert!(allowed.contains(must_allow), "{method} {path}: Allow {allow:?}");
        assert!(!allowed.contains(method), "{method} {path}: Allow {allow:?} lists the refused method");
    }
    let r = h.client.request("PUT", "/acme/new-nonce", &[], vec![]).await;
    let allow = r.header("allow").expect("Allow");
    assert!(allow.contains("GET") && allow.contains("HEAD"), "{allow}");
    h.shutdown().await;
}

// ------------------------------------------------------------------ 27. notBefore / notAfter

#[tokio::test]
async fn order_validity_applied_within_policy_refused_outside() {
    let (port, tokens, task) = responder().await;
    let h = start(port, 1).await;
    let acct = h.new_account(Key::es256()).await;
    let order_with = |nb: Option<OffsetDateTime>, na: Option<OffsetDateTime>| {
        let mut p = json!({"identifiers": [{"type": "dns", "value": "a.acme.test"}]});
        if let Some(nb) = nb {
            p["notBefore"] = json!(rfc3339(nb));
        }
        if let Some(na) = na {
            p["notAfter"] = json!(rfc3339(na));
        }
        p.to_string()
    };
    // Outside policy (default max lifetime 7 days; notBefore at most 5 min
    // back and one day ahead) or nonsense: malformed, never ignored.
    let refused = [
        (Some(whole_seconds_from_now(-3600)), None),
        (Some(whole_seconds_from_now(2 * 86_400)), None),
        (None, Some(whole_seconds_from_now(8 * 86_400))),
        (Some(whole_seconds_from_now(3600)), Some(whole_seconds_from_now(3600 + 7 * 86_400 + 1))),
        (Some(whole_seconds_from_now(7200)), Some(whole_seconds_from_now(3600))),
        (None, Some(whole_seconds_from_now(-60))),
    ];
    for (nb, na) in refused {
        let r = h.post_as(&acct, "/acme/new-order", order_with(nb, na).as_bytes()).await;
        r.assert_problem("malformed", 400);
    }
    for bad in [json!({"notBefore": "tomorrow"}), json!({"notAfter": 1_700_000_000})] {
        let mut p = bad.clone();
        p["identifiers"] = json!([{"type": "dns", "value": "a.acme.test"}]);
        h.post_as(&acct, "/acme/new-order", p.to_string().as_bytes()).await.assert_problem("malformed", 400);
    }

    // Within policy: echoed in the order and carried into the certificate.
    let cases = [
        (Some(whole_seconds_from_now(3600)), Some(whole_seconds_from_now(3 * 3600))),
        (None, Some(whole_seconds_from_now(2 * 86_400))),
        (Some(whole_seconds_from_now(600)), None),
    ];
    for (nb, na) in cases {
        let r = h.post_as(&acct, "/acme/new-order", order_with(nb, na).as_bytes()).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let o = r.json();
        assert_eq!(o["notBefore"].as_str(), nb.map(rfc3339).as_deref(), "{o}");
        assert_eq!(o["notAfter"].as_str(), na.map(rfc3339).as_deref(), "{o}");
        // Make it ready (the helper orders afresh, so validate this one).
        let order_url = r.header("location").expect("location");
        let authz_url = o["authorizations"][0].as_str().expect("authz").to_string();
        let authz = h.post_as(&acct, &h.path_of(&authz_url), b"").await.json();
        let ch = authz["challenges"].as_array().expect("c").iter().find(|c| c["type"] == "http-01").expect("h").clone();
        let token = ch["token"].as_str().expect("token").to_string();
        tokens.lock().expect("lock").insert(token.clone(), format!("{token}.{}", acct.key.thumbprint()));
        h.post_as(&acct, &h.path_of(ch["url"].as_str().expect("url")), b"{}").await;
        assert_eq!(
            settle(&h, &acct, ch["url"].as_str().expect("url"), Duration::from_secs(20)).await["status"],
            "valid"
        );
        let r = finalize(&h, &acct, &order_url, "DNS:a.acme.test").await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let cert_url = r.json()["certificate"].as_str().expect("certificate").to_string();
        let leaf = leaf_of(&h.post_as(&acct, &h.path_of(&cert_url), b"").await.body);
        let s = keyrite::profile::certificate_summary(&leaf).expect("parses");
        if let Some(nb) = nb {
            assert_eq!(s.not_before, nb, "certificate notBefore");
        }
        match (nb, na) {
            (_, Some(na)) => assert_eq!(s.not_after, na, "certificate notAfter"),
            // Only notBefore: the default lifetime (24 h) from it.
            (Some(nb), None) => assert_eq!(s.not_after, nb + time::Duration::hours(24) - time::Duration::seconds(1)),
            (None, None) => unreachable!(),
        }
    }
    h.shutdown().await;
    task.abort();
}

// ------------------------------------------------------------------ 30. expired order

#[tokio::test]
async fn expired_order_cannot_be_finalized() {
    let (port, tokens, task) = responder().await;
    let h = start_cfg(port, |c| c.issuance.order_lifetime = Duration::from_secs(3)).await;
    let acct = h.new_account(Key::es256()).await;
    let (order_url, ready) = h.ready_order(&acct, &tokens, &["a.acme.test"]).await;
    let expires = OffsetDateTime::parse(ready["expires"].as_str().expect("expires"), &Rfc3339).expect("date");
    let wait = expires - OffsetDateTime::now_utc() + time::Duration::milliseconds(1100);
    assert!(wait <= time::Duration::seconds(5), "order lives for {wait}");
    tokio::time::sleep(Duration::try_from(wait).unwrap_or(Duration::ZERO)).await;
    let r = finalize(&h, &acct, &order_url, "DNS:a.acme.test").await;
    r.assert_problem("orderNotReady", 403);
    assert!(r.json()["detail"].as_str().is_some_and(|d| d.contains("expired")), "{}", r.json());
    let o = h.post_as(&acct, &h.path_of(&order_url), b"").await.json();
    assert_eq!(o["status"], "invalid", "{o}");
    assert!(o.get("certificate").is_none(), "{o}");
    h.shutdown().await;
    task.abort();
}

// ------------------------------------------------------------------ 32. CSR common name

#[tokio::test]
async fn csr_common_name_ip_or_not_among_sans_is_refused() {
    let (port, tokens, task) = responder().await;
    let h = start(port, 1).await;
    let dir = h.dir.path().to_path_buf();
    let acct = h.new_account(Key::es256()).await;
    let (_, leaf_pem) = p256_with_pem();
    let fin = |url: &str| format!("{}/finalize", h.path_of(url));

    let (ip_order, _) = h.ready_order(&acct, &tokens, &["127.0.0.1"]).await;
    for extra in
        [&["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"][..], &["-subj", "/CN=127.0.0.1"][..]]
    {
        let csr = openssl_csr(&dir, &leaf_pem, extra);
        let r = h.post_as(&acct, &fin(&ip_order), csr_body(&csr).as_bytes()).await;
        r.assert_problem("badCSR", 400);
        assert!(r.json()["detail"].as_str().is_some_and(|d| d.contains("IP address")), "{}", r.json());
    }

    let (dns_order, _) = h.ready_order(&acct, &tokens, &["a.acme.test", "b.acme.test"]).await;
    // The SANs are exactly the order's names; only the CN is foreign.
    let csr = openssl_csr(
        &dir,
        &leaf_pem,
        &["-subj", "/CN=c.acme.test", "-addext", "subjectAltName=DNS:a.acme.test,DNS:b.acme.test"],
    );
    let r = h.post_as(&acct, &fin(&dns_order), csr_body(&csr).as_bytes()).await;
    r.assert_problem("badCSR", 400);
    assert!(r.json()["detail"].as_str().is_some_and(|d| d.contains("not among")), "{}", r.json());
    // The order is still ready: a CN that is one of the SANs is accepted.
    let csr = openssl_csr(
        &dir,
        &leaf_pem,
        &["-subj", "/CN=b.acme.test", "-addext", "subjectAltName=DNS:a.acme.test,DNS:b.acme.test"],
    );
    let r = h.post_as(&acct, &fin(&dns_order), csr_body(&csr).as_bytes()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    h.shutdown().await;
    task.abort();
}

// ------------------------------------------------------------------ 35. http-01 redirects and body

#[tokio::test]
async fn http01_redirect_and_body_limits() {
    let (port, scripts, task) = scripted_responder().await;
    // Serves every token correctly, on another port: reachable, but off limits.
    let (other_port, other_scripts, other_task) = scripted_responder().await;
    let h = start(port, 1).await;
    let acct = h.new_account(Key::es256()).await;
    let thumb = acct.key.thumbprint();

    let key_auth = |token: &str| format!("{token}.{thumb}");
    let names = [
        "eleven redirects",
        "ten redirects",
        "one redirect",
        "to another host",
        "to https",
        "to another port",
        "long body",
        "trailing whitespace",
    ];
    let mut started = Vec::new();
    for name in names {
        let (url, token) = http01_challenge(&h, &acct, "a.acme.test").await;
        let ka = key_auth(&token);
        let script = match name {
            "eleven redirects" => Script::Redirects(11),
            "ten redirects" => Script::Redirects(10),
            "one redirect" => Script::Redirects(1),
            "to another host" => Script::RedirectTo(format!("http://b.acme.test:{port}/hop/0/{{token}}")),
            "to https" => Script::RedirectTo(format!("https://a.acme.test:{port}/hop/0/{{token}}")),
            "to another port" => Script::RedirectTo(format!("http://a.acme.test:{other_port}/hop/0/{{token}}")),
            "long body" => {
                // The key authorization first, then junk up to 200 bytes.
                let mut b = ka.clone().into_bytes();
                b.extend(std::iter::repeat_n(b'x', 200 - b.len()));
                Script::Body(b)
            }
            _ => Script::Body(format!("{ka}\r\n \t\n").into_bytes()),
        };
        scripts.lock().expect("lock").scripts.insert(token.clone(), (script, ka.clone()));
        other_scripts.lock().expect("lock").scripts.insert(token.clone(), (Script::Redirects(0), ka));
        let r = h.post_as(&acct, &h.path_of(&url), b"{}").await;
        assert_eq!(r.status, 200, "{name}: {}", String::from_utf8_lossy(&r.body));
        started.push((name, url, token));
    }
    let mut results = HashMap::new();
    for (name, url, token) in &started {
        let c = settle(&h, &acct, url, Duration::from_secs(30)).await;
        results.insert(*name, (c, token.clone()));
    }
    let hits = |token: &str| scripts.lock().expect("lock").hits.get(token).copied().unwrap_or(0);

    // 11 redirects: invalid, after both attempts each made the first
    // request and followed 10 redirects (11 requests), never the 11th.
    let (c, t) = &results["eleven redirects"];
    assert_challenge_problem(c, "connection", "too many redirects");
    assert_eq!(hits(t), 2 * 11, "requests for the 11-redirect chain");
    // Exactly 10 is still fine, in one attempt.
    let (c, t) = &results["ten redirects"];
    assert_eq!(c["status"], "valid", "{c} after {} requests", hits(t));
    assert_eq!(hits(t), 11);
    let (c, t) = &results["one redirect"];
    assert_eq!(c["status"], "valid", "{c}");
    assert_eq!(hits(t), 2);
    let (c, _) = &results["to another host"];
    assert_eq!(c["status"], "valid", "{c}");
    for name in ["to https", "to another port"] {
        let (c, t) = &results[name];
        assert_challenge_problem(c, "connection", "redirect refused");
        // Refused before any request goes out, on both attempts.
        assert_eq!(hits(t), 2, "{name}");
        assert_eq!(other_scripts.lock().expect("lock").hits.get(t.as_str()).copied().unwrap_or(0), 0, "{name}");
    }
    // 200 bytes that start with the key authorization: refused as a whole.
    let (c, _) = &results["long body"];
    assert_challenge_problem(c, "incorrectResponse", "128 bytes");
    // Trailing whitespace is trimmed (RFC 8555 §8.3).
    let (c, _) = &results["trailing whitespace"];
    assert_eq!(c["status"], "valid", "{c}");

    h.shutdown().await;
    task.abort();
    other_task.abort();
}

// ------------------------------------------------------------------ 38. timeouts × attempts

#[tokio::test]
async fn silent_responder_turns_invalid_within_timeout_times_attempts() {
    // Accepts every connection and holds it open without a byte in reply.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(sock);
        }
    });
    let (timeout, attempts, backoff) = (Duration::from_millis(1000), 3u32, Duration::from_millis(100));
    let h = start_cfg(port, |c| {
        c.validation.timeout = timeout;
        c.validation.attempts = attempts;
        c.validation.backoff = backoff;
    })
    .await;
    let acct = h.new_account(Key::es256()).await;
    let (url, _) = http01_challenge(&h, &acct, "a.acme.test").await;
    let t0 = Instant::now();
    let r = h.post_as(&acct, &h.path_of(&url), b"{}").await;
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("processing")));
    let c = settle(&h, &acct, &url, Duration::from_secs(30)).await;
    let elapsed = t0.elapsed();
    assert_challenge_problem(&c, "connection", "timed out");
    // timeout × attempts plus the backoffs (100 + 200 ms) is the bound;
    // allow 3 s for two busy cores and the 100 ms polling.
    let bound = timeout * attempts + backoff * 3;
    assert!(elapsed >= timeout * attempts, "gave up after {elapsed:?}, before {attempts} timeouts");
    assert!(elapsed <= bound + Duration::from_secs(3), "took {elapsed:?}, bound {bound:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), attempts as usize, "one connection per attempt");
    eprintln!("silent responder: invalid after {elapsed:?} (bound {bound:?})");
    h.shutdown().await;
    silent.abort();
}

// ------------------------------------------------------------------ server TLS from files

#[tokio::test]
async fn provided_tls_files_are_presented_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let run = |args: &[&str]| {
        let o = std::process::Command::new("openssl").current_dir(d).args(args).output().expect("openssl");
        assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    // A CA of its own (not the ACME issuer), and a leaf for 127.0.0.1.
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Provided TLS Test CA"],
    ]
    .concat());
    run(&[&["req", "-new"][..], &ec, &["-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=acme-serve"]].concat());
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "leaf.pem",
    ]);
    let leaf_pem = std::fs::read_to_string(d.join("leaf.pem")).expect("leaf");
    let ca_pem = std::fs::read_to_string(d.join("ca.pem")).expect("ca");
    std::fs::write(d.join("chain.pem"), format!("{leaf_pem}{ca_pem}")).expect("chain");

    // What `--tls-cert chain.pem --tls-key leaf.key` hands the server.
    let chain_text = std::fs::read_to_string(d.join("chain.pem")).expect("chain");
    let chain_der: Vec<Vec<u8>> = chain_text
        .split_inclusive("-----END CERTIFICATE-----")
        .filter(|b| b.contains("-----BEGIN CERTIFICATE-----"))
        .map(|b| pem_rfc7468::decode_vec(b.trim_start().as_bytes()).expect("pem").1)
        .collect();
    assert_eq!(chain_der.len(), 2);
    let key_text = std::fs::read_to_string(d.join("leaf.key")).expect("key");
    let (label, key_der) = pem_rfc7468::decode_vec(key_text.as_bytes()).expect("key pem");
    assert_eq!(label, "PRIVATE KEY", "openssl writes PKCS#8");

    let mut pki = Pki::new();
    let config = AcmeServeConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        d.join("acme.sqlite"),
        TlsSettings::Provided { chain_der: chain_der.clone(), key_pkcs8_der: zeroize::Zeroizing::new(key_der) },
        template("tls-leaf.toml"),
        test_policy(),
    );
    let server = acme::start(config, pki.issuer()).await.expect("server starts with the provided certificate");

    // Handshake trusting only the provided CA; look at what was presented.
    let ca_der = chain_der[1].clone();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(ca_der.clone())).expect("root");
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(server.local_addr()).await.expect("connect");
    let name = rustls::pki_types::ServerName::IpAddress(server.local_addr().ip().into());
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await.expect("handshake");
    let presented: Vec<Vec<u8>> =
        tls.get_ref().1.peer_certificates().expect("certificates").iter().map(|c| c.as_ref().to_vec()).collect();
    assert_eq!(presented, chain_der, "the server presents exactly the provided chain");
    assert_ne!(presented[0], pki.intermediate.der);
    drop(tls);

    // And it serves ACME over it.
    let client = Client::new(&ca_der, server.local_addr(), server.base_url().to_string());
    let r = client.request("GET", "/acme/directory", &[], vec![]).await;
    assert_eq!(r.status, 200);
    assert!(r.json()["newNonce"].is_string());
    server.shutdown().await;
}

/// An order may not ask for a certificate that outlives its issuer, even when
/// the server's own ceiling would allow the span: refused at newOrder, not
/// at finalize.
#[tokio::test]
async fn not_after_beyond_the_issuers_expiry_is_refused_at_new_order() {
    let h = start_cfg(1, |c| c.issuance.max_lifetime = Duration::from_secs(4000 * 86_400)).await;
    let acct = h.new_account(Key::es256()).await;
    let p = json!({
        "identifiers": [{"type": "dns", "value": "a.acme.test"}],
        "notAfter": rfc3339(whole_seconds_from_now(3000 * 86_400)),
    });
    let r = h.post_as(&acct, "/acme/new-order", p.to_string().as_bytes()).await;
    r.assert_problem("malformed", 400);
    assert!(
        String::from_utf8_lossy(&r.body).contains("issuing CA's own expiry"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}
